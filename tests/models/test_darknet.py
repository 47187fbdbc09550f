"""YOLO's ImageNet pretraining (experiments/darknet.py): the network is YOLO's first convs, whose
weights `init_from` carries into YOLO; the mini row's labels are the scenes' dominant objects; the
mini row trains and the paper-scale row steps on mocked ImageNet."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.backbones import build_backbone, darknet, pretrained
from segattn_jax.data.preprocess import classification
from segattn_jax.models.yolo import YOLO
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, traced_step
from tests.models.test_classifier import on_mock_imagenet


@pytest.mark.parametrize("network, backbone, pretrained_convs",
                         [("yolo", "yolo_darknet", 20), ("fast", "fast_yolo_darknet", 6)])
def test_init_from_fills_the_detectors_pretrained_convs_and_leaves_the_added_layers(
        network, backbone, pretrained_convs, tmp_path):
    """The paper: pretrain the first 20 convs (with an average pool and an fc) on ImageNet, then
    add 4 convs and 2 fc layers with random weights (Fast YOLO: ours, its first 6 of 9)."""
    width = 0.0625
    classifier = build_backbone(backbone, num_classes=8, width=width)
    weights = jax.jit(lambda: classifier.init(jax.random.key(1), np.zeros((1, 64, 64, 3))))()
    weights = jax.tree.map(lambda x: x + 1.0, weights)  # marked: nothing initializes to this
    assert set(weights["params"]) == {*(f"conv{i}" for i in range(1, pretrained_convs + 1)),
                                      "fc"}
    pretrained.save({"params": {"backbone": weights["params"]}}, tmp_path / "darknet",
                    {"backbone": backbone})

    detector = YOLO(num_classes=8, network=network, input_size=128, width=width, max_stride=32,
                    hidden=32)
    inputs = {"image": np.zeros((1, 128, 128, 3), np.float32),
              "image_hw": np.full((1, 2), 128.0, np.float32)}
    fresh = jax.jit(lambda: detector.init(jax.random.key(2), inputs))()
    loaded, report = pretrained.init_from(fresh, tmp_path / "darknet")
    params = loaded["params"]
    all_convs = len([layer for layer in darknet.NETWORKS[network] if layer != "pool"])
    for i in range(1, all_convs + 1):
        name = f"conv{i}"
        expected = (weights["params"] if i <= pretrained_convs else fresh["params"]["darknet"])
        np.testing.assert_array_equal(params["darknet"][name]["kernel"],
                                      expected[name]["kernel"])
    for added in ("fc", "output"):  # the detection layers start afresh
        np.testing.assert_array_equal(params[added]["kernel"], fresh["params"][added]["kernel"])
    assert report["loaded"] == 2 * pretrained_convs
    assert report["not_in_model"] == ["params/backbone/fc/bias", "params/backbone/fc/kernel"]


def test_first_convs_counts_convs_not_pools():
    assert darknet.first_convs(darknet.FAST_YOLO_LAYERS, 2) == ((16, 3, 1), "pool", (32, 3, 1))
    with pytest.raises(ValueError, match="9 convs has no first 10"):
        darknet.first_convs(darknet.FAST_YOLO_LAYERS, 10)


def test_a_scene_without_a_label_is_labelled_by_its_largest_object():
    """`shapes/main_object` has no image label: its dominant (largest) shape's class is it."""
    example = {"image": tf.zeros((8, 8, 3), tf.uint8),
               "objects": {"bbox": tf.constant([[0.0, 0.0, 0.3, 0.3], [0.2, 0.2, 0.9, 0.8],
                                                [0.5, 0.5, 0.6, 0.6]]),
                           "label": tf.constant([3, 5, 1], tf.int64)}}
    out = classification(example, tf.constant([0, 0]), False)
    assert int(out["label"]) == 5
    assert int(classification({**example, "label": tf.constant(2, tf.int64)},
                              tf.constant([0, 0]), False)["label"]) == 2


def test_mini_row_trains_and_evaluates(tfds_dir, tmp_path):
    config = experiment_config("darknet", "YOLO,mini", tfds_dir, **{"train.num_steps": 2})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    assert 0.0 <= metrics["top5_error_percent"] <= metrics["error_percent"] <= 100.0


def test_paper_scale_row_steps_on_mock_imagenet(tmp_path, monkeypatch):
    """ILSVRC 2012 at 224x224, 1000 classes, SGD: reads mocked ImageNet and traces its step
    (the mini row compiles the same layers); only the width is cut."""
    config = load_experiment(ROOT / "experiments" / "darknet.py").get_config("YOLO")
    config.model.width = 0.0625
    experiment, batch, eval_batch = on_mock_imagenet(config, tmp_path, monkeypatch)
    assert batch["image"].shape == eval_batch["image"].shape == (2, 224, 224, 3)
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert metrics["loss"].shape == () and predictions["logits"].shape == (2, 1000)

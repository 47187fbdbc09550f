"""The Inception experiment: a mini row trained and evaluated (batch-norm state trained,
checkpointed and restored), the paper-scale rows' steps on mocked ImageNet, and `init_from`
through the loop."""

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax.backbones import build_backbone, pretrained
from segattn_jax.data import pipeline
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, traced_step


def test_mini_row_trains_and_evaluates_and_eval_restores_it(tfds_dir, tmp_path):
    config = experiment_config("inception", "Inception-ResNet-v2,mini", tfds_dir,
                               **{"train.num_steps": 2})
    trained = loop.train_and_evaluate(config, tmp_path)["eval"]
    assert 0.0 <= trained["error_percent"] <= 100.0
    assert 0.0 <= trained["top5_error_percent"] <= trained["error_percent"]
    assert (tmp_path / "pictures" / "step_000002.png").is_file()
    # The checkpoint holds the batch-norm statistics the run trained, and `eval` restores them.
    restored = loop.Experiment(config, tmp_path).restore_variables()["batch_stats"]
    stem = restored["backbone"]["Conv2d_1a_3x3"]["bn"]
    assert not np.allclose(stem["mean"], 0.0) and not np.allclose(stem["var"], 1.0)


def _imagenet_like(split, read_config=None, **kwargs):
    """Two 333x500 JPEG-sized images per split, with TFDS ids when the pipeline asks."""
    rng = np.random.default_rng(0)
    ds = tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 255, (2, 333, 500, 3), np.uint8),
        "label": rng.integers(0, 1000, 2), "file_name": ["a.JPEG", "b.JPEG"]})
    if read_config is not None and read_config.add_tfds_id:
        ds = ds.enumerate().map(lambda i, e: {
            **e, "tfds_id": tf.strings.join([str(split)[:5], tf.strings.as_string(i)], "__")})
    return ds


def on_mock_imagenet(config, workdir, monkeypatch) -> tuple:
    """A paper-scale ImageNet row's Experiment (not training; batches of 2, one device) on
    `_imagenet_like` data, with its first training batch and first eval batch."""
    config.update_from_flattened_dict({"train.batch_size": 2, "eval.batch_size": 2,
                                       "mesh.data": 1})
    monkeypatch.setattr(pipeline, "num_examples", lambda builder, split: 2)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=2, as_dataset_fn=lambda self, split, **kwargs:
                                _imagenet_like(split, **kwargs)):
        experiment = loop.Experiment(config, workdir)
        batch = next(pipeline.train_iterator(
            config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
            global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
        return experiment, batch, next(experiment.eval_batches())


@pytest.mark.parametrize("row", ["Inception-v4", "Inception-ResNet-v2"])
def test_paper_scale_row_steps_on_mock_imagenet(row, tmp_path, monkeypatch):
    """The paper-scale config (imagenet2012, 299x299 with TF-Slim's preprocessing, 1001
    classes, the auxiliary head and its loss, RMSProp) reads mocked ImageNet and traces its train
    step and predictions (`traced_step`: the mini row compiles and runs the same blocks, and the
    backbone tests check their numbers); only the size is cut: 1/16 width, one block of each
    kind."""
    config = load_experiment(ROOT / "experiments" / "inception.py").get_config(row)
    config.update_from_flattened_dict({"model.width": 0.0625, "model.repeats": (1, 1, 1)})
    experiment, batch, eval_batch = on_mock_imagenet(config, tmp_path, monkeypatch)
    for images in (batch["image"], eval_batch["image"]):
        assert images.shape == (2, 299, 299, 3)
        assert -1.0 <= images.min() and images.max() <= 1.0
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert "aux_loss" in metrics and predictions["logits"].shape == (2, 1001)


def test_init_from_loads_converted_weights_when_a_run_starts_and_for_eval(tfds_dir, tmp_path):
    """A VGG16 checkpoint written by the converter's `save` lands in FCN's backbone, at the
    start of training and for `eval` in a workdir without checkpoints."""
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir)
    vgg = build_backbone("vgg16", width=config.model.width, fc6_kernel=config.model.fc6_kernel)
    weights = jax.jit(lambda: vgg.init(jax.random.key(3, impl="rbg"), np.zeros((1, 64, 64, 3)),
                                       train=False))()
    weights = jax.tree.map(lambda x: x + 1.0, weights)
    pretrained.save(weights, tmp_path / "vgg16", {"backbone": "vgg16"})
    config.init_from = str(tmp_path / "vgg16")
    experiment = loop.Experiment(config, tmp_path / "run")
    state = experiment.new_state()
    np.testing.assert_array_equal(state.params["backbone"]["conv1_1"]["kernel"],
                                  weights["params"]["conv1_1"]["kernel"])
    assert int(state.step) == 0
    # `eval`/`predict` in a workdir without checkpoints use the imported weights as they are.
    variables = experiment.restore_variables()
    np.testing.assert_array_equal(variables["params"]["backbone"]["fc7"]["kernel"],
                                  weights["params"]["fc7"]["kernel"])


def test_resnet_backbone_plugs_into_the_classifier(tfds_dir, tmp_path):
    """Any registered backbone fits the classifier's train step and predictions: ResNet-50 (1/16
    width) on the digits, traced (`traced_step`; the mini-row test trains and restores batch
    norm's statistics through the loop, the backbone tests check ResNet's numbers)."""
    config = experiment_config("inception", "Inception-v4,mini", tfds_dir, **{
        "model.backbone": "resnet50"})
    experiment = loop.Experiment(config, tmp_path)
    metrics, predictions = traced_step(experiment, experiment.abstract_state,
                                       next(experiment.eval_batches()))
    assert metrics["loss"].shape == () and predictions["logits"].shape == (8, 10)
    assert "conv5_block3" in experiment.abstract_state.model_state["batch_stats"]["backbone"]

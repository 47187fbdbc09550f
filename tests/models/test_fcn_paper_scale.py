"""FCN's paper-scale rows (Table 2 on VOC2011 seg11valid) on the VOC + SBD builder's fixture: the
reference nets' recipe in the config, the 500x500 canvas with its padding ignored, the full
network traced on the batches, the per-image summed loss, and the start each stage needs."""
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.data import pipeline
from segattn_jax.tasks.segmentation import pixel_cross_entropy
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, traced_step
from tests.data.test_voc_segmentation import SIZES
from tests.data.test_voc_segmentation import prepare as prepare_voc
from tests.data.test_voc_segmentation import write_download as write_voc

EXPERIMENT = load_experiment(ROOT / "experiments" / "fcn.py")


def test_rows_carry_table_2_and_the_reference_recipe():
    configs = {row: EXPERIMENT.get_config(row) for row in EXPERIMENT.ROWS}
    assert [c.paper.mean_iou for c in configs.values()] == [59.4, 62.4, 62.7]
    assert [c.optimizer.learning_rate for c in configs.values()] == [1e-10, 1e-12, 1e-14]
    for config in configs.values():
        assert (config.dataset.train_split, config.dataset.eval_split) == ("train", "seg11valid")
        assert config.optimizer.momentum == 0.99 and config.train.batch_size == 1
        assert config.task.loss_normalization == "images" and config.model.caffe_input
        assert not config.model.learn_intermediate_upsampling
    assert "FCN-32s" in configs["FCN-16s"].requires_init_from


def test_paper_rows_read_voc_in_the_canvas_and_trace_the_full_net(tmp_path):
    write_voc(tmp_path / "manual")
    prepare_voc(tmp_path / "manual", tmp_path / "data")
    config = EXPERIMENT.get_config("FCN-8s")
    config.update_from_flattened_dict({"dataset.data_dir": str(tmp_path / "data"),
                                       "eval.batch_size": 1, "mesh.data": 1})
    experiment = loop.Experiment(config, tmp_path / "run")
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
        global_batch_size=1, seed=0, data_dir=config.dataset.data_dir))
    assert batch["image"].shape == (1, 500, 500, 3) and batch["label"].shape == (1, 500, 500)
    # One of SBD train's images, its mask in the top-left corner, the rest of the canvas ignored.
    labels = batch["label"][0]
    fits = [(h, w) for h, w in (SIZES[i] for i in ("2008_000001", "2008_000002"))
            if np.all(labels[:h, :w] != 255) and np.all(labels[h:] == 255)
            and np.all(labels[:, w:] == 255)]
    assert len(fits) == 1, "an SBD image's mask, padded with 255 outside it"
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert predictions["label_map"].shape == (1, 500, 500)
    assert metrics["loss"].shape == ()


def test_the_per_image_sum_is_tensorflows_summed_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 5, 6)).astype(np.int32)
    labels[0, 0, :3] = 255
    valid = labels != 255
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(np.where(valid, labels, 0), logits).numpy()
    np.testing.assert_allclose(pixel_cross_entropy(logits, labels, 255, "images"),
                               (ce * valid).sum() / 2, rtol=1e-5)
    np.testing.assert_allclose(pixel_cross_entropy(logits, labels, 255),
                               (ce * valid).sum() / valid.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="loss_normalization 'batch'"):
        pixel_cross_entropy(logits, labels, 255, "batch")


def test_training_a_stage_without_its_start_says_which_flag_sets_it(tmp_path):
    config = EXPERIMENT.get_config("FCN-16s")
    with pytest.raises(ValueError, match=r"FCN-16s starts from a trained FCN-32s run.*"
                                         r"--config.init_from=DIR"):
        loop.Experiment(config, tmp_path / "run", training=True)

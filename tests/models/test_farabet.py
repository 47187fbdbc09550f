"""Farabet et al.'s multi-scale convnet: one set of convnet weights for every scale, the
classifier over the scales' concatenated features, the input checks, its multi-scale run on the
embedded scenes evaluated per pixel and with the superpixel vote, and the paper rows on the
Stanford Background fixture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax import table
from segattn_jax.models.farabet import MultiscaleConvNet, normalize_scale
from tests.conftest import ROOT, fast_overrides

SMALL = dict(num_classes=4, features=(4, 6, 8), kernel=3)


def init(model, size=(32, 48)):
    return jax.jit(model.init, static_argnames="train")(jax.random.key(0),
                                                        jnp.zeros((1, *size, 3)), train=False)


def test_every_scale_shares_one_convnet_and_the_classifier_sees_all_scales():
    single, multi = (init(MultiscaleConvNet(scales=s, **SMALL))["params"] for s in (1, 3))
    assert sorted(multi) == ["classifier", "convnet"] == sorted(single)
    assert jax.tree.map(jnp.shape, multi["convnet"]) == jax.tree.map(jnp.shape, single["convnet"])
    assert multi["classifier"]["kernel"].shape == (3 * 8, 4)
    assert single["classifier"]["kernel"].shape == (8, 4)


def test_logits_have_the_input_size_and_bad_sizes_say_the_multiple():
    model = MultiscaleConvNet(scales=3, **SMALL)
    variables = init(model)
    images = jax.random.uniform(jax.random.key(1), (2, 32, 48, 3))
    logits = jax.jit(model.apply, static_argnames="train")(variables, images, train=False)
    assert logits.shape == (2, 32, 48, 4)
    with pytest.raises(ValueError, match="multiples of 16; got 40x48"):
        model.apply(variables, jnp.zeros((1, 40, 48, 3)), train=False)
    with pytest.raises(ValueError, match=r"RGB images \(N, H, W, 3\)"):
        model.apply(variables, jnp.zeros((1, 32, 48, 1)), train=False)


def test_each_scale_is_normalized_y_locally_u_and_v_over_the_image():
    yuv = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3)) * jnp.array([1.0, 0.4, 0.6])
    normalized = np.asarray(normalize_scale(yuv, 15))
    np.testing.assert_allclose(normalized[..., 1:].mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized[..., 1:].std(axis=(1, 2)), 1.0, atol=1e-4)
    assert abs(normalized[..., 0].mean()) < 0.2  # locally centred


def test_multi_scale_run_is_evaluated_per_pixel_and_with_the_superpixel_vote(tmp_path, tfds_dir):
    """The two multi-scale rows train one run, evaluated per pixel and with the vote; the
    table lists all three rows (the single-scale row, the same net with scales=1, is left
    untrained here: the suite's time)."""
    path = str(ROOT / "experiments" / "farabet.py")
    overrides = fast_overrides("farabet", tfds_dir, **{"train.num_steps": 2})
    table.run_table(path, "multi-scale+superpixels,mini", tmp_path, overrides=overrides)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["multi-scale"]
    metrics = table.finished_metrics(tmp_path / "multi-scale", 2)
    assert {"mean_iou", "superpixels/mean_iou"} <= set(metrics)
    markdown = table.run_table(path, "mini", tmp_path, overrides=overrides, collect_only=True)
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "single-scale", "multi-scale", "multi-scale+superpixels"]
    assert "| 66.0 | - |" in rows[0]
    assert f"| {table._format(metrics['mean_iou'])} |" in rows[1]
    assert f"| {table._format(metrics['superpixels/mean_iou'])} |" in rows[2]


def test_paper_rows_carry_table_1_and_trace_on_the_stanford_background_fixture(tmp_path):
    """The paper-scale rows (fold 1 held out, the paper's network) read the builder's fixture
    into the 320x240 canvas with superpixels, and their full-size step traces."""
    from segattn_jax.data import pipeline
    from segattn_jax.train import loop
    from segattn_jax.train.config import load_experiment
    from tests.conftest import traced_step
    from tests.data.test_stanford_background import prepare, write_download

    module = load_experiment(ROOT / "experiments" / "farabet.py")
    assert [module.get_config(r).paper.pixel_accuracy for r in module.ROWS] == [66.0, 78.8, 80.4]
    config = module.get_config("multi-scale+superpixels")
    assert (config.dataset.train_split, config.dataset.eval_split) == (
        "fold2+fold3+fold4+fold5", "fold1")
    assert config.model.features == (16, 64, 256) and config.model.scales == 3
    write_download(tmp_path / "manual")
    prepare(tmp_path / "manual", tmp_path / "data")
    config.update_from_flattened_dict({"dataset.data_dir": str(tmp_path / "data"),
                                       "train.batch_size": 2, "eval.batch_size": 2,
                                       "mesh.data": 1})
    experiment = loop.Experiment(config, tmp_path / "run")
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
        global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
    assert batch["image"].shape == (2, 240, 320, 3) and batch["superpixels"].shape == (2, 240, 320)
    assert np.all(batch["label"][:, 6:] == 255)  # the canvas beyond the 9x6 fixture is ignored
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert predictions["superpixel_label_map"].shape == (2, 240, 320)
    assert metrics["loss"].shape == ()

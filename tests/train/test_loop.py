"""The train/eval loop: each experiment's small variant runs, shardings agree, NaN guard, learning."""
import json

import jax
import numpy as np
import pytest

from segattn_jax.train import loop, mesh as mesh_lib
from tests.conftest import experiment_config


@pytest.mark.parametrize("name,arg", [("fcn", "FCN-8s,mini"), ("fcn", "FCN-32s,mini"),
                                      ("stn", "ST-CNN-Aff,RTS,mini"), ("stn", "FCN,RTS,mini")])
def test_small_variant_trains_a_few_steps(name, arg, tfds_dir, tmp_path):
    config = experiment_config(name, arg, tfds_dir, **{"train.num_steps": 3})
    result = loop.train_and_evaluate(config, tmp_path)
    assert result["step"] == 3
    saved = json.loads((tmp_path / loop.METRICS_FILE).read_text())
    assert saved["eval"] == result["eval"] and all(np.isfinite(v) for v in saved["eval"].values())
    assert (tmp_path / "pictures" / "step_000003.png").is_file()
    assert (tmp_path / "checkpoints" / "3").is_dir()


def test_sharded_step_equals_single_device_step(tfds_dir, tmp_path):
    assert jax.device_count() == 8, "tests/conftest.py asks XLA for 8 host devices"
    results = {}
    for devices in (1, 8):
        config = experiment_config("fcn", "FCN-8s,mini", tfds_dir,
                                   **{"mesh.data": devices, "optimizer.warmup_steps": 0})
        exp = loop.Experiment(config, tmp_path / str(devices))
        state = exp.new_state()
        batch = next(iter(exp.eval_batches()))
        batch = mesh_lib.to_global({"image": batch["image"], "label": batch["label"]}, exp.mesh)
        assert len(batch["image"].sharding.device_set) == devices
        state, metrics = exp.train_step(state, batch)
        results[devices] = jax.device_get((state.params, metrics))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 results[1], results[8])


def test_sharded_eval_counts_every_example_once(tfds_dir, tmp_path):
    """Eval on 8 devices (last batch padded) gives the same metrics as on 1 device."""
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir,
                               **{"train.num_steps": 2, "eval.batch_size": 24})
    state = loop.train_and_evaluate(config, tmp_path / "one")  # trained params, 1 device
    one = loop.Experiment(config, tmp_path / "one")
    params = one.restore_params()
    config.mesh.data = 8
    eight = loop.Experiment(config, tmp_path / "one")
    assert eight.evaluate(params) == one.evaluate(params) == state["eval"]


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(
        tfds_dir, tmp_path, monkeypatch):
    original = loop.pipeline.train_iterator

    def poisoned_fifth_batch(*args, **kwargs):
        for index, batch in enumerate(original(*args, **kwargs), start=1):
            if index == 5:
                batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
            yield batch

    monkeypatch.setattr(loop.pipeline, "train_iterator", poisoned_fifth_batch)
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir, **{"train.num_steps": 8})
    with pytest.raises(loop.NonFiniteLossError, match=r"at step 5\b.*checkpoint \(step 4\)"):
        loop.train_and_evaluate(config, tmp_path)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 4]
    assert not (tmp_path / loop.METRICS_FILE).exists()


@pytest.mark.slow
def test_segmentation_learns(tfds_dir, tmp_path):
    config = experiment_config("fcn", "FCN-8s,mini", tfds_dir, **{
        "train.num_steps": 150, "train.checkpoint_every": 1000, "train.log_every": 50})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    assert metrics["mean_iou"] > 30.0, metrics


@pytest.mark.slow
def test_classification_learns(tfds_dir, tmp_path):
    config = experiment_config("stn", "FCN,R,mini", tfds_dir, **{
        "dataset.name": "distorted_digits/tiny_r", "train.batch_size": 32, "train.num_steps": 200,
        "optimizer.learning_rate": 3e-3, "train.checkpoint_every": 1000, "train.log_every": 50})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    assert metrics["error_percent"] < 25.0, metrics  # chance: 90%

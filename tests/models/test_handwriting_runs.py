"""Graves' handwriting experiments end to end: the CLI trains and evaluates the synthesis row on
the embedded lines, and `predict` writes given text; the prediction row trains; the paper-scale
config runs a step on an IAM-OnDB fixture (both rows)."""
import json
import logging

import numpy as np
import pytest
from PIL import Image

from segattn_jax import predict
from segattn_jax.train import loop
from tests import cli
from tests.conftest import ROOT, cli_overrides, experiment_config
from tests.data.test_iam_ondb import write_iam_ondb


def test_cli_trains_synthesis_and_writes_given_text(tmp_path, tfds_dir, caplog):
    workdir = tmp_path / "run"
    result = cli.run(["train", "--config",
                      str(ROOT / "experiments" / "handwriting.py") + ":Synthesis,mini",
                      "--workdir", str(workdir), "--config.train.num_steps=4",
                      *cli_overrides("handwriting", tfds_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training lines are longer than max_points=120" in result.stderr  # truncation count
    metrics = json.loads((workdir / loop.METRICS_FILE).read_text())["eval"]
    assert 1 < metrics["nll"] / metrics["nll_per_point"] <= 120  # points per line, cut at 120
    assert np.isfinite(metrics["nll"]) and 0 <= metrics["window_reaches_end"] <= 100
    assert 0 <= metrics["window_monotone"] <= 100 and metrics["truncated_lines"] > 0
    assert list((workdir / "pictures").glob("*.png"))
    stats = json.loads((workdir / "stroke_statistics.json").read_text())
    assert stats["lines"] == 40 and min(stats["std"]) > 0

    # `predict --text` in this process: a CLI process costs ~15 s of imports here.
    config = experiment_config("handwriting", "Synthesis,mini", tfds_dir)
    with caplog.at_level(logging.WARNING):
        predict.write_texts(config, workdir, ["cat é", "a"])
    assert "outside the alphabet" in caplog.text
    assert sorted(p.name for p in (workdir / "predictions").iterdir()) == [
        "text_0_cat.png", "text_1_a.png"]
    with pytest.raises(ValueError, match="at least one character"):
        predict.write_texts(config, workdir, [""])
    assert len(list((workdir / "predictions").iterdir())) == 2  # nothing overwritten

    # Primed sampling: the network reads eval line 0 first, then writes the text after it.
    config.task.prime_line = 0
    (path,) = predict.write_texts(config, workdir, ["ab"])
    assert path.name == "text_0_ab.png" and path.exists()
    config = experiment_config("handwriting", "Synthesis,mini", tfds_dir,
                               **{"task.prime_line": 10})
    with pytest.raises(ValueError, match="has 10 examples"):
        predict.write_texts(config, workdir, ["ab"])


def test_prediction_row_trains_without_text_and_predict_explains_what_it_takes(tmp_path,
                                                                              tfds_dir):
    config = experiment_config("handwriting", "Prediction,mini", tfds_dir,
                               **{"train.num_steps": 2})
    result = loop.train_and_evaluate(config, tmp_path)
    assert np.isfinite(result["eval"]["nll"])
    assert "window_monotone" not in result["eval"]  # no window without text
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(ValueError, match="not images"):
        predict.predict_files(config, tmp_path, [str(image)])
    with pytest.raises(ValueError, match="Synthesis row to write given text"):
        predict.write_texts(config, tmp_path, ["hello"])
    assert not (tmp_path / "predictions").exists()


@pytest.mark.parametrize("row", ["Prediction", "Synthesis"])
def test_paper_scale_config_runs_a_step_on_iam_ondb(row, tmp_path):
    from segattn_jax.train.config import load_experiment

    import tensorflow_datasets as tfds
    from segattn_jax.data import iam_ondb

    write_iam_ondb(tmp_path / "manual")
    iam_ondb.IamOndb(data_dir=str(tmp_path / "data")).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    config = load_experiment(ROOT / "experiments" / "handwriting.py").get_config(row)
    assert config.model.hidden == 400 and config.optimizer.name == "rmsprop"
    config.update_from_flattened_dict({
        "dataset.data_dir": str(tmp_path / "data"), "dataset.preprocess.max_points": 8,
        "task.sample_points": 8, "train.batch_size": 2, "eval.batch_size": 2, "mesh.data": 1,
        "train.num_steps": 1})
    result = loop.train_and_evaluate(config, tmp_path / "run")
    assert np.isfinite(result["eval"]["nll"])

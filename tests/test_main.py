"""The command line: clear errors for bad input, and `predict` / `eval` / `table` end to end."""
import numpy as np
import pytest
from PIL import Image

from segattn_jax import predict
from tests import cli
from tests.conftest import cli_overrides


def test_unknown_row_lists_the_valid_ones(tmp_path):
    result = cli.run(["train", "--config", "experiments/fcn.py:FCN-9s,mini",
                      "--workdir", str(tmp_path)])
    assert result.returncode != 0
    assert "FCN-32s, FCN-16s, FCN-8s" in result.stderr


def test_unknown_config_key_fails_at_start(tmp_path):
    result = cli.run(["train", "--config", "experiments/fcn.py:FCN-8s,mini",
                      "--workdir", str(tmp_path), "--config.train.num_stepz=3"])
    assert result.returncode != 0
    assert "num_stepz" in result.stderr and "num_steps" in result.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written before the config is valid"


def test_train_eval_predict_end_to_end(tfds_dir, tmp_path):
    args = ["--config", "experiments/fcn.py:FCN-8s,mini", "--workdir", str(tmp_path / "run"),
            *cli_overrides("fcn", tfds_dir, **{"train.num_steps": 2})]
    train = cli.run(["train", *args])
    assert train.returncode == 0, train.stderr
    assert "mean_iou" in train.stdout and "checkpoints" in train.stdout

    rgb = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 41, 3), np.uint8)).save(rgb)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(gray)
    text = tmp_path / "notes.png"
    text.write_text("not an image")

    result = cli.run(["predict", *args, "--images", str(rgb)])
    assert result.returncode == 0, result.stderr
    overlay = np.asarray(Image.open(tmp_path / "run" / "predictions" / "scene.png"))
    assert overlay.shape[:2] == (37, 41)

    for bad, message in [(text, "is not an image file"), (gray, "has 1 channels but this model takes 3")]:
        result = cli.run(["predict", *args, "--images", str(rgb), "--images", str(bad)])
        assert result.returncode != 0 and message in result.stderr, result.stderr


def test_load_image_errors(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(rgba)
    with pytest.raises(ValueError, match="has 4 channels but this model takes 3 .RGB."):
        predict.load_image(rgba, 3)
    with pytest.raises(ValueError, match="does not exist"):
        predict.load_image(tmp_path / "missing.png", 3)
    assert predict.load_image(rgba, 4).shape == (4, 4, 4)

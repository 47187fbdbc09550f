"""Fast and Faster R-CNN: a train step on a batch with an empty image, degenerate boxes and
proposals outside the image stays finite; both train and evaluate through the CLI on shapes."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.tasks import build_task
from tests import cli
from tests.conftest import cli_overrides, experiment_config


def _batch(with_proposals: bool) -> dict:
    """Two 64x64 images: the first without objects, the second with one real and one degenerate
    box; proposals partly outside the image or degenerate."""
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[1, 0] = [8, 8, 40, 40]
    boxes[1, 1] = [20, 20, 20, 30]  # zero width
    batch = {"image": np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32),
             "image_hw": np.array([[64, 64], [48, 64]], np.int32), "boxes": boxes,
             "classes": np.array([[0, 0, 0, 0], [3, 1, 0, 0]], np.int32),
             "difficult": np.zeros((2, 4), bool),
             "box_valid": np.array([[False] * 4, [True, True, False, False]])}
    if with_proposals:
        proposals = np.array([[-30, -30, 10, 10], [50, 50, 200, 90], [5, 5, 5, 5],
                              [10, 10, 38, 42]] * 4, np.float32).reshape(16, 4)
        batch["proposals"] = np.stack([proposals, proposals])
        batch["proposal_valid"] = np.ones((2, 16), bool)
    return batch


@pytest.mark.parametrize("row", ["Fast-R-CNN", "Faster-R-CNN"])
def test_train_step_with_an_empty_image_and_degenerate_boxes_is_finite(row, tfds_dir):
    config = experiment_config("rcnn", f"{row},mini", tfds_dir)
    task = build_task(config)
    batch = _batch(with_proposals=row == "Fast-R-CNN")
    params = task.init_params(jax.random.key(0), task.inputs(batch))
    (loss, metrics), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
        params, batch, jax.random.key(1))
    assert np.isfinite(float(loss)), metrics
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    detections = jax.jit(task.predict)(params, task.inputs(batch))
    assert detections["boxes"].shape == (2, config.model.max_detections, 4)
    kept = np.asarray(detections["boxes"][1])[np.asarray(detections["valid"][1])]
    assert (kept[:, [1, 3]] <= 48).all()  # clipped to the second image's real height


@pytest.mark.parametrize("row", ["Fast-R-CNN", "Faster-R-CNN"])
def test_mini_row_trains_and_evaluates_through_the_cli(row, tfds_dir, tmp_path):
    result = cli.run(["train", "--config", f"experiments/rcnn.py:{row},mini",
                      "--workdir", str(tmp_path), *cli_overrides(
                          "rcnn", tfds_dir, **{"train.num_steps": 2})], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["eval"]
    assert 0.0 <= metrics["mAP"] <= 100.0 and metrics["seconds_per_image"] > 0
    assert ("proposal_seconds_per_image" in metrics) == (row == "Fast-R-CNN")
    assert "AP/star" in metrics  # per-class APs named after the dataset's classes
    assert (tmp_path / "pictures" / "step_000002.png").is_file()

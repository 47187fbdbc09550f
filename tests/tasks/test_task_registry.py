"""The task registry: every name resolves to a Task, and the tasks whose data needs no TensorFlow
build and trace their train step where TensorFlow is not installed (a GPU box with only JAX)."""
import subprocess
import sys

import pytest

from segattn_jax.tasks import TASKS, Task, task_class
from tests.conftest import ROOT


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_registered_task_resolves(name):
    assert issubclass(task_class(name), Task)


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="valid: .*'segmentation'"):
        task_class("segmentaton")


WITHOUT_TENSORFLOW = """
import sys
for blocked in ("tensorflow", "tensorflow_datasets", "clu"):
    sys.modules[blocked] = None  # `import` of these now fails, as where they are not installed
import jax, jax.numpy as jnp, numpy as np
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state, train_step
for experiment, row, batch in [
        ("fcn", "FCN-8s,mini", {"image": np.zeros((2, 64, 64, 3), np.float32),
                                "label": np.zeros((2, 64, 64), np.int32)}),
        ("mask_rcnn", "R-50-FPN,mini", None)]:
    config = load_experiment("experiments/" + experiment + ".py").get_config(row)
    task = build_task(config)
    if batch is None:
        continue
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    state = jax.eval_shape(lambda: create_train_state(task.init_variables(
        jax.random.key(0), task.inputs(batch)), tx))
    _, metrics = jax.eval_shape(lambda s, b: train_step(task, tx, 0, s, b), state, batch)
    assert metrics["loss"].shape == (), metrics
assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""


def test_segmentation_and_detection_train_without_tensorflow():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

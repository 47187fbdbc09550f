"""Checks every detector's tests share: a finite train step on awkward input, and mAP on one
batch before and after training on it (the learning tests)."""
import jax
import numpy as np

from segattn_jax.train import loop
from segattn_jax.train.state import initial_variables


def finite_step_detections(task, batch: dict) -> dict:
    """Asserts the task's loss and every gradient on `batch` are finite; returns the jitted
    predictions on it."""
    variables = initial_variables(task, jax.random.key(0), task.inputs(batch))

    def loss(params):
        loss, metrics, _ = task.loss({"params": params}, batch, jax.random.key(1))
        return loss, metrics

    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    assert np.isfinite(float(loss)), metrics
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    return jax.jit(task.predict)(variables, task.inputs(batch))


def batch_map_before_and_after(config, workdir, steps: int) -> tuple[float, float]:
    """mAP on the first eval batch at initialization and after `steps` train steps on it."""
    experiment = loop.Experiment(config, workdir)
    batch = next(experiment.eval_batches())
    task = experiment.task

    def batch_map(variables):
        predictions = jax.device_get(jax.jit(task.predict)(variables, task.inputs(batch)))
        return task.summarize(task.accumulate(None, task.statistics(batch, predictions)))["mAP"]

    state = experiment.new_state()
    before = batch_map(state.variables)
    for _ in range(steps):
        state, _ = experiment.train_step(state, batch)
    return before, batch_map(state.variables)

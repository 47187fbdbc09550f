"""Checks every detector's tests share: a finite train step on awkward input, and mAP on one
batch before and after training on it (the learning tests, which end with an awkward step)."""
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


def _without_objects_in_the_first_image(batch: dict) -> dict:
    """`batch` made awkward: its first image has no objects, and the second a zero-width box and
    a shorter true height (its predictions must be clipped to it); the same shapes as `batch`."""
    awkward = {k: np.array(v) for k, v in batch.items()}
    awkward["box_valid"][0] = False
    x0, y0, _, y1 = awkward["boxes"][1, 0]
    awkward["boxes"][1, -1] = [x0, y0, x0, y1]
    awkward["box_valid"][1, -1] = True
    awkward["image_hw"][1, 0] = awkward["image_hw"][1, 0] * 3 // 4
    return awkward


def learn_one_batch(config, workdir, steps: int, metric: str = "mAP") -> tuple[float, float]:
    """`metric` (the task's summary of it) on the first eval batch at initialization and after
    `steps` train steps on it. Then
    one more step on that batch without objects in its first image (same compiled step): its
    loss and updated parameters must be finite, its boxes inside the images."""
    experiment = loop.Experiment(config, workdir)
    batch = next(experiment.eval_batches())
    task = experiment.task
    predict = jax.jit(task.predict)

    def batch_map(variables):
        predictions = jax.device_get(predict(variables, task.inputs(batch)))
        return task.summarize(task.accumulate(None, task.statistics(batch, predictions)))[metric]

    state = experiment.new_state()
    before = batch_map(state.variables)
    for _ in range(steps):
        state, _ = experiment.train_step(state, batch)
    after = batch_map(state.variables)

    awkward = _without_objects_in_the_first_image(batch)
    state, metrics = experiment.train_step(state, awkward)
    assert np.isfinite(float(metrics["loss"])), metrics
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(state.params))
    detections = jax.device_get(predict(state.variables, task.inputs(awkward)))
    kept = detections["boxes"][1][detections["valid"][1]]
    assert (kept[:, [1, 3]] <= awkward["image_hw"][1, 0] + 1e-3).all()
    return before, after

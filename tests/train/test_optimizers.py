import ml_collections
import numpy as np
import pytest

from segattn_jax.train.config import base_config
from segattn_jax.train.optimizers import make_optimizer, make_schedule


def _optimizer_config(**fields) -> ml_collections.ConfigDict:
    config = base_config().optimizer
    config.update(fields)
    return config


def test_step_schedule_with_warmup():
    schedule = make_schedule(_optimizer_config(schedule="step", learning_rate=1.0, warmup_steps=10,
                                               decay_at=(0.5,), decay_factor=0.1), 100)
    np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(49), schedule(51)],
                               [0.0, 0.5, 1.0, 1.0, 0.1], rtol=1e-6)


def test_cosine_schedule_ends_at_zero():
    schedule = make_schedule(_optimizer_config(schedule="cosine", learning_rate=2.0), 100)
    assert float(schedule(0)) == 2.0 and float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [{"name": "lamb"}, {"schedule": "linear"}])
def test_unknown_names_list_valid_ones(bad):
    with pytest.raises(ValueError, match="valid"):
        make_optimizer(_optimizer_config(**bad), 10)


def test_rmsprop_with_exponential_decay_matches_tensorflows_rmsprop():
    """The Inception recipe (RMSProp decay 0.9, momentum 0.9, epsilon 1.0, learning rate
    decayed 0.94 every 2 steps here) against TensorFlow's own RMSPropOptimizer, the one the
    paper's models were trained with, over 6 steps of the same gradients."""
    import jax.numpy as jnp
    import optax
    import tensorflow as tf

    config = _optimizer_config(name="rmsprop", learning_rate=0.045, momentum=0.9,
                               rmsprop_decay=0.9, rmsprop_epsilon=1.0, schedule="exponential",
                               decay_every=2, decay_factor=0.94)
    tx = make_optimizer(config, 6)
    start = np.array([1.0, -2.0, 0.5], np.float32)
    params, state = jnp.asarray(start), tx.init(jnp.asarray(start))
    variable = tf.Variable(start)
    step = tf.Variable(0, dtype=tf.int64)
    rate = tf.compat.v1.train.exponential_decay(0.045, step, 2, 0.94, staircase=True)
    reference = tf.compat.v1.train.RMSPropOptimizer(rate, decay=0.9, momentum=0.9, epsilon=1.0)
    for i in range(6):
        grad = np.array([0.3, -1.0, 2.0], np.float32) * (i + 1)
        updates, state = tx.update(jnp.asarray(grad), state, params)
        params = optax.apply_updates(params, updates)
        reference.apply_gradients([(tf.constant(grad), variable)], global_step=step)
    np.testing.assert_allclose(params, variable.numpy(), rtol=1e-5)

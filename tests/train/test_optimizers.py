import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
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


def _lr_multiplier_run(multipliers, steps=3):
    """Adam with clipping and decay over a two-level tree; the parameters after `steps` steps of
    fixed gradients, and the optimizer state."""

    params = {"backbone": {"conv1_1": {"kernel": jnp.ones((3,))}, "conv3_1": {"kernel": jnp.ones((2,))}},
              "rpn": {"kernel": jnp.ones((4,))}}
    grads = {"backbone": {"conv1_1": {"kernel": jnp.full((3,), 100.0)},
                          "conv3_1": {"kernel": jnp.array([0.3, -0.2])}},
             "rpn": {"kernel": jnp.array([0.1, -0.4, 0.2, 0.05])}}
    tx = make_optimizer(_optimizer_config(name="adam", learning_rate=0.1, grad_clip_norm=0.5,
                                          weight_decay=1e-2, lr_multipliers=multipliers), steps)
    state = tx.init(params)
    step = jax.jit(lambda p, s: (lambda u, s2: (optax.apply_updates(p, u), s2))(
        *tx.update(grads, s, p)))
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def test_lr_multipliers_freeze_scale_and_leave_the_rest_alone():
    """Factor 0 freezes a parameter (unchanged, no Adam moments, out of the clipping norm: its
    huge gradient does not shrink the others'), a factor scales a parameter's steps, and a
    parameter no regex finds trains exactly as with no multipliers at all."""

    frozen, state = _lr_multiplier_run(((r"backbone/conv[12]_", 0.0), ("rpn", 0.1)))
    np.testing.assert_array_equal(frozen["backbone"]["conv1_1"]["kernel"], np.ones(3))
    moment_sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(state) if leaf.ndim]
    assert 3 not in moment_sizes, moment_sizes  # no state kept for the frozen (3,) kernel

    # The reference: the same optimizer over the trained parameters only, no multipliers.
    params = {"backbone": {"conv3_1": {"kernel": jnp.ones((2,))}}, "rpn": {"kernel": jnp.ones((4,))}}
    grads = {"backbone": {"conv3_1": {"kernel": jnp.array([0.3, -0.2])}},
             "rpn": {"kernel": jnp.array([0.1, -0.4, 0.2, 0.05])}}
    tx = make_optimizer(_optimizer_config(name="adam", learning_rate=0.1, grad_clip_norm=0.5,
                                          weight_decay=1e-2), 3)
    reference_state, reference = tx.init(params), params
    first_update = None
    for _ in range(3):
        updates, reference_state = tx.update(grads, reference_state, reference)
        first_update = updates if first_update is None else first_update
        reference = optax.apply_updates(reference, updates)
    np.testing.assert_allclose(frozen["backbone"]["conv3_1"]["kernel"],
                               reference["backbone"]["conv3_1"]["kernel"], rtol=1e-6)
    # One step of the scaled parameter: a tenth of the unscaled step.
    one_step, _ = _lr_multiplier_run(((r"backbone/conv[12]_", 0.0), ("rpn", 0.1)), steps=1)
    np.testing.assert_allclose(one_step["rpn"]["kernel"] - 1.0,
                               0.1 * np.asarray(first_update["rpn"]["kernel"]), rtol=1e-5)
    assert not np.allclose(frozen["rpn"]["kernel"], reference["rpn"]["kernel"])


@pytest.mark.parametrize("multipliers, message", [
    ((("rnp", 0.1),), "match no parameter"),
    ((("rpn", -1.0),), "use 0 to freeze"),
    ((("rpn[", 0.1),), "not a regex"),
])
def test_lr_multipliers_reject_typos_with_what_to_fix(multipliers, message):
    with pytest.raises(ValueError, match=message):
        _lr_multiplier_run(multipliers, steps=1)


def test_weight_decay_skip_exempts_matching_parameters_like_caffes_decay_mult_0():
    """SGD with weight decay 0.5, lr 1, zero gradients: a kernel shrinks by the decay, a bias
    that `weight_decay_skip` matches does not move (Caffe's decay_mult 0 on FCN's biases)."""
    params = {"conv": {"kernel": jnp.full((2,), 2.0), "bias": jnp.full((2,), 2.0)}}
    tx = make_optimizer(_optimizer_config(name="sgd", learning_rate=1.0, momentum=0.0,
                                          weight_decay=0.5, weight_decay_skip="bias$"), 1)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["conv"]["kernel"], [1.0, 1.0])
    np.testing.assert_allclose(new["conv"]["bias"], [2.0, 2.0])

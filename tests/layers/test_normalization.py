"""`BatchNorm` is `flax.linen.BatchNorm`: the same variables, outputs, gradients and running
averages, in training and at test, with or without a scale, in float32 and bfloat16 (its own
backward pass replaces autodiff's, so every cotangent is checked against flax's)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.layers.normalization import BatchNorm, normalize_batch

SHAPE = (4, 6, 5, 16)


def _pair(use_scale=True, train=True, dtype=jnp.float32):
    kwargs = dict(use_running_average=not train, use_scale=use_scale, momentum=0.9,
                  epsilon=1e-3, dtype=dtype)
    return nn.BatchNorm(param_dtype=jnp.float32, **kwargs), BatchNorm(**kwargs)


def _variables(module, x, key):
    variables = module.init(jax.random.key(0), x)
    keys = jax.random.split(key, 4)
    params = {"bias": jax.random.normal(keys[0], (SHAPE[-1],))}
    if "scale" in variables["params"]:
        params["scale"] = 1 + 0.3 * jax.random.normal(keys[1], (SHAPE[-1],))
    stats = {"mean": jax.random.normal(keys[2], (SHAPE[-1],)),
             "var": jnp.exp(jax.random.normal(keys[3], (SHAPE[-1],)))}
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("use_scale", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_matches_flax_outputs_gradients_and_running_averages(use_scale, train):
    x = 3 * jax.random.normal(jax.random.key(1), SHAPE) + 2
    cotangent = jax.random.normal(jax.random.key(2), SHAPE)
    theirs, ours = _pair(use_scale, train)
    assert (jax.tree.map(jnp.shape, theirs.init(jax.random.key(0), x))
            == jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)))
    variables = _variables(theirs, x, jax.random.key(3))

    def run(module):
        def loss(params, x):
            y, state = module.apply({**variables, "params": params}, x,
                                    mutable=["batch_stats"])
            return jnp.sum(y * cotangent), (y, state)
        return jax.jit(jax.grad(loss, (0, 1), has_aux=True))(variables["params"], x)

    (params_t, x_t), (y_t, state_t) = run(theirs)
    (params_o, x_o), (y_o, state_o) = run(ours)
    np.testing.assert_allclose(y_o, y_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_o, x_t, rtol=1e-4, atol=1e-5)
    for name in params_t:
        np.testing.assert_allclose(params_o[name], params_t[name], rtol=1e-4, atol=1e-4)
    for name in ("mean", "var"):
        np.testing.assert_allclose(state_o["batch_stats"][name], state_t["batch_stats"][name],
                                   rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_statistics():
    x = 3 * jax.random.normal(jax.random.key(1), SHAPE) + 2
    theirs, ours = _pair(dtype=jnp.bfloat16)
    variables = _variables(theirs, x, jax.random.key(3))
    y_t, state_t = theirs.apply(variables, x, mutable=["batch_stats"])
    y_o, state_o = ours.apply(variables, x, mutable=["batch_stats"])
    assert y_o.dtype == jnp.bfloat16 and state_o["batch_stats"]["var"].dtype == jnp.float32
    np.testing.assert_allclose(np.float32(y_o), np.float32(y_t), atol=0.05)
    np.testing.assert_allclose(state_o["batch_stats"]["var"], state_t["batch_stats"]["var"],
                               rtol=1e-5)


def test_statistics_carry_their_own_gradients():
    """normalize_batch returns the batch mean and variance; a loss on them gets the gradient
    autodiff of E[x] and E[x^2] - E[x]^2 gives."""
    x = jax.random.normal(jax.random.key(1), (12, 3))
    scale, bias = jnp.ones(3), jnp.zeros(3)

    def reference(x):
        mean = jnp.mean(x, 0)
        return jnp.sum(mean * jnp.arange(3.0)) + jnp.sum(
            (jnp.mean(x * x, 0) - mean ** 2) * jnp.arange(1.0, 4.0))

    def ours(x):
        _, mean, var = normalize_batch(x, scale, bias, 1e-5)
        return jnp.sum(mean * jnp.arange(3.0)) + jnp.sum(var * jnp.arange(1.0, 4.0))

    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(reference)(x), rtol=1e-5, atol=1e-6)

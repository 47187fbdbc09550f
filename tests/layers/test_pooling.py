"""`max_pool` against flax.linen.max_pool (XLA's select_and_scatter gradient), ties included."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.upsampling import pad_for_pooling


def _reference(x, window, stride, ceil_mode):
    x = pad_for_pooling(x, window, stride, ceil_mode=ceil_mode)
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")


@pytest.mark.parametrize("size,window,stride,ceil_mode", [
    ((2, 8, 8, 3), 2, 2, False), ((2, 9, 7, 3), 2, 2, True), ((2, 9, 7, 3), 2, 2, False),
    ((1, 10, 10, 2), 3, 3, True), ((1, 9, 9, 2), 3, 2, True)])  # the last: overlapping windows
def test_values_and_gradients_equal_xla_max_pool(size, window, stride, ceil_mode):
    rng = np.random.default_rng(0)
    # Rounded values and ReLU zeros: many tied maxima, whose gradient must go to the first one.
    x = jnp.asarray(np.maximum(np.round(rng.standard_normal(size)), 0), jnp.float32)
    ours, ours_vjp = jax.vjp(lambda x: max_pool(x, window, stride, ceil_mode=ceil_mode), x)
    theirs, theirs_vjp = jax.vjp(lambda x: _reference(x, window, stride, ceil_mode), x)
    np.testing.assert_array_equal(ours, theirs)
    cotangent = jnp.asarray(rng.standard_normal(ours.shape), jnp.float32)
    np.testing.assert_array_equal(ours_vjp(cotangent)[0], theirs_vjp(cotangent)[0])

"""`max_pool` against flax.linen.max_pool (XLA's select_and_scatter gradient), ties included."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.upsampling import pad_for_pooling


def _reference(x, window, stride, ceil_mode, padding="VALID"):
    x = pad_for_pooling(x, window, stride, ceil_mode=ceil_mode)
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)


@pytest.mark.parametrize("size,window,stride,ceil_mode,padding", [
    ((2, 8, 8, 3), 2, 2, False, "VALID"), ((2, 9, 7, 3), 2, 2, True, "VALID"),
    ((2, 9, 7, 3), 2, 2, False, "VALID"), ((1, 10, 10, 2), 3, 3, True, "VALID"),
    # Overlapping windows: Caffe's ceil mode, ResNet's stem, AlexNet's (DeepPose) 'SAME'.
    ((1, 9, 9, 2), 3, 2, True, "VALID"), ((2, 12, 11, 3), 3, 2, False, ((1, 1), (1, 1))),
    ((2, 13, 10, 3), 3, 2, False, "SAME")])
def test_values_and_gradients_equal_xla_max_pool(size, window, stride, ceil_mode, padding):
    rng = np.random.default_rng(0)
    # Rounded values and ReLU zeros: many tied maxima, whose gradient must go to the first one.
    x = jnp.asarray(np.maximum(np.round(rng.standard_normal(size)), 0), jnp.float32)
    ours, ours_vjp = jax.vjp(lambda x: max_pool(x, window, stride, padding=padding,
                                                ceil_mode=ceil_mode), x)
    theirs, theirs_vjp = jax.vjp(lambda x: _reference(x, window, stride, ceil_mode, padding), x)
    np.testing.assert_array_equal(ours, theirs)
    cotangent = jnp.asarray(rng.standard_normal(ours.shape), jnp.float32)
    np.testing.assert_array_equal(ours_vjp(cotangent)[0], theirs_vjp(cotangent)[0])

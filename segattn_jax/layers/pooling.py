"""Max pooling whose backward pass is fast on XLA:CPU.

XLA differentiates `reduce_window` max pooling with `select_and_scatter`, which XLA:CPU runs 2-4x
slower than PyTorch. On CPU `max_pool` instead takes the max by elementwise selects whose
gradient goes to each window's *first* maximum, exactly where `select_and_scatter` sends it (ties
included): `layers/upsampling.tiled_max` for windows that tile the input (window == stride,
every VGG/FCN/U-Net pool; its gradient one select per input element, written as a reshape),
`strided_max` for others (ResNet's, Inception's and AlexNet's 3x3/2). Forward + backward on 2
cores: FCN-8s's paper-size pool1 39-44 ms, PyTorch's 104-108 ms, the mask of the first maximum
that this replaced 119-122 ms (and `select_and_scatter` 301 ms on an earlier VM); ResNet-50's
stem pool 25 ms, PyTorch's 27 ms, `select_and_scatter` 104 ms. Other backends use
`flax.linen.max_pool` unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from segattn_jax.layers.upsampling import (IntOrPair, _pair, lowest_value, pad_for_pooling,
                                           strided_max, tiled_max)


def max_pool(x: jax.Array, window: IntOrPair, stride: IntOrPair, *,
             padding: str | Sequence[tuple[int, int]] = "VALID",
             ceil_mode: bool = False) -> jax.Array:
    """Max pooling of NHWC `x`, as `flax.linen.max_pool(x, window, stride, padding)`: padding
    'VALID', 'SAME' or (low, high) pairs for H and W, padded positions never winning;
    `ceil_mode=True` also keeps partial last windows (Caffe)."""
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(x.shape[1:3], window, stride, padding)
    if any(lo or hi for lo, hi in padding):
        x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=lowest_value(x.dtype))
    x = pad_for_pooling(x, window, stride, ceil_mode=ceil_mode)

    def native(x):
        return nn.max_pool(x, window, strides=stride, padding="VALID")

    def cpu(x):
        return (tiled_max(x, window) if window == stride else strided_max(x, window, stride))[0]

    return lax.platform_dependent(x, cpu=cpu, default=native)

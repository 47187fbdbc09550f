"""Batch norm as the backbones' released checkpoints use it, and frozen for detection fine-tuning.

Detection papers (Faster/Mask R-CNN, FPN) fine-tune ImageNet backbones with batches of one or two
images, too few for batch statistics: they freeze batch norm into a fixed affine map of the
ImageNet statistics. `FrozenBatchNorm` is that map with exactly `flax.linen.BatchNorm`'s variable
names and shapes (params scale/bias, batch_stats mean/var), so the same checkpoint loads into either.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class FrozenBatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias with every variable held constant.

    Gradients reach the input but never the statistics or the affine parameters (they pass through
    `stop_gradient`), so an optimizer leaves them where the imported checkpoint put them.
    """

    use_scale: bool = True
    use_bias: bool = True
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32).value
        multiplier = jax.lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            multiplier = multiplier * self.param("scale", nn.initializers.ones, (features,))
        offset = -mean * multiplier
        if self.use_bias:
            offset = offset + self.param("bias", nn.initializers.zeros, (features,))
        multiplier, offset = jax.lax.stop_gradient((multiplier, offset))
        return (x * multiplier.astype(self.dtype) + offset.astype(self.dtype)).astype(self.dtype)


def batch_norm(*, frozen: bool, train: bool, use_scale: bool, momentum: float, epsilon: float,
               dtype: Any, name: str) -> nn.Module:
    """`flax.linen.BatchNorm` (batch statistics in training, running averages at test), or
    `FrozenBatchNorm` (running averages always, nothing trained) when `frozen`."""
    if frozen:
        return FrozenBatchNorm(use_scale=use_scale, epsilon=epsilon, dtype=dtype, name=name)
    return nn.BatchNorm(use_running_average=not train, use_scale=use_scale, momentum=momentum,
                        epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, name=name)

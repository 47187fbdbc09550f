"""Batch norm as the backbones' released checkpoints use it, and frozen for detection fine-tuning;
AlexNet's local response normalization (DeepPose's network).

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


def local_response_norm(x: jax.Array, depth_radius: int = 2, bias: float = 2.0,
                        alpha: float = 1e-4, beta: float = 0.75) -> jax.Array:
    """AlexNet's local response normalization across channels (Krizhevsky et al. 2012, sec.
    3.3: n = 5, k = 2, alpha = 1e-4, beta = 0.75), as DeepPose's network uses it:
    x / (bias + alpha * sum of x^2 over the 2 * depth_radius + 1 nearest channels)^beta.

    Same arguments and meaning as `tf.nn.local_response_normalization` (whose alpha multiplies
    the sum, not the sum / n as Caffe's does: pass alpha / n to match a Caffe net)."""
    squares = jnp.square(x.astype(jnp.float32))
    window = 2 * depth_radius + 1
    summed = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1,) * (x.ndim - 1) + (window,),
                                   (1,) * x.ndim,
                                   [(0, 0)] * (x.ndim - 1) + [(depth_radius, depth_radius)])
    return (x.astype(jnp.float32) * (bias + alpha * summed) ** -beta).astype(x.dtype)


def gaussian_kernel_1d(size: int, sigma: float) -> jax.Array:
    """A normalized 1-D Gaussian of `size` taps (odd) and standard deviation `sigma`."""
    if size % 2 != 1:
        raise ValueError(f"The Gaussian window must have an odd size; got {size}.")
    taps = jnp.arange(size, dtype=jnp.float32) - size // 2
    weights = jnp.exp(-0.5 * (taps / sigma) ** 2)
    return weights / weights.sum()


def _banded(kernel: jax.Array, size: int) -> jax.Array:
    """The (size, size) matrix of a 'SAME' zero-padded 1-D convolution with the odd `kernel`."""
    half = kernel.shape[0] // 2
    offsets = jnp.arange(size)[None, :] - jnp.arange(size)[:, None] + half  # column - row + half
    inside = (offsets >= 0) & (offsets < kernel.shape[0])
    return jnp.where(inside, kernel[jnp.clip(offsets, 0, kernel.shape[0] - 1)], 0.0)


def _gaussian_blur(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Each channel of NHWC `x` blurred by the separable `kernel`, zero padding ('SAME'): two
    products with banded matrices, which XLA:CPU runs far faster than a grouped convolution
    (Farabet's train step at 320x240: 3.6 -> 3.1 s with the three scales' normalization)."""
    rows = _banded(kernel, x.shape[1]).astype(x.dtype)
    cols = _banded(kernel, x.shape[2]).astype(x.dtype)
    return jnp.einsum("ij,njwc,vw->nivc", rows, x, cols)


def local_contrast_norm(x: jax.Array, size: int = 15, sigma: float | None = None,
                        epsilon: float = 1e-4) -> jax.Array:
    """Local contrast normalization of each channel of NHWC `x` (Jarrett et al. 2009; Farabet et
    al. 2013 on the Y channel, 15x15 neighbourhoods): subtract the Gaussian-weighted local mean,
    then divide by the Gaussian-weighted local standard deviation where it exceeds its mean over
    the image (so flat regions are not amplified). Border windows are renormalized by the
    kernel mass inside the image, so the image's edge does not darken them."""
    kernel = gaussian_kernel_1d(size, sigma if sigma is not None else size / 4)
    x = x.astype(jnp.float32)
    mass = _gaussian_blur(jnp.ones_like(x[..., :1]), kernel)
    centred = x - _gaussian_blur(x, kernel) / mass
    deviation = jnp.sqrt(_gaussian_blur(jnp.square(centred), kernel) / mass)
    floor = jnp.mean(deviation, axis=(1, 2), keepdims=True)
    return centred / jnp.maximum(jnp.maximum(deviation, floor), epsilon)

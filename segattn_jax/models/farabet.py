"""The multi-scale convolutional network of Farabet, Couprie, Najman & LeCun, "Learning
Hierarchical Features for Scene Labeling", PAMI 2013.

The image, in YUV, is made into a pyramid of `scales` images, each half the size of the one
before; each is normalized (Y: local contrast normalization over 15x15 Gaussian neighbourhoods;
U and V: zero mean and unit variance over the image). One convnet with shared weights runs on
every scale: two stages of 7x7 convolution, tanh and 2x2 max pooling, and a last 7x7
convolution. Each scale's feature map is upsampled to the first scale's (a quarter of the input's
size), the maps are concatenated, so every location sees the context of all scales, and a
per-location classifier scores the classes; the scores are upsampled bilinearly to the input.
With `scales=1` it is the paper's single-scale baseline. The paper's superpixel vote is
`ops/superpixels.py`, applied by the segmentation task when the input pipeline makes segments.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.layers.conv import Conv
from segattn_jax.layers.normalization import local_contrast_norm
from segattn_jax.layers.pooling import max_pool
from segattn_jax.ops.images import rgb_to_yuv

Array = Any
_STAGE_STRIDE = 4  # two 2x2 poolings: the features are at a quarter of each scale's size


def _resize(x: Array, height: int, width: int) -> Array:
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "linear", antialias=True)


def normalize_scale(yuv: Array, lcn_size: int) -> Array:
    """Y locally contrast-normalized, U and V standardized over the image (the paper's Sec. 3.1)."""
    y = local_contrast_norm(yuv[..., :1], lcn_size)
    uv = yuv[..., 1:]
    mean = jnp.mean(uv, axis=(1, 2), keepdims=True)
    std = jnp.std(uv, axis=(1, 2), keepdims=True)
    return jnp.concatenate([y, (uv - mean) / jnp.maximum(std, 1e-4)], axis=-1)


class _SharedConvNet(nn.Module):
    """f_s: conv-tanh-pool, conv-tanh-pool, conv; one set of weights for every scale."""

    features: tuple[int, int, int]
    kernel: int
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i, width in enumerate(self.features, start=1):
            x = Conv(width, (self.kernel, self.kernel), padding="SAME", dtype=self.dtype,
                     param_dtype=jnp.float32, name=f"conv{i}")(x)
            if i < len(self.features):
                x = max_pool(jnp.tanh(x), 2, 2)
        return x


class MultiscaleConvNet(nn.Module):
    """Images (N, H, W, 3) RGB in [0, 1] -> logits (N, H, W, K). H and W must be multiples of
    4 * 2^(scales - 1).

    Attributes:
      num_classes: K.
      scales: pyramid levels (3 in the paper; 1 = the single-scale baseline).
      features: the convnet's three stages' widths (the paper's 16, 64, 256).
      kernel: every convolution's size (7).
      hidden: the classifier's hidden layer (tanh); 0 = linear, as the paper's first classifier.
      lcn_size: the Y channel's normalization window (15).
      dropout_rate: dropout on the concatenated features when training.
      dtype: compute dtype; parameters stay float32 and logits are returned in float32.
    """

    num_classes: int
    scales: int = 3
    features: tuple[int, int, int] = (16, 64, 256)
    kernel: int = 7
    hidden: int = 0
    lcn_size: int = 15
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"MultiscaleConvNet expects RGB images (N, H, W, 3); got shape "
                             f"{images.shape}.")
        n, height, width, _ = images.shape
        multiple = _STAGE_STRIDE * 2 ** (self.scales - 1)
        if self.scales < 1 or height % multiple or width % multiple:
            raise ValueError(f"With {self.scales} scales, H and W must be multiples of "
                             f"{multiple}; got {height}x{width}. Resize or crop the input.")
        yuv = rgb_to_yuv(images.astype(jnp.float32))
        convnet = _SharedConvNet(tuple(self.features), self.kernel, self.dtype, name="convnet")
        coarse = (height // _STAGE_STRIDE, width // _STAGE_STRIDE)
        maps = []
        for s in range(self.scales):
            level = yuv if s == 0 else _resize(yuv, height >> s, width >> s)
            features = convnet(normalize_scale(level, self.lcn_size).astype(self.dtype))
            maps.append(features if s == 0 else _resize(features, *coarse))
        x = jnp.concatenate(maps, axis=-1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        if self.hidden:
            x = jnp.tanh(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(x))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return _resize(logits.astype(jnp.float32), height, width)

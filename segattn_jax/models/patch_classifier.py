"""The sliding-window patch classifier and the same network convolutionalized (the lectures' first
segmentation idea; Long et al., FCN, CVPR 2015, Sec. 3.1-3.2).

A small CNN labels the centre pixel of a P x P patch: blocks of valid convolutions (3x3 by
default), each block ending in a max pool of stride 2 (3x3 windows by default), then fully
connected layers fc6 (over the last k x k x C map), fc7 and a class score; with `hidden=0` the
score is a linear classifier of that map itself (Pinheiro & Collobert's instance network,
models/pinheiro.py). Slid over an image, it runs once per pixel on that pixel's patch
(`sliding_window_logits`): every overlapping patch recomputes what its neighbours computed.

The same weights convolutionalized (`PatchClassifier.__call__`) label every pixel in one pass:
fc6's kernel is reshaped to a k x k convolution, fc7 and the score are 1x1 convolutions, and so
that the output keeps every pixel rather than one per 2^blocks (the pools' stride), the pools run
at stride 1 and every later layer is dilated by the product of the strides before it ("filter
rarefaction", which FCN shows equal to shift-and-stitch). Both ways give the same label map; the
dense one shares the overlapping patches' work. Training the dense net on whole images is
training the patch classifier on every patch of them at once (FCN Sec. 4.4).

Both pad the image with zeros ((P - 1) // 2 before, P // 2 after), so a border pixel's patch is
defined.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from segattn_jax.layers.conv import conv2d
from segattn_jax.layers.pooling import max_pool

Array = Any

_POOL_STRIDE = 2
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}
_he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


def patch_size(features: Sequence[Sequence[int]], fc6_kernel: int, conv_kernel: int = 3,
               pool_window: int = 3) -> int:
    """P, the receptive field of one output: fc6's window traced back through the blocks."""
    size = fc6_kernel
    for block in reversed(features):
        size = (size - 1) * _POOL_STRIDE + pool_window + (conv_kernel - 1) * len(block)
    return size


def _dilated_max_pool(x: Array, window: int, dilation: int) -> Array:
    """Stride-1 max pool whose window taps are `dilation` apart (a strided pool, rarefied): the
    max of shifted slices, so its gradient is plain elementwise max's."""
    span = (window - 1) * dilation
    height, width = x.shape[1] - span, x.shape[2] - span
    taps = [x[:, i * dilation:i * dilation + height, j * dilation:j * dilation + width]
            for i in range(window) for j in range(window)]
    out = taps[0]
    for tap in taps[1:]:
        out = jnp.maximum(out, tap)
    return out


class _Conv(nn.Module):
    """A valid k x k convolution (no activation) whose dilation is chosen per call (1 on
    patches)."""

    features: int
    kernel_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, dilation: int) -> Array:
        k = self.kernel_size
        kernel = self.param("kernel", _he_normal, (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = conv2d(x, kernel.astype(self.dtype), padding="VALID", dilation=dilation)
        return y + bias.astype(self.dtype)


class _FullyConnected(nn.Module):
    """fc6: a dense layer (no activation) over a k x k x C map, stored as a (k*k*C, features)
    matrix. On a k x k input it is that matrix product; with `dilation` it is the same weights
    reshaped to a k x k convolution over any larger map (the convolutionalization)."""

    features: int
    window: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, dilation: int | None) -> Array:
        n, _, _, channels = x.shape
        kernel = self.param("kernel", _he_normal,
                            (self.window * self.window * channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if dilation is None:
            if x.shape[1:3] != (self.window, self.window):
                raise ValueError(f"fc6 takes a {self.window}x{self.window} map per patch; got "
                                 f"{x.shape[1:3]}: the patch is not {self.window}x{self.window} "
                                 "after the blocks.")
            # Row-major flattening (i, j, c) matches the reshape to (k, k, C, F) below.
            return x.reshape(n, -1) @ kernel + bias
        kernel = kernel.reshape(self.window, self.window, channels, self.features)
        return conv2d(x, kernel, padding="VALID", dilation=dilation) + bias


class PatchClassifier(nn.Module):
    """Centre-pixel patch classifier: images (N, H, W, C) -> logits (N, H, W, K), convolutionalized.

    `classify_patches` is the classifier itself, (N, P, P, C) patches -> (N, K); the module-level
    `sliding_window_logits` slides it over an image. Both use the same variables.

    Attributes:
      num_classes: K, the classes of the centre pixel.
      features: conv widths, one tuple per block; every block ends with a max pool of stride 2.
      fc6_kernel: fc6's window, the map the last block leaves for one patch; with `features` it
        sets the patch size (`patch_size`): ((16, 16), (32, 32)) and 5 give 35 x 35.
      conv_kernel: every block convolution's size (3; Pinheiro's 8).
      pool_window: the pools' window (3, overlapping as AlexNet's; Pinheiro's 2).
      activation: 'relu' or 'tanh' (Pinheiro's), after every convolution and fc6/fc7.
      hidden: width of fc6 and fc7; 0 = neither: the class score is then fc6 itself, a linear
        classifier of the last block's k x k map.
      dropout_rate: dropout after fc6 and fc7 when training.
      dtype: compute dtype; parameters stay float32 and logits are returned in float32.
    """

    num_classes: int
    features: tuple[tuple[int, ...], ...] = ((16, 16), (32, 32))
    fc6_kernel: int = 5
    conv_kernel: int = 3
    pool_window: int = 3
    activation: str = "relu"
    hidden: int = 64
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @property
    def patch_size(self) -> int:
        return patch_size(self.features, self.fc6_kernel, self.conv_kernel, self.pool_window)

    @nn.compact
    def _logits(self, x: Array, *, dense: bool, train: bool) -> Array:
        """The network on a padded image (dense: one output per pixel) or on patches (one each)."""
        if self.fc6_kernel < 1 or not self.features or any(not block for block in self.features):
            raise ValueError(f"PatchClassifier needs fc6_kernel >= 1 and at least one conv in "
                             f"every block; got fc6_kernel={self.fc6_kernel}, "
                             f"features={self.features}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; valid: "
                             f"{sorted(ACTIVATIONS)}.")
        activation = ACTIVATIONS[self.activation]
        x = x.astype(self.dtype)
        dilation = 1
        for b, block in enumerate(self.features, start=1):
            for i, width in enumerate(block, start=1):
                x = activation(_Conv(width, self.conv_kernel, self.dtype,
                                     name=f"conv{b}_{i}")(x, dilation))
            window = self.pool_window
            if dense:
                x = _dilated_max_pool(x, window, dilation)
                dilation *= _POOL_STRIDE
            else:
                x = max_pool(x, window, _POOL_STRIDE)
        fc6_dilation = dilation if dense else None
        if not self.hidden:  # a linear classifier of the last map
            return _FullyConnected(self.num_classes, self.fc6_kernel, self.dtype, name="score")(
                x, fc6_dilation).astype(jnp.float32)
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = dropout(activation(_FullyConnected(self.hidden, self.fc6_kernel, self.dtype,
                                               name="fc6")(x, fc6_dilation)))
        x = dropout(activation(nn.Dense(self.hidden, dtype=self.dtype, name="fc7")(x)))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="score")(x).astype(jnp.float32)

    def pad(self, images: Array) -> Array:
        """Images with (P - 1) // 2 zeros before and P // 2 after: the frame every pixel's patch
        is taken from (the pixel sits at the patch's centre, or just before it for even P)."""
        if images.ndim != 4:
            raise ValueError(f"PatchClassifier expects images of shape (N, H, W, C); got shape "
                             f"{images.shape}.")
        size = self.patch_size
        frame = ((size - 1) // 2, size // 2)
        return jnp.pad(images, ((0, 0), frame, frame, (0, 0)))

    def __call__(self, images: Array, *, train: bool) -> Array:
        """Every pixel's logits in one pass of the convolutionalized net: (N, H, W, K)."""
        return self._logits(self.pad(images), dense=True, train=train)

    def classify_patches(self, patches: Array, *, train: bool = False) -> Array:
        """The centre pixel's logits of each P x P patch: (N, P, P, C) -> (N, K)."""
        size = self.patch_size
        if patches.ndim != 4 or patches.shape[1:3] != (size, size):
            raise ValueError(f"classify_patches takes patches of shape (N, {size}, {size}, C); "
                             f"got {patches.shape}.")
        return self._logits(patches, dense=False, train=train)


def sliding_window_logits(model: PatchClassifier, variables, images: Array) -> Array:
    """Every pixel's logits from its own patch, one image row of patches at a time: (N, H, W, K).

    The lectures' sliding window, literally: H x W runs of the classifier, nothing shared between
    overlapping patches. A function, not a module method, because it maps `model.apply` over the
    rows with `lax.map` (one row's patches in memory at a time).
    """
    n, height, width, channels = images.shape
    size = model.patch_size
    padded = model.pad(images)
    columns = jnp.arange(width)[:, None] + jnp.arange(size)[None, :]  # (W, P): each patch's columns

    def row_logits(row):
        strip = lax.dynamic_slice_in_dim(padded, row, size, axis=1)  # (N, P, W + P - 1, C)
        patches = strip[:, :, columns].transpose(0, 2, 1, 3, 4)  # (N, W, P, P, C)
        logits = model.apply(variables, patches.reshape(n * width, size, size, channels),
                             method=PatchClassifier.classify_patches)
        return logits.reshape(n, width, -1)

    return lax.map(row_logits, jnp.arange(height)).transpose(1, 0, 2, 3)


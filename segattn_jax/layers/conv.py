"""Convolution that is fast on XLA:CPU, and XLA's native convolution everywhere else.

Why: measured per layer on VGG16 (benchmarks/conv_passes.py), XLA:CPU's forward and input-gradient
convolutions are level with PyTorch's, but its *kernel* gradient is 3-10x slower than its own
forward (Eigen evaluates it as a convolution whose "kernel" is the whole output gradient), and
convolutions with few output pixels and large kernels (FCN's fc6: 7x7 over a 14x14 map) or 1x1
kernels are slow in every pass, and so is the forward of layers with few input features and many
output pixels (FCN's conv1_1). Here the same numbers come from other formulations where they win:

- kernel gradient: `g^T @ patches(x)` (im2col) GEMMs with a long contraction, over cache-sized
  chunks of patch rows for stride 1, on layers large and wide enough for it to win, RGB inputs
  excepted (`use_matmul_kernel_grad`);
- forward and input gradient: one GEMM `patches(x) @ W` when the patch matrix is no taller than it
  is wide (output pixels <= kh * kw * C: fc-as-conv layers, late small maps) or the kernel is 1x1;
  the input gradient is then the transpose of the patch gather (col2im) that autodiff derives;
- forward of layers with few taps (kh * kw * C <= 32: 3x3 over RGB, 5x5 over gray): a sum of
  shifted input slices times kernel rows, one fused loop instead of a GEMM 27 deep
  (`use_shifted_sum_forward`);
- otherwise XLA's own forward and input-gradient convolutions.

The choice between this and XLA's convolution is made per backend when lowering
(`lax.platform_dependent`), so GPU and TPU run `lax.conv_general_dilated` untouched. Use it through
`Conv` (a `flax.linen.Conv` with the same parameters, names and padding modes) or `conv2d`.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from segattn_jax.layers.normalization import batch_norm
from segattn_jax.layers.upsampling import _pair, conv_transpose_cropped

_NHWC_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
MATMUL_KERNEL_GRAD_MIN_MACS = 2**28  # see use_matmul_kernel_grad
MATMUL_KERNEL_GRAD_MIN_IN_FEATURES = 16  # see use_matmul_kernel_grad
SHIFTED_SUM_MAX_TAPS = 32  # see use_shifted_sum_forward
KERNEL_GRAD_CHUNK_BYTES = 2**21  # bytes of patch rows per step of _kernel_grad_unstrided
Padding = str | Sequence[tuple[int, int]]


def _explicit_padding(x_hw: Sequence[int], kernel_hw: Sequence[int], strides: tuple[int, int],
                      dilation: tuple[int, int], padding: Padding) -> tuple[tuple[int, int], ...]:
    """'SAME' / 'VALID' / [(lo, hi), (lo, hi)] -> explicit (lo, hi) pairs, as lax resolves them."""
    if isinstance(padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel_hw, dilation)]
        return tuple(lax.padtype_to_pads(tuple(x_hw), dilated, strides, padding))
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    if len(pads) != 2:
        raise ValueError(f"padding needs one (low, high) pair per spatial axis, got {padding!r}.")
    return pads


def _output_size(size: int, kernel: int, stride: int, dilation: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - (kernel - 1) * dilation - 1) // stride + 1


def _pad_spatial(x: jax.Array, pads: Sequence[tuple[int, int]]) -> jax.Array:
    """NHWC x zero-padded by explicit (lo, hi) pairs on H and W (negative pairs crop)."""
    return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])


def _taps(x: jax.Array, kernel_hw: Sequence[int], strides: tuple[int, int],
          pads: Sequence[tuple[int, int]], dilation: tuple[int, int]) -> list[jax.Array]:
    """The strided slices of padded x that kernel tap (a, b) multiplies, (N, Ho, Wo, C) each, in
    (row, col) order: the pieces of `patches` and of `_shifted_sum_conv`."""
    kh, kw = kernel_hw
    (sh, sw), (dh, dw) = strides, dilation
    out_h = _output_size(x.shape[1], kh, sh, dh, pads[0])
    out_w = _output_size(x.shape[2], kw, sw, dw, pads[1])
    padded = _pad_spatial(x, pads)
    if (kh, kw, sh, sw) == (1, 1, 1, 1):
        return [padded[:, :out_h, :out_w]]
    return [lax.slice(padded, (0, a * dh, b * dw, 0),
                      (x.shape[0], a * dh + (out_h - 1) * sh + 1, b * dw + (out_w - 1) * sw + 1,
                       x.shape[3]), (1, sh, sw, 1))
            for a in range(kh) for b in range(kw)]


def patches(x: jax.Array, kernel_hw: Sequence[int], strides: tuple[int, int],
            pads: Sequence[tuple[int, int]], dilation: tuple[int, int]) -> jax.Array:
    """im2col: (N, Ho, Wo, kh * kw * C), taps in (row, col, channel) order = HWIO kernel rows.

    Built from strided slices, so its autodiff transpose (col2im) is pads and adds.
    """
    taps = _taps(x, kernel_hw, strides, pads, dilation)
    return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _matmul(a: jax.Array, b: jax.Array, contracting: tuple[int, int], out_dtype) -> jax.Array:
    """2-D dot accumulated in float32 (bfloat16 inputs included), returned in `out_dtype`."""
    out = lax.dot_general(a, b, (((contracting[0],), (contracting[1],)), ((), ())),
                          preferred_element_type=jnp.float32)
    return out.astype(out_dtype)


def _conv_as_matmul(x, kernel, strides, pads, dilation):
    """`patches(x) @ W`: XLA differentiates it into matmuls and col2im."""
    kh, kw, c, o = kernel.shape
    cols = patches(x, (kh, kw), strides, pads, dilation)
    n, out_h, out_w, k = cols.shape
    y = _matmul(cols.reshape(n * out_h * out_w, k), kernel.reshape(k, o), (1, 0), x.dtype)
    return y.reshape(n, out_h, out_w, o)


def _native_conv(x, kernel, strides, pads, dilation):
    return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                    dimension_numbers=_NHWC_DIMENSIONS)


def use_shifted_sum_forward(kernel_shape: Sequence[int]) -> bool:
    """Whether the forward runs as `_shifted_sum_conv` on CPU: measured to win for 3x3 kernels
    over RGB (FCN-8s mini's conv1_1 14 -> 1.7 ms, SSD300's 30 -> 23 ms, Inception's stride-2 stem
    10 -> 6 ms) and 5x5 over gray, to tie at 72 taps (3x3 over 8 features) and to lose 3x at 147
    (ResNet's 7x7 stem over RGB)."""
    kh, kw, c, _ = kernel_shape
    return kh * kw * c <= SHIFTED_SUM_MAX_TAPS


def _shifted_sum_conv(x, kernel, strides, pads, dilation):
    """The convolution as a sum over taps (a, b, c) of strided input slices times kernel row
    (a, b, c): XLA fuses it into one loop over the output, accumulating in float32."""
    kh, kw, c, _ = kernel.shape
    weights = kernel.astype(jnp.float32).reshape(kh * kw, c, -1)
    total = None
    for tap, tap_weights in zip(_taps(x.astype(jnp.float32), (kh, kw), strides, pads, dilation),
                                weights):
        for channel in range(c):
            term = tap[..., channel:channel + 1] * tap_weights[channel]
            total = term if total is None else total + term
    return total.astype(x.dtype)


def _forward_conv(x, kernel, strides, pads, dilation):
    conv = _shifted_sum_conv if use_shifted_sum_forward(kernel.shape) else _native_conv
    return conv(x, kernel, strides, pads, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_cpu_passes(x, kernel, strides, pads, dilation):
    """Each pass in its fastest CPU formulation: the forward as `_forward_conv` picks, XLA's
    input gradient, and the kernel gradient as im2col GEMMs where they win."""
    return _forward_conv(x, kernel, strides, pads, dilation)


def _cpu_passes_fwd(x, kernel, strides, pads, dilation):
    return _forward_conv(x, kernel, strides, pads, dilation), (x, kernel)


def use_matmul_kernel_grad(kernel_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
    """Whether the kernel gradient runs as an im2col GEMM on CPU (else XLA's own): measured to
    win 2-9x for >= 64 output features on large layers (>= 2^28 multiply-adds), and to lose on
    narrow or small ones, where building the patch matrix costs more than the GEMM saves, and on
    RGB inputs (< 16 input features: the patch rows are 27 wide; VGG16's conv1_1 at 300x300 takes
    151 ms that way, 47 ms in XLA's)."""
    kh, kw, c, o = kernel_shape
    return (o >= 64 and c >= MATMUL_KERNEL_GRAD_MIN_IN_FEATURES
            and np.prod(out_shape[:3]) * kh * kw * c * o >= MATMUL_KERNEL_GRAD_MIN_MACS)


def _cpu_passes_bwd(strides, pads, dilation, residuals, g):
    x, kernel = residuals
    kh, kw, c, o = kernel.shape
    conv = functools.partial(_native_conv, strides=strides, pads=pads, dilation=dilation)
    if not use_matmul_kernel_grad(kernel.shape, g.shape):
        return jax.vjp(conv, x, kernel)[1](g)
    (dx,) = jax.vjp(lambda x: conv(x, kernel), x)[1](g)
    if strides == (1, 1):
        return dx, _kernel_grad_unstrided(x, g, kernel.shape, pads, dilation)
    cols = patches(x, (kh, kw), strides, pads, dilation)
    # g^T @ cols gives (O, K): the orientation XLA:CPU multiplies fastest for a long contraction.
    dk = _matmul(g.reshape(-1, o), cols.reshape(-1, kh * kw * c), (0, 0), kernel.dtype)
    return dx, dk.T.reshape(kh, kw, c, o)


def _kernel_grad_unstrided(x, g, kernel_shape, pads, dilation):
    """Stride-1 kernel gradient: im2col GEMMs over chunks of rows small enough to stay in cache.

    Flattened, the padded input's tap (a, b) is the row range starting at a*dh*Wp + b*dw, and
    the output gradient, zero-padded to the padded input's grid, lines up with it row for row (the
    padding rows are zero, so rows that wrap into the next image or row add nothing). A loop
    copies ~KERNEL_GRAD_CHUNK_BYTES of patch rows at a time from those ranges and multiplies them
    while they are in cache: VGG16's conv1_2 at 300x300, batch 2, 474 -> 203 ms, where one GEMM
    per tap over all rows (memory-bound copies) and a whole im2col matrix (415 MB) were slower.
    """
    kh, kw, c, o = kernel_shape
    padded = _pad_spatial(x, pads)
    n, hp, wp, _ = padded.shape
    offsets = [a * dilation[0] * wp + b * dilation[1] for a in range(kh) for b in range(kw)]
    length = n * hp * wp - offsets[-1]  # the rows every tap's range covers
    patch_width = kh * kw * c
    chunk = min(length, max(128, 2 ** int(np.log2(
        KERNEL_GRAD_CHUNK_BYTES / (patch_width * x.dtype.itemsize)))))
    chunks = -(-length // chunk)
    extra = chunks * chunk - length
    g = jnp.pad(g, ((0, 0), (0, hp - g.shape[1]), (0, wp - g.shape[2]), (0, 0))).reshape(-1, o)
    g = jnp.pad(g[:length], ((0, extra), (0, 0)))
    rows = jnp.pad(padded.reshape(-1, c), ((0, extra), (0, 0)))

    def add_chunk(i, total):
        start = i * chunk
        cols = jnp.concatenate([lax.dynamic_slice_in_dim(rows, start + offset, chunk)
                                for offset in offsets], axis=1)
        # g^T @ cols: (O, K), the orientation XLA:CPU multiplies fastest for a long contraction.
        return total + _matmul(lax.dynamic_slice_in_dim(g, start, chunk), cols, (0, 0),
                               jnp.float32)

    total = lax.fori_loop(0, chunks, add_chunk, jnp.zeros((o, patch_width), jnp.float32))
    return total.T.reshape(kh, kw, c, o).astype(x.dtype)


_conv_cpu_passes.defvjp(_cpu_passes_fwd, _cpu_passes_bwd)


def use_matmul_forward(x_shape: Sequence[int], kernel_shape: Sequence[int],
                       out_hw: Sequence[int]) -> bool:
    """Whether the forward (and input gradient) run as one GEMM on CPU: 1x1 kernels, and patch
    matrices no taller than wide (few output pixels for the kernel's size: fc layers as convs)."""
    kh, kw, c, _ = kernel_shape
    return (kh, kw) == (1, 1) or x_shape[0] * out_hw[0] * out_hw[1] <= kh * kw * c


def _conv_cpu(x, kernel, strides, pads, dilation, out_hw):
    if use_matmul_forward(x.shape, kernel.shape, out_hw):
        return _conv_as_matmul(x, kernel, strides, pads, dilation)
    return _conv_cpu_passes(x, kernel, strides, pads, dilation)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
           padding: Padding = "SAME", dilation: int | Sequence[int] = 1) -> jax.Array:
    """NHWC x HWIO cross-correlation, equal to `lax.conv_general_dilated` (values and gradients).

    The CPU formulation (module docstring) is picked when lowering for CPU; other backends get
    `lax.conv_general_dilated` itself.
    """
    if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d takes x (N, H, W, C) and kernel (kh, kw, C, O); got {x.shape} "
                         f"and {kernel.shape}.")
    strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
    pads = _explicit_padding(x.shape[1:3], kernel.shape[:2], strides, dilation, padding)
    out_hw = [_output_size(x.shape[1 + i], kernel.shape[i], strides[i], dilation[i], pads[i])
              for i in range(2)]
    if min(out_hw) < 1:
        raise ValueError(f"Input {x.shape[1:3]} is smaller than the (dilated) kernel "
                         f"{kernel.shape[:2]} with padding {pads}: no output; pad more or use a "
                         "larger input.")
    args = (strides, pads, dilation)
    return lax.platform_dependent(
        x, kernel,
        cpu=lambda x, kernel: _conv_cpu(x, kernel, *args, out_hw),
        default=lambda x, kernel: _native_conv(x, kernel, *args))


def conv2d_transpose(y: jax.Array, kernel: jax.Array, input_hw: Sequence[int],
                     strides: int | Sequence[int] = 1, padding: Padding = "SAME") -> jax.Array:
    """The exact adjoint of `conv2d(x, kernel, strides, padding)` for x of spatial size `input_hw`.

    It is that conv's gradient w.r.t. x applied to y, as `tf.nn.conv2d_transpose(y, kernel,
    output_shape, strides, padding)`: y (N, Ho, Wo, O) -> (N, *input_hw, C) with the forward
    kernel (kh, kw, C, O). `input_hw` is needed because a strided conv maps several input sizes to
    one output size (8 and 7 both give 4 at stride 2, pad 1); rows no window reaches get zeros.
    Runs the sub-pixel `conv_transpose_cropped` (layers/upsampling.py).
    """
    if y.ndim != 4 or kernel.ndim != 4 or kernel.shape[3] != y.shape[3]:
        raise ValueError(f"conv2d_transpose takes y (N, Ho, Wo, O) and the forward kernel "
                         f"(kh, kw, C, O); got {y.shape} and {kernel.shape}.")
    strides, input_hw = _pair(strides, "strides"), _pair(input_hw, "input_hw")
    pads = _explicit_padding(input_hw, kernel.shape[:2], strides, (1, 1), padding)
    forward_hw = tuple(_output_size(n, k, s, 1, p)
                       for n, k, s, p in zip(input_hw, kernel.shape[:2], strides, pads))
    if forward_hw != tuple(y.shape[1:3]):
        raise ValueError(f"y has spatial size {tuple(y.shape[1:3])}, but conv2d with kernel "
                         f"{kernel.shape[:2]}, strides {strides} and padding {padding!r} maps an "
                         f"input of size {input_hw} to {forward_hw}; pass the forward conv's input "
                         "size as input_hw.")
    return conv_transpose_cropped(y, jnp.swapaxes(kernel, 2, 3), strides,
                                  [lo for lo, _ in pads], input_hw)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated`'s signature (what `flax.linen.Conv` calls): 2-D NHWC/HWIO
    convolutions without groups or input dilation go through `conv2d`, the rest to lax as is."""
    plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
             and lhs_dilation in (None, (1, 1), [1, 1]) and precision is None
             and preferred_element_type is None
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_DIMENSIONS))
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    return conv2d(lhs, rhs, window_strides, padding, 1 if rhs_dilation is None else rhs_dilation)


class Conv(nn.Conv):
    """`flax.linen.Conv` (same fields, parameters and padding modes) running `conv2d`: fast
    kernel gradients on CPU, XLA's native convolution on GPU/TPU. Every backbone uses it."""

    conv_general_dilated: Any = conv_general_dilated


class ConvBN(nn.Module):
    """Convolution without bias, batch norm, then ReLU (or no activation): the unit every
    Inception and ResNet layer is built from. The conv is `Conv` named "conv" and the norm is
    named "bn", so converters map released checkpoints onto fixed paths.

    Attributes:
      kernel: (kh, kw); strides and padding as `flax.linen.Conv` takes them ('SAME', 'VALID' or
        explicit pairs).
      use_scale: batch norm's learned scale; TF-Slim's Inception checkpoints have none (the
        following ReLU conv absorbs it), Keras/torchvision ResNets have one.
      frozen_bn: batch norm as a fixed affine map of the stored statistics (`FrozenBatchNorm`).
      groups: the conv's feature groups (ResNeXt's cardinality).
    """

    features: int
    kernel: tuple[int, int]
    strides: int | tuple[int, int] = 1
    padding: Padding = "SAME"
    activation: bool = True
    use_scale: bool = True
    momentum: float = 0.99
    epsilon: float = 1e-3
    frozen_bn: bool = False
    dtype: Any = jnp.float32
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv(self.features, tuple(self.kernel), strides=self.strides, padding=self.padding,
                 use_bias=False, kernel_init=nn.initializers.he_normal(), dtype=self.dtype,
                 param_dtype=jnp.float32, feature_group_count=self.groups, name="conv")(x)
        x = batch_norm(frozen=self.frozen_bn, train=train, use_scale=self.use_scale,
                       momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype,
                       name="bn")(x)
        return nn.relu(x) if self.activation else x


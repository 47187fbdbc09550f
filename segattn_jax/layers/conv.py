"""Convolution that is fast on XLA:CPU, and XLA's native convolution everywhere else.

Why: measured per layer and pass (benchmarks/conv_passes.py, beside PyTorch's), XLA:CPU's
convolutions are level with PyTorch's at VGG16's widths, but lose where a pass produces few
features per pixel (8 or fewer: the mini rows' first layers run at a fraction of the speed of the
same multiply-adds over 32), where its kernel gradient has the padding inside the convolution
(10-40% slower on VGG16's padded 3x3 layers; ~50x at FCN's pad 100), on few output pixels with
large kernels (FCN's fc6: 7x7 over a 14x14 map) or 1x1 kernels, and in the forward of layers with
few input features and many output pixels (FCN's conv1_1), and on atrous layers over small maps,
whose taps into the padding it multiplies out (SSD's fc6). Here those passes come from other
formulations:

- forward and input gradient: one GEMM `patches(x) @ W` when the kernel is 1x1, or when the patch
  matrix has few rows, at most 512 and no more than its kh * kw * C columns (fc-as-conv layers,
  the last small maps of a batch); the input gradient is then the transpose of the patch gather
  (col2im) that autodiff derives;
- forward of layers with few taps (kh * kw * C <= 32: 3x3 over RGB, 5x5 over gray): a sum of
  shifted input slices times kernel rows, one fused loop instead of a GEMM 27 deep
  (`use_shifted_sum_forward`);
- passes that produce <= 8 features at stride 1 (forward and kernel gradient: the outputs; input
  gradient: the inputs): the convolution on 2x2 blocks of pixels, 4x the features at a quarter of
  the pixels (`use_space_to_depth`; in inference the blocks come from a 2x2/2 convolution that
  XLA cannot fuse with the input's producer, `_pixel_blocks`);
- atrous (dilated) stride-1 layers whose taps read padding for over a quarter of their
  multiply-adds (SSD's fc6): one GEMM per tap over only the outputs where it reads the image,
  in every pass (`use_tap_gemms`), skipping the padding as PyTorch's convolution does;
- kernel gradient: XLA's, on the input padded beforehand, without the output rows and columns
  whose windows read only padding;
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
from jax import lax

from segattn_jax.layers.normalization import batch_norm
from segattn_jax.layers.upsampling import _pair, _tiles, _untile, conv_transpose_cropped

_NHWC_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
SHIFTED_SUM_MAX_TAPS = 32  # see use_shifted_sum_forward
SPACE_TO_DEPTH_MAX_FEATURES = 8  # see use_space_to_depth
MATMUL_MAX_ROWS = 512  # see use_matmul_forward
TAP_GEMM_MAX_IMAGE_FRACTION = 0.75  # see use_tap_gemms
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


def _conv_as_matmul(x, kernel, strides, pads, dilation):
    """`patches(x) @ W`, accumulated in float32 (bfloat16 inputs included): XLA differentiates it
    into matmuls and col2im."""
    kh, kw, c, o = kernel.shape
    cols = patches(x, (kh, kw), strides, pads, dilation)
    n, out_h, out_w, k = cols.shape
    y = jnp.dot(cols.reshape(n * out_h * out_w, k), kernel.reshape(k, o),
                preferred_element_type=jnp.float32)
    return y.astype(x.dtype).reshape(n, out_h, out_w, o)


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


def use_space_to_depth(features: int, kernel_shape: Sequence[int], strides: tuple[int, int],
                       dilation: tuple[int, int]) -> bool:
    """Whether a pass that produces `features` per pixel (the forward and the kernel gradient: the
    layer's outputs; the input gradient: its inputs) runs as `_space_to_depth_conv` on CPU:
    undilated stride-1 kernels larger than 1x1, at most SPACE_TO_DEPTH_MAX_FEATURES, where XLA's
    convolutions run at a fraction of their speed over 32 or more. Measured per pass (2-core EPYC,
    ms, XLA's vs on blocks): FCN-8s mini's conv1_2 (8x182x182, 8 -> 8) forward 8.1 vs 5.6, input
    gradient 8.2 vs 5.1, kernel gradient 12.5 vs 9.3; 4 -> 8 at 64x64 (Inception's 1/8 width)
    1.1 vs 0.35, 1.9 vs 0.6, 0.5 vs 0.4; 512 -> 8 at 38x38 forward 4.0 vs 2.9; the input gradient
    of 8 -> 16 at 91x91 3.1 vs 2.5; at 16 features each pass loses (16 -> 16: 3.1 vs 4.2, 3.1 vs
    4.5, 3.5 vs 6.3)."""
    kh, kw = kernel_shape[:2]
    return (strides == (1, 1) and dilation == (1, 1) and kh * kw > 1
            and features <= SPACE_TO_DEPTH_MAX_FEATURES)


def _block_kernel(kernel: jax.Array, blocks_hw: Sequence[int]) -> jax.Array:
    """The 2x2-blocked kernel of `_space_to_depth_conv`: (bh, bw, 4C, 4O) with entry
    [bi, bj, (si, sj, c), (ti, tj, o)] = kernel[2bi + si - ti, 2bj + sj - tj, c, o] (zero outside
    the kernel): output pixel (ti, tj) of a block reads input pixel (si, sj) of the block (bi, bj)
    further on. Built from pads and reshapes, so its gradient is slices and adds."""
    kh, kw, c, o = kernel.shape
    bh, bw = blocks_hw
    shifted = jnp.stack([jnp.stack([
        jnp.pad(kernel, ((ti, 2 * bh - kh - ti), (tj, 2 * bw - kw - tj), (0, 0), (0, 0)))
        for tj in range(2)]) for ti in range(2)])  # (ti, tj, 2bh, 2bw, C, O)
    blocked = shifted.reshape(2, 2, bh, 2, bw, 2, c, o)  # (ti, tj, bi, si, bj, sj, c, o)
    return blocked.transpose(2, 4, 3, 5, 6, 0, 1, 7).reshape(bh, bw, 4 * c, 4 * o)


def _pixel_blocks(padded: jax.Array, *, by_convolution: bool) -> jax.Array:
    """(N, 2h, 2w, C) -> (N, h, w, 4C): each 2x2 block of pixels as features (si, sj, c).

    A reshape and transpose, or (`by_convolution`, for C <= SPACE_TO_DEPTH_MAX_FEATURES) the
    same permutation as a 2x2 stride-2 convolution with a 0/1 kernel, exact for finite inputs.
    Why the convolution: XLA:CPU fuses an elementwise producer into the transpose and runs the
    fused loop unvectorized; in inference, where nothing else keeps the producer's output, FCN-8s
    mini's conv1_1 (its shifted-sum forward) fused into conv1_2's blocks: the two layers took
    15.6 ms against 1.4 + 5.6 apart, 6.4 with the convolution (never fused with its producer),
    and the network's `predict` 31.4 ms against 22.8. In training the input is kept for the
    gradients anyway, and the convolution would only add work (the mini step 3-5% slower)."""
    n, height, width, c = padded.shape
    if by_convolution and c <= SPACE_TO_DEPTH_MAX_FEATURES:
        permutation = jnp.eye(4 * c, dtype=padded.dtype).reshape(2, 2, c, 4 * c)
        return lax.conv_general_dilated(padded, permutation, (2, 2), ((0, 0), (0, 0)),
                                        dimension_numbers=_NHWC_DIMENSIONS,
                                        precision=lax.Precision.HIGHEST)
    return _tiles(padded, (2, 2)).transpose(0, 1, 3, 2, 4, 5).reshape(n, height // 2,
                                                                      width // 2, 4 * c)


def _space_to_depth_conv(x, kernel, pads, *, inference: bool = False):
    """A stride-1 convolution run on 2x2 blocks of pixels: x's blocks as 4C features, a VALID
    convolution with `_block_kernel` giving each output block's 4 pixels as 4O features, then
    the blocks unfolded. 4x the features at a quarter of the pixels, for (2bh * 2bw) / (kh * kw)
    the multiply-adds (16/9 for 3x3), where XLA:CPU's convolutions over a few features run far
    below their speed over 32 or more (`use_space_to_depth`). `inference`: the forward outside
    differentiation (`_pixel_blocks`)."""
    n, h, w, c = x.shape
    kh, kw, _, o = kernel.shape
    out_h = _output_size(h, kh, 1, 1, pads[0])
    out_w = _output_size(w, kw, 1, 1, pads[1])
    # Output block i (rows 2i, 2i + 1) reads padded rows 2i .. 2i + kh: blocks i .. i + bh - 1.
    bh, bw = (kh + 2) // 2, (kw + 2) // 2
    rows, cols = -(-out_h // 2), -(-out_w // 2)  # output blocks
    height, width = 2 * (rows + bh - 1), 2 * (cols + bw - 1)  # padded input they read
    padded = _pad_spatial(x, ((pads[0][0], height - h - pads[0][0]),
                              (pads[1][0], width - w - pads[1][0])))
    y = _native_conv(_pixel_blocks(padded, by_convolution=inference),
                     _block_kernel(kernel, (bh, bw)), (1, 1), ((0, 0), (0, 0)), (1, 1))
    return _untile(y.reshape(n, rows, cols, 2, 2, o))[:, :out_h, :out_w]


def _forward_conv(x, kernel, strides, pads, dilation, *, inference: bool = False):
    if use_shifted_sum_forward(kernel.shape):
        return _shifted_sum_conv(x, kernel, strides, pads, dilation)
    if use_space_to_depth(kernel.shape[3], kernel.shape, strides, dilation):
        return _space_to_depth_conv(x, kernel, pads, inference=inference)
    return _native_conv(x, kernel, strides, pads, dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_cpu_passes(x, kernel, strides, pads, dilation):
    """Each pass in its fastest CPU formulation (module docstring): the forward as
    `_forward_conv` picks, the input gradient on 2x2 blocks or XLA's, `_kernel_grad`. This
    primal runs only where nothing differentiates it (inference); training runs
    `_cpu_passes_fwd`."""
    return _forward_conv(x, kernel, strides, pads, dilation, inference=True)


def _cpu_passes_fwd(x, kernel, strides, pads, dilation):
    return _forward_conv(x, kernel, strides, pads, dilation), (x, kernel)


def _cpu_passes_bwd(strides, pads, dilation, residuals, g):
    x, kernel = residuals
    g, pads = _drop_padding_outputs(g, x.shape[1:3], kernel.shape[:2], strides, pads, dilation)
    if use_space_to_depth(kernel.shape[2], kernel.shape, strides, dilation):
        (dx,) = jax.vjp(lambda x: _space_to_depth_conv(x, kernel, pads), x)[1](g)
    else:
        (dx,) = jax.vjp(lambda x: _native_conv(x, kernel, strides, pads, dilation), x)[1](g)
    return dx, _kernel_grad(x, g, kernel.shape, strides, pads, dilation).astype(kernel.dtype)


def _drop_padding_outputs(g, x_hw, kernel_hw, strides, pads, dilation):
    """(g, pads) without the output rows and columns whose windows lie wholly in the padding:
    they add nothing to either gradient (the input there is zero and takes no gradient), and
    FCN's pad 100 makes them most of the map (its conv1_1 at 224x224: 422 output rows, 226 of
    them read the image)."""
    for axis in range(2):
        lo, hi = pads[axis]
        span = (kernel_hw[axis] - 1) * dilation[axis] + 1
        stride, outputs = strides[axis], g.shape[1 + axis]
        # Output r reads padded rows r*s .. r*s + span - 1; the image is rows lo .. lo + size - 1.
        before = (lo - span) // stride + 1 if lo >= span else 0
        after = max(0, outputs - -(-(lo + x_hw[axis]) // stride))
        if before or after:
            g = lax.slice_in_dim(g, before, outputs - after, axis=1 + axis)
            pads = tuple((lo - before * stride, hi - after * stride) if i == axis else p
                         for i, p in enumerate(pads))
    return g, pads


def _kernel_grad(x, g, kernel_shape, strides, pads, dilation):
    """The kernel gradient: on 2x2 blocks where the layer has <= 8 outputs, else XLA's on the
    input padded beforehand: with the padding inside the convolution XLA:CPU's kernel gradient is
    10-40% slower on VGG16's padded 3x3 layers (`benchmarks/conv_passes.py`), and FCN-8s's conv1_1
    at 224x224 + pad 100 (pad 2 once `_drop_padding_outputs` has run) takes 242 ms instead of 4.4."""
    zeros = jnp.zeros(kernel_shape, x.dtype)
    if use_space_to_depth(kernel_shape[3], kernel_shape, strides, dilation):
        return jax.vjp(lambda k: _space_to_depth_conv(x, k, pads), zeros)[1](g)[0]
    padded = _pad_spatial(x, pads)
    return jax.vjp(lambda k: _native_conv(padded, k, strides, ((0, 0), (0, 0)), dilation),
                   zeros)[1](g)[0]


_conv_cpu_passes.defvjp(_cpu_passes_fwd, _cpu_passes_bwd)


def use_matmul_forward(x_shape: Sequence[int], kernel_shape: Sequence[int],
                       out_hw: Sequence[int]) -> bool:
    """Whether the forward (and input gradient) run as one GEMM on CPU: 1x1 kernels, and patch
    matrices of at most `MATMUL_MAX_ROWS` output pixels, no more than the kernel's kh * kw * C
    (fc layers as convs). Measured (forward + both gradients, ms, GEMM vs XLA's): FCN-8s mini's
    fc6 (32 rows, 5x5 over 64) XLA's input gradient alone 8.6 vs the GEMM path's 1.6 in all;
    8x8x288 -> 320 at batch 8 (512 rows) 15.3 vs 17.0, ResNet-50's 7x7x512 (392 rows) 31.6 vs
    33.9; but at 1568 rows (ResNet's 14x14x256) 34.5 vs 31.7, SSD300's 38x38x512 -> 512 at
    batch 2 (2888 rows) 241 vs 204 and its 38x38 class head 91 vs 44: there the im2col copy
    costs more than XLA's convolution loses."""
    kh, kw, c, _ = kernel_shape
    rows = x_shape[0] * out_hw[0] * out_hw[1]
    return (kh, kw) == (1, 1) or rows <= min(kh * kw * c, MATMUL_MAX_ROWS)


def _image_spans(size: int, kernel: int, dilation: int, pad: tuple[int, int],
                 out: int) -> list[tuple[int, int]]:
    """Per tap a of one stride-1 axis, the outputs [start, stop) whose input row r + a*d - lo lies
    in the image (the rest read padding)."""
    return [(max(0, pad[0] - a * dilation), min(out, size + pad[0] - a * dilation))
            for a in range(kernel)]


def use_tap_gemms(x_hw: Sequence[int], kernel_shape: Sequence[int], strides: tuple[int, int],
                  pads: Sequence[tuple[int, int]], dilation: tuple[int, int],
                  out_hw: Sequence[int]) -> bool:
    """Whether a stride-1 atrous layer runs as `_tap_gemm_conv` on CPU: dilated, with at most
    TAP_GEMM_MAX_IMAGE_FRACTION of its multiply-adds reading the image (the rest read padding,
    which XLA's convolution computes and PyTorch's skips). Measured (2-core EPYC, ms, forward /
    input gradient / kernel gradient, XLA's vs per-tap GEMMs): SSD300's fc6 (3x3, dilation 6,
    pad 6, 2x19x19x512 -> 1024: 62% of its multiply-adds read the image) 33.0 / 42.5 / 37.2 vs
    25.1 / 22.6 / 29.5 (PyTorch's 71 for all three); at batch 1 (361 rows, where
    `use_matmul_forward` would pick the patch GEMM) forward 12 vs the patch GEMM's 17, all three
    passes 36 for both. On undilated layers, where 93-96% read the image, the per-tap GEMMs tie
    (SSD's conv5_1 at 19x19) or lose up to 3x (every larger map)."""
    if strides != (1, 1) or dilation == (1, 1):
        return False
    image = 1.0
    for axis in range(2):
        spans = _image_spans(x_hw[axis], kernel_shape[axis], dilation[axis], pads[axis],
                             out_hw[axis])
        image *= sum(max(0, stop - start) for start, stop in spans) / (kernel_shape[axis]
                                                                       * out_hw[axis])
    return image <= TAP_GEMM_MAX_IMAGE_FRACTION


def _tap_gemm_conv(x, kernel, pads, dilation, out_hw):
    """A stride-1 convolution as one GEMM per kernel tap over only the outputs where that tap
    reads the image, each zero-padded to the output and summed (one fused loop), accumulated in
    float32. Autodiff gives the gradients as GEMMs on the same slices."""
    n, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    rows = _image_spans(h, kh, dilation[0], pads[0], out_hw[0])
    cols = _image_spans(w, kw, dilation[1], pads[1], out_hw[1])
    total = jnp.zeros((n, *out_hw, o), jnp.float32)
    for a, (r0, r1) in enumerate(rows):
        for b, (c0, c1) in enumerate(cols):
            if r1 <= r0 or c1 <= c0:
                continue
            top, left = r0 + a * dilation[0] - pads[0][0], c0 + b * dilation[1] - pads[1][0]
            tap = x[:, top:top + r1 - r0, left:left + c1 - c0]
            y = jnp.dot(tap, kernel[a, b], preferred_element_type=jnp.float32)
            total = total + _pad_spatial(y, ((r0, out_hw[0] - r1), (c0, out_hw[1] - c1)))
    return total.astype(x.dtype)


def _conv_cpu(x, kernel, strides, pads, dilation, out_hw):
    if use_tap_gemms(x.shape[1:3], kernel.shape, strides, pads, dilation, out_hw):
        return _tap_gemm_conv(x, kernel, pads, dilation, out_hw)
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
    """`flax.linen.Conv` (same fields, parameters and padding modes) running `conv2d`: the CPU
    formulations of the module docstring on CPU, XLA's native convolution on GPU/TPU. Every
    backbone uses it."""

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


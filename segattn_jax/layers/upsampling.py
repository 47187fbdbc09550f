"""Upsampling layers of the segmentation lecture, NHWC throughout.

Fixed upsampling (nearest neighbour, bed of nails), max unpooling with the switches of a matching
max pooling (DeconvNet/SegNet), and learnable upsampling by transposed convolution (FCN), which
FCN initialises to bilinear interpolation.

The transposed convolution does not use `lax.conv_transpose`: on CPU that lowers to an input-dilated
convolution whose forward is 2-6x and whose fwd+bwd is up to 27x slower than PyTorch's (the kernel
gradient is the worst part). `conv_transpose` computes the same numbers with the sub-pixel
decomposition as one im2col matrix multiply, whose gradients are matrix multiplies too; see
benchmarks/conv_transpose.py for the measured speeds.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, Initializer
from jax import lax

IntOrPair = int | Sequence[int]

_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def _pair(value: IntOrPair, name: str, minimum: int = 1) -> tuple[int, int]:
    """(height, width) from an int or a pair; ValueError below `minimum`."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}.")
    return int(pair[0]), int(pair[1])


def _check_nhwc(x: jax.Array, name: str = "x") -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC (4-D), got shape {x.shape}; add a batch axis with x[None].")


def nearest_upsample(x: jax.Array, factor: IntOrPair) -> jax.Array:
    """Repeats every pixel into a factor x factor block: [[1,2],[3,4]] -> 4x4 blocks of 1,2,3,4."""
    _check_nhwc(x)
    fh, fw = _pair(factor, "factor")
    n, h, w, c = x.shape
    blocks = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, fh, w, fw, c))
    return blocks.reshape(n, h * fh, w * fw, c)


def bed_of_nails(x: jax.Array, factor: IntOrPair) -> jax.Array:
    """Puts every value at the top-left of its factor x factor cell and zeros elsewhere."""
    _check_nhwc(x)
    fh, fw = _pair(factor, "factor")
    zero = jnp.zeros((), x.dtype)
    # Interior padding spreads the values apart; the high padding completes the last cell.
    return lax.pad(x, zero, [(0, 0, 0), (0, fh - 1, fh - 1), (0, fw - 1, fw - 1), (0, 0, 0)])


def pooled_size(size: int, window: int, stride: int, ceil_mode: bool = False) -> int:
    """Outputs of an unpadded pooling along one axis of `size` inputs.

    Floor mode counts whole windows: (size - window) // stride + 1. Ceil mode is Caffe's:
    ceil((size - window) / stride) + 1, so a partial last window still pools, and an input smaller
    than the window gives one partial window when that window starts inside it (Caffe: 1x1 input,
    2x2/2 pool -> 1x1). A last window that would start past the input is dropped, as Caffe does when
    padded and PyTorch always does; unpadded Caffe would emit it empty (-FLT_MAX), which can only
    happen with stride > window. ValueError when no window fits (Caffe would make an empty blob).
    """
    if ceil_mode:
        count = -(-(size - window) // stride) + 1
        if (count - 1) * stride >= size:  # the last window must start inside the input
            count -= 1
    else:
        count = (size - window) // stride + 1
    if count < 1:
        raise ValueError(
            f"Input of spatial size {size} is smaller than the pooling window {window} (stride "
            f"{stride}, ceil_mode={ceil_mode}) and gives no output; use a larger input or a smaller "
            "window."
        )
    return count


def pad_for_pooling(x: jax.Array, window: IntOrPair, stride: IntOrPair, *, ceil_mode: bool) -> jax.Array:
    """Pads NHWC `x` at the bottom and right so a VALID pool of it gives `pooled_size` outputs.

    The padding is the dtype's lowest value (-inf for floats), so it never wins a max and every
    partial window pools only what it covers of the input.
    """
    _check_nhwc(x)
    windows, strides = _pair(window, "window"), _pair(stride, "stride")
    pads = [
        max((pooled_size(size, k, s, ceil_mode) - 1) * s + k - size, 0)
        for size, k, s in zip(x.shape[1:3], windows, strides)
    ]
    if not any(pads):
        return x
    return jnp.pad(x, ((0, 0), (0, pads[0]), (0, pads[1]), (0, 0)),
                   constant_values=lowest_value(x.dtype))


def lowest_value(dtype) -> float | int:
    """What max pooling pads with: -inf for floats, the smallest integer otherwise."""
    return -jnp.inf if jnp.issubdtype(dtype, jnp.floating) else jnp.iinfo(dtype).min


def _tile_offsets(window: tuple[int, int]) -> jax.Array:
    """(kh, 1, kw) int32: the offset a * kw + b of each position (a, b) of a window."""
    kh, kw = window
    return (jnp.arange(kh, dtype=jnp.int32)[:, None, None] * kw
            + jnp.arange(kw, dtype=jnp.int32)[None, None, :])


def _tiles(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """(N, H, W, C) with H, W multiples of the window -> (N, H/kh, kh, W/kw, kw, C): a reshape."""
    n, h, w, c = x.shape
    return x.reshape(n, h // window[0], window[0], w // window[1], window[1], c)


def _untile(blocks: jax.Array) -> jax.Array:
    """(N, h, w, kh, kw, C), a kh x kw block of pixels per position -> (N, h*kh, w*kw, C) with
    each block as the tile at its position (depth-to-space)."""
    n, h, w, kh, kw, c = blocks.shape
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * kh, w * kw, c)


def _spread_over_tiles(x: jax.Array, hit: jax.Array, window: tuple[int, int]) -> jax.Array:
    """(N, h, w, C) values -> (N, h*kh, w*kw, C): each where `hit` (N, h, kh, w, kw, C) is true
    in its tile, zeros elsewhere. One select per output element, written in order (no scatter,
    no transpose)."""
    n, h, w, c = x.shape
    out = jnp.where(hit, x[:, :, None, :, None, :], jnp.zeros((), x.dtype))
    return out.reshape(n, h * window[0], w * window[1], c)


def tiled_max(x: jax.Array, window: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """Max over the non-overlapping windows that tile x (a remainder of rows or columns that no
    whole window covers is dropped, as floor-mode pooling drops it), and the offset a * kw + b
    of each window's first max in row-major order (int32).

    The gradient goes to that first max, as XLA's `select_and_scatter` sends it, as one select
    per input element, where autodiff of the running max adds up a padded copy of the input per
    window offset (measured: layers/pooling.py).
    """
    rows, cols = (x.shape[1] // window[0]) * window[0], (x.shape[2] // window[1]) * window[1]
    return _tiled_max(x[:, :rows, :cols], window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tiled_max(x: jax.Array, window: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """`tiled_max` of x whose H, W are multiples of the window."""
    return strided_max(x, window, window)


def _tiled_max_fwd(x, window):
    pooled, offset = _tiled_max(x, window)
    return (pooled, offset), offset


def _tiled_max_bwd(window, offset, cotangents):
    hit = offset[:, :, None, :, None, :] == _tile_offsets(window)[None, None, :, :, :, None]
    return (_spread_over_tiles(cotangents[0], hit, window),)


_tiled_max.defvjp(_tiled_max_fwd, _tiled_max_bwd)


def strided_max(x: jax.Array, window: tuple[int, int], stride: tuple[int, int]
                ) -> tuple[jax.Array, jax.Array]:
    """VALID max pooling of x (any window and stride), and the offset a * kw + b of each
    window's first max in row-major order (int32).

    The window's offsets are visited one strided slice at a time, keeping the running max and
    its offset: elementwise selects, no stacked window tensor, no gather, and a gradient that
    follows the selected slices to the first max. On CPU 4x faster forward + backward than
    `select_and_scatter` at ResNet's stem pool (3x3/2 over (8, 112, 112, 64): 104 -> 25 ms,
    PyTorch 27 ms).
    """
    (wh, ww), (sh, sw) = window, stride
    out_h, out_w = pooled_size(x.shape[1], wh, sh), pooled_size(x.shape[2], ww, sw)
    pooled, offset = None, None
    for a in range(wh):
        for b in range(ww):
            tap = x[:, a : a + (out_h - 1) * sh + 1 : sh, b : b + (out_w - 1) * sw + 1 : sw]
            if pooled is None:
                pooled, offset = tap, jnp.zeros(tap.shape, jnp.int32)
                continue
            better = tap > pooled  # strictly: ties keep the earlier offset
            pooled = jnp.where(better, tap, pooled)  # the gradient follows the selected tap
            offset = jnp.where(better, a * ww + b, offset)
    return pooled, offset


def _switch_hits(argmax: jax.Array, width: int, window: tuple[int, int]) -> jax.Array:
    """(N, h, kh, w, kw, C) bool: whether the switch of pooled (i, j) names position
    (i * kh + a, j * kw + b) of a `width`-wide map (flat index row * width + col)."""
    h, w = argmax.shape[1:3]
    rows = jnp.arange(h, dtype=jnp.int32)[:, None] * window[0] + jnp.arange(window[0])
    cols = jnp.arange(w, dtype=jnp.int32)[:, None] * window[1] + jnp.arange(window[1])
    index = rows[:, :, None, None] * width + cols[None, None, :, :]  # (h, kh, w, kw)
    return argmax[:, :, None, :, None, :] == index[None, :, :, :, :, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _unpool_tiles(x: jax.Array, argmax: jax.Array, width: int, window: tuple[int, int]
                  ) -> jax.Array:
    """`max_unpool` of tiling windows, onto the whole tiles (N, h*kh, w*kw, C): one select per
    output element; the gradient picks each value's switch (one select per tile position)."""
    return _spread_over_tiles(x, _switch_hits(argmax, width, window), window)


def _unpool_tiles_fwd(x, argmax, width, window):
    return _unpool_tiles(x, argmax, width, window), argmax


def _unpool_tiles_bwd(width, window, argmax, g):
    hits, tiles = _switch_hits(argmax, width, window), _tiles(g, window)
    # A sum of the window's slices (one fused loop), not a reduction over its two small axes.
    picked = [jnp.where(hits[:, :, a, :, b], tiles[:, :, a, :, b], jnp.zeros((), g.dtype))
              for a in range(window[0]) for b in range(window[1])]
    return functools.reduce(jnp.add, picked), None


_unpool_tiles.defvjp(_unpool_tiles_fwd, _unpool_tiles_bwd)


def max_pool_with_argmax(
    x: jax.Array, window: IntOrPair, stride: IntOrPair, *, ceil_mode: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Max pooling that also returns its switches, for `max_unpool`.

    argmax encoding: int32 of the pooled shape, the flat index `row * W + col` of the max in the
    input's H x W plane of the same image and channel (tf.nn.max_pool_with_argmax with
    include_batch_in_index=False, but without its channel factor). Ties go to the first max in
    row-major window order. Padding is VALID; `ceil_mode=True` keeps the partial last windows as
    Caffe's pooling does (used by VGG-based FCN/DeconvNet on odd sizes; see `pooled_size`). The
    gradient flows to the switch positions only, like the unpooling that reverses it.

    Windows that tile the input (window == stride: every VGG pool) go through `tiled_max`,
    others through `strided_max`.
    """
    _check_nhwc(x)
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    n, h, w, c = x.shape
    out_h, out_w = pooled_size(h, wh, sh, ceil_mode), pooled_size(w, ww, sw, ceil_mode)
    x = pad_for_pooling(x, (wh, ww), (sh, sw), ceil_mode=ceil_mode)
    if (wh, ww) == (sh, sw):
        pooled, local = tiled_max(x, (wh, ww))
    else:
        pooled, local = strided_max(x, (wh, ww), (sh, sw))
    rows = jnp.arange(out_h)[None, :, None, None] * sh + local // ww
    cols = jnp.arange(out_w)[None, None, :, None] * sw + local % ww
    return pooled, (rows * w + cols).astype(jnp.int32)


def max_unpool(x: jax.Array, argmax: jax.Array, output_hw: IntOrPair, *,
               window: IntOrPair | None = None) -> jax.Array:
    """Puts each value where its max was (switches from `max_pool_with_argmax`), zeros elsewhere.

    window: the pool's window when it tiled its input (window == stride: every VGG pool, as
      DeconvNet's and SegNet's decoders undo them): each output element then selects the value
      whose switch names it, with the gradient the matching pick (pool + unpool forward and
      backward on CPU 1.1-4.4x PyTorch's at DeconvNet's pools; README). Only right for such
      switches (others are dropped), so it must be the pool's. None: any switches, a
      scatter-add where values whose switches coincide (overlapping pooling windows) are summed.
    """
    _check_nhwc(x)
    if argmax.shape != x.shape:
        raise ValueError(f"argmax shape {argmax.shape} must equal x shape {x.shape} (the pooled shape).")
    out_h, out_w = _pair(output_hw, "output_hw")
    n, h, w, c = x.shape
    if window is not None:
        window = _pair(window, "window")
        for pooled, size, k in ((h, out_h, window[0]), (w, out_w, window[1])):
            if not (pooled - 1) * k < size < (pooled + 1) * k:
                raise ValueError(
                    f"A {window[0]}x{window[1]} pool with stride {window} maps no input of size "
                    f"{(out_h, out_w)} to the switches' {(h, w)}: pass the pooled map's size as "
                    "output_hw and the pool's window, or window=None for other switches.")
        out = _unpool_tiles(x, argmax, out_w, window)[:, :out_h, :out_w]
        return jnp.pad(out, ((0, 0), (0, out_h - out.shape[1]), (0, out_w - out.shape[2]),
                             (0, 0)))
    batch = jnp.arange(n)[:, None, None]
    channel = jnp.arange(c)[None, None, :]
    out = jnp.zeros((n, out_h * out_w, c), x.dtype)
    out = out.at[batch, argmax.reshape(n, h * w, c), channel].add(x.reshape(n, h * w, c))
    return out.reshape(n, out_h, out_w, c)


def bilinear_kernel(size: int, channels: int) -> jax.Array:
    """FCN's `upsample_filt` (Caffe's bilinear filler) on the channel diagonal: (size, size, C, C).

    As the kernel of a transposed conv with stride f and size 2f (or 2f - 1) it interpolates
    bilinearly; the channel-diagonal makes each class map upsample on its own.
    """
    if int(size) != size or size < 1 or int(channels) != channels or channels < 1:
        raise ValueError(f"size and channels must be positive ints, got {size!r}, {channels!r}.")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - np.abs(np.arange(size) - center) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[:, :, None]
    return jnp.asarray(kernel)


def bilinear_init(key: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    """Flax initializer for `ConvTranspose(kernel_init=bilinear_init)`: FCN's fixed/initial upsampling."""
    del key  # deterministic
    kh, kw, in_features, out_features = shape
    if kh != kw or in_features != out_features:
        raise ValueError(
            f"bilinear_init needs a square kernel with in == out features, got shape {tuple(shape)}; "
            "set ConvTranspose(features=<input channels>) with a square kernel_size."
        )
    return bilinear_kernel(kh, in_features).astype(dtype)


TransposePadding = int | Sequence[int] | str


def _check_conv_transpose_operands(x: jax.Array, kernel: jax.Array) -> None:
    _check_nhwc(x)
    if kernel.ndim != 4 or kernel.shape[2] != x.shape[3]:
        raise ValueError(
            f"kernel must be (kh, kw, in_features={x.shape[3]}, out_features), got shape {kernel.shape}."
        )


def conv_transpose_window(
    in_hw: Sequence[int],
    kernel_hw: Sequence[int],
    strides: IntOrPair,
    padding: TransposePadding = 0,
    output_padding: IntOrPair = 0,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(start, size) per spatial axis of the output inside the *full* transposed conv.

    The full output of `n` inputs has (n - 1) * s + k rows (every scatter `x[i] @ kernel[t]` lands
    on row i * s + t). The conventions pick a window of it, zero-extended past its end:
      int p (PyTorch): start p, size (n - 1) * s + k - 2p;
      "VALID" (TF/Flax): start 0, size n * s + max(k - s, 0);
      "SAME" (TF/Flax): start max(k - s, 0) // 2, size n * s;
    and `output_padding` (PyTorch's conv_transpose2d, also allowed with the strings) adds that many
    rows at the end, which the adjoint of a strided conv needs when its input size leaves rows that
    no window reaches.
    """
    strides = _pair(strides, "strides")
    output_padding = _pair(output_padding, "output_padding", minimum=0)
    if any(op >= s for op, s in zip(output_padding, strides)):
        raise ValueError(
            f"output_padding {output_padding} must be smaller than the strides {strides} (PyTorch's rule: "
            "larger values only add rows no input reaches); pad the output instead."
        )
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "VALID"):
            raise ValueError(f"padding must be an int, a pair, 'SAME' or 'VALID', got {padding!r}.")
        starts = [max(k - s, 0) // 2 if mode == "SAME" else 0 for k, s in zip(kernel_hw, strides)]
        sizes = [
            n * s + (0 if mode == "SAME" else max(k - s, 0)) for n, k, s in zip(in_hw, kernel_hw, strides)
        ]
    else:
        starts = list(_pair(padding, "padding", minimum=0))
        sizes = [(n - 1) * s + k - 2 * p for n, k, s, p in zip(in_hw, kernel_hw, strides, starts)]
    sizes = [size + op for size, op in zip(sizes, output_padding)]
    if min(sizes) < 1:
        raise ValueError(
            f"padding {padding!r} crops the whole output (size {tuple(sizes)}); use a smaller padding."
        )
    return (starts[0], starts[1]), (sizes[0], sizes[1])


def conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    strides: IntOrPair,
    padding: TransposePadding = 0,
    output_padding: IntOrPair = 0,
) -> jax.Array:
    """Transposed convolution: `out[i*s + t - start] += x[i] @ kernel[t]` (scatter semantics).

    x: (N, H, W, in); kernel: (kh, kw, in, out). `padding` / `output_padding` as PyTorch's
    conv_transpose2d (int or pair; the kernel permuted to (in, out, kh, kw)) or the TF/Flax strings
    "SAME" (output H * s) and "VALID"; see `conv_transpose_window`. It is the gradient (vjp) of the
    strided cross-correlation with `kernel` seen as (kh, kw, out, in); `conv2d_transpose` in
    layers/conv.py gives that adjoint for a forward conv's exact input size.
    """
    _check_conv_transpose_operands(x, kernel)
    starts, sizes = conv_transpose_window(x.shape[1:3], kernel.shape[:2], strides, padding, output_padding)
    return conv_transpose_cropped(x, kernel, strides, starts, sizes)


def conv_transpose_cropped(
    x: jax.Array, kernel: jax.Array, strides: IntOrPair, starts: Sequence[int], sizes: Sequence[int]
) -> jax.Array:
    """Rows/cols [start, start + size) of the full transposed conv, zeros past its end.

    Sub-pixel form: output phase r = o mod s only sees kernel taps k = m*s + r, so every phase is a
    stride-1 convolution of x with ceil(k/s) taps. All phases come from one matrix multiply of the
    ceil(k/s)^2 neighbourhood of every input pixel (im2col) with a (taps*in, phases*out) matrix,
    followed by depth-to-space and cropping; only the phase rows the window needs are computed. Its
    gradients are matrix multiplies as well, which XLA runs fast on every backend, unlike the
    input-dilated convolution of `lax.conv_transpose`.
    """
    _check_conv_transpose_operands(x, kernel)
    (sh, sw), (ch, cw) = _pair(strides, "strides"), _pair(starts, "starts", minimum=0)
    out_h, out_w = _pair(sizes, "sizes")
    n, h, w, in_features = x.shape
    kh, kw, _, out_features = kernel.shape
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per phase
    rh, rw = min(sh, kh), min(sw, kw)  # phases with taps; the others (only when k < s) are zero

    # Phase kernel: tap m of phase r is kernel[m*s + r]; taps flipped because im2col correlates.
    kernel = jnp.pad(kernel, ((0, mh * sh - kh), (0, mw * sw - kw), (0, 0), (0, 0)))
    kernel = kernel.reshape(mh, sh, mw, sw, in_features, out_features)[::-1, :rh, ::-1, :rw]
    kernel = kernel.transpose(0, 2, 4, 1, 3, 5).reshape(mh * mw * in_features, rh * rw * out_features)

    # Phase row q holds full rows [q*s, (q+1)*s) and gathers x[q - m] for m < taps: the
    # (taps)-neighbourhood of x padded by taps - 1 in front and as far as the window reaches behind.
    (q0h, q1h), (q0w, q1w) = [(c // s, -(-(c + o) // s)) for c, o, s in ((ch, out_h, sh), (cw, out_w, sw))]
    padded = jnp.pad(x, ((0, 0), (mh - 1, max(q1h - h, 0)), (mw - 1, max(q1w - w, 0)), (0, 0)))
    qh, qw = q1h - q0h, q1w - q0w
    columns = jnp.concatenate(
        [padded[:, q0h + a : q0h + a + qh, q0w + b : q0w + b + qw] for a in range(mh) for b in range(mw)],
        axis=-1,
    )
    phases = jnp.dot(columns.reshape(n * qh * qw, -1), kernel).reshape(n, qh, qw, rh, rw, out_features)
    if (rh, rw) != (sh, sw):
        phases = jnp.pad(phases, ((0, 0), (0, 0), (0, 0), (0, sh - rh), (0, sw - rw), (0, 0)))
    window = _untile(phases)
    top, left = ch - q0h * sh, cw - q0w * sw
    return window[:, top : top + out_h, left : left + out_w]


def conv_transpose_lax(
    x: jax.Array,
    kernel: jax.Array,
    strides: IntOrPair,
    padding: TransposePadding = 0,
    output_padding: IntOrPair = 0,
) -> jax.Array:
    """`conv_transpose` computed by plain `lax.conv_transpose`: the slow reference (tests, benchmarks)."""
    _check_conv_transpose_operands(x, kernel)
    strides = _pair(strides, "strides")
    starts, sizes = conv_transpose_window(x.shape[1:3], kernel.shape[:2], strides, padding, output_padding)
    # lax pads the input-dilated x ((n - 1) * s + 1 rows) by (lo, hi) and correlates with the flipped
    # kernel: output row o is full row o + k - 1 - lo, so lo = k - 1 - start and hi completes the size.
    pads = [
        (k - 1 - c, size - (n - 1) * s - 1 + c)
        for n, k, s, c, size in zip(x.shape[1:3], kernel.shape[:2], strides, starts, sizes)
    ]
    # transpose_kernel=True treats the kernel as that of the forward conv (HWIO with I = our output
    # features) and flips it, which turns lax's gather form into the scatter form.
    return lax.conv_transpose(
        x, jnp.swapaxes(kernel, 2, 3), strides, pads, dimension_numbers=_NHWC_HWIO, transpose_kernel=True
    )


class ConvTranspose(nn.Module):
    """Learnable upsampling: `conv_transpose` with a (kh, kw, in, features) kernel and optional bias.

    FCN's upscore layers: `ConvTranspose(num_classes, 2 * f, f, use_bias=False,
    kernel_init=bilinear_init)` starts as bilinear interpolation by a factor f. A DCGAN / U-Net 2x
    upsampling with an odd kernel: `ConvTranspose(c, 3, 2, padding=1, output_padding=1)` (PyTorch)
    or `ConvTranspose(c, 3, 2, padding="SAME")` (TF/Flax).
    """

    features: int
    kernel_size: IntOrPair
    strides: IntOrPair
    padding: TransposePadding = 0
    output_padding: IntOrPair = 0
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_nhwc(x)
        kh, kw = _pair(self.kernel_size, "kernel_size")
        kernel_shape = (kh, kw, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias: Any = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv_transpose(x, kernel, self.strides, self.padding, self.output_padding)
        return y + bias if bias is not None else y

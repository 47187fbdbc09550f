"""Region-of-interest feature extraction: RoIPool (Fast R-CNN) and RoIAlign (Mask R-CNN).

Both take a batch of feature maps (B, H, W, C) and boxes (B, R, 4) in image pixels (x1, y1, x2, y2),
`spatial_scale` = 1 / the feature stride, and return (B, R, out_h, out_w, C) with static shapes.
Both are differentiable in the features; RoIAlign is also differentiable in the box coordinates
(its samples move continuously with the box), which DenseCap-style models can use.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from segattn_jax.layers.sampling import bilinear_at, bilinear_flat
from segattn_jax.layers.upsampling import _pair


def _check(features: jax.Array, boxes: jax.Array) -> None:
    if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4 \
            or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"RoI ops take features (B, H, W, C) and boxes (B, R, 4) with the same B, "
                         f"got {features.shape} and {boxes.shape}.")


def _bin_points(start: jax.Array, size: jax.Array, bins: int, samples: int) -> jax.Array:
    """(..., bins * samples) regularly spaced sample coordinates: `samples` per bin, each at
    the centre of its 1 / samples sub-bin."""
    steps = (jnp.arange(bins * samples, dtype=jnp.float32) + 0.5) / samples
    return start[..., None] + steps * (size / bins)[..., None]


def roi_align(features: jax.Array, boxes: jax.Array, output_size: int | tuple[int, int] = 7, *,
              spatial_scale: float, sampling_ratio: int = 2, aligned: bool = True) -> jax.Array:
    """RoIAlign (He et al. 2017): each output bin averages sampling_ratio^2 bilinear samples at
    regular points inside the bin; no coordinate is rounded.

    `aligned=True` shifts boxes by half a pixel so a box's edges are pixel edges (Detectron2's
    default and the correct mapping); `aligned=False` reproduces the original Mask R-CNN code
    (no shift, boxes at least 1x1 feature pixel). Points up to one pixel outside the map read the
    border, farther ones read 0 (the reference implementation). The sampling ratio is fixed
    (static shapes): the paper's four points per bin are sampling_ratio=2.
    """
    _check(features, boxes)
    out_hw = _pair(output_size, "output_size")
    grid_y, grid_x = _align_grid(boxes, spatial_scale, out_hw, sampling_ratio, aligned)
    samples = bilinear_at(features, grid_y, grid_x, outside="clamp")  # (B, R, h*s, w*s, C)
    return _bin_means(samples, out_hw, sampling_ratio).astype(features.dtype)


def pyramid_roi_align(levels: Sequence[jax.Array], boxes: jax.Array, level: jax.Array,
                      output_size: int | tuple[int, int] = 7, *, spatial_scales: Sequence[float],
                      sampling_ratio: int = 2, aligned: bool = True) -> jax.Array:
    """RoIAlign of each box from its own map of a feature pyramid: levels [(B, H_l, W_l, C)],
    level (B, R) each box's index into them, one spatial scale per level. The levels are laid
    end to end and read by one gather, so an FPN's four levels cost one RoIAlign (pooling every
    level and keeping each box's own would cost four, its backward scatter included)."""
    for features in levels:
        _check(features, boxes)
    if len(spatial_scales) != len(levels):
        raise ValueError(f"Need one spatial scale per level; got {len(spatial_scales)} for "
                         f"{len(levels)} levels.")
    out_hw = _pair(output_size, "output_size")
    batch, _, _, channels = levels[0].shape
    shapes = [f.shape[1:3] for f in levels]
    sizes = jnp.array(shapes, jnp.int32)  # (L, 2)
    offsets = jnp.array([sum(h * w for h, w in shapes[:i]) for i in range(len(shapes))],
                        jnp.int32)
    scale = jnp.asarray(spatial_scales, jnp.float32)[level]  # (B, R)
    grid_y, grid_x = _align_grid(boxes, scale, out_hw, sampling_ratio, aligned)
    per_point = (slice(None), slice(None), None, None)
    flat = jnp.concatenate([f.reshape(batch, -1, channels) for f in levels], axis=1)
    samples = bilinear_flat(flat, grid_y, grid_x, sizes[level, 0][per_point],
                            sizes[level, 1][per_point], offsets[level][per_point], "clamp")
    return _bin_means(samples, out_hw, sampling_ratio).astype(levels[0].dtype)


def _align_grid(boxes: jax.Array, spatial_scale, out_hw: tuple[int, int], sampling_ratio: int,
                aligned: bool) -> tuple[jax.Array, jax.Array]:
    """RoIAlign's sample points (B, R, out_h * s, out_w * s) in feature-map pixels; the scale is
    a float or one per box (B, R)."""
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1 (static shapes; Detectron's adaptive 0 is "
                         f"not available), got {sampling_ratio}.")
    scale = jnp.asarray(spatial_scale, jnp.float32)
    boxes = boxes.astype(jnp.float32) * scale[..., None] - (0.5 if aligned else 0.0)
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)  # each (B, R)
    width, height = x2 - x1, y2 - y1
    if not aligned:
        width, height = jnp.maximum(width, 1.0), jnp.maximum(height, 1.0)
    ys = _bin_points(y1, height, out_hw[0], sampling_ratio)  # (B, R, out_h * s)
    xs = _bin_points(x1, width, out_hw[1], sampling_ratio)  # (B, R, out_w * s)
    grid_y = jnp.broadcast_to(ys[..., :, None], ys.shape + xs.shape[-1:])
    return grid_y, jnp.broadcast_to(xs[..., None, :], grid_y.shape)


def _bin_means(samples: jax.Array, out_hw: tuple[int, int], sampling_ratio: int) -> jax.Array:
    """(B, R, h*s, w*s, C) samples -> (B, R, h, w, C) float32 bin averages."""
    b, r, _, _, c = samples.shape
    samples = samples.reshape(b, r, out_hw[0], sampling_ratio, out_hw[1], sampling_ratio, c)
    return samples.astype(jnp.float32).mean(axis=(3, 5))


def _round_half_away(x: jax.Array) -> jax.Array:
    """C's round(), which the reference RoIPool uses (jnp.round rounds half to even)."""
    return jnp.sign(x) * jnp.floor(jnp.abs(x) + 0.5)


def _bin_max(values: jax.Array, lo: jax.Array, hi: jax.Array, window: int, axis: int) -> jax.Array:
    """Max of `values` over cells [lo, hi) along `axis`, one per bin: (bins,) bounds of at most
    `window` cells -> `axis` replaced by the bins (-inf for an empty bin)."""
    cells = lo[:, None] + jnp.arange(window)  # (bins, window)
    picked = jnp.take(values, jnp.minimum(cells, values.shape[axis] - 1), axis=axis)
    inside = (cells < hi[:, None]).reshape(cells.shape + (1,) * (values.ndim - axis - 1))
    return jnp.max(jnp.where(inside, picked, -jnp.inf), axis=axis + 1)


def roi_pool(features: jax.Array, boxes: jax.Array, output_size: int | tuple[int, int] = 7, *,
             spatial_scale: float, rois_per_chunk: int = 32) -> jax.Array:
    """RoIPool (Girshick 2015): each box is snapped to the feature grid, divided into
    output_size bins of (possibly unequal) whole cells, and each bin max-pooled; empty bins are 0.

    The quantization is the reference Caffe/torchvision code's (round the scaled corners, count
    both end cells, floor/ceil the bin edges). Boxes are first clipped to the image the feature
    map covers, which changes nothing for boxes inside it and bounds every bin to a static
    window. RoIs are processed `rois_per_chunk` at a time to bound memory.
    """
    _check(features, boxes)
    out_h, out_w = _pair(output_size, "output_size")
    _, height, width, _ = features.shape
    boxes = jnp.clip(boxes.astype(jnp.float32) * spatial_scale, 0.0,
                     jnp.array([width, height, width, height], jnp.float32))
    corners = _round_half_away(boxes).astype(jnp.int32)

    def bins(start, end, num, size):
        """Start cells (..., num) and a static window length of the bins along one axis."""
        # floor(i * extent / num) and ceil((i + 1) * extent / num) in exact integer arithmetic
        # (a float division by a constant can become a multiply by its reciprocal and land just
        # above an integer, making ceil() take one cell too many).
        extent = jnp.maximum(end - start + 1, 1)[..., None]
        steps = jnp.arange(num, dtype=jnp.int32)
        lo = jnp.clip(steps * extent // num + start[..., None], 0, size)
        hi = jnp.clip(-(-(steps + 1) * extent // num) + start[..., None], 0, size)
        window = min(size, (size + 1) // num + 2)  # bins span <= extent / num + 2 cells
        return lo, hi, window

    y_lo, y_hi, window_h = bins(corners[..., 1], corners[..., 3], out_h, height)
    x_lo, x_hi, window_w = bins(corners[..., 0], corners[..., 2], out_w, width)

    def one_roi(feature, y_lo, y_hi, x_lo, x_hi):
        picked = _bin_max(feature, y_lo, y_hi, window_h, axis=0)  # (out_h, W, C)
        picked = _bin_max(picked, x_lo, x_hi, window_w, axis=1)  # (out_h, out_w, C)
        empty = (y_hi <= y_lo)[:, None] | (x_hi <= x_lo)[None, :]
        return jnp.where(empty[..., None], 0.0, picked).astype(feature.dtype)

    def one_image(feature, y_lo, y_hi, x_lo, x_hi):
        return jax.lax.map(lambda roi: one_roi(feature, *roi), (y_lo, y_hi, x_lo, x_hi),
                           batch_size=min(rois_per_chunk, y_lo.shape[0]))

    return jax.vmap(one_image)(features, y_lo, y_hi, x_lo, x_hi)


def warp_regions(images: jax.Array, boxes: jax.Array, size: int, *,
                 context_padding: float = 0.0) -> jax.Array:
    """R-CNN's region warping: each box dilated so that, once its region is warped
    (anisotropically) to size x size, `context_padding` pixels of image context surround it
    (the paper: 16 at 227), then resampled bilinearly (2x2 points per output pixel). Context
    beyond the image reads the image's mean color, as the paper fills it.

    images (B, H, W, C), boxes (B, R, 4) in pixels -> (B, R, size, size, C).
    """
    if not 0 <= 2 * context_padding < size:
        raise ValueError(f"context_padding must be in [0, size / 2); got {context_padding} for "
                         f"size {size}.")
    _check(images, boxes)
    dilated = context_boxes(boxes, size, context_padding)
    mean = jnp.mean(images.astype(jnp.float32), axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
    warped = roi_align(images.astype(jnp.float32) - mean, dilated, size, spatial_scale=1.0)
    return (warped + mean[:, None]).astype(images.dtype)


def context_boxes(boxes: jax.Array, size: int, context_padding: float) -> jax.Array:
    """The image area `warp_regions` reads for each box (..., 4): the box dilated so that
    `context_padding` of the `size` output pixels surround it on every side."""
    boxes = boxes.astype(jnp.float32)
    centre = 0.5 * (boxes[..., :2] + boxes[..., 2:])
    half = 0.5 * (boxes[..., 2:] - boxes[..., :2]) * (size / (size - 2 * context_padding))
    return jnp.concatenate([centre - half, centre + half], axis=-1)

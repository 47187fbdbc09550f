"""Box operations shared by every detector: IoU, R-CNN box coding, clipping, anchors, and the
IoU-based matching and fixed-size sampling of training targets.

Convention, everywhere in the codebase: boxes are absolute pixel coordinates (x1, y1, x2, y2) in
the last axis, continuous (a box covering pixels 0..9 is (0, 0, 10, 10); width = x2 - x1, no "+1"
as in the original Caffe code), as torchvision and Detectron2 use them. TFDS's normalized
(ymin, xmin, ymax, xmax) is converted once, in the input pipeline (`data.preprocess.detection`). Every function broadcasts over leading
axes and is jittable with static shapes: padding boxes are carried with a validity mask.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

# Largest log-ratio `decode` lets through (Detectron's log(1000 / 16)): a wild early prediction
# cannot overflow exp() into inf boxes.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def _namespace(*arrays) -> ModuleType:
    """numpy when every argument is a numpy array (host-side metrics: no device round trip and no
    per-shape dispatch), else jax.numpy."""
    return np if all(isinstance(x, np.ndarray) for x in arrays) else jnp


def area(boxes: jax.Array) -> jax.Array:
    """Area of (..., 4) boxes; degenerate boxes (x2 <= x1 or y2 <= y1) have area 0."""
    xp = _namespace(boxes)
    return (xp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
            * xp.maximum(boxes[..., 3] - boxes[..., 1], 0.0))


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """IoU of every box in a (..., N, 4) with every box in b (..., M, 4) -> (..., N, M).

    Leading axes broadcast (a batch of images). A pair whose union is empty (two degenerate boxes)
    has IoU 0, never NaN. numpy inputs give a numpy result (computed on the host).
    """
    xp = _namespace(a, b)
    a, b = xp.asarray(a, xp.float32), xp.asarray(b, xp.float32)
    top_left = xp.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = xp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    overlap = xp.prod(xp.maximum(bottom_right - top_left, 0.0), axis=-1)
    union = area(a)[..., :, None] + area(b)[..., None, :] - overlap
    return xp.where(union > 0, overlap / xp.where(union > 0, union, 1.0), 0.0)


def take_per_image(values: jax.Array, indices: jax.Array) -> jax.Array:
    """values (B, N, ...) at each image's `indices` (B, K) -> (B, K, ...)."""
    indices = indices.reshape(indices.shape + (1,) * (values.ndim - 2))
    return jnp.take_along_axis(values, indices, axis=1)


def center_size(boxes: jax.Array) -> tuple[jax.Array, ...]:
    """(centre x, centre y, width, height) of (..., 4) boxes."""
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * width, boxes[..., 1] + 0.5 * height, width, height


def from_center_size(cx: jax.Array, cy: jax.Array, width: jax.Array, height: jax.Array
                     ) -> jax.Array:
    """(..., 4) boxes (x1, y1, x2, y2) from their centres and sizes (`center_size`'s inverse)."""
    return jnp.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], axis=-1)


def encode(boxes: jax.Array, references: jax.Array,
           weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jax.Array:
    """R-CNN regression targets of `boxes` relative to `references` (anchors or proposals):
    (wx * dx / w, wy * dy / h, ww * log(w' / w), wh * log(h' / h)) (R-CNN appendix C).

    `weights` scale the four targets (Fast R-CNN's second stage uses (10, 10, 5, 5), i.e. targets
    normalized by std (0.1, 0.1, 0.2, 0.2)). Degenerate sizes are floored at a tiny width so the
    log is finite; mask such pairs out of the loss.
    """
    x, y, w, h = center_size(jnp.asarray(references, jnp.float32))
    gx, gy, gw, gh = center_size(jnp.asarray(boxes, jnp.float32))
    w, h, gw, gh = (jnp.maximum(v, 1e-6) for v in (w, h, gw, gh))
    wx, wy, ww, wh = weights
    return jnp.stack([wx * (gx - x) / w, wy * (gy - y) / h,
                      ww * jnp.log(gw / w), wh * jnp.log(gh / h)], axis=-1)


def decode(deltas: jax.Array, references: jax.Array,
           weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> jax.Array:
    """Inverse of `encode`: boxes from regression outputs `deltas` and their `references`.

    The log-size outputs are clipped at `MAX_LOG_SCALE` before exp().
    """
    x, y, w, h = center_size(jnp.asarray(references, jnp.float32))
    wx, wy, ww, wh = weights
    deltas = jnp.asarray(deltas, jnp.float32)
    cx = deltas[..., 0] / wx * w + x
    cy = deltas[..., 1] / wy * h + y
    half_w = 0.5 * jnp.exp(jnp.minimum(deltas[..., 2] / ww, MAX_LOG_SCALE)) * w
    half_h = 0.5 * jnp.exp(jnp.minimum(deltas[..., 3] / wh, MAX_LOG_SCALE)) * h
    return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def clip(boxes: jax.Array, height: jax.Array | float, width: jax.Array | float) -> jax.Array:
    """Clips boxes to the image [0, width] x [0, height]; `height`/`width` broadcast against the
    boxes' leading axes (one size per image of a padded batch: pass shape (B, 1))."""
    height = jnp.asarray(height, jnp.float32)[..., None]
    width = jnp.asarray(width, jnp.float32)[..., None]
    limits = jnp.concatenate([width, height, width, height], axis=-1)
    return jnp.clip(boxes, 0.0, limits)


def cell_anchors(size: float, scales: Sequence[float], ratios: Sequence[float]) -> jax.Array:
    """The A = len(ratios) * len(scales) anchors of one feature-map cell, centred at the origin:
    area (size * scale)^2 and height / width = ratio, ratio-major as Faster R-CNN orders them."""
    rows = []
    for ratio in ratios:
        for scale in scales:
            side = size * scale
            w, h = side / math.sqrt(ratio), side * math.sqrt(ratio)
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return jnp.asarray(rows, jnp.float32)


def anchors(feature_hw: tuple[int, int], stride: float, size: float,
            scales: Sequence[float], ratios: Sequence[float]) -> jax.Array:
    """Every anchor of an (H, W) feature map -> (H * W * A, 4), position-major (index
    (y * W + x) * A + a, the order of a conv head's (H, W, A * k) output reshaped to (-1, k)).

    Cell (y, x) is centred on the image pixel ((x + 0.5) * stride, (y + 0.5) * stride). Faster
    R-CNN on VGG16: stride 16, size 16, scales (8, 16, 32), ratios (0.5, 1, 2) -> 128^2, 256^2,
    512^2 boxes.
    """
    return place_anchors(cell_anchors(size, scales, ratios), feature_hw, stride)


def place_anchors(cell: jax.Array, feature_hw: tuple[int, int], stride: float) -> jax.Array:
    """The (A, 4) boxes of one cell (centred at the origin) repeated at every position of an
    (H, W) feature map -> (H * W * A, 4), position-major, cell (y, x) centred on
    ((x + 0.5) * stride, (y + 0.5) * stride). `stride` may be fractional (SSD's default boxes
    tile a 38x38 map over 300 pixels)."""
    height, width = feature_hw
    ys = (jnp.arange(height, dtype=jnp.float32) + 0.5) * stride
    xs = (jnp.arange(width, dtype=jnp.float32) + 0.5) * stride
    cy, cx = jnp.meshgrid(ys, xs, indexing="ij")
    centers = jnp.stack([cx, cy, cx, cy], axis=-1).reshape(-1, 1, 4)
    return (centers + jnp.asarray(cell, jnp.float32)[None]).reshape(-1, 4)


def match(iou: jax.Array, gt_valid: jax.Array, *, foreground: float, background: tuple[float, float],
          allow_low_quality: bool = False) -> tuple[jax.Array, jax.Array]:
    """Matches each candidate (anchor or proposal) to its best ground truth by IoU.

    iou: (..., N, M) candidates x ground truths; gt_valid: (..., M) (padding is False).
    Returns (matched, labels), each (..., N): the index of the best valid ground truth (meaningful
    where the label is 1), and
    1 (IoU >= foreground), 0 (background[0] <= IoU < background[1]) or -1 (neither: ignored).
    `allow_low_quality` also makes each ground truth's best candidates foreground (Faster R-CNN's
    RPN rule (i), so that every object has an anchor even when none reaches the threshold).
    Papers' thresholds: RPN fg 0.7, bg [0, 0.3), low quality on; Fast R-CNN fg 0.5, bg [0.1, 0.5);
    R-CNN fine-tuning fg 0.5, bg [0, 0.5).
    """
    iou = jnp.where(gt_valid[..., None, :], iou, 0.0)  # no ground truth: all background
    best = jnp.max(iou, axis=-1)
    matched = jnp.argmax(iou, axis=-1)
    labels = jnp.where(best >= foreground, 1,
                       jnp.where((best >= background[0]) & (best < background[1]), 0, -1))
    if allow_low_quality:
        best_per_gt = jnp.max(iou, axis=-2, keepdims=True)  # (..., 1, M)
        is_best = (iou == best_per_gt) & (best_per_gt > 0) & gt_valid[..., None, :]
        labels = jnp.where(jnp.any(is_best, axis=-1), 1, labels)
    return matched, labels


def sample(key: jax.Array, labels: jax.Array, num: int, foreground_fraction: float,
           ) -> tuple[jax.Array, jax.Array]:
    """Draws a fixed-size minibatch of candidates from (N,) `labels` (1 fg, 0 bg, -1 ignored):
    up to round(num * foreground_fraction) foreground uniformly at random, the rest background
    (Faster R-CNN: 256 anchors at 1:1; Fast R-CNN: 64 RoIs per image, 25% foreground).

    Returns (indices, valid), each (num,): candidate indices, and False where there were not
    enough candidates to fill the minibatch (those slots hold ignored candidates; weight the loss
    by `valid`).
    For a batch, vmap over keys and labels.
    """
    if labels.ndim != 1:
        raise ValueError(f"sample takes one image's (N,) labels (vmap for a batch), got {labels.shape}.")
    if num > labels.shape[0]:
        raise ValueError(f"Cannot sample {num} of {labels.shape[0]} candidates; lower the sample size.")
    num_fg = int(round(num * foreground_fraction))
    is_fg, is_bg = labels == 1, labels == 0
    # Random priorities: chosen foreground first, then background, ignored last.
    priority = jax.random.uniform(key, labels.shape)
    fg_rank = jnp.argsort(jnp.argsort(-jnp.where(is_fg, priority, -1.0)))
    take_fg = is_fg & (fg_rank < num_fg)
    score = jnp.where(take_fg, 2.0 + priority, jnp.where(is_bg, 1.0 + priority, priority - 1.0))
    _, indices = jax.lax.top_k(score, num)
    valid = take_fg[indices] | is_bg[indices]
    return indices, valid

"""Greedy non-maximum suppression with a fixed-size output, jittable and batched by vmap, and
the multi-class detection selection every detector ends with (`multiclass_nms`).

Greedy NMS repeatedly keeps the highest-scoring remaining box and removes the boxes that overlap
it by IoU > threshold (the rule of `tf.image.non_max_suppression` and torchvision). Written as
`max_output` rounds of "take the best survivor", each suppressing against one row of IoUs, so the
work is O(max_output * N) and no N x N matrix is stored (2000 boxes -> 300 is 300 cheap rounds).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from segattn_jax.ops import boxes as box_ops


def nms(boxes: jax.Array, scores: jax.Array, *, iou_threshold: float, max_output: int,
        score_threshold: float = -jnp.inf, valid: jax.Array | None = None,
        classes: jax.Array | None = None, overlaps: jax.Array | None = None,
        regions: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Greedy NMS of one image's boxes (N, 4) with scores (N,).

    Returns (indices, keep), each (max_output,): the kept boxes' indices in decreasing score
    order, padded with 0 where `keep` is False (fewer survivors than `max_output`). Boxes with
    score < `score_threshold` or `valid` False never survive. With `classes` (N,) the suppression
    is per class (boxes of different classes never suppress each other), in one pass.
    `overlaps` (R, R) replaces box IoU by any precomputed overlap of R regions (SDS: mask IoU),
    candidate i being region `regions[i]` (default: i), so several candidates (a region's
    classes) share one row. For a batch, `jax.vmap` it (see `batched_nms`).
    """
    if jnp.ndim(boxes) != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms takes boxes (N, 4) and scores (N,), got {boxes.shape} and "
                         f"{scores.shape}; vmap it (or use batched_nms) for a batch.")
    boxes, scores = jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32)
    alive = scores >= score_threshold
    if valid is not None:
        alive &= jnp.asarray(valid, bool)
    if classes is not None:
        classes = jnp.asarray(classes)
    same_class = (lambda i: classes == classes[i]) if classes is not None else (lambda i: True)
    if overlaps is not None:
        overlaps = jnp.asarray(overlaps, jnp.float32)
        regions = jnp.arange(boxes.shape[0]) if regions is None else jnp.asarray(regions)
        overlap_row = lambda i: overlaps[regions[i]][regions]  # noqa: E731
    else:
        overlap_row = lambda i: box_ops.pairwise_iou(boxes[i][None], boxes)[0]  # noqa: E731

    def step(alive, _):
        masked = jnp.where(alive, scores, -jnp.inf)
        best = jnp.argmax(masked)
        kept = alive[best]
        suppressed = (overlap_row(best) > iou_threshold) & same_class(best)
        alive = alive & ~suppressed & (jnp.arange(alive.shape[0]) != best)
        return alive, (jnp.where(kept, best, 0), kept)

    _, (indices, keep) = jax.lax.scan(step, alive, None, length=max_output)
    return indices.astype(jnp.int32), keep


def batched_nms(boxes: jax.Array, scores: jax.Array, **kwargs) -> tuple[jax.Array, jax.Array]:
    """`nms` over a batch: boxes (B, N, 4), scores (B, N), and any of `valid`/`classes`/`regions`
    (B, N) and `overlaps` (B, R, R) -> (indices, keep), each (B, max_output)."""
    per_image = {k: v for k in ("valid", "classes", "overlaps", "regions")
                 if (v := kwargs.pop(k, None)) is not None}
    return jax.vmap(lambda b, s, extra: nms(b, s, **extra, **kwargs))(boxes, scores, per_image)


def multiclass_nms(boxes: jax.Array, scores: jax.Array, *, score_threshold: float,
                   nms_threshold: float, max_detections: int, pre_nms: int | None = None,
                   valid: jax.Array | None = None, overlaps: jax.Array | None = None
                   ) -> dict[str, jax.Array]:
    """A detector's final detections: every (box, class) pair scoring at least
    `score_threshold`, per-class NMS, the `max_detections` best.

    boxes: (B, N, K, 4) class-specific boxes (the R-CNN family) or (B, N, 4) shared by every
    class (YOLO, SSD); scores (B, N, K) per object class (no background column); valid (B, N).
    `pre_nms` keeps only that many best pairs per image before NMS (SSD's 8732 default boxes x
    20 classes would make every NMS round scan 175k pairs). `overlaps` (B, N, N): suppress by
    this overlap of the N inputs instead of box IoU (SDS's mask IoU).
    Returns boxes (B, D, 4), scores (B, D) (0 where not valid), classes (B, D) (0-based object
    classes), indices (B, D) (the input each detection is: in [0, N)) and valid (B, D).
    """
    batch, num_boxes, num_classes = scores.shape
    if boxes.ndim == 3:
        boxes = jnp.broadcast_to(boxes[:, :, None], (batch, num_boxes, num_classes, 4))
    boxes = boxes.reshape(batch, -1, 4)
    scores = jnp.asarray(scores, jnp.float32).reshape(batch, -1)
    classes = jnp.broadcast_to(jnp.arange(num_classes, dtype=jnp.int32),
                               (batch, num_boxes, num_classes)).reshape(batch, -1)
    alive = jnp.ones(scores.shape, bool) if valid is None else jnp.repeat(valid, num_classes, 1)
    inputs = jnp.broadcast_to(jnp.arange(num_boxes, dtype=jnp.int32)[:, None],
                              (batch, num_boxes, num_classes)).reshape(batch, -1)

    if pre_nms is not None and pre_nms < scores.shape[1]:
        _, top = jax.lax.top_k(jnp.where(alive, scores, -jnp.inf), pre_nms)
        boxes, scores, classes, alive, inputs = (box_ops.take_per_image(x, top)
                                                 for x in (boxes, scores, classes, alive, inputs))
    by_overlap = {} if overlaps is None else {"overlaps": overlaps, "regions": inputs}
    index, keep = batched_nms(boxes, scores, iou_threshold=nms_threshold,
                              max_output=max_detections, score_threshold=score_threshold,
                              valid=alive, classes=classes, **by_overlap)
    take = box_ops.take_per_image
    return {"boxes": take(boxes, index), "scores": jnp.where(keep, take(scores, index), 0.0),
            "classes": take(classes, index), "indices": take(inputs, index), "valid": keep}

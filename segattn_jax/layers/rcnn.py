"""The pieces the R-CNN family shares: the Region Proposal Network, the Fast R-CNN box head, their
training targets and losses, and test-time detection (per-class box decoding + NMS).

Fast R-CNN (Girshick 2015) and Faster R-CNN (Ren et al. 2015) are each a few lines on top of
these, and R-CNN (Girshick et al. 2014) shares their RoI sampling, fc6/fc7 and detection; Mask
R-CNN and MNC reuse the RPN and the box head. Everything has static shapes: a fixed
number of anchors, proposals, sampled RoIs and detections per image, with validity masks, so a
whole train step is one jitted function. Box conventions are `ops.boxes`'s; ground-truth classes
are 0-based object classes, and the head's class 0 is background (object class k is k + 1).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.layers.conv import Conv
from segattn_jax.layers.roi import pyramid_roi_align, roi_align, roi_pool
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.boxes import take_per_image
from segattn_jax.ops.gradients import clip_each_images_gradient
from segattn_jax.ops.nms import batched_nms, multiclass_nms

Array = Any

# Fast R-CNN normalizes its regression targets by std (0.1, 0.1, 0.2, 0.2): weights (10, 10, 5, 5).
HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# py-faster-rcnn's smooth-L1 transition points: sigma 3 for the RPN (beta = 1/9), 1 for the head.
RPN_SMOOTH_L1_BETA = 1.0 / 9.0
HEAD_SMOOTH_L1_BETA = 1.0


def smooth_l1(x: Array, beta: float = 1.0) -> Array:
    """Fast R-CNN's robust loss, elementwise: 0.5 x^2 / beta where |x| < beta, else |x| - beta/2."""
    absolute = jnp.abs(x)
    return jnp.where(absolute < beta, 0.5 * x * x / beta, absolute - 0.5 * beta)


def _mean_over(values: Array, weights: Array) -> Array:
    """Weighted mean with a zero denominator giving 0 (an image with nothing sampled)."""
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# ---- Region Proposal Network (Faster R-CNN) -------------------------------------------------

class RegionProposalNetwork(nn.Module):
    """A 3x3 conv "sliding window" over the features, then sibling 1x1 convs: one objectness
    logit per anchor (the paper's 2-way softmax is a sigmoid of the difference) and 4 box deltas.

    features (B, H, W, C) -> (objectness (B, H*W*A), deltas (B, H*W*A, 4)), position-major as
    `ops.boxes.anchors` orders the anchors.
    """

    num_anchors: int
    features: int = 512
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        init = nn.initializers.normal(0.01)  # the paper: zero-mean Gaussian, std 0.01
        x = nn.relu(Conv(self.features, (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                         param_dtype=jnp.float32, name="conv")(x))
        objectness = Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype,
                          param_dtype=jnp.float32, name="objectness")(x)
        deltas = Conv(4 * self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype,
                      param_dtype=jnp.float32, name="deltas")(x)
        batch = x.shape[0]
        return (objectness.reshape(batch, -1).astype(jnp.float32),
                deltas.reshape(batch, -1, 4).astype(jnp.float32))


def inside_image(boxes: Array, image_hw: Array) -> Array:
    """(B, N) whether each box (B, N, 4) lies within its image (B, 2) = (height, width)."""
    hw = jnp.asarray(image_hw, jnp.float32)
    return ((boxes[..., 0] >= 0) & (boxes[..., 1] >= 0)
            & (boxes[..., 2] <= hw[:, None, 1]) & (boxes[..., 3] <= hw[:, None, 0]))


def rpn_loss(key: Array, anchors: Array, objectness: Array, deltas: Array, gt_boxes: Array,
             gt_valid: Array, image_hw: Array, *, num_samples: int = 256,
             foreground_fraction: float = 0.5, foreground: float = 0.7,
             background: float = 0.3) -> dict[str, Array]:
    """The RPN's loss (Faster R-CNN, eq. 1) on `num_samples` anchors per image drawn at up to 1:1.

    Anchors (N, 4) that cross the image boundary are ignored in training, as in the paper.
    Positives: IoU >= 0.7 with a ground truth, or the best anchor of a ground truth; negatives
    IoU < 0.3. Both terms are normalized by the number of sampled anchors (py-faster-rcnn's
    normalization, which makes the paper's lambda = 10 with N_reg ~ 2400 a weight of about 1).
    """
    batch = objectness.shape[0]
    anchors_b = jnp.broadcast_to(anchors, (batch, *anchors.shape))
    iou = box_ops.pairwise_iou(anchors_b, gt_boxes)
    matched, labels = box_ops.match(iou, gt_valid, foreground=foreground,
                                    background=(0.0, background), allow_low_quality=True)
    labels = jnp.where(inside_image(anchors_b, image_hw), labels, -1)
    indices, sampled = jax.vmap(lambda k, l: box_ops.sample(
        k, l, num_samples, foreground_fraction))(jax.random.split(key, batch), labels)
    labels, sampled = take_per_image(labels, indices), sampled.astype(jnp.float32)
    is_fg = (labels == 1).astype(jnp.float32) * sampled
    ce = optax.sigmoid_binary_cross_entropy(take_per_image(objectness, indices),
                                            (labels == 1).astype(jnp.float32))
    gt = take_per_image(gt_boxes, take_per_image(matched, indices))
    targets = box_ops.encode(gt, take_per_image(anchors_b, indices))
    predicted = take_per_image(deltas, indices)
    regression = smooth_l1(predicted - targets, RPN_SMOOTH_L1_BETA).sum(-1) * is_fg
    count = jnp.maximum(jnp.sum(sampled), 1.0)
    return {"rpn_class": jnp.sum(ce * sampled) / count, "rpn_box": jnp.sum(regression) / count}


def propose(anchors: Array, objectness: Array, deltas: Array, image_hw: Array, *,
            pre_nms: int, post_nms: int, nms_threshold: float = 0.7,
            min_size: float = 16.0, differentiable: bool = False,
            gradient_clip: float = 0.0) -> tuple[Array, Array]:
    """Region proposals: decode every anchor, clip to the image, drop boxes smaller than
    `min_size` pixels, keep the `pre_nms` best by objectness, NMS at `nms_threshold`, and return
    the `post_nms` best (Faster R-CNN: 12000 / 2000 at train, 6000 / 300 at test).

    Returns (boxes (B, post_nms, 4), valid (B, post_nms)). No gradient flows through them
    (approximate joint training ignores the gradient wrt the proposal coordinates) unless
    `differentiable`: then the boxes keep their gradient to the RPN's deltas (MNC's cascade;
    the selection itself is not differentiated), clipped elementwise at `gradient_clip` (0: not
    clipped) per image, as MNC's reference code bounds it (`use_clip`, 1/512); the bound is on
    one image's gradient, the reference's batch, whatever the batch here.
    """
    objectness = jax.lax.stop_gradient(objectness)
    if not differentiable:
        deltas = jax.lax.stop_gradient(deltas)
    elif gradient_clip:
        deltas = clip_each_images_gradient(deltas, gradient_clip)
    hw = jnp.asarray(image_hw, jnp.float32)
    boxes = box_ops.clip(box_ops.decode(deltas, anchors), hw[:, :1], hw[:, 1:])
    size_ok = ((boxes[..., 2] - boxes[..., 0] >= min_size)
               & (boxes[..., 3] - boxes[..., 1] >= min_size))
    scores = jnp.where(size_ok, objectness, -jnp.inf)
    pre_nms = min(pre_nms, scores.shape[1])
    top_scores, top = jax.lax.top_k(scores, pre_nms)
    top_boxes = take_per_image(boxes, top)
    keep_index, keep = batched_nms(top_boxes, top_scores, iou_threshold=nms_threshold,
                                   max_output=post_nms, valid=jnp.isfinite(top_scores))
    return take_per_image(top_boxes, keep_index), keep


def rpn_proposals(detector: nn.Module, anchors: Array, objectness: Array, deltas: Array,
                  image_hw: Array, targets: dict[str, Array] | None, *,
                  differentiable: bool = False, gradient_clip: float = 0.0
                  ) -> tuple[Array, Array, dict[str, Array]]:
    """The RPN half of a Faster R-CNN-style detector, from its anchors (N, 4) and the RPN's
    outputs: (proposals, valid, losses). Training when `targets` are given: the train-time
    proposal counts and the RPN's losses (the detector's 'sample' RNG stream); else the test
    counts and no losses. The settings are the detector's fields of the same names
    (pre/post_nms_train/test, rpn_nms_threshold, min_proposal_size, rpn_samples,
    rpn_foreground_fraction), as Faster R-CNN and Mask R-CNN define them."""
    train = targets is not None
    boxes, valid = propose(
        anchors, objectness, deltas, image_hw,
        pre_nms=detector.pre_nms_train if train else detector.pre_nms_test,
        post_nms=detector.post_nms_train if train else detector.post_nms_test,
        nms_threshold=detector.rpn_nms_threshold, min_size=detector.min_proposal_size,
        differentiable=differentiable, gradient_clip=gradient_clip)
    if not train:
        return boxes, valid, {}
    losses = rpn_loss(detector.make_rng("sample"), anchors, objectness, deltas,
                      targets["boxes"], targets["box_valid"], image_hw,
                      num_samples=detector.rpn_samples,
                      foreground_fraction=detector.rpn_foreground_fraction)
    return boxes, valid, losses


# ---- Fast R-CNN box head ----------------------------------------------------------------------

def pyramid_levels(rois: Array, num_levels: int, *, first_level: int = 2,
                   canonical_size: float = 224.0, canonical_level: int = 4) -> Array:
    """FPN's assignment of RoIs to pyramid levels (Lin et al. 2017, eq. 1): level
    k = floor(k0 + log2(sqrt(wh) / 224)) with k0 = 4, clamped to the levels there are; returned
    as indices 0..num_levels-1 counted from `first_level` (P2)."""
    width = jnp.maximum(rois[..., 2] - rois[..., 0], 0.0)
    height = jnp.maximum(rois[..., 3] - rois[..., 1], 0.0)
    scale = jnp.sqrt(width * height)
    level = jnp.floor(canonical_level + jnp.log2(jnp.maximum(scale, 1e-6) / canonical_size))
    return jnp.clip(level - first_level, 0, num_levels - 1).astype(jnp.int32)


def pool_rois(features: Array | Sequence[Array], rois: Array, *, pooling: str, output_size: int,
              spatial_scale: float | Sequence[float]) -> Array:
    """Each RoI's features on a fixed grid: RoIPool (Fast R-CNN) or RoIAlign (Mask R-CNN).

    `features` is one map (with `spatial_scale` = 1 / its stride) or an FPN's levels from P2 up
    (with one scale per level): each RoI is then pooled from the level `pyramid_levels` assigns
    it (RoIAlign reads every level in one gather; RoIPool pools every level and keeps the RoI's
    own: static shapes)."""
    if pooling not in ("roi_pool", "roi_align"):
        raise ValueError(f"Unknown pooling {pooling!r}; use 'roi_pool' or 'roi_align'.")
    pool = roi_pool if pooling == "roi_pool" else roi_align
    if not isinstance(features, (list, tuple)):
        return pool(features, rois, output_size, spatial_scale=spatial_scale)
    if len(spatial_scale) != len(features):
        raise ValueError(f"Need one spatial_scale per pyramid level; got {len(spatial_scale)} "
                         f"for {len(features)} levels.")
    if pooling == "roi_align":
        return pyramid_roi_align(features, rois, pyramid_levels(rois, len(features)),
                                 output_size, spatial_scales=spatial_scale)
    level = pyramid_levels(rois, len(features))[..., None, None, None]
    pooled = pool(features[0], rois, output_size, spatial_scale=spatial_scale[0])
    for index, (level_features, scale) in enumerate(zip(features[1:], spatial_scale[1:]), 1):
        pooled = jnp.where(level == index,
                           pool(level_features, rois, output_size, spatial_scale=scale), pooled)
    return pooled


class FullyConnected(nn.Module):
    """VGG16's fc6 and fc7 over each region's features flattened: (B, R, ...) -> fc7 (B, R,
    hidden), after its ReLU and before its dropout (which the caller applies where it trains a
    classifier on top; R-CNN's SVMs read fc7 itself)."""

    hidden: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, regions: Array, *, train: bool) -> Array:
        x = regions.reshape(*regions.shape[:2], -1).astype(self.dtype)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                             name="fc6")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                                name="fc7")(x))


class BoxHead(nn.Module):
    """Fast R-CNN's head: each RoI's features pooled to a fixed grid (RoIPool, or Mask R-CNN's
    RoIAlign), two fully connected layers (VGG16's fc6/fc7 with dropout), then sibling outputs:
    K + 1 class scores and class-specific box deltas.

    (features (B, H, W, C) or an FPN's levels, rois (B, R, 4)) -> (class logits (B, R, K + 1),
    deltas (B, R, K + 1, 4)).
    """

    num_classes: int  # object classes K (background is added)
    hidden: int = 4096
    pooling: str = "roi_pool"  # or 'roi_align'
    output_size: int = 7
    spatial_scale: float | Sequence[float] = 1.0 / 16.0  # one per level for an FPN's levels
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Array, rois: Array, *, train: bool) -> tuple[Array, Array]:
        pooled = pool_rois(features, rois, pooling=self.pooling, output_size=self.output_size,
                           spatial_scale=self.spatial_scale)
        x = FullyConnected(self.hidden, self.dropout_rate, self.dtype, name="fc")(pooled,
                                                                                   train=train)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return class_and_box_outputs(x, self.num_classes, self.dtype)


def class_and_box_outputs(x: Array, num_classes: int, dtype: Any = jnp.float32
                          ) -> tuple[Array, Array]:
    """Fast R-CNN's sibling outputs on each RoI's feature vector x (B, R, D): K + 1 class
    logits and class-specific box deltas (B, R, K + 1, 4). Call it inside a compact module: the
    layers ('cls_score', 'bbox_pred') are that module's."""
    classes = num_classes + 1
    # The paper: zero-mean Gaussians, std 0.01 (scores) and 0.001 (box regression).
    logits = nn.Dense(classes, kernel_init=nn.initializers.normal(0.01), dtype=dtype,
                      param_dtype=jnp.float32, name="cls_score")(x)
    deltas = nn.Dense(4 * classes, kernel_init=nn.initializers.normal(0.001), dtype=dtype,
                      param_dtype=jnp.float32, name="bbox_pred")(x)
    return (logits.astype(jnp.float32),
            deltas.reshape(*x.shape[:2], classes, 4).astype(jnp.float32))


def sample_rois(key: Array, proposals: Array, proposal_valid: Array, gt_boxes: Array,
                gt_classes: Array, gt_valid: Array, *, num: int, foreground_fraction: float = 0.25,
                foreground: float = 0.5, background: tuple[float, float] = (0.1, 0.5),
                differentiable: bool = False, overlaps: Array | None = None) -> dict[str, Array]:
    """Fast R-CNN's minibatch of RoIs per image: `num` of the proposals plus the ground-truth
    boxes (both papers add them), 25% with IoU >= 0.5 (labelled with their object's class), the
    rest background with IoU in [0.1, 0.5) (Faster R-CNN's code uses [0, 0.5)).

    Returns rois (B, num, 4), labels (B, num) (0 background, k + 1 object class k), targets
    (B, num, 4) (encoded with `HEAD_BOX_WEIGHTS`), matched (B, num) (the index of each RoI's
    best-overlapping ground truth, for per-object targets such as masks) and valid (B, num)
    (False where there were not enough candidates). The foreground RoIs come first. The RoIs
    carry no gradient unless `differentiable` (MNC: the proposals' gradient passes through; the
    regression targets never carry one). `overlaps` (B, P + G, G), the overlap of every candidate
    (the proposals, then the ground truth) with every object, replaces box IoU in the matching
    (SDS: mask IoU); the indices returned as 'candidates' (B, num) say which candidate each RoI is.
    """
    candidates = jnp.concatenate([proposals, gt_boxes], axis=1)
    candidate_valid = jnp.concatenate([proposal_valid, gt_valid], axis=1)
    short = num - candidates.shape[1]
    if short > 0:  # fewer candidates than the minibatch: pad with invalid ones (never sampled)
        candidates = jnp.pad(candidates, ((0, 0), (0, short), (0, 0)))
        candidate_valid = jnp.pad(candidate_valid, ((0, 0), (0, short)))
        if overlaps is not None:
            overlaps = jnp.pad(overlaps, ((0, 0), (0, short), (0, 0)))
    iou = box_ops.pairwise_iou(candidates, gt_boxes) if overlaps is None else overlaps
    matched, labels = box_ops.match(iou, gt_valid, foreground=foreground, background=background)
    labels = jnp.where(candidate_valid, labels, -1)
    indices, valid = jax.vmap(lambda k, l: box_ops.sample(
        k, l, num, foreground_fraction))(jax.random.split(key, proposals.shape[0]), labels)
    rois = take_per_image(candidates, indices)
    matched, is_fg = take_per_image(matched, indices), take_per_image(labels, indices) == 1
    classes = jnp.where(is_fg, take_per_image(gt_classes, matched) + 1, 0)
    gt = take_per_image(gt_boxes, matched)
    fixed = jax.lax.stop_gradient(rois)
    return {"rois": rois if differentiable else fixed, "labels": classes,
            "targets": box_ops.encode(gt, fixed, HEAD_BOX_WEIGHTS), "matched": matched,
            "candidates": indices, "valid": valid}


def box_head_loss(logits: Array, deltas: Array, samples: dict[str, Array]) -> dict[str, Array]:
    """Fast R-CNN's multitask loss (eq. 1): log loss over the K + 1 classes, plus smooth L1 on
    the deltas of the true class for foreground RoIs only (lambda = 1), both averaged over the
    sampled RoIs."""
    labels, valid = samples["labels"], samples["valid"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    true_class = jnp.take_along_axis(deltas, labels[..., None, None], axis=2)[:, :, 0]
    regression = smooth_l1(true_class - samples["targets"], HEAD_SMOOTH_L1_BETA).sum(-1)
    foreground = valid * (labels > 0)
    return {"head_class": _mean_over(ce, valid),
            "head_box": jnp.sum(regression * foreground) / jnp.maximum(jnp.sum(valid), 1.0),
            "head_accuracy": _mean_over((jnp.argmax(logits, -1) == labels), valid)}


def detect(rois: Array, roi_valid: Array, scores: Array, deltas: Array, image_hw: Array, *,
           score_threshold: float = 0.05, nms_threshold: float = 0.3,
           max_detections: int = 100) -> dict[str, Array]:
    """Test-time detections of the R-CNN family: for every RoI (B, R, 4) and object class, its
    score (B, R, K) (Fast R-CNN's softmax, R-CNN's SVM margin) and its class-specific box
    (deltas (B, R, K, 4) coded with `HEAD_BOX_WEIGHTS`, decoded and clipped); scores below
    `score_threshold` dropped; per-class NMS (0.3 in both papers); the `max_detections` best.

    Returns boxes (B, D, 4), scores (B, D), classes (B, D) (0-based object classes) and valid.
    """
    batch, num_rois, num_classes = scores.shape
    references = jnp.broadcast_to(rois[:, :, None], (batch, num_rois, num_classes, 4))
    boxes = box_ops.decode(deltas, references, HEAD_BOX_WEIGHTS)
    hw = jnp.asarray(image_hw, jnp.float32)
    boxes = box_ops.clip(boxes, hw[:, None, :1], hw[:, None, 1:])
    return multiclass_nms(boxes, scores, score_threshold=score_threshold,
                          nms_threshold=nms_threshold, max_detections=max_detections,
                          valid=roi_valid)


def check_anchor_config(scales: Sequence[float], ratios: Sequence[float]) -> int:
    """The number of anchors per position; fails on an empty or non-positive configuration."""
    if not scales or not ratios or min(*scales, *ratios) <= 0:
        raise ValueError(f"Anchor scales and ratios must be non-empty and positive; got "
                         f"{tuple(scales)} and {tuple(ratios)}.")
    return len(scales) * len(ratios)


def map_region_chunks(fn: Callable[..., Any], chunk: int, *per_region: Array) -> Any:
    """`fn(*per_region)` computed `chunk` regions at a time along axis 1 of arrays (B, R, ...)
    (`jax.lax.map` over the chunks, so test-time memory holds one chunk's activations: R-CNN
    and SDS run a CNN per region). fn maps arrays (B, chunk, ...) to a pytree of arrays
    (B, chunk, ...); the result is that pytree over all R regions. A Flax submodule inside fn
    must be applied functionally (`module.clone(parent=None).apply(module.variables, ...)`)."""
    num = per_region[0].shape[1]
    chunk = min(chunk, num)
    if chunk == num:
        return fn(*per_region)
    padded = -(-num // chunk) * chunk

    def split(x):  # (B, R, ...) -> (chunks, B, chunk, ...)
        x = jnp.pad(x, [(0, 0), (0, padded - num)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(x.shape[0], padded // chunk, chunk, *x.shape[2:]), 1, 0)

    def merge(x):  # (chunks, B, chunk, ...) -> (B, R, ...)
        x = jnp.moveaxis(x, 0, 1)
        return x.reshape(x.shape[0], padded, *x.shape[3:])[:, :num]

    return jax.tree.map(merge, jax.lax.map(lambda xs: fn(*xs), tuple(map(split, per_region))))

"""Multi-task Network Cascades (Dai, He & Sun, CVPR 2016): instance segmentation as three stages
that share VGG16's features, each stage's input the previous one's output, trained end to end.

1. Box proposals: Faster R-CNN's RPN (`layers.rcnn`).
2. Mask instances: each box's features RoI-warped to 14x14 (bilinear samples whose positions
   move with the box: the paper's differentiable RoI warping, `layers.roi.roi_align` with one
   sample per bin), max-pooled to 7x7, a 256-d fc layer and one class-agnostic 28x28 mask
   (per-pixel logistic regression).
3. Categorized instances: two pathways over the warped features, the box's as they are and the
   same features multiplied by the stage-2 mask (resized to 14x14), each through fc6/fc7; their
   concatenation scores K + 1 classes and regresses class-specific boxes.
Training sums the three stages' losses; the RoIs of stages 2 and 3 are stage 1's proposals
without `stop_gradient`, so their losses reach the RPN's box regression through the warping's
dependence on the box (the paper's cascade gradient). The 5-stage inference variant runs stages
2 and 3 again on stage 3's regressed boxes, and both passes' instances are candidates, as in the
reference code (daijifeng001/MNC, `TesterWrapper._segmentation_forward`). Test time: per-class
NMS (0.3) on the candidates' boxes, each detection keeping its candidate's mask; then, where
`mask_voting` is on, the reference's mask voting over all candidates.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.layers.roi import roi_align
from segattn_jax.models.fast_rcnn import feature_stride
from segattn_jax.models.faster_rcnn import FasterRCNN
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.masks import roi_mask_targets, vote_masks
from segattn_jax.ops.nms import multiclass_nms

Array = Any


class MaskStage(nn.Module):
    """Warped features (B, R, 7, 7, C) -> class-agnostic mask logits (B, R, m, m)."""

    resolution: int = 28
    hidden: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, regions: Array) -> Array:
        x = regions.reshape(*regions.shape[:2], -1).astype(self.dtype)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                             name="fc")(x))
        x = nn.Dense(self.resolution ** 2, kernel_init=nn.initializers.normal(0.001),
                     dtype=self.dtype, param_dtype=jnp.float32, name="mask_logits")(x)
        return x.reshape(*regions.shape[:2], self.resolution, self.resolution).astype(jnp.float32)


class ClassStage(nn.Module):
    """Box-pathway and masked-pathway features (B, R, 7, 7, C) each -> (class logits (B, R,
    K + 1), deltas (B, R, K + 1, 4))."""

    num_classes: int
    hidden: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, box_regions: Array, masked_regions: Array, *, train: bool):
        pathways = [rcnn.FullyConnected(self.hidden, self.dropout_rate, self.dtype,
                                        name=name)(regions, train=train)
                    for name, regions in (("box_fc", box_regions),
                                          ("mask_fc", masked_regions))]
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(
            jnp.concatenate(pathways, axis=-1))
        return rcnn.class_and_box_outputs(x, self.num_classes, self.dtype)


class MNC(FasterRCNN):
    """inputs {image, image_hw}; `__call__` -> detections {boxes, scores, classes, valid, masks
    (B, D, 28, 28) box-relative probabilities} and stage 1's {proposals (B, P, 4),
    proposal_valid} (their recall is evaluated); `losses(inputs, targets)` with targets {boxes,
    classes, box_valid, masks (B, G, M, M)}. The backbone, RPN and its settings are Faster
    R-CNN's (`FasterRCNN`'s fields); the paper keeps 300 proposals at train and test.

    Attributes (beyond Faster R-CNN's):
      mask_resolution / mask_hidden: stage 2's 28x28 masks from a 256-d fc layer.
      warp_size: the RoI warping's grid (14), max-pooled 2x2 before the fc layers.
      stages: 3, or 5 (at test time, stages 2 and 3 once more on stage 3's regressed boxes).
      box_gradient: the RoIs keep their gradient to stage 1 (the paper's cascade); False treats
        them as constants, as Faster R-CNN's approximate joint training does.
      box_gradient_clip: the bound on each element of one image's box gradient reaching the
        RPN's deltas (the reference code's `use_clip`, `clip_base` 512: 1/512; 0: unbounded).
      mask_voting: each detection's mask and box from the score-weighted vote of the candidates
        overlapping it (`ops.masks.vote_masks`; the reference code's test-time mask merging).
    """

    post_nms_train: int = 300
    post_nms_test: int = 300
    rois_per_image: int = 64
    nms_threshold: float = 0.3
    mask_resolution: int = 28
    mask_hidden: int = 256
    warp_size: int = 14
    stages: int = 3
    box_gradient: bool = True
    box_gradient_clip: float = 1.0 / 512
    mask_voting: bool = False

    def setup(self):
        if self.stages not in (3, 5):
            raise ValueError(f"MNC has 3 or 5 stages; got stages={self.stages}.")
        if self.alternating_step:
            raise ValueError("MNC trains its cascade end to end; alternating_step is Faster "
                             "R-CNN's (leave it 0).")
        # Faster R-CNN's backbone and RPN (its box head is never called, so it has no params).
        super().setup()
        self.mask_stage = MaskStage(self.mask_resolution, scaled_features(self.mask_hidden,
                                                                          self.width),
                                    dtype=self.dtype)
        self.class_stage = ClassStage(self.num_classes, scaled_features(4096, self.width),
                                      self.dropout_rate, dtype=self.dtype)

    def proposals(self, inputs, features, targets):
        """Stage 1: the RPN's proposals, differentiable in its box regression."""
        objectness, deltas = self.rpn(features)
        return rcnn.rpn_proposals(self, self.anchors(features), objectness, deltas,
                                  inputs["image_hw"], targets, differentiable=self.box_gradient,
                                  gradient_clip=self.box_gradient_clip)

    def warp(self, features: Array, boxes: Array) -> Array:
        """RoI warping: (B, R, warp_size, warp_size, C) bilinear samples, one per cell."""
        return roi_align(features, boxes, self.warp_size, sampling_ratio=1,
                         spatial_scale=1.0 / feature_stride(self.feature_layer))

    def cascade(self, features: Array, boxes: Array, *, train: bool):
        """Stages 2 and 3 on `boxes`: (mask logits (B, R, m, m), class logits, deltas)."""
        warped = self.warp(features, boxes)
        pooled = _max_pool_2x2(warped)
        mask_logits = self.mask_stage(pooled)
        size = self.warp_size
        mask = jax.image.resize(jax.nn.sigmoid(mask_logits), (*mask_logits.shape[:2], size, size),
                                "linear")
        masked = _max_pool_2x2(warped * mask[..., None].astype(warped.dtype))
        logits, deltas = self.class_stage(pooled, masked, train=train)
        return mask_logits, logits, deltas

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        features = self.features(inputs["image"])
        proposals, valid, _ = self.proposals(inputs, features, None)
        mask_logits, logits, deltas = self.cascade(features, proposals, train=False)
        # The candidate instances: stage 3's classes of stage 2's masks on the proposals.
        boxes, scores, candidate_logits = proposals, jax.nn.softmax(logits), mask_logits
        alive = valid
        if self.stages == 5:  # stages 4-5: the cascade again on stage 3's top-class boxes
            top = jnp.argmax(logits[..., 1:], axis=-1) + 1
            chosen = jnp.take_along_axis(deltas, top[..., None, None], axis=2)[:, :, 0]
            hw = jnp.asarray(inputs["image_hw"], jnp.float32)
            regressed = box_ops.clip(box_ops.decode(chosen, proposals, rcnn.HEAD_BOX_WEIGHTS),
                                     hw[:, :1], hw[:, 1:])
            mask_logits_4, logits_5, _ = self.cascade(features, regressed, train=False)
            # Both passes' instances are candidates (the reference code's 600 at test time).
            boxes, scores, candidate_logits, alive = (
                jnp.concatenate(pair, axis=1) for pair in (
                    (proposals, regressed), (scores, jax.nn.softmax(logits_5)),
                    (mask_logits, mask_logits_4), (valid, valid)))
        masks = jax.nn.sigmoid(candidate_logits)
        detections = multiclass_nms(boxes, scores[..., 1:], score_threshold=self.score_threshold,
                                    nms_threshold=self.nms_threshold,
                                    max_detections=self.max_detections, valid=alive)
        detections["masks"] = box_ops.take_per_image(masks, detections["indices"])
        if self.mask_voting:
            detections["boxes"], detections["masks"] = vote_masks(
                detections["boxes"], detections["classes"], detections["masks"], boxes,
                scores[..., 1:], masks, alive)
        return {**detections, "proposals": proposals, "proposal_valid": valid}

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The three stages' losses (RPN; masks of foreground RoIs; classes and boxes), and
        metrics to log. The sampled RoIs keep their gradient to stage 1's box regression."""
        features = self.features(inputs["image"])
        proposals, valid, losses = self.proposals(inputs, features, targets)
        samples = rcnn.sample_rois(
            self.make_rng("sample"), proposals, valid, targets["boxes"], targets["classes"],
            targets["box_valid"], num=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, background=(self.background_low, 0.5),
            differentiable=self.box_gradient)
        mask_logits, logits, deltas = self.cascade(features, samples["rois"], train=True)
        head = rcnn.box_head_loss(logits, deltas, samples)
        accuracy = head.pop("head_accuracy")
        foreground = ((samples["labels"] > 0) & samples["valid"]).astype(jnp.float32)
        mask_targets = roi_mask_targets(targets["masks"], targets["boxes"], samples["rois"],
                                        samples["matched"], self.mask_resolution)
        per_roi = optax.sigmoid_binary_cross_entropy(mask_logits, mask_targets).mean((2, 3))
        mask = jnp.sum(per_roi * foreground) / jnp.maximum(jnp.sum(foreground), 1.0)
        return ({**losses, "mask": mask, **head},
                {"head_accuracy": accuracy, "foreground_rois": jnp.mean(foreground.sum(1))})


def _max_pool_2x2(regions: Array) -> Array:
    """(B, R, h, w, C) -> (B, R, h/2, w/2, C) by 2x2 max pooling."""
    b, r, h, w, c = regions.shape
    return regions.reshape(b, r, h // 2, 2, w // 2, 2, c).max(axis=(3, 5))

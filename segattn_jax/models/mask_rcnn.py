"""Mask R-CNN (He, Gkioxari, Dollár & Girshick, ICCV 2017): Faster R-CNN on a ResNet-FPN, plus a
small FCN on each RoI that predicts its object's mask.

- Backbone: ResNet + FPN (`backbones.fpn`), P2..P6; the RPN (`layers.rcnn`, one head shared by
  every level) has one anchor size per level (32..512 px) and three ratios; proposals of all
  levels are selected together (NMS 0.7).
- Box head: each RoI pooled (RoIAlign, or RoIPool for the Table 2c ablation) from its FPN level
  to 7x7, two 1024-d fc layers, class scores and class-specific boxes (`layers.rcnn.BoxHead`).
- Mask head: the RoI pooled to 14x14, four 3x3 convs of 256, a 2x2 stride-2 transposed conv, and
  a 1x1 conv to one 28x28 mask per class.
- `architecture='c4'`, the paper's ResNet-C4 (Figure 4, left; Table 2's ablations): the ResNet up
  to conv4 (stride 16) is the backbone, its 15 anchors per position (5 sizes x 3 ratios) feed the
  RPN, and each RoI pooled to 14x14 from conv4 runs through conv5 (stride 2: 7x7, the same
  variables as the ImageNet ResNet's conv5, so `init_from` loads them), whose average gives the
  class scores and boxes; the mask head is a 2x2 stride-2 transposed conv of 256 and a 1x1 conv
  on the same conv5 output: 14x14 masks (`mask_resolution=14`). In training the mask head reads
  the foreground RoIs' conv5 output of the box head (Detectron's shared head).
- Masks are trained on the foreground RoIs only, with the per-pixel
  sigmoid's binary cross-entropy on the ground-truth class's mask alone (the other classes' masks
  get no loss); `mask_loss='softmax'` is Table 2b's multinomial alternative (K + 1 channels, one
  per-pixel softmax over the classes and background, as in FCN).
- Test: box detections (NMS 0.5, the best 100), then the mask head on the detected boxes; each
  detection keeps its class's 28x28 mask, pasted back to the image by `ops.masks.paste_masks`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.backbones.fpn import LEVEL_STRIDES, ResNetFPN
from segattn_jax.backbones.resnet import KERAS_BN_MOMENTUM, ResNet
from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.upsampling import ConvTranspose
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.masks import roi_mask_targets

Array = Any
MASK_LOSSES = ("sigmoid", "softmax")
ARCHITECTURES = ("fpn", "c4")
# RoIs are pooled from P2..P5 (P6 serves only the RPN's 512 px anchors).
ROI_SCALES = tuple(1.0 / s for s in LEVEL_STRIDES[:4])
C4_STRIDE = 16


class MaskHead(nn.Module):
    """RoI features (B, R, S, S, C) -> mask logits (B, R, 2S, 2S, outputs): `convs` 3x3 convs
    (4 in the FPN head, 0 in the C4 head, whose input is conv5's output), then 2x upsampling."""

    outputs: int
    features: int = 256
    convs: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, regions: Array) -> Array:
        batch, num_rois = regions.shape[:2]
        x = regions.reshape(batch * num_rois, *regions.shape[2:]).astype(self.dtype)
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # Detectron's MSRA
        for index in range(1, self.convs + 1):
            x = nn.relu(Conv(self.features, (3, 3), padding=1, kernel_init=init,
                             dtype=self.dtype, param_dtype=jnp.float32,
                             name=f"mask_fcn{index}")(x))
        x = nn.relu(ConvTranspose(self.features, 2, 2, kernel_init=init, dtype=self.dtype,
                                  name="deconv")(x))
        x = Conv(self.outputs, (1, 1), kernel_init=nn.initializers.normal(0.001),
                 dtype=self.dtype, param_dtype=jnp.float32, name="mask_logits")(x)
        return x.reshape(batch, num_rois, *x.shape[1:]).astype(jnp.float32)


class ConvFiveBoxHead(nn.Module):
    """The C4 box head's outputs: each RoI's conv5 output (B, R, 7, 7, C) averaged over its
    grid, then class scores and class-specific box deltas (`layers.rcnn`)."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, regions: Array) -> tuple[Array, Array]:
        return rcnn.class_and_box_outputs(jnp.mean(regions, axis=(2, 3)), self.num_classes,
                                          self.dtype)


def mask_loss(logits: Array, labels: Array, targets: Array, weights: Array,
              kind: str = "sigmoid") -> Array:
    """The mask loss, averaged over each RoI's pixels and then over the weighted RoIs.

    logits (B, F, S, S, C), labels (B, F) (object class + 1, as the box head's), targets
    (B, F, S, S) in {0, 1}, weights (B, F) (1 for the foreground RoIs). 'sigmoid': the binary
    cross-entropy of the ground-truth class's channel only (C = K); 'softmax': the cross-entropy
    of a per-pixel softmax over background and the K classes (C = K + 1), the target being the
    RoI's class inside the mask and background outside.
    """
    if kind == "sigmoid":
        channel = jnp.clip(labels - 1, 0, logits.shape[-1] - 1)[:, :, None, None, None]
        chosen = jnp.take_along_axis(logits, channel, axis=-1)[..., 0]
        per_pixel = optax.sigmoid_binary_cross_entropy(chosen, targets)
    elif kind == "softmax":
        classes = jnp.where(targets > 0.5, labels[:, :, None, None], 0)
        per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    else:
        raise ValueError(f"Unknown mask_loss {kind!r}; valid: {MASK_LOSSES}.")
    per_roi = jnp.mean(per_pixel, axis=(2, 3))
    return jnp.sum(per_roi * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def class_mask_probabilities(logits: Array, classes: Array, kind: str) -> Array:
    """Each detection's mask (B, D, S, S) in [0, 1]: the sigmoid of its class's channel, or
    (softmax) the probability of its class at each pixel. classes (B, D) are 0-based."""
    if kind == "sigmoid":
        return jax.nn.sigmoid(jnp.take_along_axis(
            logits, classes[:, :, None, None, None], axis=-1)[..., 0])
    probabilities = jax.nn.softmax(logits, axis=-1)
    return jnp.take_along_axis(probabilities, classes[:, :, None, None, None] + 1, axis=-1)[..., 0]


class MaskRCNN(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2)}; `__call__` -> detections {boxes (B, D, 4),
    scores, classes, valid, masks (B, D, S, S) box-relative probabilities, S = mask_resolution};
    `losses(inputs, targets)` -> (losses, metrics), targets {boxes, classes, box_valid, masks
    (B, G, M, M) box-relative (`ops.masks`)}.

    Attributes:
      num_classes: object classes K.
      architecture: 'fpn' (ResNet-FPN, the paper's best) or 'c4' (ResNet-C4 with the conv5
        head, Table 2's ablations).
      depth / width / frozen_bn / bn_momentum / stride_in_1x1 / groups / width_per_group: the
        ResNet or ResNeXt (`backbones.resnet`; X-101 is 101 / 32 / 8); frozen batch norm when
        fine-tuning released weights (the paper), batch statistics when training a slim one
        from scratch.
      fpn_features / head_hidden / mask_features: 256 / 1024 / 256 in the paper (scaled by width);
        the C4 RPN's 3x3 conv has conv4's width (1024), its mask head 256 (mask_features).
      mask_resolution: 28 (FPN: RoIs pooled to 14x14 for the mask head) or 14 (C4: RoIs pooled to
        14x14 for conv5, whose 7x7 output is upsampled 2x).
      pooling: 'roi_align' (the paper) or 'roi_pool' (Table 2c), for both heads.
      mask_loss: 'sigmoid' (the paper) or 'softmax' (Table 2b).
      anchor_sizes / anchor_ratios: FPN: one size per level P2..P6 (32..512 px); C4: all five
        sizes at every conv4 position; ratios 0.5, 1, 2.
      rpn_samples, pre/post_nms_train/test, rpn_nms_threshold, min_proposal_size: the RPN's.
      rois_per_image / foreground_fraction: 512 RoIs per image, 25% foreground (the paper).
      score_threshold / nms_threshold / max_detections: test time (0.05 / 0.5 / 100).
    """

    input_keys = ("image", "image_hw")

    num_classes: int
    architecture: str = "fpn"
    depth: int = 50
    width: float = 1.0
    frozen_bn: bool = True
    bn_momentum: float = KERAS_BN_MOMENTUM
    stride_in_1x1: bool = True
    groups: int = 1
    width_per_group: int = 64
    fpn_features: int = 256
    head_hidden: int = 1024
    mask_features: int = 256
    mask_resolution: int = 28
    pooling: str = "roi_align"
    mask_loss: str = "sigmoid"
    anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_samples: int = 256
    rpn_foreground_fraction: float = 0.5
    pre_nms_train: int = 12000
    post_nms_train: int = 2000
    pre_nms_test: int = 6000
    post_nms_test: int = 1000
    rpn_nms_threshold: float = 0.7
    min_proposal_size: float = 0.0
    rois_per_image: int = 512
    foreground_fraction: float = 0.25
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    max_detections: int = 100
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(f"Unknown mask_loss {self.mask_loss!r}; valid: {MASK_LOSSES}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {self.architecture!r}; valid: "
                             f"{ARCHITECTURES}.")
        if self.architecture == "fpn" and len(self.anchor_sizes) != len(LEVEL_STRIDES):
            raise ValueError(f"anchor_sizes needs one size per level P2..P6; got "
                             f"{tuple(self.anchor_sizes)}.")
        if self.mask_resolution % 2:
            raise ValueError(f"mask_resolution must be even (the mask head upsamples 2x); got "
                             f"{self.mask_resolution}.")
        outputs = self.num_classes + (self.mask_loss == "softmax")
        mask_features = scaled_features(self.mask_features, self.width)
        if self.architecture == "c4":
            self.backbone = ResNet(self.depth, num_classes=0, width=self.width,
                                   stride_in_1x1=self.stride_in_1x1, frozen_bn=self.frozen_bn,
                                   bn_momentum=self.bn_momentum, dtype=self.dtype,
                                   groups=self.groups, width_per_group=self.width_per_group)
            self.rpn = rcnn.RegionProposalNetwork(
                rcnn.check_anchor_config(self.anchor_sizes, self.anchor_ratios),
                scaled_features(1024, self.width), dtype=self.dtype)
            self.box_head = ConvFiveBoxHead(self.num_classes, self.dtype)
            self.mask_head = MaskHead(outputs, mask_features, convs=0, dtype=self.dtype)
            return
        self.backbone = ResNetFPN(self.depth, self.width, self.fpn_features, self.stride_in_1x1,
                                  self.frozen_bn, self.bn_momentum, self.dtype, self.groups,
                                  self.width_per_group)
        width = scaled_features(self.fpn_features, self.width)
        self.rpn = rcnn.RegionProposalNetwork(
            rcnn.check_anchor_config((1.0,), self.anchor_ratios), width, dtype=self.dtype)
        self.box_head = rcnn.BoxHead(self.num_classes,
                                     hidden=scaled_features(self.head_hidden, self.width),
                                     pooling=self.pooling, spatial_scale=ROI_SCALES,
                                     dropout_rate=0.0, dtype=self.dtype)
        self.mask_head = MaskHead(outputs, mask_features, dtype=self.dtype)

    def features(self, images: Array, train: bool) -> list[Array]:
        """The maps the RPN and the heads read: P2..P6 (FPN), or [conv4] (C4)."""
        if images.ndim != 4:
            raise ValueError(f"MaskRCNN expects images (B, H, W, C); got {images.shape}.")
        train = train and not self.frozen_bn
        if self.architecture == "c4":
            conv4, _ = self.backbone(images, train=train, stages=("conv1", "conv4"))
            return [conv4]
        _, levels = self.backbone(images, train=train)
        return [levels[f"p{k}"] for k in range(2, 7)]

    def anchors(self, features: list[Array]) -> Array:
        if self.architecture == "c4":
            return box_ops.anchors(features[0].shape[1:3], C4_STRIDE, 1.0, self.anchor_sizes,
                                   self.anchor_ratios)
        return jnp.concatenate([
            box_ops.anchors(level.shape[1:3], stride, size, (1.0,), self.anchor_ratios)
            for level, stride, size in zip(features, LEVEL_STRIDES, self.anchor_sizes)])

    def proposals(self, inputs, features, targets):
        """(proposals, valid, RPN losses): the RPN over every level at once."""
        outputs = [self.rpn(level) for level in features]
        return rcnn.rpn_proposals(self, self.anchors(features),
                                  jnp.concatenate([o for o, _ in outputs], 1),
                                  jnp.concatenate([d for _, d in outputs], 1),
                                  inputs["image_hw"], targets)

    def conv5(self, conv4: Array, rois: Array, train: bool) -> Array:
        """C4: each RoI pooled to mask_resolution x mask_resolution from conv4, through the
        ResNet's conv5 (stride 2) -> (B, R, S/2, S/2, C)."""
        regions = rcnn.pool_rois(conv4, rois, pooling=self.pooling,
                                 output_size=self.mask_resolution, spatial_scale=1.0 / C4_STRIDE)
        batch, num_rois = regions.shape[:2]
        x, _ = self.backbone(regions.reshape(batch * num_rois, *regions.shape[2:]),
                             train=train and not self.frozen_bn, stages=("conv5", "conv5"))
        return x.reshape(batch, num_rois, *x.shape[1:])

    def box_outputs(self, features: list[Array], rois: Array, train: bool
                    ) -> tuple[Array, Array, Array | None]:
        """(class logits, deltas, the RoIs' conv5 output for the mask head (C4; None for FPN))."""
        if self.architecture == "c4":
            regions = self.conv5(features[0], rois, train)
            return (*self.box_head(regions), regions)
        return (*self.box_head(features[:4], rois, train=train), None)

    def mask_logits(self, features: list[Array], rois: Array,
                    regions: Array | None = None) -> Array:
        """The mask head on `rois`; C4 reads `regions` (their conv5 output) when given."""
        if self.architecture == "c4":
            if regions is None:
                regions = self.conv5(features[0], rois, train=False)
            return self.mask_head(regions)
        return self.mask_head(rcnn.pool_rois(
            features[:4], rois, pooling=self.pooling, output_size=self.mask_resolution // 2,
            spatial_scale=ROI_SCALES))

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        features = self.features(inputs["image"], train=False)
        rois, valid, _ = self.proposals(inputs, features, None)
        logits, deltas, _ = self.box_outputs(features, rois, train=False)
        detections = rcnn.detect(rois, valid, jax.nn.softmax(logits)[..., 1:], deltas[:, :, 1:],
                                 inputs["image_hw"], score_threshold=self.score_threshold,
                                 nms_threshold=self.nms_threshold,
                                 max_detections=self.max_detections)
        masks = self.mask_logits(features, jax.lax.stop_gradient(detections["boxes"]))
        return {**detections, "masks": class_mask_probabilities(
            masks, detections["classes"], self.mask_loss)}

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The RPN's, the box head's and the mask head's losses, and metrics to log. Uses the
        'sample' RNG stream for the anchor and RoI minibatches."""
        features = self.features(inputs["image"], train=True)
        proposals, valid, losses = self.proposals(inputs, features, targets)
        samples = rcnn.sample_rois(
            self.make_rng("sample"), proposals, valid, targets["boxes"], targets["classes"],
            targets["box_valid"], num=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, background=(0.0, 0.5))
        logits, deltas, regions = self.box_outputs(features, samples["rois"], train=True)
        head = rcnn.box_head_loss(logits, deltas, samples)
        accuracy = head.pop("head_accuracy")
        # The mask head sees only foreground RoIs; sample_rois puts them first.
        num_fg = max(1, int(round(self.rois_per_image * self.foreground_fraction)))
        rois, labels = samples["rois"][:, :num_fg], samples["labels"][:, :num_fg]
        foreground = ((labels > 0) & samples["valid"][:, :num_fg]).astype(jnp.float32)
        mask_targets = roi_mask_targets(targets["masks"], targets["boxes"], rois,
                                        samples["matched"][:, :num_fg], self.mask_resolution)
        logits = self.mask_logits(features, rois,
                                  None if regions is None else regions[:, :num_fg])
        losses = {**losses, **head, "mask": mask_loss(logits, labels, mask_targets, foreground,
                                                      self.mask_loss)}
        return losses, {"head_accuracy": accuracy,
                        "foreground_rois": jnp.mean(jnp.sum(foreground, axis=1))}

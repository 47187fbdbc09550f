"""Fast R-CNN (Girshick, ICCV 2015): one conv pass over the whole image, then every region
proposal's features RoI-pooled to 7x7 and classified by fc layers with a softmax over K + 1
classes and class-specific box regression, trained with one multitask loss.

The proposals (selective search in the paper) come with the input (`data/proposals.py`
computes and caches them); Faster R-CNN (`models/faster_rcnn.py`) replaces them with its RPN's.
The head, its RoI sampling and loss, and test-time detection are the family's shared pieces in
`layers/rcnn.py`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.backbones.vgg import VGG16, scaled_features, vgg16_layer_specs
from segattn_jax.layers import rcnn

Array = Any


def feature_stride(layer: str) -> int:
    """Stride of a VGG16 layer (first_padding 1): 2 per 2x2 pooling before it (conv5_3: 16)."""
    specs = vgg16_layer_specs(first_padding=1)
    names = [spec.name for spec in specs]
    if layer not in names:
        raise ValueError(f"VGG16 has no layer {layer!r}; valid: {names}.")
    return 2 ** sum(spec.kind == "pool" for spec in specs[:names.index(layer)])


class FastRCNN(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2), proposals (B, P, 4), proposal_valid (B, P)}.

    `__call__` -> detections {boxes (B, D, 4), scores, classes, valid}; `losses(inputs,
    targets)` -> (losses, metrics) for training, targets {boxes, classes, box_valid}.

    Attributes:
      num_classes: object classes K (the head adds background).
      width: channel multiplier of VGG16 and the head's fc layers (<1 for slim CPU runs).
      feature_layer: the VGG16 layer RoIs are pooled from: conv5_3 (stride 16) in the papers;
        conv4_3 (stride 8) keeps small objects' shapes on small CPU-sized images.
      rois_per_image / foreground_fraction / background_low: the paper's minibatch: 64 RoIs per
        image, 25% with IoU >= 0.5, background IoU in [background_low, 0.5) (0.1 in the paper).
      pooling: 'roi_pool' (the paper) or 'roi_align'.
      score_threshold / nms_threshold / max_detections: test time (0.05 / 0.3 / 100).
    """

    input_keys = ("image", "image_hw", "proposals", "proposal_valid")

    num_classes: int
    width: float = 1.0
    feature_layer: str = "conv5_3"
    rois_per_image: int = 64
    foreground_fraction: float = 0.25
    background_low: float = 0.1
    pooling: str = "roi_pool"
    dropout_rate: float = 0.5
    score_threshold: float = 0.05
    nms_threshold: float = 0.3
    max_detections: int = 100
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        self.backbone = self.make_backbone()
        self.head = rcnn.BoxHead(self.num_classes, hidden=scaled_features(4096, self.width),
                                 pooling=self.pooling,
                                 spatial_scale=1.0 / feature_stride(self.feature_layer),
                                 dropout_rate=self.dropout_rate, dtype=self.dtype)

    def make_backbone(self, **module_kwargs) -> nn.Module:
        """The conv layers the head pools (Faster R-CNN's alternating step 2 makes a second)."""
        return VGG16(width=self.width, first_padding=1, last_layer=self.feature_layer,
                     dtype=self.dtype, **module_kwargs)

    def features(self, images: Array) -> Array:
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images (B, H, W, C); got "
                             f"{images.shape}.")
        return self.backbone(images, train=False)[0]

    def proposals(self, inputs: dict[str, Array], features: Array,
                  targets: dict[str, Array] | None) -> tuple[Array, Array, dict[str, Array]]:
        """(proposals, valid, their losses): training when `targets` are given. Here, the
        proposals that came with the input, which have no loss."""
        del features, targets
        return inputs["proposals"], inputs["proposal_valid"], {}

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        features = self.features(inputs["image"])
        rois, valid, _ = self.proposals(inputs, features, None)
        logits, deltas = self.head(features, rois, train=False)
        detections = rcnn.detect(rois, valid, jax.nn.softmax(logits)[..., 1:], deltas[:, :, 1:],
                                 inputs["image_hw"], score_threshold=self.score_threshold,
                                 nms_threshold=self.nms_threshold,
                                 max_detections=self.max_detections)
        # The evaluation reports the proposals' recall (selective search's, or the RPN's).
        return {**detections, "proposals": rois, "proposal_valid": valid}

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Training losses (summed into the objective) and metrics to log. Uses the 'sample'
        RNG stream for the RoI minibatch and 'dropout' for the fc layers."""
        features = self.features(inputs["image"])
        proposals, valid, losses = self.proposals(inputs, features, targets)
        samples = rcnn.sample_rois(
            self.make_rng("sample"), proposals, valid, targets["boxes"], targets["classes"],
            targets["box_valid"], num=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, background=(self.background_low, 0.5))
        logits, deltas = self.head(features, samples["rois"], train=True)
        head = rcnn.box_head_loss(logits, deltas, samples)
        accuracy = head.pop("head_accuracy")
        foreground = jnp.mean(jnp.sum((samples["labels"] > 0) & samples["valid"], axis=1))
        return {**losses, **head}, {"head_accuracy": accuracy, "foreground_rois": foreground}

"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015): a Region Proposal Network shares the
conv features with the Fast R-CNN detector, so proposals cost almost nothing.

The RPN slides a 3x3 window over conv5_3 and, at each position, scores and regresses
3 scales x 3 ratios anchors; its proposals (NMS 0.7, 2000 at train / 300 at test) feed
Fast R-CNN's RoI pooling and head. Trained by approximate joint training (the paper's
end-to-end variant): one network, the sum of the RPN's and the head's losses, and no gradient
through the proposal coordinates.
"""
from __future__ import annotations

from typing import Any, Sequence

from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.models.fast_rcnn import FastRCNN, feature_stride
from segattn_jax.ops import boxes as box_ops

Array = Any


class FasterRCNN(FastRCNN):
    """inputs {image (B, H, W, 3), image_hw (B, 2)}; otherwise as `FastRCNN`, whose head and
    training minibatch it shares (128 RoIs per image and background IoU [0, 0.5), as in the
    released code, by default).

    Attributes (beyond FastRCNN's):
      anchor_size / anchor_scales / anchor_ratios: anchors of area (size * scale)^2: the paper's
        16 * (8, 16, 32) = 128, 256, 512 pixels, ratios 0.5, 1, 2.
      rpn_samples / rpn_foreground_fraction: 256 anchors per image, up to 1:1.
      pre_nms_train / post_nms_train / pre_nms_test / post_nms_test / rpn_nms_threshold /
        min_proposal_size: proposal selection (12000 / 2000 / 6000 / 300 / 0.7 / 16 px).
    """

    input_keys = ("image", "image_hw")

    rois_per_image: int = 128
    background_low: float = 0.0
    anchor_size: float = 16.0
    anchor_scales: Sequence[float] = (8.0, 16.0, 32.0)
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_samples: int = 256
    rpn_foreground_fraction: float = 0.5
    pre_nms_train: int = 12000
    post_nms_train: int = 2000
    pre_nms_test: int = 6000
    post_nms_test: int = 300
    rpn_nms_threshold: float = 0.7
    min_proposal_size: float = 16.0

    def setup(self):
        super().setup()
        num_anchors = rcnn.check_anchor_config(self.anchor_scales, self.anchor_ratios)
        self.rpn = rcnn.RegionProposalNetwork(num_anchors, scaled_features(512, self.width),
                                              dtype=self.dtype)

    def anchors(self, features: Array) -> Array:
        return box_ops.anchors(features.shape[1:3], feature_stride(self.feature_layer),
                               self.anchor_size,
                               self.anchor_scales, self.anchor_ratios)

    def proposals(self, inputs, features, targets):
        objectness, deltas = self.rpn(features)
        return rcnn.rpn_proposals(self, self.anchors(features), objectness, deltas,
                                  inputs["image_hw"], targets)

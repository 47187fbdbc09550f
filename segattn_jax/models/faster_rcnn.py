"""Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015): a Region Proposal Network shares the
conv features with the Fast R-CNN detector, so proposals cost almost nothing.

The RPN slides a 3x3 window over conv5_3 and, at each position, scores and regresses
3 scales x 3 ratios anchors; its proposals (NMS 0.7, 2000 at train / 300 at test) feed
Fast R-CNN's RoI pooling and head. Trained either by the paper's 4-step alternating training
(Section 3.2, which its Table 3 numbers use: `alternating_step` 1-4, each step a run that starts
from the previous ones) or by approximate joint training (the released code's end-to-end
variant: one network, the sum of the RPN's and the head's losses, and no gradient through the
proposal coordinates).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax

from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.models.fast_rcnn import FastRCNN, feature_stride
from segattn_jax.ops import boxes as box_ops

Array = Any

# The 4-step alternating training (Section 3.2): what each step trains; the rest of the network
# is frozen (the experiment freezes these top-level modules with `optimizer.lr_multipliers`).
# 1: the RPN (and its conv layers, from ImageNet); 2: a Fast R-CNN detector (its own conv layers,
# from ImageNet) on step 1's proposals; 3: the RPN on step 2's conv layers, fixed; 4: the head
# on the same fixed layers and step 3's proposals.
ALTERNATING_FROZEN = {1: ("head",), 2: ("proposal_network",), 3: ("backbone", "head"),
                      4: ("backbone", "rpn")}


class ProposalNetwork(nn.Module):
    """Step 2's proposals: step 1's RPN on step 1's own conv layers, which the detector trained
    beside it does not share yet. images -> (features, objectness, deltas)."""

    backbone: nn.Module
    rpn: nn.Module

    def __call__(self, images: Array) -> tuple[Array, Array, Array]:
        features = self.backbone(images, train=False)[0]
        return features, *self.rpn(features)


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
      alternating_step: 0 for approximate joint training; 1-4 the step of the 4-step
        alternating training this run is (`ALTERNATING_FROZEN`): 1 and 3 train on the RPN's
        losses alone, 2 and 4 on the head's; 2 takes its proposals from `ProposalNetwork` (step
        1's network), 3 and 4 keep the conv features fixed.
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
    alternating_step: int = 0

    def setup(self):
        super().setup()
        if self.alternating_step not in (0, *ALTERNATING_FROZEN):
            raise ValueError(f"alternating_step is 0 (approximate joint training) or a step of "
                             f"the 4-step alternating training, 1-4; got {self.alternating_step}.")
        num_anchors = rcnn.check_anchor_config(self.anchor_scales, self.anchor_ratios)

        def make_rpn(**module_kwargs):
            return rcnn.RegionProposalNetwork(num_anchors, scaled_features(512, self.width),
                                              dtype=self.dtype, **module_kwargs)

        if self.alternating_step == 2:  # unbound, so they are named inside it
            self.proposal_network = ProposalNetwork(self.make_backbone(parent=None),
                                                    make_rpn(parent=None))
        else:
            self.rpn = make_rpn()

    def anchors(self, features: Array) -> Array:
        return box_ops.anchors(features.shape[1:3], feature_stride(self.feature_layer),
                               self.anchor_size,
                               self.anchor_scales, self.anchor_ratios)

    def features(self, images: Array) -> Array:
        features = super().features(images)
        # Steps 3 and 4 train the RPN, then the head, on step 2's conv features as they are.
        return jax.lax.stop_gradient(features) if self.alternating_step in (3, 4) else features

    def proposals(self, inputs, features, targets):
        if self.alternating_step == 2:
            features, objectness, deltas = self.proposal_network(inputs["image"])
        else:
            objectness, deltas = self.rpn(features)
        proposals, valid, losses = rcnn.rpn_proposals(self, self.anchors(features), objectness,
                                                      deltas, inputs["image_hw"], targets)
        # Steps 2 and 4 train the detector alone, on the proposals of an RPN trained before.
        return proposals, valid, ({} if self.alternating_step in (2, 4) else losses)

    def losses(self, inputs, targets):
        if self.alternating_step not in (1, 3):
            return super().losses(inputs, targets)
        # Steps 1 and 3 train the RPN alone: no RoI minibatch, no head.
        _, _, losses = self.proposals(inputs, self.features(inputs["image"]), targets)
        return losses, {}

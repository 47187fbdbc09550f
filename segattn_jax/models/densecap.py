"""DenseCap (Johnson, Karpathy & Fei-Fei, CVPR 2016): the Fully Convolutional Localization Network
finds regions and describes each with a phrase, in one network trained end to end.

CNN features -> the localization layer: a 3x3 conv and sibling 1x1 convs score and regress
k = 12 anchors per position (4 sizes x 3 ratios); at train time 256 of the predicted boxes are
sampled (up to half positive: IoU >= 0.7 with a ground-truth region, or a region's best; negative
below 0.3), at test time the boxes go through NMS (0.7) to 300 proposals. Each region's features
are *bilinearly interpolated* to a 7x7 grid, so the recognition network's gradient reaches the
box coordinates (the paper's change from RoI pooling, kept as the `pooling='roi_pool'`
ablation). The recognition network (two fc layers) gives each region a code, a final
objectness score and box refinement, and an LSTM language model writes its phrase from the code.
Losses as the released code weights them: objectness 0.1 and box regression 0.05 in the
localization layer, 0.1 and 0.1 in the recognition network, captioning 1.

The language model is the captioning decoder (`models/show_attend_tell.py`, without attention):
the region code sets its initial state, where the released code feeds a projection of the code as
the LSTM's first input from a zero state; both condition every word on the region. Sampling,
box coding, NMS and proposal selection are the R-CNN family's (`ops/boxes.py`, `layers/rcnn.py`);
bilinear interpolation is `layers/roi.py`'s RoIAlign with one sample per bin, built on the spatial
transformer's sampler.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.backbones.vgg import VGG16, scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.layers.roi import roi_align, roi_pool
from segattn_jax.models.fast_rcnn import feature_stride
from segattn_jax.models.show_attend_tell import ShowAttendTell
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.gradients import clip_each_images_gradient
from segattn_jax.ops.nms import batched_nms

Array = Any
POOLING = ("bilinear", "roi_pool")
CAPTION_SOURCES = ("region", "image")


def _mean(values: Array, weights: Array) -> Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class DenseCap(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2)}.

    `__call__` -> regions {boxes (B, D, 4), scores (B, D), valid (B, D), codes (B, D, C)}: the
    captions are decoded from the codes by `caption_state` / `caption_step` (the task runs the
    beam search). `losses(inputs, targets)` -> (losses, metrics), targets {boxes (B, M, 4),
    box_valid (B, M), phrases (B, M, T + 2)}.

    Attributes:
      vocab_size: words of the language model (the task sets it from the run's vocabulary).
      width / feature_layer: VGG16's channel multiplier and the layer the regions read (conv5_3,
        stride 16, in the paper).
      pooling: 'bilinear' (the paper) or 'roi_pool' (Fast R-CNN's: its features pass no gradient
        to the boxes).
      box_gradient: whether the recognition network's gradient flows into the box coordinates
        (the paper: yes), through bilinear features and the refinement's target; False stops it
        there.
      box_gradient_clip: the bound on each element of one image's gradient reaching the box
        offsets through the regions (0: unbounded, as the released code; MNC's reference code
        bounds its cascade's at 1/512).
      caption_source: 'region' (the paper) or 'image': the language model reads the code of the
        whole image for every region (the mini table's full-image baseline).
      anchor_size / anchor_scales / anchor_ratios: the paper's 12 anchors per position: sides
        16 * (4, 8, 16, 32) = 64..512 px at ratios 1/2, 1, 2.
      rpn_features: the localization layer's 3x3 conv (256 in the released code).
      samples / foreground_fraction / foreground / background: 256 boxes at up to 1:1, IoU >=
        0.7 positive, < 0.3 negative.
      output_size: the region grid (7).
      proposals / pre_nms / rpn_nms_threshold / min_proposal_size: test-time proposals (300
        after NMS 0.7).
      final_nms_threshold / max_detections: NMS of the refined boxes (0.3) and how many are kept.
      hidden: the recognition network's fc size (VGG16's 4096, scaled by `width`).
      embed_dim / lstm_dim: the language model (512 / 512 in the released code).
      loss weights: mid_* (localization layer), end_* (recognition network), caption_weight;
        box_decay pulls the predicted box offsets towards their anchors (L2, 5e-5).
    """

    input_keys = ("image", "image_hw")

    vocab_size: int = 0
    width: float = 1.0
    feature_layer: str = "conv5_3"
    pooling: str = "bilinear"
    box_gradient: bool = True
    box_gradient_clip: float = 0.0
    caption_source: str = "region"
    anchor_size: float = 16.0
    anchor_scales: Sequence[float] = (4.0, 8.0, 16.0, 32.0)
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_features: int = 256
    samples: int = 256
    foreground_fraction: float = 0.5
    foreground: float = 0.7
    background: float = 0.3
    output_size: int = 7
    proposals: int = 300
    pre_nms: int = 6000
    rpn_nms_threshold: float = 0.7
    min_proposal_size: float = 0.0
    final_nms_threshold: float = 0.3
    max_detections: int = 300
    hidden: int = 4096
    embed_dim: int = 512
    lstm_dim: int = 512
    dropout_rate: float = 0.5
    mid_objectness_weight: float = 0.1
    mid_box_weight: float = 0.05
    end_objectness_weight: float = 0.1
    end_box_weight: float = 0.1
    caption_weight: float = 1.0
    box_decay: float = 5e-5
    dtype: Any = jnp.float32

    def setup(self):
        if self.pooling not in POOLING:
            raise ValueError(f"pooling={self.pooling!r}; valid: {POOLING}.")
        if self.caption_source not in CAPTION_SOURCES:
            raise ValueError(f"caption_source={self.caption_source!r}; valid: {CAPTION_SOURCES}.")
        num_anchors = rcnn.check_anchor_config(self.anchor_scales, self.anchor_ratios)
        self.backbone = VGG16(width=self.width, first_padding=1, last_layer=self.feature_layer,
                              dtype=self.dtype)
        self.rpn = rcnn.RegionProposalNetwork(num_anchors, scaled_features(self.rpn_features,
                                                                          self.width),
                                              dtype=self.dtype)
        self.recognition = rcnn.FullyConnected(scaled_features(self.hidden, self.width),
                                               self.dropout_rate, self.dtype)
        self.end_objectness = nn.Dense(1, kernel_init=nn.initializers.normal(0.01),
                                       dtype=self.dtype)
        # The released code starts the final box regression at zero: the boxes it refines.
        self.end_box = nn.Dense(4, kernel_init=nn.initializers.zeros, dtype=self.dtype)
        self.language = ShowAttendTell(
            vocab_size=self.vocab_size, attention="none", encoder="features",
            embed_dim=self.embed_dim, lstm_dim=self.lstm_dim, dropout_rate=self.dropout_rate,
            dtype=self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)

    # ---- shared pieces ------------------------------------------------------------------------
    def localize(self, image: Array) -> tuple[Array, Array, Array, Array]:
        """(features (B, h, w, C), anchors (N, 4), objectness (B, N), offsets (B, N, 4))."""
        if image.ndim != 4:
            raise ValueError(f"DenseCap expects images (B, H, W, C); got {image.shape}.")
        features = self.backbone(image, train=False)[0]
        objectness, offsets = self.rpn(features)
        anchors = box_ops.anchors(features.shape[1:3], feature_stride(self.feature_layer),
                                  self.anchor_size, self.anchor_scales, self.anchor_ratios)
        return features, anchors, objectness, offsets

    def encode_regions(self, features: Array, boxes: Array, *, train: bool) -> Array:
        """Each box's (B, R, 4) features on the output grid, through the recognition network's
        fc layers -> codes (B, R, C). Bilinear interpolation (one sample at each cell centre) is
        differentiable in the box coordinates; RoI pooling is not."""
        scale = 1.0 / feature_stride(self.feature_layer)
        if self.pooling == "bilinear":
            if not self.box_gradient:
                boxes = jax.lax.stop_gradient(boxes)
            grid = roi_align(features, boxes, self.output_size, spatial_scale=scale,
                             sampling_ratio=1)
        else:
            grid = roi_pool(features, jax.lax.stop_gradient(boxes), self.output_size,
                            spatial_scale=scale)
        return self.recognition(grid, train=train)

    def caption_codes(self, features: Array, codes: Array, image_hw: Array, *, train: bool
                      ) -> Array:
        """The codes the language model reads: each region's, or (caption_source='image') the
        whole image's, repeated for every region."""
        if self.caption_source == "region":
            return codes
        hw = jnp.asarray(image_hw, jnp.float32)
        whole = jnp.stack([jnp.zeros_like(hw[:, 0]), jnp.zeros_like(hw[:, 0]), hw[:, 1],
                           hw[:, 0]], axis=-1)[:, None]
        image_code = self.encode_regions(features, whole, train=train)
        return jnp.broadcast_to(image_code, codes.shape)

    def caption_state(self, codes: Array) -> dict[str, Array]:
        """The language model's state before the first word, from codes (N, C)."""
        return self.language.initial_state(codes[:, None, None, :])

    def caption_step(self, state: dict[str, Array], tokens: Array
                     ) -> tuple[dict[str, Array], dict[str, Array]]:
        """One word of every region's phrase (test time): see ShowAttendTell.step."""
        return self.language.step(state, tokens)

    # ---- test time ----------------------------------------------------------------------------
    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        features, anchors, objectness, offsets = self.localize(inputs["image"])
        proposals, valid = rcnn.propose(
            anchors, objectness, offsets, inputs["image_hw"], pre_nms=self.pre_nms,
            post_nms=self.proposals, nms_threshold=self.rpn_nms_threshold,
            min_size=self.min_proposal_size)
        codes = self.encode_regions(features, proposals, train=False)
        scores = jax.nn.sigmoid(self.end_objectness(codes)[..., 0].astype(jnp.float32))
        hw = jnp.asarray(inputs["image_hw"], jnp.float32)
        boxes = box_ops.clip(box_ops.decode(self.end_box(codes), proposals), hw[:, :1],
                             hw[:, 1:])
        keep_index, keep = batched_nms(boxes, scores, iou_threshold=self.final_nms_threshold,
                                       max_output=self.max_detections, valid=valid)
        codes = self.caption_codes(features, rcnn.take_per_image(codes, keep_index),
                                   inputs["image_hw"], train=False)
        if self.is_initializing():  # the language model's parameters (decoding calls it later)
            self.language(codes[:, 0, None, None, :], jnp.zeros(codes.shape[:1] + (1,), jnp.int32),
                          train=False)
        return {"boxes": rcnn.take_per_image(boxes, keep_index),
                "scores": jnp.where(keep, rcnn.take_per_image(scores, keep_index), 0.0),
                "valid": keep, "codes": codes}

    # ---- training -----------------------------------------------------------------------------
    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The five weighted losses (and box decay) on one minibatch, and metrics to log. Uses
        the 'sample' RNG stream for the box minibatch and 'dropout'."""
        features, anchors, objectness, offsets = self.localize(inputs["image"])
        batch = objectness.shape[0]
        anchors = jnp.broadcast_to(anchors, offsets.shape)
        # The sampler matches the *predicted* boxes (anchors moved by their offsets) to the
        # ground truth, as the released code does; the gradient flows through them into the
        # region features (the matching reads them without it), and box_gradient_clip bounds it.
        box_offsets = offsets
        if self.box_gradient_clip:
            box_offsets = clip_each_images_gradient(offsets, self.box_gradient_clip)
        boxes = box_ops.decode(box_offsets, anchors)
        gt_boxes, gt_valid = targets["boxes"], targets["box_valid"]
        iou = box_ops.pairwise_iou(jax.lax.stop_gradient(boxes), gt_boxes)
        matched, labels = box_ops.match(iou, gt_valid, foreground=self.foreground,
                                        background=(0.0, self.background),
                                        allow_low_quality=True)
        inside = rcnn.inside_image(jax.lax.stop_gradient(boxes), inputs["image_hw"])
        labels = jnp.where(inside, labels, -1)
        indices, sampled = jax.vmap(lambda k, l: box_ops.sample(
            k, l, self.samples, self.foreground_fraction))(
            jax.random.split(self.make_rng("sample"), batch), labels)
        take = lambda x: rcnn.take_per_image(x, indices)
        positive = (take(labels) == 1) & sampled
        sampled, positive_f = sampled.astype(jnp.float32), positive.astype(jnp.float32)
        gt = take(rcnn.take_per_image(gt_boxes, matched))

        # The released code's criteria: the positives' and the negatives' objectness losses are
        # averaged separately and added; smooth L1 is averaged over the four coordinates.
        mid_bce = optax.sigmoid_binary_cross_entropy(take(objectness), positive_f)
        mid_objectness = _mean(mid_bce, positive_f) + _mean(mid_bce, sampled - positive_f)
        mid_box = _mean(rcnn.smooth_l1(take(offsets) - box_ops.encode(gt, take(anchors))).mean(-1),
                        positive_f)
        regions = take(boxes)
        # fc7's dropout (VGG16's), before everything that reads the codes.
        codes = self.dropout(self.encode_regions(features, regions, train=True),
                             deterministic=False)
        end_logit = self.end_objectness(codes)[..., 0]
        end_objectness = _mean(optax.sigmoid_binary_cross_entropy(
            end_logit.astype(jnp.float32), positive_f), sampled)
        end_offsets = self.end_box(codes).astype(jnp.float32)
        # The refinement's target depends on the region: with the box gradient on, its loss also
        # pulls each positive region towards its ground truth (the released BoxRegressionCriterion
        # differentiates with respect to both); without that pull the regions drift.
        target_regions = regions if self.box_gradient else jax.lax.stop_gradient(regions)
        end_box = _mean(rcnn.smooth_l1(end_offsets - box_ops.encode(gt, target_regions)).mean(-1),
                        positive_f)

        # box_ops.sample puts the foreground first: only those slots carry a phrase.
        num_fg = int(round(self.samples * self.foreground_fraction))
        fg_codes = self.caption_codes(features, codes[:, :num_fg], inputs["image_hw"],
                                      train=True)
        phrases = take(rcnn.take_per_image(targets["phrases"], matched))[:, :num_fg]
        has_phrase = positive_f[:, :num_fg]
        flat = lambda x: x.reshape(-1, *x.shape[2:])
        outputs = self.language(flat(fg_codes)[:, None, None, :], flat(phrases)[:, :-1],
                                train=True)
        words = flat(phrases)[:, 1:]
        word_mask = (words != 0).astype(jnp.float32) * flat(has_phrase)[:, None]  # 0 is <pad>
        nll = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], words)
        # Summed over each phrase's words, averaged over the phrases (the released code's).
        caption = jnp.sum(nll * word_mask) / jnp.maximum(jnp.sum(has_phrase), 1.0)
        decay = 0.5 * jnp.sum(jnp.square(offsets)) / batch

        losses = {"mid_objectness": self.mid_objectness_weight * mid_objectness,
                  "mid_box": self.mid_box_weight * mid_box,
                  "end_objectness": self.end_objectness_weight * end_objectness,
                  "end_box": self.end_box_weight * end_box,
                  "caption": self.caption_weight * caption,
                  "box_decay": self.box_decay * decay}
        metrics = {"caption_nll_per_word": jnp.sum(nll * word_mask)
                   / jnp.maximum(jnp.sum(word_mask), 1.0),
                   "positive_regions": jnp.sum(positive_f) / batch,
                   "word_accuracy": _mean(jnp.argmax(outputs["logits"], -1) == words, word_mask)}
        return losses, metrics

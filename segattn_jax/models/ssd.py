"""SSD (Liu, Anguelov, Erhan, Szegedy, Reed, Fu & Berg, ECCV 2016): single-shot detection from
default boxes on several feature maps.

VGG16 up to conv5_3 (pool5 3x3/1, fc6 as a 3x3 conv dilated by 6, fc7 1x1), then extra conv
layers that halve the resolution; a 3x3 conv on each source map (conv4_3 L2-normalized with a
learned scale, fc7, and the extras) predicts, for every default box of every position, C + 1
class scores and 4 box offsets. Default boxes of scale s_k (the paper's eq. 4, linear from 0.2
to 0.9 over the layers after conv4_3, which gets 0.1) and aspect ratios {1, 2, 1/2, 3, 1/3}
plus one of scale sqrt(s_k s_k+1). Training: match each ground truth to its best default box
and every default box with IoU > 0.5, softmax loss with hard negative mining at 3:1 plus smooth
L1 on the offsets, both over the number of matched boxes. The data augmentation (min-IoU
crops, zoom out, photometric) is in the input pipeline (`data/box_augment.py`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.backbones.vgg import VGG16, scaled_features
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.rcnn import HEAD_BOX_WEIGHTS, smooth_l1
from segattn_jax.layers.pooling import max_pool
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.images import check_training_size, warp_to_square
from segattn_jax.ops.nms import multiclass_nms

Array = Any

# Extra layers after fc7, each a 1x1 conv to `reduce` then a kernel x kernel conv to `features`
# with its stride and padding: (reduce, features, kernel, stride, padding).
EXTRA_LAYERS = {
    # SSD300: 19 -> 10 -> 5 -> 3 -> 1 (sources conv4_3 38, fc7 19, conv8_2 ... conv11_2).
    "ssd300": ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0),
               (128, 256, 3, 1, 0)),
    # SSD512: 32 -> 16 -> 8 -> 4 -> 2 -> 1 (conv12_2 is a 4x4 conv padded by 1).
    "ssd512": ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
               (128, 256, 3, 2, 1), (128, 256, 4, 1, 1)),
    # CPU-sized 128x128 inputs: 8 -> 4 -> 2 -> 1.
    "mini": ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 2, 1, 0)),
}
# Aspect ratios (beyond 1) of each source's default boxes: 4 or 6 boxes per position.
ASPECT_RATIOS = {
    "ssd300": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),          # 8732 default boxes
    "ssd512": ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),  # 24564
    "mini": ((2,), (2, 3), (2, 3), (2,), (2,)),
}
L2_NORM_SCALE = 20.0  # conv4_3's initial scale (ParseNet's normalization, as the paper)


def default_box_scales(num_sources: int, s_min: float = 0.2, s_max: float = 0.9,
                       first: float = 0.1) -> tuple[float, ...]:
    """s_1 ... s_m of the paper's eq. 4 (linear from s_min to s_max) for every source after the
    first, which gets `first` (the paper's conv4_3 scale 0.1), and one more step beyond s_max
    (for the last source's extra sqrt(s_k s_k+1) box): num_sources + 1 values."""
    if num_sources < 3:
        raise ValueError(f"SSD needs at least 3 source layers; got {num_sources}.")
    step = (s_max - s_min) / (num_sources - 2)
    return (first, *(s_min + step * k for k in range(num_sources - 1)), s_max + step)


def cell_default_boxes(scale: float, next_scale: float, aspect_ratios: Sequence[float],
                       image_size: float) -> Array:
    """One position's default boxes, centred at the origin, in pixels: aspect 1 at s_k and at
    sqrt(s_k s_k+1), then a_r and 1 / a_r for each ratio (w = s sqrt(a), h = s / sqrt(a))."""
    sizes = [(scale, scale), (math.sqrt(scale * next_scale),) * 2]
    for ratio in aspect_ratios:
        root = math.sqrt(ratio)
        sizes += [(scale * root, scale / root), (scale / root, scale * root)]
    half = jnp.asarray(sizes, jnp.float32) * image_size / 2
    return jnp.concatenate([-half, half], axis=-1)


def default_boxes(feature_sizes: Sequence[tuple[int, int]], image_size: int,
                  scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]]) -> Array:
    """Every source's default boxes (position-major, as the heads' outputs reshape) -> (N, 4)
    in pixels; source k's cells are centred at ((j + 0.5) / f_k) * image_size."""
    return jnp.concatenate([
        box_ops.place_anchors(cell_default_boxes(scales[k], scales[k + 1], aspect_ratios[k],
                                                 image_size), hw, image_size / hw[1])
        for k, hw in enumerate(feature_sizes)])


class L2Norm(nn.Module):
    """ParseNet's L2 normalization over channels with a learned per-channel scale: conv4_3's
    activations are far larger than the later layers'."""

    scale_init: float = L2_NORM_SCALE

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.initializers.constant(self.scale_init), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True) + 1e-10)
        return (x32 / norm * scale).astype(x.dtype)


class SSD(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2)}.

    `__call__` -> detections {boxes (B, D, 4), scores, classes, valid}; `losses(inputs,
    targets)` -> (losses, metrics), targets {boxes, classes, box_valid}.

    Attributes:
      num_classes: object classes C (the classifier adds background).
      layout: 'ssd300', 'ssd512' or 'mini' (extra layers and aspect ratios, above).
      input_size: the fixed square input (300 / 512); other sizes are warped to it.
      width: channel multiplier of VGG16, fc6/fc7 and the extra layers (<1 for slim CPU runs).
      scales: s_k of every source plus one (default: `default_box_scales`).
      match_threshold / negative_ratio: positives at IoU > 0.5 (and each object's best box),
        hard negatives at 3:1.
      score_threshold / nms_threshold / pre_nms / max_detections: test time (0.01 / 0.45 /
        the 400 best pairs / 200).
    """

    input_keys = ("image", "image_hw")

    num_classes: int
    layout: str = "ssd300"
    input_size: int = 300
    width: float = 1.0
    scales: Sequence[float] | None = None
    match_threshold: float = 0.5
    negative_ratio: float = 3.0
    score_threshold: float = 0.01
    nms_threshold: float = 0.45
    pre_nms: int = 400
    max_detections: int = 200
    dtype: Any = jnp.float32

    def setup(self):
        if self.layout not in EXTRA_LAYERS:
            raise ValueError(f"Unknown SSD layout {self.layout!r}; valid: {sorted(EXTRA_LAYERS)}.")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        ratios = ASPECT_RATIOS[self.layout]
        scales = tuple(self.scales or default_box_scales(len(ratios)))
        if len(scales) != len(ratios) + 1:
            raise ValueError(f"SSD {self.layout!r} has {len(ratios)} source layers and needs "
                             f"{len(ratios) + 1} scales; got {scales}.")
        self.box_scales = scales
        self.backbone = VGG16(width=self.width, first_padding=1, last_layer="conv5_3",
                              dtype=self.dtype)
        self.conv4_3_norm = L2Norm()
        conv = lambda features, kernel, **kw: Conv(
            scaled_features(features, self.width), (kernel, kernel), dtype=self.dtype,
            param_dtype=jnp.float32, **kw)
        self.fc6 = conv(1024, 3, padding=6, kernel_dilation=6)  # the paper's atrous fc6
        self.fc7 = conv(1024, 1)
        self.extras = [(conv(reduce, 1), conv(features, kernel, strides=stride, padding=padding))
                       for reduce, features, kernel, stride, padding in EXTRA_LAYERS[self.layout]]
        head = lambda outputs: Conv(outputs, (3, 3), padding=1, dtype=self.dtype,
                                    param_dtype=jnp.float32,
                                    kernel_init=nn.initializers.xavier_uniform())
        boxes_per_position = [2 + 2 * len(r) for r in ratios]
        self.class_heads = [head(a * (self.num_classes + 1)) for a in boxes_per_position]
        self.box_heads = [head(a * 4) for a in boxes_per_position]

    def sources(self, images: Array) -> list[Array]:
        """The feature maps the heads read: conv4_3 (normalized), fc7, the extras' outputs."""
        if images.ndim != 4:
            raise ValueError(f"SSD expects images (B, H, W, C); got {images.shape}.")
        x, intermediates = self.backbone(images, train=False)
        sources = [self.conv4_3_norm(intermediates["conv4_3"])]
        x = max_pool(x, 3, 1, padding=((1, 1), (1, 1)))  # pool5 3x3/1
        x = nn.relu(self.fc7(nn.relu(self.fc6(x))))
        sources.append(x)
        for (reduce, expand), spec in zip(self.extras, EXTRA_LAYERS[self.layout]):
            kernel, padding = spec[2], spec[4]
            if min(x.shape[1:3]) + 2 * padding < kernel:
                raise ValueError(f"An extra layer's input is {x.shape[1:3]}, too small for its "
                                 f"{kernel}x{kernel} conv: the {self.layout!r} layout needs "
                                 f"{self.input_size}x{self.input_size} inputs.")
            x = nn.relu(expand(nn.relu(reduce(x))))
            sources.append(x)
        return sources

    def raw_outputs(self, images: Array) -> tuple[Array, Array, Array]:
        """(class logits (B, N, C + 1), box offsets (B, N, 4), default boxes (N, 4))."""
        sources = self.sources(images)
        batch = images.shape[0]
        logits = [h(x).reshape(batch, -1, self.num_classes + 1)
                  for h, x in zip(self.class_heads, sources)]
        offsets = [h(x).reshape(batch, -1, 4) for h, x in zip(self.box_heads, sources)]
        defaults = default_boxes([x.shape[1:3] for x in sources], self.input_size,
                                 self.box_scales, ASPECT_RATIOS[self.layout])
        return (jnp.concatenate(logits, 1).astype(jnp.float32),
                jnp.concatenate(offsets, 1).astype(jnp.float32), defaults)

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        images, factor = warp_to_square(inputs["image"], self.input_size)
        logits, offsets, defaults = self.raw_outputs(images)
        # The offsets are coded with variances (0.1, 0.1, 0.2, 0.2): Fast R-CNN's weights.
        boxes = box_ops.decode(offsets, defaults, HEAD_BOX_WEIGHTS) * factor
        hw = jnp.asarray(inputs["image_hw"], jnp.float32)
        return multiclass_nms(box_ops.clip(boxes, hw[:, :1], hw[:, 1:]),
                              jax.nn.softmax(logits)[..., 1:],
                              score_threshold=self.score_threshold,
                              nms_threshold=self.nms_threshold, pre_nms=self.pre_nms,
                              max_detections=self.max_detections)

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        images = inputs["image"]
        check_training_size(images, self.input_size, "SSD")
        logits, offsets, defaults = self.raw_outputs(images)
        return ssd_loss(logits, offsets, defaults, targets, match_threshold=self.match_threshold,
                        negative_ratio=self.negative_ratio)


def hard_negatives(loss: Array, negative: Array, num_positive: Array, ratio: float) -> Array:
    """(B, N) mask of the highest-loss negatives, ratio x each image's positives of them (the
    paper's hard negative mining: "at most 3:1")."""
    ranked = jnp.where(negative, jax.lax.stop_gradient(loss), -jnp.inf)
    rank = jnp.argsort(jnp.argsort(-ranked, axis=1), axis=1)
    return negative & (rank < ratio * num_positive[:, None])


def ssd_loss(logits: Array, offsets: Array, defaults: Array, targets: dict[str, Array], *,
             match_threshold: float = 0.5, negative_ratio: float = 3.0
             ) -> tuple[dict[str, Array], dict[str, Array]]:
    """The paper's eq. 1 with alpha = 1: (softmax loss of positives and mined negatives +
    smooth L1 of positives' offsets) / the number of positives N (0 when N = 0)."""
    gt_boxes, gt_valid = targets["boxes"], targets["box_valid"]
    batch = logits.shape[0]
    defaults_b = jnp.broadcast_to(defaults, (batch, *defaults.shape))
    matched, labels = box_ops.match(box_ops.pairwise_iou(defaults_b, gt_boxes), gt_valid,
                                    foreground=match_threshold,
                                    background=(0.0, match_threshold), allow_low_quality=True)
    positive = labels == 1
    classes = jnp.where(positive, box_ops.take_per_image(targets["classes"], matched) + 1, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    num_positive = jnp.sum(positive, axis=1)
    mined = hard_negatives(ce, labels == 0, num_positive, negative_ratio)
    encoded = box_ops.encode(box_ops.take_per_image(gt_boxes, matched), defaults_b,
                             HEAD_BOX_WEIGHTS)
    regression = smooth_l1(offsets - encoded).sum(-1)
    count = jnp.maximum(jnp.sum(num_positive), 1).astype(jnp.float32)
    losses = {"class": jnp.sum(ce * (positive | mined)) / count,
              "box": jnp.sum(regression * positive) / count}
    accuracy = jnp.sum((jnp.argmax(logits, -1) == classes) * positive) / count
    return losses, {"positives_per_image": jnp.mean(num_positive),
                    "positive_accuracy": accuracy}

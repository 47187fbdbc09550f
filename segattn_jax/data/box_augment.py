"""The single-shot detectors' data augmentation, in TensorFlow for the input pipeline: SSD's
(photometric distortions, zoom out, min-IoU crops; Liu et al. 2016, sec. 2.2 and 3.6) and
YOLO's (scaling and translation up to 20%, exposure and saturation up to 1.5x; Redmon et al.
2016, sec. 2.2).

Each takes one image (H, W, 3) float in [0, 1] with its objects' pixel boxes (N, 4)
(x1, y1, x2, y2) and the example's stateless seed, and returns the new image, the boxes in its
pixels, and a (N,) mask of the objects that remain (the caller drops the others' labels too).
"""
from __future__ import annotations

import functools

import tensorflow as tf

# SSD's crop options: the whole image (None), a patch with at least this IoU with some object,
# or any patch (0): drawn uniformly.
SSD_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
SSD_CROP_TRIALS = 50          # candidate patches per option (the reference code's max_trials)
SSD_CROP_SIDE = (0.3, 1.0)    # patch sides relative to the image (the reference code's scale)
SSD_CROP_ASPECT = (0.5, 2.0)  # patch aspect ratio range
SSD_MAX_EXPANSION = 4.0       # zoom out: a canvas up to 16x the image's area (sec. 3.6)
YOLO_JITTER = 0.2             # scaling and translation, fraction of the image size
YOLO_HSV_FACTOR = 1.5         # exposure and saturation scaled by up to this factor


def _seeds(seed: tf.Tensor, count: int) -> list[tf.Tensor]:
    """`count` independent stateless seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, count))


def _chance(seed: tf.Tensor, probability: float = 0.5) -> tf.Tensor:
    return tf.random.stateless_uniform([], seed=seed) < probability


def _uniform(seed: tf.Tensor, shape, low: float, high: float) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=low, maxval=high)


def box_iou(boxes: tf.Tensor, others: tf.Tensor) -> tf.Tensor:
    """IoU of every box (N, 4) with every box (M, 4) -> (N, M): `ops.boxes.pairwise_iou` in
    TensorFlow, for the tf.data graph."""
    top_left = tf.maximum(boxes[:, None, :2], others[None, :, :2])
    bottom_right = tf.minimum(boxes[:, None, 2:], others[None, :, 2:])
    overlap = tf.reduce_prod(tf.maximum(bottom_right - top_left, 0.0), axis=-1)
    area = lambda b: tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area(boxes)[:, None] + area(others)[None, :] - overlap
    return tf.math.divide_no_nan(overlap, union)


def photometric_distort(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """SSD's photometric distortions, each with probability 1/2: brightness (+-32/255),
    contrast and saturation (x0.5-1.5), hue (+-18 degrees), contrast before or after the
    others."""
    s = _seeds(seed, 10)

    def maybe(image, index, distort):
        return tf.cond(_chance(s[index]), lambda: distort(image, s[index + 1]), lambda: image)

    contrast = lambda im, sd: tf.image.stateless_random_contrast(im, 0.5, 1.5, sd)
    image = maybe(image, 0, lambda im, sd: tf.image.stateless_random_brightness(im, 32 / 255, sd))
    contrast_first = _chance(s[2])
    image = tf.cond(contrast_first, lambda: maybe(image, 4, contrast), lambda: image)
    image = maybe(image, 6, lambda im, sd: tf.image.stateless_random_saturation(im, 0.5, 1.5, sd))
    image = maybe(image, 8, lambda im, sd: tf.image.stateless_random_hue(im, 18 / 360, sd))
    image = tf.cond(contrast_first, lambda: image, lambda: maybe(image, 4, contrast))
    return tf.clip_by_value(image, 0.0, 1.0)


def zoom_out(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """With probability 1/2, the image placed at a random spot of a canvas up to 4x its sides,
    filled with its mean colour (the paper's "zoom out" for small objects, sec. 3.6)."""
    s = _seeds(seed, 3)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)

    def expand():
        ratio = _uniform(s[1], [], 1.0, SSD_MAX_EXPANSION)
        new_h, new_w = tf.floor(height * ratio), tf.floor(width * ratio)
        offset = tf.floor(_uniform(s[2], [2], 0.0, 1.0) * tf.stack([new_h - height, new_w - width]))
        mean = tf.reduce_mean(image, axis=[0, 1])
        top, left = tf.cast(offset[0], tf.int32), tf.cast(offset[1], tf.int32)
        pads = [[top, tf.cast(new_h, tf.int32) - top - tf.shape(image)[0]],
                [left, tf.cast(new_w, tf.int32) - left - tf.shape(image)[1]], [0, 0]]
        canvas = tf.pad(image - mean, pads) + mean
        return canvas, boxes + tf.stack([offset[1], offset[0]] * 2)

    return tf.cond(_chance(s[0]), expand, lambda: (image, boxes))


def min_iou_crop(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """SSD's patch sampling: an option drawn from `SSD_MIN_IOUS`; for a threshold, the first of
    50 random patches (sides 0.3-1 of the image, aspect 1/2-2) that overlaps some object with at
    least that IoU and holds some object's centre (the whole image if none does). Objects whose
    centres fall outside the patch are dropped, the others clipped to it."""
    s = _seeds(seed, 4)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    option = tf.random.stateless_uniform([], seed=s[0], maxval=len(SSD_MIN_IOUS), dtype=tf.int32)
    thresholds = tf.constant([-1.0 if t is None else t for t in SSD_MIN_IOUS])
    threshold = tf.gather(thresholds, option)
    sides = _uniform(s[1], [SSD_CROP_TRIALS, 2], *SSD_CROP_SIDE) * tf.stack([width, height])
    corner = _uniform(s[2], [SSD_CROP_TRIALS, 2], 0.0, 1.0) * (tf.stack([width, height]) - sides)
    patches = tf.concat([corner, corner + sides], axis=1)  # (T, 4) x1, y1, x2, y2
    aspect = sides[:, 0] / sides[:, 1]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = tf.reduce_all((centers[None] > patches[:, None, :2])
                           & (centers[None] < patches[:, None, 2:]), axis=-1)  # (T, N)
    overlap_ok = tf.reduce_any(box_iou(patches, boxes) >= threshold, axis=1)
    good = ((aspect >= SSD_CROP_ASPECT[0]) & (aspect <= SSD_CROP_ASPECT[1]) & overlap_ok
            & tf.reduce_any(inside, axis=1))
    whole = tf.stack([0.0, 0.0, width, height])
    use_patch = (threshold >= 0) & tf.reduce_any(good)
    index = tf.argmax(tf.cast(good, tf.int32))
    patch = tf.where(use_patch, tf.gather(patches, index), whole)
    keep = tf.where(use_patch, tf.gather(inside, index), tf.ones(tf.shape(boxes)[:1], tf.bool))
    x1, y1 = tf.cast(tf.floor(patch[0]), tf.int32), tf.cast(tf.floor(patch[1]), tf.int32)
    x2, y2 = tf.cast(tf.math.ceil(patch[2]), tf.int32), tf.cast(tf.math.ceil(patch[3]), tf.int32)
    x2, y2 = tf.minimum(x2, tf.shape(image)[1]), tf.minimum(y2, tf.shape(image)[0])
    image = image[y1:y2, x1:x2]
    origin = tf.cast(tf.stack([x1, y1, x1, y1]), tf.float32)
    limits = tf.cast(tf.stack([x2 - x1, y2 - y1] * 2), tf.float32)
    boxes = tf.clip_by_value(boxes - origin, 0.0, limits)
    return image, boxes, keep


def ssd_augment(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor, *, expand: bool = False
                ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Photometric distortions, zoom out (`expand`: the SSD300* / SSD512* rows), then a min-IoU
    crop (the reference code's order)."""
    s = _seeds(seed, 3)
    image = photometric_distort(image, s[0])
    if expand:
        image, boxes = zoom_out(image, boxes, s[1])
    return min_iou_crop(image, boxes, s[2])


def yolo_augment(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random scaling and translation up to 20% of the image size (the view is a window of
    the image, extrapolated with black), then exposure (HSV value) and saturation scaled by a
    factor in [1/1.5, 1.5]. Objects left without area are dropped."""
    s = _seeds(seed, 4)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    scale = _uniform(s[0], [], 1.0 - YOLO_JITTER, 1.0 + YOLO_JITTER)
    shift = _uniform(s[1], [2], -YOLO_JITTER, YOLO_JITTER)  # fractions of (width, height)
    # The window (in the image's normalized coordinates) that becomes the new image.
    x0, y0 = 0.5 - 0.5 / scale - shift[0], 0.5 - 0.5 / scale - shift[1]
    window = tf.stack([y0, x0, y0 + 1.0 / scale, x0 + 1.0 / scale])
    size = tf.cast(tf.stack([height, width]), tf.int32)
    image = tf.image.crop_and_resize(image[None], window[None], [0], size)[0]
    origin = tf.stack([x0 * width, y0 * height] * 2)
    boxes = tf.clip_by_value((boxes - origin) * scale, 0.0, tf.stack([width, height] * 2))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(image, 0.0, 1.0))
    factors = tf.exp(_uniform(s[2], [2], -1.0, 1.0) * tf.math.log(YOLO_HSV_FACTOR))
    hsv = tf.concat([hsv[..., :1], tf.clip_by_value(hsv[..., 1:] * factors, 0.0, 1.0)], axis=-1)
    return tf.image.hsv_to_rgb(hsv), boxes, keep


AUGMENTATIONS = {"ssd": ssd_augment, "ssd_zoom": functools.partial(ssd_augment, expand=True),
                 "yolo": yolo_augment}

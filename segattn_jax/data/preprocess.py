"""Per-example preprocessing: `preprocess(example, seed, train) -> model inputs` (TensorFlow).

`seed` is a stateless-RNG seed (shape [2], int) that the pipeline derives from the example's
position in the stream, so augmentation is reproducible and resumable. Experiment configs name a
preprocessor from `PREPROCESSORS`; new ones compose the small helpers below.
"""
from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from segattn_jax.data.box_augment import AUGMENTATIONS
from segattn_jax.data.captions import CaptionEncoder, caption_texts, phrase_texts
from segattn_jax.data.handwriting import tf_encode_text
from segattn_jax.data.poses import flic_to_lsp
from segattn_jax.metrics.pose import JOINT_NAMES, NUM_JOINTS
from segattn_jax.ops.superpixels import felzenszwalb_segments

if TYPE_CHECKING:  # data.proposals reads datasets through data.pipeline, which imports this
    from segattn_jax.data.proposals import Proposals

Preprocess = Callable[[dict[str, tf.Tensor], tf.Tensor, bool], dict[str, tf.Tensor]]


def to_float_image(image: tf.Tensor) -> tf.Tensor:
    """uint8 image -> float32 in [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


def flip_coin(seed: tf.Tensor) -> tf.Tensor:
    """Whether this example is mirrored: true with probability 1/2, from the example's seed."""
    return tf.random.stateless_uniform([], seed=seed) < 0.5


def random_flip_left_right(tensors: Sequence[tf.Tensor], seed: tf.Tensor) -> list[tf.Tensor]:
    """Mirrors all `tensors` (H, W, ...) together with probability 1/2, so labels stay aligned."""
    flip = flip_coin(seed)
    return [tf.cond(flip, lambda t=t: tf.reverse(t, axis=[1]), lambda t=t: t) for t in tensors]


SEGMENTATION_IGNORE_LABEL = 255  # the segmentation task's default task.ignore_label


def segmentation(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                 canvas: tuple[int, int] = (),
                 superpixels: tuple[float, float, int] = (),
                 object_crop: tuple[int, float, float, float] = (),
                 proposals: Proposals | None = None) -> dict[str, tf.Tensor]:
    """{'image' float32 (H, W, 3) in [0, 1], 'label' int32 (H, W)}; random flip when training.

    `canvas` (height, width): images of any size padded at the bottom and right to that size
    (image zeros, labels 255 = ignored), so that they batch and compile once (VOC's images are
    at most 500x500). An image larger than the canvas stops with its size.
    `superpixels` (scale, sigma, min_size): also 'superpixels' int32 (H, W), the image's
    Felzenszwalb-Huttenlocher segments (ops/superpixels.py), for Farabet et al.'s vote.
    `object_crop` (size, min_context, max_context, max_shift), training only: DeconvNet's
    instance-wise training examples instead of the image (`_object_crop`; no canvas then).
    `proposals` (data/proposals.py), evaluation only: also 'proposals' (P, 4) in pixels
    (x1, y1, x2, y2) and 'proposal_valid' (P,), for DeconvNet's inference on proposals.
    """
    image = to_float_image(example["image"])
    label = tf.cast(example["segmentation_mask"][..., 0], tf.int32)
    if train:
        image, label = random_flip_left_right([image, label], seed)
    if train and object_crop:  # fixed-size crops: no canvas needed
        image, label = _object_crop(image, label, tf.random.experimental.stateless_fold_in(
            seed, 1), *object_crop)
    elif canvas:
        height, width = canvas
        size = tf.shape(label)
        with tf.control_dependencies([tf.debugging.assert_less_equal(
                size, tf.constant([height, width]),
                message=f"An image is larger than dataset.preprocess.canvas={tuple(canvas)} "
                        "(height, width); raise the canvas.")]):
            pads = [[0, height - size[0]], [0, width - size[1]]]
            image = tf.pad(image, pads + [[0, 0]])
            label = tf.pad(label, pads, constant_values=SEGMENTATION_IGNORE_LABEL)
        image.set_shape((height, width, image.shape[-1]))
        label.set_shape((height, width))
    out = {"image": image, "label": label}
    if superpixels:
        scale, sigma, min_size = superpixels
        segments = tf.numpy_function(
            functools.partial(felzenszwalb_segments, scale=float(scale), sigma=float(sigma),
                              min_size=int(min_size)), [image], tf.int32, stateful=False)
        segments.set_shape(label.shape)
        out["superpixels"] = segments
    if proposals is not None and not train:
        boxes, count = proposals.lookup(example["tfds_id"])
        size = tf.shape(example["segmentation_mask"])
        out["proposals"] = tf.ensure_shape(_pixel_boxes(boxes, size[0], size[1]),
                                           [proposals.max_proposals, 4])
        out["proposal_valid"] = tf.range(proposals.max_proposals) < count
    return out


def region_boxes(label: np.ndarray, min_pixels: int = 4) -> np.ndarray:
    """(M, 4) float32 pixel boxes (x1, y1, x2, y2) of the connected regions of every class in a
    label map (background 0 and the ignore label 255 excluded): object instances as far as a
    class mask tells them apart (touching objects of one class are one region)."""
    from scipy import ndimage

    boxes = []
    for class_id in np.unique(label):
        if class_id in (0, SEGMENTATION_IGNORE_LABEL):
            continue
        regions, _ = ndimage.label(label == class_id)
        for region, found in enumerate(ndimage.find_objects(regions), start=1):
            if found is not None and np.sum(regions[found] == region) >= min_pixels:
                rows, cols = found
                boxes.append((cols.start, rows.start, cols.stop, rows.stop))
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def _object_crop(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, size: int,
                 min_context: float, max_context: float, max_shift: float
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    """DeconvNet's instance-wise training example: one object (a random `region_boxes` region)
    in a square window `context` times its longer side (uniform in [min_context, max_context]),
    its centre moved by up to `max_shift` of the window in each direction, resized to
    size x size (labels by nearest neighbour; outside the image: zeros, labels ignored). The
    paper's first stage centres its objects (max_shift 0, context ~1.2); the second, harder
    one crops more loosely. An image without objects gives its whole frame."""
    boxes = tf.numpy_function(region_boxes, [label], tf.float32, stateful=False)
    boxes = tf.reshape(boxes, [-1, 4])
    height, width = (tf.cast(tf.shape(label)[i], tf.float32) for i in (0, 1))
    whole = tf.stack([0.0, 0.0, width, height])
    seeds = tf.random.experimental.stateless_split(seed, 3)
    pick = tf.random.stateless_uniform([], seeds[0], maxval=tf.maximum(tf.shape(boxes)[0], 1),
                                       dtype=tf.int32)
    box = tf.cond(tf.shape(boxes)[0] > 0, lambda: boxes[pick], lambda: whole)
    context = tf.random.stateless_uniform([], seeds[1], min_context, max_context)
    side = context * tf.maximum(box[2] - box[0], box[3] - box[1])
    shift = tf.random.stateless_uniform([2], seeds[2], -max_shift, max_shift) * side
    cx, cy = 0.5 * (box[0] + box[2]) + shift[0], 0.5 * (box[1] + box[3]) + shift[1]
    # crop_and_resize's normalized coordinates put 0 and 1 at the first and last pixel centres.
    window = tf.stack([(cy - side / 2) / (height - 1), (cx - side / 2) / (width - 1),
                       (cy + side / 2 - 1) / (height - 1), (cx + side / 2 - 1) / (width - 1)])
    crop = tf.image.crop_and_resize(image[None], window[None], [0], [size, size])[0]
    crop_label = tf.image.crop_and_resize(
        tf.cast(label, tf.float32)[None, ..., None], window[None], [0], [size, size],
        method="nearest", extrapolation_value=float(SEGMENTATION_IGNORE_LABEL))[0, ..., 0]
    return crop, tf.cast(crop_label, tf.int32)


def classification(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                   size: int = 0, central_fraction: float = 1.0,
                   value_range: tuple[float, float] = (0.0, 1.0), random_crop: bool = False,
                   flip: bool = False, label_offset: int = 0) -> dict[str, tf.Tensor]:
    """{'image' float32 (H, W, C) in `value_range`, 'label' int32 () + `label_offset`
    (`image_label`)}.

    The defaults keep the stored image in [0, 1] without augmentation (digits are not mirror-
    symmetric, and the distorted sets carry their own distortions). ImageNet as TF-Slim's
    Inception checkpoints expect it: at test the central 87.5% resized to `size` 299; in training
    (`random_crop`, `flip`) a random crop covering 5-100% of the image with aspect ratio 3/4-4/3,
    resized to `size`, mirrored half the time; scaled to [-1, 1]; `label_offset` 1 because their
    class 0 is "background".
    """
    image = to_float_image(example["image"])
    if train and random_crop:
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.1,
            aspect_ratio_range=(0.75, 1.33), area_range=(0.05, 1.0), max_attempts=100,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, crop_size)
    elif central_fraction < 1.0:
        image = tf.image.central_crop(image, central_fraction)
    if size:
        image = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
    if train and flip:
        (image,) = random_flip_left_right([image], tf.random.experimental.stateless_fold_in(
            seed, 1))
    low, high = value_range
    return {"image": image * (high - low) + low, "label": image_label(example) + label_offset}


def image_label(example: dict[str, tf.Tensor]) -> tf.Tensor:
    """An image's class: its 'label' feature (ImageNet's), or for scenes without one
    (`shapes/main_object`) the class of the object with the largest box, its dominant one."""
    if "label" in example:
        return tf.cast(example["label"], tf.int32)
    boxes = example["objects"]["bbox"]  # normalized: areas compare as in pixels
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return tf.cast(tf.gather(example["objects"]["label"],
                             tf.argmax(areas, output_type=tf.int32)), tf.int32)


def binary_image(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                 max_value: float = 255.0, threshold: float = 0.5) -> dict[str, tf.Tensor]:
    """{'image' float32 (H, W, C) in {0, 1}}: the stored image over `max_value`, thresholded at
    `threshold`, for models of binary pixels (DRAW's Bernoulli likelihood). TFDS
    `binarized_mnist` stores its fixed binarization as 0/1 (max_value 1); other sets store 0-255."""
    del seed, train
    image = tf.cast(example["image"], tf.float32) / max_value
    return {"image": tf.cast(image > threshold, tf.float32)}


def resize_scale(height: tf.Tensor, width: tf.Tensor, min_side: float, max_side: float,
                 canvas: tuple[int, int]) -> tf.Tensor:
    """The R-CNN family's resize factor: shorter side to `min_side` unless the longer side would
    pass `max_side` (600 / 1000 in the papers), and small enough to fit the padded `canvas`."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    scale = tf.minimum(min_side / tf.minimum(height, width), max_side / tf.maximum(height, width))
    return tf.minimum(scale, tf.minimum(canvas[0] / height, canvas[1] / width))


def _pixel_boxes(normalized: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """TFDS's normalized (ymin, xmin, ymax, xmax) -> pixel (x1, y1, x2, y2): the one place the
    conversion happens."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(normalized, [-1, 4]), axis=1)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return tf.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)


def _mirror_boxes(boxes: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    w = tf.cast(width, tf.float32)
    return tf.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)


def _pad_to(values: tf.Tensor, count: tf.Tensor, size: int, check: tf.Operation) -> tf.Tensor:
    """The first `count` rows of `values` zero-padded to `size` rows (static shape), after
    `check` (that count <= size) has passed."""
    with tf.control_dependencies([check]):
        extra = values.shape[1:]
        padded = tf.pad(values[:count], [[0, size - count]] + [[0, 0]] * len(extra))
    return tf.ensure_shape(padded, [size, *extra])


def box_masks(masks: tf.Tensor, normalized_boxes: tf.Tensor, size: int) -> tf.Tensor:
    """Per-object image masks (N, H, W, 1) (0/1, any dtype) -> (N, size, size) float32 masks
    relative to each object's normalized (ymin, xmin, ymax, xmax) box, sampled bilinearly at the
    centres of a size x size grid over the box (`ops.masks`'s representation)."""
    if size < 2:
        raise ValueError(f"dataset.preprocess.mask_size must be at least 2; got {size}.")
    masks = tf.cast(masks, tf.float32)

    def crop():
        # One replicated border pixel, so centres up to half a pixel outside the image read the
        # border (crop_and_resize would read its extrapolation value there).
        padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        hw = tf.cast(tf.shape(masks)[1:3], tf.float32)
        boxes = tf.reshape(normalized_boxes, [-1, 4]) * tf.concat([hw, hw], axis=0)  # pixels
        start, extent = boxes[:, :2], boxes[:, 2:] - boxes[:, :2]
        # crop_and_resize samples index a*(n-1) + i*(b-a)*(n-1)/(size-1); ours is the centre of
        # cell i, start + (i + 0.5) * extent / size, in the padded map's pixel index (+1 - 0.5).
        first = start + 0.5 * extent / size + 0.5
        last = start + (size - 0.5) * extent / size + 0.5
        scale = tf.concat([hw + 1.0, hw + 1.0], axis=0)
        return tf.image.crop_and_resize(padded, tf.concat([first, last], axis=1) / scale,
                                        tf.range(tf.shape(masks)[0]), [size, size])[..., 0]

    # An image without objects may have an empty (0, 0, 0, 1) mask tensor: nothing to crop.
    return tf.cond(tf.shape(masks)[0] > 0, crop, lambda: tf.zeros([0, size, size]))


def detection(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
              max_boxes: int = 100, canvas: tuple[int, int] | None = None,
              min_side: float = 600.0, max_side: float = 1000.0,
              proposals: Proposals | None = None, warp_size: int | None = None,
              augment: str = "flip", mask_size: int | None = None) -> dict[str, tf.Tensor]:
    """Images with their objects' boxes, padded to fixed sizes, for every detector.

    Returns image float32 (H, W, 3) in [0, 1] (the `canvas` when given: resized by
    `resize_scale`, then zero-padded at the bottom and right), image_hw int32 (2,) (the size
    before padding, to clip boxes to), boxes float32 (max_boxes, 4) in pixels (x1, y1, x2, y2),
    classes int32, difficult bool (VOC's flag, or COCO's is_crowd) and box_valid bool, each
    (max_boxes,). With `proposals` (data/proposals.py, looked up by the example's tfds_id), also
    proposals (P, 4) in pixels and proposal_valid (P,), and, where the proposals are regions
    (SDS), proposal_masks (P, M, M) relative to their boxes. TFDS's normalized boxes are
    converted in one place (`_pixel_boxes`). More objects than `max_boxes` stop the pipeline
    with an error naming the config key.

    `warp_size` resizes every image to warp_size x warp_size without keeping its aspect ratio
    (YOLO, SSD) instead of the canvas. `augment` (training only): 'flip' mirrors image and boxes
    with probability 1/2 (the R-CNN family); 'ssd' / 'yolo' first apply that detector's
    augmentation (`data/box_augment.py`), then the flip; 'none' leaves the image as it is.

    `mask_size` M (instance segmentation) also returns masks float32 (max_boxes, M, M): each
    object's mask (the dataset's per-object `objects/mask`) relative to its box, `ops.masks`'s
    representation, flipped with the image.
    """
    if mask_size is not None and (warp_size is not None or augment in AUGMENTATIONS):
        raise ValueError("Instance masks follow only a flip: use dataset.preprocess.mask_size "
                         "with augment 'flip' or 'none' and no warp_size.")
    if augment not in ("none", "flip", *AUGMENTATIONS):
        raise ValueError(f"Unknown --config.dataset.preprocess.augment {augment!r}; valid: "
                         f"{['none', 'flip', *AUGMENTATIONS]}.")
    image = to_float_image(example["image"])
    objects = example["objects"]
    if warp_size is not None:
        canvas = None
    if canvas is not None:
        scale = resize_scale(tf.shape(image)[0], tf.shape(image)[1], min_side, max_side, canvas)
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
        image = tf.image.resize(image, size, method="bilinear", antialias=True)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    boxes = _pixel_boxes(objects["bbox"], height, width)
    difficult = objects.get("is_difficult", objects.get("is_crowd"))
    if difficult is None:
        difficult = tf.zeros(tf.shape(boxes)[:1], tf.bool)
    if proposals is not None:
        proposal_boxes, proposal_count = proposals.lookup(example["tfds_id"])
        proposal_boxes = _pixel_boxes(proposal_boxes, height, width)
    labels = tf.cast(objects["label"], tf.int32)
    difficult = tf.cast(difficult, tf.bool)
    if mask_size is not None:
        masks = box_masks(objects["mask"], objects["bbox"], mask_size)
    if proposals is not None and (warp_size is not None or augment in AUGMENTATIONS):
        raise ValueError("Cached proposals follow only a flip: use them with "
                         "dataset.preprocess.augment 'flip' or 'none' and no warp_size.")
    if train and augment in AUGMENTATIONS:
        image, boxes, keep = AUGMENTATIONS[augment](
            image, boxes, tf.random.experimental.stateless_fold_in(seed, 1))
        boxes, labels, difficult = (tf.boolean_mask(x, keep) for x in (boxes, labels, difficult))
    if warp_size is not None:
        factor = tf.cast(warp_size, tf.float32) / tf.cast(tf.shape(image)[:2], tf.float32)
        boxes = boxes * tf.stack([factor[1], factor[0]] * 2)
        image = tf.image.resize(image, [warp_size, warp_size], method="bilinear", antialias=True)
        height, width = tf.constant(warp_size), tf.constant(warp_size)
    flip = flip_coin(seed) if train and augment != "none" else tf.constant(False)
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    boxes = tf.cond(flip, lambda: _mirror_boxes(boxes, width), lambda: boxes)
    count = tf.shape(boxes)[0]
    check = tf.debugging.assert_less_equal(
        count, max_boxes, message=f"An image has more objects than the padded maximum "
        f"{max_boxes}: raise --config.dataset.preprocess.max_boxes.")
    if canvas is not None:
        image = tf.image.pad_to_bounding_box(image, 0, 0, *canvas)
    out = {"image": image, "image_hw": tf.stack([height, width]),
           "boxes": _pad_to(boxes, count, max_boxes, check),
           "classes": _pad_to(labels, count, max_boxes, check),
           "difficult": _pad_to(difficult, count, max_boxes, check),
           "box_valid": _pad_to(tf.ones([count], tf.bool), count, max_boxes, check)}
    if mask_size is not None:
        masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)
        out["masks"] = _pad_to(masks, count, max_boxes, check)
    if proposals is not None:
        proposal_boxes = tf.cond(flip, lambda: _mirror_boxes(proposal_boxes, width),
                                 lambda: proposal_boxes)
        out["proposals"] = tf.ensure_shape(proposal_boxes, [proposals.max_proposals, 4])
        out["proposal_valid"] = tf.range(proposals.max_proposals) < proposal_count
        if proposals.packed_masks is not None:
            regions = proposals.lookup_masks(example["tfds_id"])
            out["proposal_masks"] = tf.cond(flip, lambda: tf.reverse(regions, axis=[2]),
                                            lambda: regions)
    return out


def localization(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                 size: int = 224, max_boxes: int = 16, flip: bool = True,
                 crop: str = "warp") -> dict[str, tf.Tensor]:
    """One main object per image, for classification + localization (ILSVRC's CLS-LOC task).

    The image becomes size x size by `crop`: 'warp' resizes it whole (aspect ratio lost; the
    embedded square scenes), 'center' resizes its shorter side to `size` and keeps the central
    square (VGG's single central crop; boxes clipped to it); mirrored half the time in training
    when `flip`. Returns image float32 (size, size, 3) in [0, 1]; label int32 (): the image's
    class (its 'label' feature, as ILSVRC's) or, for scenes without one (`shapes`), the class of
    the object with the largest box; box float32 (4,) in pixels: the largest box of that class,
    the regression target; boxes (max_boxes, 4) with box_valid (max_boxes,): every box of that
    class, which the ILSVRC protocol accepts a prediction against; has_box bool (): whether
    there is one (an image without, as a degenerate annotation leaves, trains only its class
    and counts as a localization error).
    """
    if crop not in ("warp", "center"):
        raise ValueError(f"Unknown --config.dataset.preprocess.crop {crop!r}; valid: 'warp', "
                         "'center'.")
    augment = "flip" if flip else "none"
    if crop == "warp":
        out = detection(example, seed, train, max_boxes=max_boxes, warp_size=size,
                        augment=augment)
        image, boxes = out["image"], out["boxes"]
    else:
        out = detection(example, seed, train, max_boxes=max_boxes, augment=augment)
        hw = tf.cast(tf.shape(out["image"])[:2], tf.float32)
        image = resize_and_center_crop(out["image"], size)
        scaled = tf.math.ceil(hw * size / tf.reduce_min(hw))  # as resize_and_center_crop
        top, left = tf.unstack(tf.floor((scaled - size) / 2))
        sy, sx = tf.unstack(scaled / hw)
        boxes = tf.clip_by_value(out["boxes"] * tf.stack([sx, sy, sx, sy])
                                 - tf.stack([left, top, left, top]), 0.0, float(size))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    valid = out["box_valid"] & (areas > 0)
    areas = tf.where(valid, areas, -1.0)
    label = image_label(example)
    same_class = valid & tf.equal(out["classes"], label)
    main = tf.argmax(tf.where(same_class, areas, -1.0), output_type=tf.int32)
    return {"image": image, "label": label, "box": tf.gather(boxes, main), "boxes": boxes,
            "box_valid": same_class, "has_box": tf.reduce_any(same_class)}


def _left_right_swap() -> list[int]:
    """Joint permutation that a mirror image needs: each left joint takes its right one's place."""
    swapped = [name.replace("left", "@").replace("right", "left").replace("@", "right")
               for name in JOINT_NAMES]
    return [JOINT_NAMES.index(name) for name in swapped]


def pose(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *, size: int = 128,
         margin: float = 0.1, jitter: float = 0.0, flip: bool = False) -> dict[str, tf.Tensor]:
    """A square crop around the person, with the LSP-order joints in its pixels (DeepPose).

    Reads the `poses` layout (data/poses.py: image, joints (14, 2) (x, y) pixels, visible,
    person_box) or TFDS `flic` (mapped by `poses.flic_to_lsp`). The crop is the person box's
    longer side plus `margin` on each side, centred on the box, zero-padded past the image, and
    resized to size x size. Training may move the crop by up to `jitter` of its side and scale
    it by 1 +- jitter, and mirror it when `flip` (left and right joints swap; leave it off for
    data whose colours tell left from right, as `poses`). Returns image float32 (size, size, 3)
    in [0, 1], joints float32 (14, 2) (x, y) in the crop's pixels (pixel centres at +0.5) and
    visible bool (14,): annotated as visible and inside the crop.
    """
    if "xcoords" in example:
        example = flic_to_lsp(example)
    image = to_float_image(example["image"])
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    xmin, ymin, xmax, ymax = tf.unstack(_pixel_boxes(
        tf.cast(example["person_box"], tf.float32), hw[0], hw[1])[0])
    centre = tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2])
    side = tf.maximum(tf.maximum(xmax - xmin, ymax - ymin), 1.0) * (1 + 2 * margin)
    if train and jitter:
        shift, scale = tf.split(tf.random.stateless_uniform([3], seed, -jitter, jitter), [2, 1])
        centre, side = centre + shift * side, side * (1 + scale[0])
    top_left = centre - side / 2
    # crop_and_resize samples at pixel centres of a normalized box: output pixel i's centre
    # (i + 0.5) sits at top_left + (i + 0.5) * side / size in the image's continuous pixels.
    step = side / size
    start = (top_left + step / 2 - 0.5) / tf.maximum(hw[::-1] - 1, 1.0)
    end = start + step * (size - 1) / tf.maximum(hw[::-1] - 1, 1.0)
    crop = tf.image.crop_and_resize(image[None], [[start[1], start[0], end[1], end[0]]], [0],
                                    [size, size], extrapolation_value=0.0)[0]
    joints = (tf.cast(example["joints"], tf.float32) - top_left) / step
    visible = tf.cast(example["visible"], tf.bool) & tf.reduce_all(
        (joints >= 0) & (joints < size), axis=-1)
    if train and flip:
        mirrored = flip_coin(tf.random.experimental.stateless_fold_in(seed, 1))
        swap = _left_right_swap()
        crop = tf.cond(mirrored, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
        joints = tf.cond(mirrored, lambda: tf.gather(
            tf.stack([size - joints[:, 0], joints[:, 1]], 1), swap), lambda: joints)
        visible = tf.cond(mirrored, lambda: tf.gather(visible, swap), lambda: visible)
    return {"image": tf.ensure_shape(crop, [size, size, 3]),
            "joints": tf.ensure_shape(joints, [NUM_JOINTS, 2]), "visible": visible}


def resize_and_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """Shorter side resized to `size`, then the central size x size square (the captioning and
    VGG evaluation crop)."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scaled = tf.cast(tf.math.ceil(hw * size / tf.reduce_min(hw)), tf.int32)
    image = tf.image.resize(image, scaled, method="bilinear", antialias=True)
    top, left = (scaled[0] - size) // 2, (scaled[1] - size) // 2
    return tf.ensure_shape(image[top:top + size, left:left + size], [size, size, None])


def captioning(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
               captions: CaptionEncoder | None = None, size: int = 0,
               value_range: tuple[float, float] = (0.0, 1.0), max_references: int = 5,
               reference_bytes: int = 256, max_objects: int = 0) -> dict[str, tf.Tensor]:
    """Images with one caption to learn from and every reference sentence to score against.

    Returns image float32 (H, W, 3) in `value_range` (`size` > 0: shorter side resized to it and
    centre-cropped square); caption int32 (max_length + 2,) from `captions` (the run's
    vocabulary; the captioning task supplies it): in training a random one of the example's
    references, at eval the first; references uint8 (max_references, reference_bytes), the raw
    UTF-8 sentences zero-padded (cut at reference_bytes), as bytes so they travel with the
    batch to every process.
    `max_objects` > 0 adds object_boxes (normalized ymin, xmin, ymax, xmax), object_classes and
    object_valid, each max_objects long, for measuring where attention looks.
    """
    if captions is None:
        raise ValueError("The captioning preprocessor needs `captions` (a CaptionEncoder); the "
                         "captioning task makes it from the run's vocabulary.")
    image = to_float_image(example["image"])
    if size:
        image = resize_and_center_crop(image, size)
    texts = caption_texts(example)
    count = tf.shape(texts)[0]
    chosen = tf.random.stateless_uniform([], seed=seed, maxval=count, dtype=tf.int32) if train else 0
    references = tf.pad(texts[:max_references], [[0, tf.maximum(0, max_references - count)]])
    low, high = value_range
    out = {"image": image * (high - low) + low,
           "caption": captions.encode(texts[chosen]),
           "references": tf.ensure_shape(tf.io.decode_raw(
               references, tf.uint8, fixed_length=reference_bytes),
               [max_references, reference_bytes])}
    if max_objects:
        objects = example["objects"]
        num = tf.shape(objects["label"])[0]
        check = tf.debugging.assert_less_equal(
            num, max_objects, message=f"An image has more objects than {max_objects}: raise "
            "--config.dataset.preprocess.max_objects.")
        out["object_boxes"] = _pad_to(tf.reshape(objects["bbox"], [-1, 4]), num, max_objects, check)
        out["object_classes"] = _pad_to(tf.cast(objects["label"], tf.int32), num, max_objects,
                                        check)
        out["object_valid"] = _pad_to(tf.ones([num], tf.bool), num, max_objects, check)
    return out


def dense_captioning(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                     captions: CaptionEncoder | None = None, max_boxes: int = 100,
                     canvas: tuple[int, int] | None = None, min_side: float = 600.0,
                     max_side: float = 1000.0, phrase_bytes: int = 128) -> dict[str, tf.Tensor]:
    """Images with region boxes and one phrase per box (DenseCap).

    `detection`'s image, image_hw, boxes and box_valid (never mirrored: phrases say "left" and
    "right"), plus phrases int32 (max_boxes, max_length + 2) from `captions` (the run's
    vocabulary; the task supplies it), phrase_truncated bool (max_boxes,) where a phrase had more
    than max_length words, and phrase_text uint8 (max_boxes, phrase_bytes), the raw UTF-8
    phrases zero-padded, the references the evaluation scores against.
    """
    if captions is None:
        raise ValueError("The dense_captioning preprocessor needs `captions` (a CaptionEncoder); "
                         "the dense captioning task makes it from the run's vocabulary.")
    texts = phrase_texts(example)
    # Regions have phrases, not classes: `detection` gets placeholder labels, dropped below.
    objects = {**example["objects"], "label": tf.zeros(tf.shape(texts), tf.int64)}
    out = detection({**example, "objects": objects}, seed, train=False, max_boxes=max_boxes,
                    canvas=canvas, min_side=min_side, max_side=max_side)
    del out["classes"], out["difficult"]
    count = tf.shape(texts)[0]
    check = tf.debugging.assert_less_equal(
        count, max_boxes, message=f"An image has more regions than the padded maximum "
        f"{max_boxes}: raise --config.dataset.preprocess.max_boxes.")
    ids = tf.map_fn(captions.encode, texts, fn_output_signature=tf.TensorSpec(
        [captions.max_length + 2], tf.int32))
    truncated = captions.words(texts).row_lengths() > captions.max_length
    text = tf.io.decode_raw(tf.reshape(texts, [-1]), tf.uint8, fixed_length=phrase_bytes)
    out.update(phrases=_pad_to(ids, count, max_boxes, check),
               phrase_truncated=_pad_to(truncated, count, max_boxes, check),
               phrase_text=_pad_to(text, count, max_boxes, check))
    return out


def translation(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                source_key: str = "source", target_key: str = "target",
                source_encoder: CaptionEncoder | None = None,
                target_encoder: CaptionEncoder | None = None, train_max_length: int = 0,
                reference_bytes: int = 1024) -> dict[str, tf.Tensor]:
    """A sentence pair as the translation models read it (`source_key`, `target_key`: the
    dataset's features, e.g. 'en' and 'fr' for wmt14_translate/fr-en).

    Returns source and target int32 (max_length + 2,) from the encoders (the run's vocabularies;
    the translation task supplies them): <start> w1 .. wn <end> <pad>..., longer sentences cut;
    source_words int32 () the source's length in tokens (BLEU by length), source_truncated
    bool, unknown bool (a word of either side is outside its vocabulary: the paper's "No UNK"
    rows leave such pairs out), and reference uint8 (reference_bytes,): the target sentence's
    raw UTF-8, zero-padded, what BLEU scores against. `train_max_length` > 0 pads training
    pairs to that length instead (the task trains only on pairs that short): shorter scans.
    """
    del seed
    if source_encoder is None or target_encoder is None:
        raise ValueError("The translation preprocessor needs source_encoder and target_encoder; "
                         "the translation task makes them from the run's vocabularies.")
    for key in (source_key, target_key):
        if key not in example:
            raise ValueError(f"The dataset has no {key!r} feature (it has {sorted(example)}): set "
                             "--config.dataset.preprocess.source_key / target_key.")
    source, target = example[source_key], example[target_key]
    length = tf.size(source_encoder.words(source), out_type=tf.int32)
    padded = train_max_length if train and train_max_length else None
    return {"source": source_encoder.encode(source, padded),
            "target": target_encoder.encode(target, padded),
            "source_words": length, "source_truncated": length > source_encoder.max_length,
            "unknown": source_encoder.has_unknown(source) | target_encoder.has_unknown(target),
            "reference": tf.io.decode_raw(target, tf.uint8, fixed_length=reference_bytes)}


def handwriting(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool, *,
                max_points: int = 0, max_chars: int = 0,
                offset_mean: Sequence[float] = (0.0, 0.0),
                offset_std: Sequence[float] = (1.0, 1.0)) -> dict[str, tf.Tensor]:
    """An online-handwriting line (data/handwriting.py's format) as Graves' networks read it.

    Returns strokes float32 (max_points, 3): (dx, dy) normalized with the training set's
    `offset_mean` / `offset_std` (the handwriting task supplies them), the end-of-stroke bit,
    zero rows after the line; points int32 () the real rows; truncated bool (the line had more
    than max_points and was cut); text int32 (max_chars,) character ids (data/handwriting.py
    SYMBOLS; characters outside the alphabet are UNKNOWN, 0), text_length int32 () and
    text_truncated bool.
    """
    del seed, train
    if max_points < 1 or max_chars < 1:
        raise ValueError("The handwriting preprocessor needs max_points and max_chars >= 1 "
                         "(--config.dataset.preprocess.max_points / max_chars).")
    strokes = tf.cast(example["strokes"], tf.float32)
    points = tf.shape(strokes)[0]
    strokes = strokes[:max_points]
    offsets = (strokes[:, :2] - tf.constant(offset_mean, tf.float32)) / tf.constant(
        offset_std, tf.float32)
    strokes = tf.concat([offsets, strokes[:, 2:3]], axis=1)
    kept = tf.shape(strokes)[0]
    text = tf_encode_text(example["text"])
    characters = tf.size(text)
    text = text[:max_chars]
    return {"strokes": tf.ensure_shape(tf.pad(strokes, [[0, max_points - kept], [0, 0]]),
                                       [max_points, 3]),
            "points": kept, "truncated": points > max_points,
            "text": tf.ensure_shape(tf.pad(text, [[0, max_chars - tf.size(text)]]), [max_chars]),
            "text_length": tf.size(text), "text_truncated": characters > max_chars}


PREPROCESSORS: dict[str, Preprocess] = {
    "segmentation": segmentation,
    "classification": classification,
    "detection": detection,
    "localization": localization,
    "pose": pose,
    "captioning": captioning,
    "dense_captioning": dense_captioning,
    "binary_image": binary_image,
    "translation": translation,
    "handwriting": handwriting,
}


def make_preprocess(name: str, options: Mapping[str, Any] | None = None) -> Preprocess:
    """Preprocessor `name` with its keyword `options` (the config's dataset.preprocess, e.g.
    max_boxes or canvas for detection); unknown names or options fail with the valid ones."""
    if name not in PREPROCESSORS:
        raise ValueError(f"Unknown preprocessor {name!r}; valid: {sorted(PREPROCESSORS)}.")
    function = PREPROCESSORS[name]
    options = dict(options or {})
    valid = [p.name for p in inspect.signature(function).parameters.values()
             if p.kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"--config.dataset.preprocess has {unknown}, which the {name!r} "
                         f"preprocessor does not take; valid: {valid or 'none'}.")
    return functools.partial(function, **options) if options else function

"""The single-shot detectors' augmentation keeps boxes on their objects: a white square on black,
augmented many ways, still fills its box; SSD's crops meet their IoU constraint; images without
objects pass through; the detection preprocessor warps to a square and drops cut-off objects."""
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.data import box_augment
from segattn_jax.data.preprocess import make_preprocess


def _square_scene():
    image = np.zeros((60, 90, 3), np.float32)
    image[10:40, 30:70] = 1.0
    return tf.constant(image), tf.constant([[30.0, 10.0, 70.0, 40.0]])


def _photometric_free(name):
    """The augmentation without its colour changes (they would blur 'white on black')."""
    if name == "ssd":
        return lambda image, boxes, seed: box_augment.min_iou_crop(
            *box_augment.zoom_out(image, boxes, seed), seed)
    return box_augment.yolo_augment


@pytest.mark.parametrize("name", ["ssd", "yolo"])
def test_augmented_boxes_still_frame_their_object(name):
    augment = _photometric_free(name)
    for seed in range(40):
        image, boxes = _square_scene()
        out, out_boxes, keep = augment(image, boxes, tf.constant([seed, 1]))
        out, out_boxes = out.numpy(), out_boxes.numpy()
        assert out.ndim == 3 and out.shape[-1] == 3
        if not keep.numpy()[0]:
            continue
        x1, y1, x2, y2 = np.round(out_boxes[0]).astype(int)
        assert 0 <= x1 < x2 <= out.shape[1] and 0 <= y1 < y2 <= out.shape[0]
        inside = out[y1 + 1:y2 - 1, x1 + 1:x2 - 1, 0]
        if inside.size:
            assert inside.mean() > 0.85 * out.max(), (seed, out_boxes)  # YOLO scales exposure
        bright = np.argwhere(out[..., 0] > 0.5 * out.max())
        if len(bright):  # no white pixel far outside the box
            assert bright[:, 1].min() >= x1 - 1 and bright[:, 1].max() <= x2
            assert bright[:, 0].min() >= y1 - 1 and bright[:, 0].max() <= y2


def test_min_iou_crop_meets_its_threshold_and_keeps_centres_inside():
    rng = np.random.default_rng(0)
    image = tf.zeros((100, 100, 3))
    for seed in range(30):
        lo = rng.uniform(0, 60, (3, 2))
        boxes = tf.constant(np.concatenate([lo, lo + rng.uniform(10, 40, (3, 2))], 1), tf.float32)
        crop, cropped, keep = box_augment.min_iou_crop(image, boxes, tf.constant([seed, 2]))
        assert keep.numpy().any()
        height, width = crop.shape[:2]
        assert (cropped.numpy() >= 0).all()
        assert (cropped.numpy()[:, [0, 2]] <= width).all()
        assert (cropped.numpy()[:, [1, 3]] <= height).all()


def test_no_objects_pass_through_every_augmentation():
    image = tf.random.stateless_uniform((40, 50, 3), seed=[0, 0])
    empty = tf.zeros((0, 4))
    for augment in box_augment.AUGMENTATIONS.values():
        out, boxes, keep = augment(image, empty, tf.constant([3, 4]))
        assert out.shape[-1] == 3 and boxes.shape[0] == 0 and keep.shape[0] == 0


def test_photometric_distortion_stays_in_range_and_changes_colours():
    image = tf.random.stateless_uniform((20, 20, 3), seed=[1, 1])
    changed = [not np.allclose(box_augment.photometric_distort(image, tf.constant([s, 0])), image)
               for s in range(10)]
    for s in range(10):
        out = box_augment.photometric_distort(image, tf.constant([s, 0])).numpy()
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert any(changed)


def _example(boxes):
    image = np.zeros((60, 90, 3), np.uint8)
    normalized = np.asarray(boxes, np.float32)[:, [1, 0, 3, 2]] / [60, 90, 60, 90]
    return {"image": tf.constant(image),
            "objects": {"bbox": tf.constant(normalized, tf.float32),
                        "label": tf.constant(np.arange(len(boxes)), tf.int64)}}


def test_detection_warps_to_a_square_and_drops_cut_objects_with_their_labels():
    preprocess = make_preprocess("detection", {"warp_size": 64, "augment": "ssd", "max_boxes": 4})
    example = _example([[30, 10, 70, 40], [0, 0, 10, 10]])
    eval_out = preprocess(example, tf.constant([0, 0]), False)  # eval: warped only
    assert eval_out["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(eval_out["image_hw"], [64, 64])
    np.testing.assert_allclose(eval_out["boxes"][0], [30 * 64 / 90, 10 * 64 / 60, 70 * 64 / 90,
                                                      40 * 64 / 60], rtol=1e-5)
    dropped = 0
    for seed in range(30):
        out = preprocess(example, tf.constant([seed, 0]), True)
        valid = out["box_valid"].numpy()
        dropped += 2 - valid.sum()
        # Each kept box keeps its own label (0 for the big box, 1 for the corner one).
        for box, label in zip(out["boxes"].numpy()[valid], out["classes"].numpy()[valid]):
            assert label in (0, 1) and (box[2] - box[0]) > 0
    assert dropped > 0  # some crops cut the corner object off


def test_unknown_augmentation_says_which_exist():
    with pytest.raises(ValueError, match="augment.*valid"):
        make_preprocess("detection", {"augment": "mosaic"})(_example([[0, 0, 5, 5]]),
                                                             tf.constant([0, 0]), True)

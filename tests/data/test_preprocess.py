import numpy as np
import tensorflow as tf

from segattn_jax.data import preprocess


def _example():
    rng = np.random.default_rng(0)
    return {"image": tf.constant(rng.integers(0, 256, (8, 6, 3)), tf.uint8),
            "segmentation_mask": tf.constant(rng.integers(0, 9, (8, 6, 1)), tf.uint8),
            "label": tf.constant(7, tf.int64)}


def test_segmentation_flips_image_and_label_together():
    example = _example()
    image = example["image"].numpy() / 255.0
    label = example["segmentation_mask"].numpy()[..., 0]
    flipped = 0
    for i in range(20):
        out = preprocess.segmentation(example, tf.constant([i, 0], tf.int64), train=True)
        assert out["image"].dtype == tf.float32 and out["label"].dtype == tf.int32
        assert out["label"].shape == (8, 6)
        if np.array_equal(out["label"].numpy(), label[:, ::-1]):
            np.testing.assert_allclose(out["image"].numpy(), image[:, ::-1], atol=1e-6)
            flipped += 1
        else:
            np.testing.assert_array_equal(out["label"].numpy(), label)
            np.testing.assert_allclose(out["image"].numpy(), image, atol=1e-6)
    assert 3 <= flipped <= 17
    again = preprocess.segmentation(example, tf.constant([4, 0], tf.int64), train=True)
    np.testing.assert_array_equal(
        again["label"], preprocess.segmentation(example, tf.constant([4, 0], tf.int64), True)["label"])


def test_eval_never_flips():
    example = _example()
    for i in range(10):
        out = preprocess.segmentation(example, tf.constant([i, 0], tf.int64), train=False)
        np.testing.assert_array_equal(out["label"], example["segmentation_mask"][..., 0])


def test_region_boxes_are_each_class_regions_bounds():
    label = np.zeros((12, 16), np.uint8)
    label[1:4, 2:6] = 3      # two regions of class 3
    label[8:11, 10:15] = 3
    label[5:9, 1:3] = 5      # one of class 5
    label[0, 15] = 7         # one pixel: under min_pixels
    label[10:12, 0:3] = 255  # ignored
    boxes = preprocess.region_boxes(label)
    assert sorted(map(tuple, boxes.tolist())) == [(1, 5, 3, 9), (2, 1, 6, 4), (10, 8, 15, 11)]
    assert preprocess.region_boxes(np.zeros((4, 4), np.uint8)).shape == (0, 4)


def test_object_crop_centres_one_object_and_ignores_what_lies_outside_the_image():
    """The crop of the only object (class 4, a 6x10 box at the image's corner) holds it in its
    centre at 1.5x its longer side; the window's part outside the image is labelled 255."""
    image = np.zeros((20, 30, 3), np.uint8)
    label = np.zeros((20, 30, 1), np.uint8)
    label[0:6, 0:10] = 4
    image[0:6, 0:10] = 200
    example = {"image": tf.constant(image), "segmentation_mask": tf.constant(label)}
    out = preprocess.segmentation(example, tf.constant([3, 1], tf.int64), train=True,
                                  object_crop=(30, 1.5, 1.5, 0.0))
    crop, crop_label = out["image"].numpy(), out["label"].numpy()
    assert crop.shape == (30, 30, 3) and crop_label.shape == (30, 30)
    # Window: 15 px square centred on the box's centre (y, x) = (3, 5), 2 crop px per image px:
    # y in [-4.5, 10.5) (its first 9 rows outside), x in [-2.5, 12.5) (5 columns outside, on
    # the right instead when the example is mirrored).
    rows, cols = np.nonzero(crop_label == 4)
    assert abs(rows.mean() - 14.5) < 2.0 and abs(cols.mean() - 14.5) < 2.0
    assert np.all(crop_label[:8] == 255)
    assert np.all(crop_label[:, :4] == 255) or np.all(crop_label[:, -4:] == 255)
    assert set(np.unique(crop_label)) == {0, 4, 255}
    np.testing.assert_allclose(np.median(crop[crop_label == 4]), 200 / 255, atol=0.01)
    unchanged = preprocess.segmentation(example, tf.constant([3, 1], tf.int64), train=False,
                                        object_crop=(30, 1.5, 1.5, 0.0))
    assert unchanged["label"].shape == (20, 30)  # evaluation sees the whole image


def test_classification():
    out = preprocess.classification(_example(), tf.constant([0, 0], tf.int64), train=True)
    assert out["image"].dtype == tf.float32 and out["image"].shape == (8, 6, 3)
    assert float(tf.reduce_max(out["image"])) <= 1.0
    assert out["label"].dtype == tf.int32 and int(out["label"]) == 7
    assert set(preprocess.PREPROCESSORS) == {"segmentation", "classification", "detection",
                                             "localization", "pose", "captioning",
                                             "dense_captioning", "binary_image", "translation",
                                             "handwriting"}


def test_binary_image_thresholds_stored_values_and_binarized_mnist_bits():
    image = tf.constant([[[0], [127], [128], [255]]], tf.uint8)
    out = preprocess.binary_image({"image": image}, tf.constant([0, 0], tf.int64), train=True)
    assert out["image"].dtype == tf.float32
    np.testing.assert_array_equal(out["image"][0, :, 0], [0.0, 0.0, 1.0, 1.0])
    bits = tf.constant([[[0], [1]]], tf.uint8)  # binarized_mnist stores 0/1
    out = preprocess.binary_image({"image": bits}, tf.constant([0, 0], tf.int64), train=False,
                                  max_value=1.0)
    np.testing.assert_array_equal(out["image"][0, :, 0], [0.0, 1.0])


def test_make_preprocess_passes_options_and_rejects_unknown_ones():
    import pytest

    assert preprocess.make_preprocess("segmentation", {}) is preprocess.segmentation
    detection = preprocess.make_preprocess("detection", {"max_boxes": 3})
    example = {"image": tf.zeros((8, 6, 3), tf.uint8),
               "objects": {"bbox": tf.constant([[0.0, 0.0, 0.5, 0.5]]),
                           "label": tf.constant([2], tf.int64)}}
    assert detection(example, tf.constant([0, 0], tf.int64), False)["boxes"].shape == (3, 4)
    with pytest.raises(ValueError, match=r"dataset.preprocess has \['max_box'\].*max_boxes"):
        preprocess.make_preprocess("detection", {"max_box": 3})
    with pytest.raises(ValueError, match="Unknown preprocessor 'boxes'"):
        preprocess.make_preprocess("boxes")

"""The detection input path: shapes' objects, VOC and COCO (TFDS, mocked offline) into padded
fixed-size boxes in pixels; flips move boxes with the image; too many objects name the config key."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax.data import preprocess


def test_shapes_objects_become_padded_pixel_boxes(tiny_shapes):
    example = next(iter(tiny_shapes.as_dataset(split="test")))
    out = preprocess.detection(example, tf.constant([0, 0], tf.int64), train=False, max_boxes=8)
    count = int(tf.shape(example["objects"]["bbox"])[0])
    ymin, xmin, ymax, xmax = example["objects"]["bbox"].numpy().T
    np.testing.assert_allclose(out["boxes"][:count], np.stack([xmin, ymin, xmax, ymax], 1) * 32,
                               rtol=1e-6)
    np.testing.assert_array_equal(out["classes"][:count], example["objects"]["label"])
    np.testing.assert_array_equal(out["box_valid"], np.arange(8) < count)
    assert not out["boxes"][count:].numpy().any() and not out["difficult"].numpy().any()
    np.testing.assert_array_equal(out["image_hw"], [32, 32])


def test_flip_mirrors_boxes_with_the_image(tiny_shapes):
    example = next(iter(tiny_shapes.as_dataset(split="test")))
    plain = preprocess.detection(example, tf.constant([0, 0], tf.int64), False, max_boxes=8)
    flips = 0
    for i in range(12):
        out = preprocess.detection(example, tf.constant([i, 0], tf.int64), True, max_boxes=8)
        if np.array_equal(out["image"], plain["image"]):
            np.testing.assert_allclose(out["boxes"], plain["boxes"])
            continue
        flips += 1
        np.testing.assert_allclose(out["image"], plain["image"].numpy()[:, ::-1])
        valid = plain["box_valid"].numpy()
        mirrored = plain["boxes"].numpy()[valid][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [32, 0, 32, 0]
        np.testing.assert_allclose(out["boxes"].numpy()[valid], mirrored, atol=1e-5)
    assert 2 <= flips <= 10


def test_more_objects_than_max_boxes_names_the_config_key(tiny_shapes):
    ds = tiny_shapes.as_dataset(split="test").map(
        lambda e: preprocess.detection(e, tf.constant([0, 0], tf.int64), False, max_boxes=0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="config.dataset.preprocess.max_boxes"):
        next(iter(ds))


def voc_like(num_examples, crowd_key="is_difficult"):
    """Examples with the structure of TFDS voc/2007 (or coco/2017 with crowd_key='is_crowd'):
    a 375 x 500 image and consistent per-object fields (mock_data's random ones are not)."""
    rng = np.random.default_rng(0)

    def examples():
        for _ in range(num_examples):
            n = int(rng.integers(1, 4))
            lo = rng.uniform(0, 0.5, (n, 2))
            yield {"image": rng.integers(0, 256, (375, 500, 3), dtype=np.uint8),
                   "objects": {"bbox": np.concatenate([lo, lo + 0.4], 1).astype(np.float32),
                               "label": rng.integers(0, 20, n),
                               crowd_key: rng.uniform(size=n) < 0.3}}

    signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
                 "objects": {"bbox": tf.TensorSpec((None, 4), tf.float32),
                             "label": tf.TensorSpec((None,), tf.int64),
                             crowd_key: tf.TensorSpec((None,), tf.bool)}}
    return tf.data.Dataset.from_generator(examples, output_signature=signature)


def voc_like_as_dataset(num_examples):
    """An `as_dataset_fn` for `tfds.testing.mock_data` serving `voc_like` examples, with TFDS's
    tfds_id when the read config asks for it (cached proposals, extra training datasets)."""

    def as_dataset(self, split, read_config=None, **kwargs):
        ds = voc_like(num_examples)
        if read_config is not None and read_config.add_tfds_id:
            # Unique over the train and test splits, as TFDS's ids are, and the same however
            # the split is spelled (the loop reads train+validation as an even_splits shard).
            name = "test" if "test" in str(split) else "trainval"
            ds = ds.enumerate().map(lambda i, e: {
                **e, "tfds_id": tf.strings.join([name, tf.strings.as_string(i)], "__")})
        return ds

    return as_dataset


@pytest.mark.parametrize("name, crowd_key", [("voc/2007", "is_difficult"),
                                             ("coco/2017", "is_crowd")])
def test_real_datasets_resize_to_the_rcnn_protocol_into_a_fixed_canvas(name, crowd_key):
    objects = tfds.builder(name).info.features["objects"]  # the real builder's spec, offline
    assert {"bbox", "label", crowd_key} <= set(objects.keys())

    def as_dataset(self, split, **kwargs):
        return voc_like(4, crowd_key)

    prep = lambda e: preprocess.detection(e, tf.constant([0, 0], tf.int64), False, max_boxes=5,
                                          canvas=(608, 1008))
    with tfds.testing.mock_data(num_examples=4, as_dataset_fn=as_dataset):
        batch = next(iter(tfds.load(name, split="validation").map(prep).batch(2)))
    batch = {k: v.numpy() for k, v in batch.items()}
    # 375 x 500 -> shorter side 600 (scale 1.6), longer 800 <= 1000; padded to the canvas.
    assert batch["image"].shape == (2, 608, 1008, 3)
    np.testing.assert_array_equal(batch["image_hw"], [[600, 800]] * 2)
    assert not batch["image"][:, 600:].any() and not batch["image"][:, :, 800:].any()
    example = next(iter(voc_like(4, crowd_key)))
    count = len(example["objects"]["label"])
    ymin, xmin, ymax, xmax = example["objects"]["bbox"].numpy().T
    np.testing.assert_allclose(batch["boxes"][0, :count],
                               np.stack([xmin * 800, ymin * 600, xmax * 800, ymax * 600], 1),
                               rtol=1e-5)
    np.testing.assert_array_equal(batch["difficult"][0, :count], example["objects"][crowd_key])


def test_resize_scale_caps_the_longer_side_and_fits_the_canvas():
    scale = lambda h, w, canvas=(1000, 1000): float(preprocess.resize_scale(h, w, 600, 1000, canvas))
    assert scale(300, 400) == pytest.approx(2.0)  # shorter side to 600
    assert scale(200, 1000) == pytest.approx(1.0)  # longer side capped at 1000
    assert scale(500, 375, (608, 1008)) == pytest.approx(608 / 500)  # portrait into a landscape canvas

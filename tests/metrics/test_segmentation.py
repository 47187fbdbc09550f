"""Segmentation metrics against hand-computed numbers, sklearn, and the FCN `score.py` rules."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from sklearn import metrics as skm

from segattn_jax.metrics.segmentation import confusion_matrix, per_class_iou, segmentation_metrics

# 10 pixels, 3 classes, rows = ground truth, columns = prediction.
HAND_LABELS = np.array([[0, 0, 0, 0, 1], [1, 1, 1, 2, 2]])
HAND_PREDICTIONS = np.array([[0, 0, 0, 1, 1], [1, 2, 2, 0, 2]])
HAND_CONFUSION = np.array([
    [3, 1, 0],
    [0, 2, 2],
    [1, 0, 1],
])
# By hand: diag = (3, 2, 1), row sums t = (4, 4, 2), column sums = (4, 3, 3), total = 10.
#   pixel accuracy = 6/10
#   class accuracy = 3/4, 2/4, 1/2 -> mean 1.75/3
#   union = t + col - diag = (5, 5, 4); IoU = 3/5, 2/5, 1/4 -> mean 1.25/3
#   frequency weighted IoU = (4*3/5 + 4*2/5 + 2*1/4) / 10 = 4.5/10
HAND_METRICS = {
    "pixel_accuracy": 0.6,
    "mean_accuracy": 1.75 / 3,
    "mean_iou": 1.25 / 3,
    "frequency_weighted_iou": 0.45,
}


def test_confusion_matrix_hand_case():
    confusion = confusion_matrix(HAND_LABELS, HAND_PREDICTIONS, num_classes=3)
    np.testing.assert_array_equal(confusion, HAND_CONFUSION)
    assert jnp.issubdtype(confusion.dtype, jnp.integer)


def test_metrics_hand_case():
    result = segmentation_metrics(HAND_CONFUSION)
    assert result.keys() == HAND_METRICS.keys()
    for name, expected in HAND_METRICS.items():
        assert result[name] == pytest.approx(expected), name
    np.testing.assert_allclose(per_class_iou(HAND_CONFUSION), [0.6, 0.4, 0.25])


def test_absent_classes_follow_fcn_nanmean():
    # Class 1 is absent from ground truth and predictions: skipped by both means.
    # Class 3 never occurs but is predicted once: IoU 0 counts, its accuracy (0/0) is skipped.
    confusion = np.array([
        [2, 0, 0, 1],
        [0, 0, 0, 0],
        [0, 0, 3, 0],
        [0, 0, 0, 0],
    ])
    # By hand: t = (3, 0, 3, 0), columns = (2, 0, 3, 1), total 6.
    #   pixel accuracy 5/6; class accuracy 2/3, -, 1, - -> mean 5/6
    #   IoU 2/3, -, 3/3, 0/1 -> mean 5/9; fwIoU = (3*2/3 + 3*1) / 6 = 5/6
    result = segmentation_metrics(confusion)
    assert result["pixel_accuracy"] == pytest.approx(5 / 6)
    assert result["mean_accuracy"] == pytest.approx(5 / 6)
    assert result["mean_iou"] == pytest.approx(5 / 9)
    assert result["frequency_weighted_iou"] == pytest.approx(5 / 6)
    assert all(np.isfinite(v) for v in result.values())


def test_ignore_label_pixels_are_not_counted():
    labels = np.concatenate([HAND_LABELS, np.full((2, 3), 255)], axis=1)
    predictions = np.concatenate([HAND_PREDICTIONS, np.array([[0, 1, 2], [2, 1, 0]])], axis=1)
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), HAND_CONFUSION)
    # With ignoring switched off, 255 is still out of range and dropped, like FCN's fast_hist.
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3, ignore_label=None), HAND_CONFUSION)
    # An in-range ignore label drops that class's pixels.
    dropped = confusion_matrix(HAND_LABELS, HAND_PREDICTIONS, 3, ignore_label=2)
    np.testing.assert_array_equal(dropped, HAND_CONFUSION * np.array([[1], [1], [0]]))


def test_valid_mask_excludes_padding():
    labels = np.pad(HAND_LABELS, ((0, 1), (0, 2)))  # 11 zero pixels would count as (0, 0) ...
    predictions = np.pad(HAND_PREDICTIONS, ((0, 1), (0, 2)))
    valid = np.pad(np.ones_like(HAND_LABELS, bool), ((0, 1), (0, 2)))  # ... unless masked out
    assert confusion_matrix(labels, predictions, 3)[0, 0] == 3 + 11
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3, valid_mask=valid), HAND_CONFUSION)


def test_agrees_with_sklearn_and_sums_over_batches_and_devices():
    num_classes = 5
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, size=(8, 12, 16))
    labels[rng.random(labels.shape) < 0.1] = 255
    predictions = rng.integers(0, num_classes, size=labels.shape)
    kept = labels != 255
    expected = skm.confusion_matrix(labels[kept], predictions[kept], labels=np.arange(num_classes))

    jitted = jax.jit(functools.partial(confusion_matrix, num_classes=num_classes))
    np.testing.assert_array_equal(jitted(labels, predictions), expected)
    per_batch = sum(np.asarray(jitted(labels[i : i + 2], predictions[i : i + 2]), np.int64) for i in range(0, 8, 2))
    np.testing.assert_array_equal(per_batch, expected)

    # Batch sharded over the (8 virtual) devices, under both sharding modes of a mesh.
    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((len(jax.devices()),), ("data",), axis_types=(axis_type,))
        sharding = NamedSharding(mesh, P("data"))
        sharded = jitted(jax.device_put(labels, sharding), jax.device_put(predictions, sharding))
        np.testing.assert_array_equal(sharded, expected)

    # The metrics match sklearn's definitions where every class occurs.
    result = segmentation_metrics(expected)
    y_true, y_pred = labels[kept], predictions[kept]
    assert result["pixel_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["mean_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert result["mean_iou"] == pytest.approx(skm.jaccard_score(y_true, y_pred, average="macro"))
    assert result["frequency_weighted_iou"] == pytest.approx(skm.jaccard_score(y_true, y_pred, average="weighted"))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((2, 4), int), 3)
    with pytest.raises(ValueError, match="argmax"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((2, 3), np.float32), 3)
    with pytest.raises(ValueError, match="empty"):
        segmentation_metrics(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="square"):
        segmentation_metrics(np.zeros((3, 2)))

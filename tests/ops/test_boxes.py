"""Box ops against pycocotools' IoU, worked examples of the R-CNN parameterization, and the
papers' anchor and matching rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from segattn_jax.ops import boxes as box_ops


def _random_boxes(rng, n, size=100.0):
    corners = rng.uniform(0, size, (n, 2, 2))
    return np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)


def test_pairwise_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 20)
    to_xywh = lambda x: np.concatenate([x[:, :2], x[:, 2:] - x[:, :2]], 1).astype(np.float64)
    expected = coco_mask.iou(to_xywh(a), to_xywh(b), [0] * len(b))
    np.testing.assert_allclose(box_ops.pairwise_iou(a, b), expected, atol=1e-6)


def test_pairwise_iou_batches_and_degenerate_boxes_give_zero_not_nan():
    rng = np.random.default_rng(1)
    a, b = _random_boxes(rng, 6).reshape(2, 3, 4), _random_boxes(rng, 8).reshape(2, 4, 4)
    batched = box_ops.pairwise_iou(a, b)
    assert batched.shape == (2, 3, 4)
    np.testing.assert_allclose(batched[1], box_ops.pairwise_iou(a[1], b[1]))
    empty = np.array([[5, 5, 5, 5], [3, 3, 1, 1]], np.float32)  # zero and negative size
    iou = box_ops.pairwise_iou(empty, empty)
    assert np.all(np.isfinite(iou)) and np.all(iou == 0)


def test_encode_worked_example_and_weights():
    reference = np.array([[0, 0, 10, 20]], np.float32)  # centre (5, 10), 10 x 20
    box = np.array([[2, 4, 22, 24]], np.float32)  # centre (12, 14), 20 x 20
    np.testing.assert_allclose(box_ops.encode(box, reference),
                               [[0.7, 0.2, np.log(2.0), 0.0]], rtol=1e-6)
    np.testing.assert_allclose(box_ops.encode(box, reference, (10, 10, 5, 5)),
                               [[7.0, 2.0, 5 * np.log(2.0), 0.0]], rtol=1e-6)


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (10, 10, 5, 5)])
def test_decode_inverts_encode(weights):
    rng = np.random.default_rng(2)
    references, boxes = _random_boxes(rng, 50) + [0, 0, 1, 1], _random_boxes(rng, 50) + [0, 0, 1, 1]
    decoded = box_ops.decode(box_ops.encode(boxes, references, weights), references, weights)
    np.testing.assert_allclose(decoded, boxes, atol=1e-3)


def test_decode_caps_the_size_so_wild_outputs_stay_finite():
    decoded = box_ops.decode(np.array([[0, 0, 1e4, 1e4]], np.float32),
                             np.array([[0, 0, 16, 16]], np.float32))
    np.testing.assert_allclose(decoded, [[-492, -492, 508, 508]], rtol=1e-5)  # 1000 px at most


def test_clip_per_image_sizes():
    boxes = np.array([[[-5, -5, 50, 50]], [[-5, -5, 50, 50]]], np.float32)
    clipped = box_ops.clip(boxes, np.array([[40], [20]]), np.array([[30], [10]]))
    np.testing.assert_array_equal(clipped, [[[0, 0, 30, 40]], [[0, 0, 10, 20]]])


def test_anchors_faster_rcnn_vgg16():
    grid = box_ops.anchors((2, 3), stride=16, size=16, scales=(8, 16, 32), ratios=(0.5, 1, 2))
    assert grid.shape == (2 * 3 * 9, 4)
    w, h = grid[:, 2] - grid[:, 0], grid[:, 3] - grid[:, 1]
    np.testing.assert_allclose(np.sqrt(w * h)[:9], [128, 256, 512] * 3, rtol=1e-5)
    np.testing.assert_allclose((h / w)[:9], np.repeat([0.5, 1, 2], 3), rtol=1e-5)
    # Position-major: anchors 9..17 belong to cell (y=0, x=1), centred at (24, 8).
    centres = (grid[:, :2] + grid[:, 2:]) / 2
    np.testing.assert_allclose(centres[9:18], np.tile([[24, 8]], (9, 1)), atol=1e-4)
    np.testing.assert_allclose(centres[-1], [40, 24], atol=1e-4)


def test_match_thresholds_low_quality_rule_and_padding():
    iou = np.array([[0.8, 0.1, 0.9],   # fg (the 0.9 is a padding ground truth: ignored)
                    [0.5, 0.2, 0.0],   # between thresholds: ignored, but best for gt 0? no (0.8)
                    [0.05, 0.25, 0.0],  # bg, and the best anchor of gt 1 (low quality)
                    [0.0, 0.0, 0.0]], np.float32)
    valid = np.array([True, True, False])
    matched, labels = box_ops.match(iou, valid, foreground=0.7, background=(0.0, 0.3))
    np.testing.assert_array_equal(matched, [0, 0, 1, 0])
    np.testing.assert_array_equal(labels, [1, -1, 0, 0])
    _, labels = box_ops.match(iou, valid, foreground=0.7, background=(0.0, 0.3),
                              allow_low_quality=True)
    np.testing.assert_array_equal(labels, [1, -1, 1, 0])
    # Fast R-CNN's background starts at IoU 0.1: anchors 2 and 3 are then ignored.
    _, labels = box_ops.match(iou, valid, foreground=0.5, background=(0.1, 0.5))
    np.testing.assert_array_equal(labels, [1, 1, 0, -1])


def test_match_with_no_ground_truth_is_all_background():
    _, labels = box_ops.match(np.zeros((5, 3), np.float32), np.zeros(3, bool),
                              foreground=0.7, background=(0.0, 0.3), allow_low_quality=True)
    np.testing.assert_array_equal(labels, 0)


def test_sample_fixed_size_with_foreground_fraction():
    labels = jnp.array([1] * 10 + [0] * 50 + [-1] * 40)
    indices, valid = jax.jit(lambda k: box_ops.sample(k, labels, 32, 0.25))(jax.random.key(0))
    picked = np.asarray(labels)[np.asarray(indices)]
    assert indices.shape == (32,) and np.all(valid) and len(set(np.asarray(indices))) == 32
    assert (picked == 1).sum() == 8 and (picked == 0).sum() == 24
    other, _ = box_ops.sample(jax.random.key(1), labels, 32, 0.25)
    assert set(np.asarray(other)) != set(np.asarray(indices))  # random, from the key


def test_sample_pads_with_background_then_marks_invalid():
    labels = jnp.array([1, 1, 0, 0, 0, -1, -1, -1])
    indices, valid = box_ops.sample(jax.random.key(0), labels, 8, 0.5)
    picked = np.asarray(labels)[np.asarray(indices)]
    assert (picked[np.asarray(valid)] == 1).sum() == 2 and (picked[np.asarray(valid)] == 0).sum() == 3
    assert np.asarray(valid).sum() == 5 and np.all(picked[~np.asarray(valid)] == -1)


def test_from_center_size_inverts_center_size():
    boxes = jnp.array([[0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 7.0, 11.0]])
    np.testing.assert_allclose(box_ops.from_center_size(*box_ops.center_size(boxes)), boxes)
    np.testing.assert_allclose(box_ops.from_center_size(5.0, 7.0, 4.0, 8.0), [3.0, 3.0, 7.0, 11.0])

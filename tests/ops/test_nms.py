"""NMS against tf.image.non_max_suppression on random boxes."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.ops.nms import batched_nms, multiclass_nms, nms


def _scene(seed, n=300):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return boxes, rng.uniform(0, 1, n).astype(np.float32)


def _tf_nms(boxes, scores, max_output, iou_threshold, score_threshold=float("-inf")):
    yx = boxes[:, [1, 0, 3, 2]]
    return tf.image.non_max_suppression(yx, scores, max_output, iou_threshold,
                                        score_threshold).numpy()


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_tensorflow(iou_threshold):
    boxes, scores = _scene(int(iou_threshold * 10))
    indices, keep = jax.jit(lambda b, s: nms(b, s, iou_threshold=iou_threshold,
                                             max_output=100))(boxes, scores)
    expected = _tf_nms(boxes, scores, 100, iou_threshold)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep)], expected)
    assert not np.asarray(keep)[len(expected):].any()


def test_nms_score_threshold_and_valid_mask():
    boxes, scores = _scene(4)
    valid = np.arange(len(boxes)) % 3 != 0
    indices, keep = nms(boxes, scores, iou_threshold=0.5, max_output=300, score_threshold=0.4,
                        valid=valid)
    expected = np.flatnonzero(valid)[_tf_nms(boxes[valid], scores[valid], 300, 0.5, 0.4)]
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep)], expected)


def test_per_class_nms_equals_tensorflow_per_class_merged_by_score():
    boxes, scores = _scene(5)
    classes = np.random.default_rng(5).integers(0, 4, len(boxes))
    indices, keep = nms(boxes, scores, iou_threshold=0.5, max_output=60, classes=classes)
    kept = [np.flatnonzero(classes == c)[_tf_nms(boxes[classes == c], scores[classes == c], 300, 0.5)]
            for c in range(4)]
    kept = np.concatenate(kept)
    expected = kept[np.argsort(-scores[kept], kind="stable")][:60]
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep)], expected)


def test_batched_nms_equals_nms_per_image():
    scenes = [_scene(s, 120) for s in (6, 7)]
    boxes, scores = np.stack([b for b, _ in scenes]), np.stack([s for _, s in scenes])
    indices, keep = batched_nms(boxes, scores, iou_threshold=0.6, max_output=40)
    for i in range(2):
        single = nms(boxes[i], scores[i], iou_threshold=0.6, max_output=40)
        np.testing.assert_array_equal(indices[i], single[0])
        np.testing.assert_array_equal(keep[i], single[1])


def test_nms_rejects_batched_input_with_advice():
    with pytest.raises(ValueError, match="batched_nms"):
        nms(np.zeros((2, 5, 4)), np.zeros((2, 5)), iou_threshold=0.5, max_output=3)


@pytest.mark.parametrize("shared_boxes", [True, False])
def test_multiclass_nms_matches_tensorflow_combined_nms(shared_boxes):
    """`multiclass_nms` (the detectors' last step) against tf.image.combined_non_max_suppression:
    per-class NMS, then the best detections over all classes, for class-agnostic (YOLO, SSD) and
    class-specific (R-CNN) boxes."""
    rng = np.random.default_rng(7)
    num_classes, batch, n, detections = 3, 2, 120, 40
    scenes = [_scene(seed, n) for seed in range(batch * num_classes)]
    if shared_boxes:
        boxes = np.stack([scenes[i][0] for i in range(batch)])  # (B, N, 4)
        tf_boxes = boxes[:, :, None, [1, 0, 3, 2]]
    else:
        boxes = np.stack([np.stack([scenes[b * num_classes + k][0] for k in range(num_classes)], 1)
                          for b in range(batch)])  # (B, N, K, 4)
        tf_boxes = boxes[..., [1, 0, 3, 2]]
    scores = rng.uniform(0, 1, (batch, n, num_classes)).astype(np.float32)
    ours = jax.jit(lambda b, s: multiclass_nms(
        b, s, score_threshold=0.2, nms_threshold=0.5, max_detections=detections))(boxes, scores)
    theirs = tf.image.combined_non_max_suppression(
        tf_boxes, scores, max_output_size_per_class=detections, max_total_size=detections,
        iou_threshold=0.5, score_threshold=0.2, clip_boxes=False)
    for b in range(batch):
        count = int(theirs.valid_detections[b])
        keep = np.asarray(ours["valid"][b])
        assert keep.sum() == count
        np.testing.assert_allclose(np.asarray(ours["scores"][b])[keep], theirs.nmsed_scores[b][:count])
        np.testing.assert_array_equal(np.asarray(ours["classes"][b])[keep],
                                      theirs.nmsed_classes[b][:count])
        np.testing.assert_allclose(np.asarray(ours["boxes"][b])[keep][:, [1, 0, 3, 2]],
                                   theirs.nmsed_boxes[b][:count])


def test_multiclass_nms_pre_nms_keeps_the_best_pairs_and_respects_valid():
    boxes, _ = _scene(3, 50)
    scores = np.random.default_rng(3).uniform(0, 1, (1, 50, 2)).astype(np.float32)
    valid = np.arange(50)[None] % 2 == 0
    out = multiclass_nms(boxes[None], scores, score_threshold=0.0, nms_threshold=1.0,
                         max_detections=10, pre_nms=10, valid=valid)
    # IoU threshold 1 suppresses nothing: the 10 best (box, class) pairs of the valid boxes.
    best = np.sort(np.where(valid[..., None], scores, -1).ravel())[::-1][:10]
    np.testing.assert_allclose(np.asarray(out["scores"][0]), best)


def test_multiclass_nms_by_precomputed_overlaps_equals_box_iou_and_reports_its_inputs():
    """`overlaps` (SDS's mask IoU) set to the boxes' own IoU matrix changes nothing, with or
    without pre_nms; `indices` names the input each detection came from."""
    from segattn_jax.ops.boxes import pairwise_iou
    boxes, _ = _scene(5, 60)
    scores = np.random.default_rng(5).uniform(0, 1, (1, 60, 3)).astype(np.float32)
    overlaps = pairwise_iou(boxes[None], boxes[None])
    for pre_nms in (None, 40):
        kwargs = dict(score_threshold=0.1, nms_threshold=0.4, max_detections=25, pre_nms=pre_nms)
        by_box = multiclass_nms(boxes[None], scores, **kwargs)
        by_overlap = multiclass_nms(boxes[None], scores, overlaps=overlaps, **kwargs)
        for key in by_box:
            np.testing.assert_array_equal(by_box[key], by_overlap[key])
        keep = np.asarray(by_box["valid"][0])
        indices = np.asarray(by_box["indices"][0])[keep]
        np.testing.assert_array_equal(np.asarray(by_box["boxes"][0])[keep], boxes[indices])
        np.testing.assert_allclose(np.asarray(by_box["scores"][0])[keep],
                                   scores[0, indices, np.asarray(by_box["classes"][0])[keep]])


def test_nms_suppresses_by_the_overlaps_it_is_given():
    """Two identical boxes whose regions do not overlap both survive; two disjoint boxes whose
    regions are declared identical do not."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    overlaps = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)
    indices, keep = nms(boxes, scores, iou_threshold=0.5, max_output=3, overlaps=overlaps)
    np.testing.assert_array_equal(np.asarray(indices)[np.asarray(keep)], [0, 1])

"""VOC AP on a hand-computed case (difficult objects, duplicates, misses); COCO AP through
pycocotools is 100 on the ground truth as predictions and drops with a miss."""
import numpy as np
import pytest

from segattn_jax.metrics.detection import (coco_evaluate, proposal_recall, voc_ap, voc_class_ap,
                                           voc_evaluate)

GROUND_TRUTHS = [
    {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [0, 0], "difficult": [False, True]},
    {"boxes": [[0, 0, 10, 10]], "classes": [0], "difficult": [False]},
]
# By score: a hit; its duplicate (false positive); a hit on the difficult object (neither);
# a miss (false positive); a hit of IoU 0.9 in the second image.
DETECTIONS = [
    {"boxes": [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.9, 0.8, 0.7],
     "classes": [0, 0, 0]},
    {"boxes": [[50, 50, 60, 60], [1, 0, 10, 10]], "scores": [0.6, 0.5], "classes": [0, 0]},
]


def test_voc_ap_hand_computed():
    # Ranked: TP, FP, (difficult), FP, TP with 2 positives -> (recall, precision) points
    # (0.5, 1), (0.5, 1/2), (0.5, 1/3), (1, 1/2).
    # 11-point: recall >= 0..0.5 -> best precision 1 (6 points), 0.6..1 -> 1/2 (5 points).
    assert voc_class_ap(DETECTIONS, GROUND_TRUTHS, 0, use_07_metric=True) == pytest.approx(8.5 / 11)
    # Area under the envelope: 0.5 * 1 + 0.5 * 0.5.
    assert voc_class_ap(DETECTIONS, GROUND_TRUTHS, 0, use_07_metric=False) == pytest.approx(0.75)


def test_voc_ap_curve_interpolations():
    assert voc_ap(np.array([0.2, 0.4]), np.array([1.0, 0.5]), use_07_metric=False) == \
        pytest.approx(0.2 * 1.0 + 0.2 * 0.5)
    assert voc_ap(np.array([1.0]), np.array([1.0]), use_07_metric=True) == pytest.approx(1.0)


def test_voc_evaluate_leaves_absent_classes_out_of_the_mean():
    result = voc_evaluate(DETECTIONS, GROUND_TRUTHS, num_classes=3)
    assert result["mAP"] == pytest.approx(100 * 8.5 / 11)
    assert np.isnan(result["AP/1"]) and np.isnan(result["AP/2"])


def _scene(rng, image_size=200):
    n = rng.integers(1, 6)
    xy = rng.uniform(0, image_size - 60, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 60, (n, 2))], 1)
    return {"boxes": boxes, "classes": rng.integers(0, 3, n)}


def test_coco_ground_truth_as_predictions_scores_100_and_a_miss_lowers_it():
    rng = np.random.default_rng(0)
    truths = [_scene(rng) for _ in range(10)]
    perfect = [{**gt, "scores": np.linspace(1, 0.5, len(gt["boxes"]))} for gt in truths]
    result = coco_evaluate(perfect, truths, num_classes=3)
    for name in ("AP", "AP50", "AP75"):
        assert result[name] == pytest.approx(100.0)
    assert voc_evaluate(perfect, truths, num_classes=3)["mAP"] == pytest.approx(100.0)
    missing = [dict(p) for p in perfect]
    missing[0] = {k: np.asarray(v)[1:] for k, v in perfect[0].items()}
    assert coco_evaluate(missing, truths, num_classes=3)["AP"] < 100.0


def test_evaluators_need_one_entry_per_image():
    with pytest.raises(ValueError, match="one detections entry per ground-truth image"):
        voc_evaluate(DETECTIONS[:1], GROUND_TRUTHS, num_classes=1)


def _masked_scene(rng, height=40, width=50):
    """Two or three rectangles-with-holes per image, with their masks run-length encoded."""
    from segattn_jax.metrics.detection import encode_masks
    n = int(rng.integers(2, 4))
    xy = rng.integers(0, 25, (n, 2))
    boxes = np.concatenate([xy, xy + rng.integers(10, 16, (n, 2))], 1).astype(np.float32)
    masks = np.zeros((n, height, width), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        mask[y1:y2, x1:x2] = True
        mask[y1 + 2:y1 + 5, x1 + 2:x1 + 5] = False  # a hole: the mask is not its box
    return {"boxes": boxes, "classes": rng.integers(0, 2, n), "masks": encode_masks(masks),
            "dense": masks}


def test_mask_ap_is_100_on_the_ground_truth_and_scores_masks_not_boxes():
    """COCO mask AP and VOC APr are 100 for the ground truth as predictions; the same boxes with
    their masks cut to about half (mask IoU ~0.5) keep box AP at 100 but score 0 in APr@0.7 and
    in mask AP75."""
    from segattn_jax.metrics.detection import encode_masks
    rng = np.random.default_rng(0)
    truths = [_masked_scene(rng) for _ in range(6)]
    perfect = [{**gt, "scores": np.linspace(1, 0.5, len(gt["boxes"]))} for gt in truths]
    coco = coco_evaluate(perfect, truths, num_classes=2, iou_type="segm")
    assert coco["AP"] == pytest.approx(100.0) and coco["AP75"] == pytest.approx(100.0)
    for threshold in (0.5, 0.7):
        assert voc_evaluate(perfect, truths, 2, threshold, iou="mask")["mAP"] == pytest.approx(100)
    halved = []
    for p in perfect:
        dense = p["dense"].copy()
        for mask in dense:
            rows = np.flatnonzero(mask.any(1))
            mask[rows[len(rows) // 2]:] = False  # keep about the top half: mask IoU ~0.5
        halved.append({**p, "masks": encode_masks(dense)})
    assert voc_evaluate(halved, truths, 2, 0.5)["mAP"] == pytest.approx(100.0)  # boxes
    assert voc_evaluate(halved, truths, 2, 0.7, iou="mask")["mAP"] == pytest.approx(0.0)
    assert coco_evaluate(halved, truths, 2, iou_type="segm")["AP75"] == pytest.approx(0.0)
    assert coco_evaluate(halved, truths, 2, iou_type="segm")["AP"] < 50.0


def test_proposal_recall_counts_objects_some_proposal_covers_at_iou_half():
    truths = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [0, 20, 10, 30]],
               "classes": [0, 1, 0], "difficult": [False, False, True]},
              {"boxes": [[0, 0, 4, 4]], "classes": [2]}]
    proposals = [np.array([[0, 0, 10, 5.5], [20, 20, 30, 34], [0, 20, 10, 30]]),  # IoU .55, .71
                 np.zeros((0, 4))]
    # 2 of the 3 non-difficult objects; the difficult one's exact proposal does not count.
    assert proposal_recall(proposals, truths) == pytest.approx(200 / 3)
    assert proposal_recall(proposals, truths, iou_threshold=0.6) == pytest.approx(100 / 3)

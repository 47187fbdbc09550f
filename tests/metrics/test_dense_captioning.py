"""DenseCap's dense-captioning mAP: ground-truth merging and the AP grid on a hand case, and
METEOR per region pair through the official jar."""
import numpy as np
import pytest

from segattn_jax.metrics.captioning import meteor_scores
from segattn_jax.metrics.dense_captioning import (IOU_THRESHOLDS, METEOR_THRESHOLDS,
                                                  dense_captioning_map, merge_boxes)


def test_merge_boxes_groups_heavy_overlaps_and_keeps_the_rest_alone():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 10, 12],  # IoU >= 0.83 pairwise
                      [20, 20, 30, 30],                                  # alone
                      [0, 0, 10, 20]], np.float32)                       # IoU 0.5-0.6 with the first
    groups = sorted(sorted(g.tolist()) for g in merge_boxes(boxes))
    assert groups == [[0, 1, 2], [3], [4]]


def _exact(references, candidates):
    """A stand-in phrase score: 1 for a phrase equal to a reference, else 0."""
    return [float(c in refs) for refs, c in zip(references, candidates)]


def test_map_on_a_hand_case():
    """Two regions. The best prediction finds region 1 with its phrase; the second finds region 1
    again (a duplicate: false positive); the third overlaps region 2 at IoU 0.5 with a wrong
    phrase. Captioning AP: precision 1 up to recall 0.5, nothing after: 51/101 at every threshold.
    Detection AP at IoU <= 0.5: recall 1 at precision 2/3 too: (51 + 50 * 2/3) / 101; above 0.5,
    51/101."""
    truth = {"boxes": np.array([[50, 50, 90, 90], [0, 0, 10, 10]], np.float32),
             "phrases": ["red star", "blue circle"]}
    detections = {"boxes": np.array([[50, 50, 90, 90], [52, 50, 90, 90], [0, 0, 10, 20]],
                                    np.float32),
                  "scores": np.array([0.9, 0.8, 0.7]),
                  "captions": ["red star", "red star", "green square"]}
    result = dense_captioning_map([detections], [truth], _exact)
    assert result["mAP"] == pytest.approx(100 * 51 / 101)
    low = (51 + 50 * 2 / 3) / 101
    expected_detection = np.mean([low if t <= 0.5 else 51 / 101 for t in IOU_THRESHOLDS])
    assert result["detection_mAP"] == pytest.approx(100 * expected_detection)
    # A correct phrase on the third box makes it count wherever its IoU 0.5 is enough.
    detections["captions"][2] = "blue circle"
    better = dense_captioning_map([detections], [truth], _exact)
    assert better["mAP@iou0.5"] == pytest.approx(100 * low)
    assert better["mAP@iou0.6"] == pytest.approx(100 * 51 / 101)
    assert len(METEOR_THRESHOLDS) == 6 and better["mAP"] > result["mAP"]


def test_merged_regions_pool_their_phrases_and_count_once():
    """Two annotations of one region (IoU 0.9) are one positive whose references are both
    phrases: a prediction matching either is a true positive, and recall reaches 1 with it."""
    truth = {"boxes": np.array([[0, 0, 100, 100], [0, 0, 100, 90]], np.float32),
             "phrases": ["a dog", "brown dog"]}
    detections = {"boxes": np.array([[0, 0, 100, 95]], np.float32), "scores": np.array([0.5]),
                  "captions": ["brown dog"]}
    assert dense_captioning_map([detections], [truth], _exact)["mAP"] == pytest.approx(100.0)


def test_images_without_regions_or_predictions():
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0), "captions": []}
    truth = {"boxes": np.zeros((0, 4), np.float32), "phrases": []}
    one = {"boxes": np.array([[0, 0, 5, 5]], np.float32), "scores": np.array([0.3]),
           "captions": ["x"]}
    result = dense_captioning_map([empty, one], [truth, truth], _exact)
    assert result["mAP"] == 0.0 and result["detection_mAP"] == 0.0


def test_meteor_scores_each_pair_with_the_official_jar():
    scores = meteor_scores([["a small red star"], ["a small red star", "red star"],
                            ["a blue circle"]],
                           ["a small red star", "red star", "a green square"])
    assert scores[0] > 0.95 and scores[1] > 0.95
    assert scores[2] < 0.3

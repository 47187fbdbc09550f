"""Detection metrics: PASCAL VOC average precision and COCO AP (through pycocotools).

Both take the whole eval set on the host, one entry per image:
  detections[i]    = {"boxes": (K, 4), "scores": (K,), "classes": (K,)}   (padding removed)
  ground_truths[i] = {"boxes": (M, 4), "classes": (M,), optional "difficult" (M,) bool,
                      optional "area" (M,) (COCO's object area; box area when absent)}
with boxes in pixels (x1, y1, x2, y2) and classes 0..num_classes-1 (no background class).

VOC follows the devkit's `VOCevap` / py-faster-rcnn's `voc_eval`: detections of a class sorted by
score, each matched to the unmatched ground truth of its image with the highest IoU > threshold;
a match to a "difficult" object counts neither as a true nor a false positive, and difficult
objects are not in the recall's denominator. One difference, on purpose: IoU is the codebase's
(`ops.boxes.pairwise_iou`, continuous coordinates), not the devkit's "+1" pixel widths.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from segattn_jax.ops import boxes as box_ops

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall curve: VOC2007's 11-point interpolation (mean of the maximum
    precision at recall >= 0, 0.1, ..., 1) or VOC2010+'s area under the monotone envelope."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        return float(np.mean([precision[recall >= t].max(initial=0.0)
                              for t in np.linspace(0, 1, 11)]))
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at any higher recall
    changes = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def _check(detections: Sequence[dict], ground_truths: Sequence[dict]) -> None:
    if len(detections) != len(ground_truths):
        raise ValueError(f"Need one detections entry per ground-truth image, got "
                         f"{len(detections)} and {len(ground_truths)}.")


def pairwise_overlaps(detections: Sequence[dict], ground_truths: Sequence[dict]) -> list[np.ndarray]:
    """Per image, the IoU of every detection with every ground truth (K, M), all classes at once
    (`ops.boxes.pairwise_iou`, the codebase's one IoU, in numpy), so that a per-class pass only
    indexes."""
    _check(detections, ground_truths)
    return [box_ops.pairwise_iou(np.asarray(d["boxes"], np.float32).reshape(-1, 4),
                                 np.asarray(g["boxes"], np.float32).reshape(-1, 4))
            for d, g in zip(detections, ground_truths)]


def voc_class_ap(detections: Sequence[dict], ground_truths: Sequence[dict], category: int,
                 iou_threshold: float = 0.5, use_07_metric: bool = True,
                 overlaps: Sequence[np.ndarray] | None = None) -> float:
    """VOC AP of one class; NaN when the class has no non-difficult object (left out of the mean).
    `overlaps`: `pairwise_overlaps(detections, ground_truths)` when already computed."""
    _check(detections, ground_truths)
    if overlaps is None:
        overlaps = pairwise_overlaps(detections, ground_truths)
    gt_rows, gt_difficult, matched = [], [], []
    num_positives = 0
    for gt in ground_truths:
        mine = np.flatnonzero(np.asarray(gt["classes"]) == category)
        difficult = np.asarray(gt.get("difficult", np.zeros(len(gt["classes"]), bool)), bool)[mine]
        gt_rows.append(mine)
        gt_difficult.append(difficult)
        matched.append(np.zeros(len(mine), bool))
        num_positives += int((~difficult).sum())
    if num_positives == 0:
        return float("nan")
    image, row, score = [], [], []
    for i, det in enumerate(detections):
        mine = np.flatnonzero(np.asarray(det["classes"]) == category)
        image += [i] * len(mine)
        row.append(mine)
        score.append(np.asarray(det["scores"], np.float64)[mine])
    row, score = np.concatenate(row), np.concatenate(score)
    order = np.argsort(-score, kind="stable")
    true_positive = np.zeros(len(order))
    false_positive = np.zeros(len(order))
    for rank, d in enumerate(order):
        i = image[d]
        if len(gt_rows[i]) == 0:
            false_positive[rank] = 1
            continue
        ious = overlaps[i][row[d], gt_rows[i]]
        best = int(np.argmax(ious))
        if ious[best] <= iou_threshold:
            false_positive[rank] = 1
        elif gt_difficult[i][best]:
            continue  # neither
        elif not matched[i][best]:
            true_positive[rank] = matched[i][best] = 1
        else:
            false_positive[rank] = 1  # a duplicate detection
    tp, fp = np.cumsum(true_positive), np.cumsum(false_positive)
    recall = tp / num_positives
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07_metric)


def voc_evaluate(detections: Sequence[dict], ground_truths: Sequence[dict], num_classes: int,
                 iou_threshold: float = 0.5, use_07_metric: bool = True) -> dict[str, float]:
    """{"mAP": ..., "AP/<class>": ...} in percent; classes absent from the ground truth are left
    out of the mean (NaN)."""
    overlaps = pairwise_overlaps(detections, ground_truths)
    aps = [voc_class_ap(detections, ground_truths, c, iou_threshold, use_07_metric, overlaps)
           for c in range(num_classes)]
    present = [ap for ap in aps if not np.isnan(ap)]
    result = {"mAP": 100.0 * float(np.mean(present)) if present else float("nan")}
    result.update({f"AP/{c}": 100.0 * ap for c, ap in enumerate(aps)})
    return result


def coco_evaluate(detections: Sequence[dict], ground_truths: Sequence[dict],
                  num_classes: int) -> dict[str, float]:
    """COCO AP@[.5:.95], AP50, AP75 and APs/m/l in percent, computed by pycocotools' COCOeval on
    our predictions (max 100 detections per image, as COCO). "difficult" objects are passed as
    COCO's crowd regions (matches to them are ignored)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _check(detections, ground_truths)
    images, annotations, results = [], [], []
    for image_id, (det, gt) in enumerate(zip(detections, ground_truths), start=1):
        images.append({"id": image_id})
        boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        areas = np.asarray(gt.get("area", wh.prod(axis=1)), np.float64)
        crowd = np.asarray(gt.get("difficult", np.zeros(len(boxes), bool)), bool)
        for box, size, label, is_crowd, a in zip(boxes, wh, gt["classes"], crowd, areas):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label) + 1, "iscrowd": int(is_crowd),
                                "bbox": [*map(float, box[:2]), *map(float, size)], "area": float(a)})
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        for box, score, label in zip(boxes, det["scores"], det["classes"]):
            results.append({"image_id": image_id, "category_id": int(label) + 1,
                            "bbox": [*map(float, box[:2]), *map(float, box[2:] - box[:2])],
                            "score": float(score)})
    if not results:
        return {name: 0.0 for name in COCO_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1} for c in range(num_classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats: -1 where a size range has no objects; report those as NaN, not as -100 %.
    return {name: (100.0 * float(v) if v >= 0 else float("nan"))
            for name, v in zip(COCO_METRICS, evaluation.stats[:6])}

"""Detection metrics: PASCAL VOC average precision and COCO AP (through pycocotools).

Both take the whole eval set on the host, one entry per image:
  detections[i]    = {"boxes": (K, 4), "scores": (K,), "classes": (K,)}   (padding removed)
  ground_truths[i] = {"boxes": (M, 4), "classes": (M,), optional "difficult" (M,) bool,
                      optional "area" (M,) (COCO's object area; box area when absent)}
with boxes in pixels (x1, y1, x2, y2) and classes 0..num_classes-1 (no background class).
Instance segmentation adds "masks" to both: a list of COCO run-length encodings (`encode_masks`),
one per box, and scores them with `iou="mask"` (VOC: APr, Hariharan et al. 2014) or
`iou_type="segm"` (COCO mask AP).

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


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) boolean masks -> N COCO run-length encodings (pycocotools), the compact form the
    eval set's masks are kept in."""
    from pycocotools import mask as mask_utils
    masks = np.asarray(masks, np.uint8)
    if masks.ndim != 3:
        raise ValueError(f"encode_masks takes (N, H, W) masks; got {masks.shape}.")
    return mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, -1))) if len(masks) else []


def _mask_iou(a: list[dict], b: list[dict]) -> np.ndarray:
    from pycocotools import mask as mask_utils
    if not a or not b:
        return np.zeros((len(a), len(b)))
    return np.asarray(mask_utils.iou(list(a), list(b), [0] * len(b)), np.float64)


def pairwise_overlaps(detections: Sequence[dict], ground_truths: Sequence[dict],
                      iou: str = "box") -> list[np.ndarray]:
    """Per image, the IoU of every detection with every ground truth (K, M), all classes at once,
    so that a per-class pass only indexes: of their boxes (`ops.boxes.pairwise_iou`, the
    codebase's one box IoU, in numpy) or, with iou='mask', of their masks."""
    _check(detections, ground_truths)
    if iou == "mask":
        return [_mask_iou(d["masks"], g["masks"]) for d, g in zip(detections, ground_truths)]
    if iou != "box":
        raise ValueError(f"iou must be 'box' or 'mask'; got {iou!r}.")
    return [box_ops.pairwise_iou(np.asarray(d["boxes"], np.float32).reshape(-1, 4),
                                 np.asarray(g["boxes"], np.float32).reshape(-1, 4))
            for d, g in zip(detections, ground_truths)]


def proposal_recall(proposals: Sequence[np.ndarray], ground_truths: Sequence[dict],
                    iou_threshold: float = 0.5) -> float:
    """% of the objects (difficult ones left out) that some proposal (`proposals[i]`: image i's
    boxes (P, 4)) overlaps at box IoU >= `iou_threshold`: the recall of a detector's first
    stage, which bounds what its later stages can find (Faster R-CNN's proposal recall)."""
    found = total = 0
    for boxes, truth in zip(proposals, ground_truths, strict=True):
        objects = np.asarray(truth["boxes"], np.float32).reshape(-1, 4)
        difficult = np.asarray(truth.get("difficult", np.zeros(len(objects), bool)), bool)
        objects = objects[~difficult]
        iou = box_ops.pairwise_iou(objects, np.asarray(boxes, np.float32).reshape(-1, 4))
        found += int((iou >= iou_threshold).any(axis=1).sum())
        total += len(objects)
    return 100.0 * found / max(total, 1)


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
                 iou_threshold: float = 0.5, use_07_metric: bool = True,
                 iou: str = "box") -> dict[str, float]:
    """{"mAP": ..., "AP/<class>": ...} in percent; classes absent from the ground truth are left
    out of the mean (NaN). iou='mask' matches by mask IoU: SDS's APr at `iou_threshold`."""
    overlaps = pairwise_overlaps(detections, ground_truths, iou)
    aps = [voc_class_ap(detections, ground_truths, c, iou_threshold, use_07_metric, overlaps)
           for c in range(num_classes)]
    present = [ap for ap in aps if not np.isnan(ap)]
    result = {"mAP": 100.0 * float(np.mean(present)) if present else float("nan")}
    result.update({f"AP/{c}": 100.0 * ap for c, ap in enumerate(aps)})
    return result


def _mask_area(rle: dict) -> float:
    from pycocotools import mask as mask_utils
    return float(mask_utils.area(rle))


def coco_evaluate(detections: Sequence[dict], ground_truths: Sequence[dict],
                  num_classes: int, iou_type: str = "bbox") -> dict[str, float]:
    """COCO AP@[.5:.95], AP50, AP75 and APs/m/l in percent, computed by pycocotools' COCOeval on
    our predictions (max 100 detections per image, as COCO). "difficult" objects are passed as
    COCO's crowd regions (matches to them are ignored). iou_type='segm' scores the masks (COCO
    mask AP; object areas are then the masks')."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm'; got {iou_type!r}.")
    segm = iou_type == "segm"
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _check(detections, ground_truths)
    images, annotations, results = [], [], []
    for image_id, (det, gt) in enumerate(zip(detections, ground_truths), start=1):
        image = {"id": image_id}
        if segm:  # pycocotools reads the image size; every RLE carries it
            sizes = [m["size"] for m in (*gt["masks"], *det["masks"])]
            image["height"], image["width"] = sizes[0] if sizes else (1, 1)
        images.append(image)
        boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        wh = boxes[:, 2:] - boxes[:, :2]
        areas = np.asarray(gt.get("area", wh.prod(axis=1)), np.float64)
        if segm:
            areas = [float(_mask_area(m)) for m in gt["masks"]]
        crowd = np.asarray(gt.get("difficult", np.zeros(len(boxes), bool)), bool)
        for index, (box, size, label, is_crowd, a) in enumerate(
                zip(boxes, wh, gt["classes"], crowd, areas)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label) + 1, "iscrowd": int(is_crowd),
                                "bbox": [*map(float, box[:2]), *map(float, size)], "area": float(a),
                                **({"segmentation": gt["masks"][index]} if segm else {})})
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        for index, (box, score, label) in enumerate(zip(boxes, det["scores"], det["classes"])):
            # A segm result without a box: pycocotools then takes its area from the mask.
            where = ({"segmentation": det["masks"][index]} if segm else
                     {"bbox": [*map(float, box[:2]), *map(float, box[2:] - box[:2])]})
            results.append({"image_id": image_id, "category_id": int(label) + 1,
                            "score": float(score), **where})
    if not results:
        return {name: 0.0 for name in COCO_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1} for c in range(num_classes)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType=iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # stats: -1 where a size range has no objects; report those as NaN, not as -100 %.
    return {name: (100.0 * float(v) if v >= 0 else float("nan"))
            for name, v in zip(COCO_METRICS, evaluation.stats[:6])}

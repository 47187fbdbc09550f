"""DenseCap's dense-captioning mAP (Johnson et al. 2016, Section 4.1; `eval/eval_utils.lua` of
the released code): a predicted region counts as correct when it overlaps a ground-truth region
enough *and* its phrase is close enough to that region's in METEOR.

Per image, ground-truth boxes overlapping by IoU >= 0.7 are merged first (their mean box, every
phrase of the group as references). Each prediction, in decreasing score order, is assigned to the
merged region it overlaps most; a region already taken by a higher-scored prediction makes it a
false positive. Average precision (101-point interpolated, over all images at once) is computed
for every pair of IoU threshold (0.3 .. 0.7) and METEOR threshold (0 .. 0.25); mAP is their mean.
The detection-only mAP (any phrase) is reported beside it, as the reference code does.

One deliberate difference: the released Lua code, for a prediction that overlaps no region,
marks the *last* region as taken (a -1 index); here such a prediction takes nothing.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from segattn_jax.ops.boxes import pairwise_iou

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
MERGE_IOU = 0.7
# score(references per prediction, candidate per prediction) -> similarity per prediction.
PhraseScore = Callable[[Sequence[Sequence[str]], Sequence[str]], Sequence[float]]


def merge_boxes(boxes: np.ndarray, threshold: float = MERGE_IOU) -> list[np.ndarray]:
    """Groups of heavily overlapping boxes (M, 4): repeatedly, the box overlapping the most
    others at IoU >= `threshold` takes them all into one group (indices); every box ends up in
    exactly one group (a lone box is its own)."""
    overlaps = pairwise_iou(np.asarray(boxes, np.float32), np.asarray(boxes, np.float32))
    good = overlaps >= threshold
    np.fill_diagonal(good, True)
    free = np.ones(len(boxes), bool)
    groups = []
    while free.any():
        counts = (good & free[None, :] & free[:, None]).sum(axis=1)
        top = int(np.argmax(counts))
        group = np.flatnonzero(good[top] & free)
        groups.append(group)
        free[group] = False
    return groups


def _interpolated_ap(true_positive: np.ndarray, num_positives: int) -> float:
    """Mean over recall levels 0, 0.01, .., 1 of the best precision at that recall or above."""
    tp = np.cumsum(true_positive)
    fp = np.cumsum(~true_positive)
    recall = tp / max(num_positives, 1)
    precision = tp / np.maximum(tp + fp, 1)
    levels = np.linspace(0.0, 1.0, 101)
    best = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in levels]
    return float(np.mean(best))


def dense_captioning_map(detections: Sequence[dict], ground_truths: Sequence[dict],
                         phrase_score: PhraseScore) -> dict[str, float]:
    """mAP in percent over the thresholds grid, the detection-only mAP, and the mAP at each IoU
    threshold (averaged over the METEOR ones).

    detections: per image {boxes (D, 4), scores (D,), captions: D strings}; ground_truths: per
    image {boxes (M, 4), phrases: M strings}. `phrase_score` is METEOR
    (`metrics.captioning.meteor_scores`) for the paper's number; called once for all pairs.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"Need detections and ground truth for the same images; got "
                         f"{len(detections)} and {len(ground_truths)}.")
    scores, overlaps, first_claim, references, candidates = [], [], [], [], []
    num_positives = 0
    for detected, truth in zip(detections, ground_truths):
        gt_boxes = np.asarray(truth["boxes"], np.float32).reshape(-1, 4)
        groups = merge_boxes(gt_boxes) if len(gt_boxes) else []
        merged = (np.stack([gt_boxes[g].mean(axis=0) for g in groups]) if groups
                  else np.zeros((0, 4), np.float32))
        phrases = [[truth["phrases"][i] for i in g] for g in groups]
        num_positives += len(groups)
        order = np.argsort(-np.asarray(detected["scores"]), kind="stable")
        boxes = np.asarray(detected["boxes"], np.float32).reshape(-1, 4)[order]
        iou = (pairwise_iou(boxes, merged) if len(merged)
               else np.zeros((len(boxes), 0), np.float32))
        taken = np.zeros(len(merged), bool)
        for d, k in enumerate(order):
            best = int(np.argmax(iou[d])) if iou.shape[1] else -1
            overlap = float(iou[d, best]) if best >= 0 else 0.0
            claims = best >= 0 and overlap > 0 and not taken[best]
            if claims:
                taken[best] = True
            scores.append(float(detected["scores"][k]))
            overlaps.append(overlap)
            first_claim.append(claims)
            references.append(phrases[best] if overlap > 0 else [])
            candidates.append(detected["captions"][k])
    scores, overlaps, first_claim = map(np.asarray, (scores, overlaps, first_claim))
    scored = [i for i, refs in enumerate(references) if refs]
    similarity = np.full(len(candidates), -np.inf)
    if scored:
        similarity[scored] = phrase_score([references[i] for i in scored],
                                          [candidates[i] for i in scored])
    order = np.argsort(-scores, kind="stable")
    results, detection_aps = {}, []
    for min_iou in IOU_THRESHOLDS:
        located = (overlaps >= min_iou) & first_claim
        detection_aps.append(_interpolated_ap(located[order], num_positives))
        results[min_iou] = [_interpolated_ap((located & (similarity > t))[order], num_positives)
                            for t in METEOR_THRESHOLDS]
    summary = {"mAP": 100.0 * float(np.mean(list(results.values()))),
               "detection_mAP": 100.0 * float(np.mean(detection_aps))}
    summary.update({f"mAP@iou{t}": 100.0 * float(np.mean(v)) for t, v in results.items()})
    return summary

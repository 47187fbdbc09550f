"""Instance segmentation: a detector whose detections also carry masks (Mask R-CNN, MNC, SDS).

The model's detections hold box-relative masks (B, D, m, m) in [0, 1]; the batch holds each
object's box-relative mask (`ops.masks`, the preprocess's `mask_size`). Evaluation pastes both
back to image pixels (`ops.masks.paste_masks`), keeps them run-length encoded, and scores box AP
(as the detection task) and mask AP: COCO's mask AP@[.5:.95] / 50 / 75 / s / m / l as
`mask_AP...` when task.ap_metric is 'coco', else the VOC protocol's APr at IoU 0.5 and 0.7
(SDS, Hypercolumns and MNC's tables) as `APr50` and `APr70`.
"""
from __future__ import annotations

import numpy as np

from segattn_jax.metrics.detection import (COCO_METRICS, coco_evaluate, encode_masks,
                                           voc_evaluate)
from segattn_jax.ops.masks import paste_masks
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch
from segattn_jax.tasks.detection import SHOWN_SCORE, TARGET_KEYS, DetectionTask

MASK_THRESHOLD = 0.5  # Mask R-CNN binarizes its mask probabilities at 0.5
APR_THRESHOLDS = (0.5, 0.7)


class InstanceSegmentationTask(DetectionTask):
    target_keys = (*TARGET_KEYS, "masks")

    def __init__(self, config):
        super().__init__(config)
        if config.dataset.preprocess.get("mask_size") is None:
            raise ValueError("Instance segmentation needs the objects' masks: set "
                             "--config.dataset.preprocess.mask_size (e.g. 32 for shapes, 112 "
                             "for COCO).")

    def statistics(self, batch: Batch, predictions):
        return {**super().statistics(batch, predictions), "gt_masks": batch["masks"],
                "image_hw": batch["image_hw"]}

    def image_entries(self, s):
        detections, ground_truth = super().image_entries(s)
        height, width = (int(v) for v in s["image_hw"])
        keep, real = s["valid"], s["gt_valid"]
        detections["masks"] = encode_masks(paste_masks(
            s["masks"][keep], s["boxes"][keep], height, width, MASK_THRESHOLD))
        ground_truth["masks"] = encode_masks(paste_masks(
            s["gt_masks"][real], s["gt_boxes"][real], height, width))
        return detections, ground_truth

    def summarize(self, statistics) -> dict[str, float]:
        metrics = super().summarize(statistics)
        detections, truths = statistics["detections"], statistics["ground_truths"]
        if self.config.task.ap_metric == "coco":
            masks = coco_evaluate(detections, truths, self.num_classes, iou_type="segm")
            return {**metrics, **{f"mask_{name}": masks[name] for name in COCO_METRICS}}
        use_07 = self.config.task.ap_metric == "voc07"
        for threshold in APR_THRESHOLDS:
            metrics[f"APr{round(100 * threshold)}"] = voc_evaluate(
                detections, truths, self.num_classes, threshold, use_07, iou="mask")["mAP"]
        return metrics

    def _drawn(self, image, boxes, classes, scores=None, masks=None):
        """The image with each instance's mask tinted in its class's colour (the highest
        score on top), then its box and class name."""
        image = pics.to_rgb_uint8(image)
        if masks is not None and len(masks):
            pasted = paste_masks(masks, boxes, *image.shape[:2], MASK_THRESHOLD)
            labels = np.zeros(image.shape[:2], np.int32)
            order = np.argsort(scores) if scores is not None else np.arange(len(boxes))
            for index in order:
                labels[pasted[index]] = int(classes[index]) + 1
            image = pics.overlay(image, labels, self.num_classes + 1)
        return pics.labeled_boxes(image, boxes, classes, self.class_names, scores)

    shown_keys = (*DetectionTask.shown_keys, "masks")

    def pictures(self, batch, predictions) -> np.ndarray:
        """ground truth | detections scoring >= 0.5, each with its mask, class and score."""
        rows = []
        for i, image in enumerate(batch["image"]):
            real = batch["box_valid"][i]
            truth = self._drawn(image, batch["boxes"][i][real], batch["classes"][i][real],
                                masks=batch["masks"][i][real])
            shown = self._shown({k: np.asarray(v)[i] for k, v in predictions.items()})
            rows.append([truth, self._drawn(image, *shown)])
        return pics.image_grid(rows, titles=("ground truth",
                                             f"masks (score >= {SHOWN_SCORE})"))

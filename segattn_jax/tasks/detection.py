"""Object detection: any detector whose module gives `losses(inputs, targets)` for training and
fixed-size detections from `__call__(inputs)`; PASCAL VOC or COCO AP.

Eval statistics are the detections and ground truth of every image, gathered on the host (AP is
not a sum over batches), then scored by `metrics.detection`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from segattn_jax.metrics.detection import coco_evaluate, proposal_recall, voc_evaluate
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

TARGET_KEYS = ("boxes", "classes", "box_valid")
# task.ap_metric -> (evaluator, its keyword arguments).
AP_METRICS = {
    "voc07": (voc_evaluate, {"use_07_metric": True}),   # VOC2007 11-point (the R-CNN papers)
    "voc": (voc_evaluate, {"use_07_metric": False}),    # VOC2010+ area under the curve
    "coco": (coco_evaluate, {}),                        # AP@[.5:.95], AP50, AP75, APs/m/l
}
SHOWN_SCORE = 0.5  # pictures draw detections scoring at least this


class RegionTask(Task):
    """What the region tasks share (detection, dense captioning): `predict` reads the image and
    its size (any size), and the model's `losses(inputs, targets)` method trains it with the
    'sample' (box minibatches) and 'dropout' RNG streams."""

    any_input_size = True
    input_keys = ("image", "image_hw")

    def inputs_for_image(self, image: np.ndarray) -> Batch:
        if set(self.input_keys) - {"image", "image_hw"}:
            raise ValueError(f"{type(self.model).__name__} needs {self.input_keys} as inputs; "
                             "`predict` on image files gives only the image.")
        return {"image": image[None], "image_hw": np.array([image.shape[:2]], np.int32)}

    def init_variables(self, rng, inputs):
        return dict(self.model.init({"params": rng}, inputs))

    def model_losses(self, variables, batch: Batch, targets: dict[str, jax.Array], rng
                     ) -> tuple[dict[str, jax.Array], dict[str, jax.Array], dict[str, Any]]:
        """The model's weighted losses and metrics on `batch`, and its updated state."""
        sample_rng, dropout_rng = jax.random.split(rng)
        (losses, metrics), model_state = self.apply_train(
            variables, self.inputs(batch), targets, method="losses",
            rngs={"sample": sample_rng, "dropout": dropout_rng})
        return losses, metrics, model_state


class DetectionTask(RegionTask):
    preprocess = "detection"

    def __init__(self, config):
        super().__init__(config)
        if config.task.ap_metric not in AP_METRICS:
            raise ValueError(f"Unknown task.ap_metric {config.task.ap_metric!r}; valid: "
                             f"{sorted(AP_METRICS)}.")
        method = config.dataset.proposals.get("method", "")
        name = type(self.model).__name__
        if "proposals" in self.input_keys and not method:
            raise ValueError(f"{name} classifies cached region proposals: set "
                             "--config.dataset.proposals.method (selective_search, or "
                             "hierarchical_grouping for regions with masks).")
        if "proposal_masks" in self.input_keys and method != "hierarchical_grouping":
            raise ValueError(f"{name} needs each proposal's region (its mask): set "
                             "--config.dataset.proposals.method=hierarchical_grouping.")

    @property
    def input_keys(self) -> tuple[str, ...]:
        return self.model.input_keys

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    target_keys = TARGET_KEYS  # the batch keys the model's `losses` reads as targets

    def loss(self, variables, batch: Batch, rng):
        targets = {key: batch[key] for key in self.target_keys}
        # Objects marked difficult (VOC) or crowd (COCO) are not trained on, as in the papers.
        targets["box_valid"] = batch["box_valid"] & ~batch["difficult"]
        losses, metrics, model_state = self.model_losses(variables, batch, targets, rng)
        return sum(losses.values()), {**losses, **metrics}, model_state

    def predict(self, variables, inputs):
        return self.model.apply(variables, inputs)

    def statistics(self, batch: Batch, predictions) -> dict[str, jax.Array]:
        return {**predictions, "gt_boxes": batch["boxes"], "gt_classes": batch["classes"],
                "gt_difficult": batch["difficult"], "gt_valid": batch["box_valid"],
                "example_valid": batch["valid"]}

    def accumulate(self, total: Any, statistics: dict[str, np.ndarray]) -> dict[str, list]:
        """Appends each real (not padding) image's detections and ground truth, and the
        first stage's proposals of detectors that return them ('proposals', 'proposal_valid')."""
        total = total or {"detections": [], "ground_truths": [], "proposals": []}
        s = {k: np.asarray(v) for k, v in statistics.items()}
        for i in np.flatnonzero(s["example_valid"]):
            detections, ground_truth = self.image_entries({k: v[i] for k, v in s.items()})
            total["detections"].append(detections)
            total["ground_truths"].append(ground_truth)
            if "proposals" in s:
                total["proposals"].append(s["proposals"][i][s["proposal_valid"][i]])
        return total

    def image_entries(self, s: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """One image's statistics -> its (detections, ground truth) as `metrics.detection`
        takes them, padding removed."""
        keep, real = s["valid"], s["gt_valid"]
        return ({"boxes": s["boxes"][keep], "scores": s["scores"][keep],
                 "classes": s["classes"][keep]},
                {"boxes": s["gt_boxes"][real], "classes": s["gt_classes"][real],
                 "difficult": s["gt_difficult"][real]})

    def summarize(self, statistics) -> dict[str, float]:
        evaluate, kwargs = AP_METRICS[self.config.task.ap_metric]
        metrics = evaluate(statistics["detections"], statistics["ground_truths"],
                           self.num_classes, **kwargs)
        if statistics.get("proposals"):  # at IoU 0.5 and 0.7: Faster R-CNN's Figure 2
            for threshold in (0.5, 0.7):
                metrics[f"proposal_recall{round(100 * threshold)}"] = proposal_recall(
                    statistics["proposals"], statistics["ground_truths"], threshold)
        # Per-class APs by name: AP/<class>.
        return {(f"AP/{pics.class_name(self.class_names, int(k[3:]))}" if k.startswith("AP/")
                 else k): v for k, v in metrics.items()}

    def _drawn(self, image: np.ndarray, boxes, classes, scores=None) -> np.ndarray:
        return pics.labeled_boxes(image, boxes, classes, self.class_names, scores)

    shown_keys = ("boxes", "classes", "scores")  # what `_drawn` takes, in its order

    def _shown(self, predictions: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        keep = np.asarray(predictions["valid"]) & (np.asarray(predictions["scores"]) >= SHOWN_SCORE)
        return tuple(np.asarray(predictions[key])[keep] for key in self.shown_keys)

    def pictures(self, batch, predictions) -> np.ndarray:
        """ground truth | detections scoring >= 0.5 (class and score), one row per image."""
        rows = []
        for i, image in enumerate(batch["image"]):
            real = batch["box_valid"][i]
            truth = self._drawn(image, batch["boxes"][i][real], batch["classes"][i][real])
            boxes, classes, scores = self._shown(jax.tree.map(lambda x: x[i], predictions))
            rows.append([truth, self._drawn(image, boxes, classes, scores)])
        return pics.image_grid(rows, titles=("ground truth", f"detections (score >= {SHOWN_SCORE})"))

    def overlay(self, image, predictions) -> np.ndarray:
        """The image with the detections scoring >= 0.5 drawn: box, class name and score."""
        return self._drawn(image, *self._shown(predictions))

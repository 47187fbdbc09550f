"""Classification + localization: softmax + box regression, scored by ILSVRC's protocol.

The model (models/localization.py) gives class logits and boxes as (centre x, centre y, width,
height) fractions of the image: one shared box (class-agnostic) or one per class. The multitask
loss is cross-entropy plus `task.box_weight` times the box loss (`task.box_loss`: 'l2', VGG's
Euclidean loss, or 'smooth_l1') on the target class's box. A prediction localizes an image when
its class is right and its box overlaps one of that class's ground-truth boxes with IoU >= 0.5
(ILSVRC's localization error counts the rest); VGG's Table 8 scores the box of the ground-truth
class instead ("gt_class_loc_error": box quality alone).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segattn_jax.metrics.classification import classification_metrics
from segattn_jax.ops import boxes as box_ops
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

BOX_LOSSES = ("l2", "smooth_l1")
IOU_THRESHOLD = 0.5  # ILSVRC's


def corners(boxes: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """(centre x, centre y, width, height) fractions of the image -> (x1, y1, x2, y2) pixels."""
    height, width = image_hw
    return box_ops.from_center_size(boxes[..., 0] * width, boxes[..., 1] * height,
                                    boxes[..., 2] * width, boxes[..., 3] * height)


def fractions(boxes: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """(x1, y1, x2, y2) pixels -> (centre x, centre y, width, height) fractions (`corners`'s
    inverse): the regression targets."""
    height, width = image_hw
    return jnp.stack(box_ops.center_size(boxes), axis=-1) / jnp.array(
        [width, height, width, height], jnp.float32)


class LocalizationTask(Task):
    preprocess = "localization"

    def __init__(self, config):
        super().__init__(config)
        if config.task.box_loss not in BOX_LOSSES:
            raise ValueError(f"Unknown task.box_loss {config.task.box_loss!r}; valid: "
                             f"{list(BOX_LOSSES)}.")

    @staticmethod
    def box_of(boxes: jax.Array, classes: jax.Array) -> jax.Array:
        """Each image's box (N, 4) for `classes` (N,): the class's own box when the model has
        one per class, the shared box otherwise."""
        if boxes.shape[1] == 1:
            return boxes[:, 0]
        return jnp.take_along_axis(boxes, classes[:, None, None], axis=1)[:, 0]

    def loss(self, variables, batch: Batch, rng):
        outputs, model_state = self.apply_train(variables, batch["image"], train=True,
                                                rngs={"dropout": rng})
        logits, labels = outputs["logits"], batch["label"]
        class_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        error = self.box_of(outputs["boxes"], labels) - fractions(
            batch["box"], batch["image"].shape[1:3])
        if self.config.task.box_loss == "l2":
            box_loss = 0.5 * jnp.sum(error ** 2, axis=-1)
        else:
            box_loss = jnp.sum(optax.huber_loss(error), axis=-1)
        # Images without a box of their class train only their class.
        has_box = batch["has_box"].astype(jnp.float32)
        box_loss = jnp.sum(has_box * box_loss) / jnp.maximum(jnp.sum(has_box), 1.0)
        loss = class_loss + self.config.task.box_weight * box_loss
        return loss, {"class_loss": class_loss, "box_loss": box_loss,
                      "accuracy": (jnp.argmax(logits, -1) == labels).mean()}, model_state

    def predict(self, variables, inputs):
        outputs = self.model.apply(variables, inputs["image"], train=False)
        label = jnp.argmax(outputs["logits"], -1).astype(jnp.int32)
        boxes = corners(outputs["boxes"], inputs["image"].shape[1:3])
        return {"logits": outputs["logits"], "label": label, "boxes": boxes,
                "box": self.box_of(boxes, label)}

    def statistics(self, batch: Batch, predictions):
        """Counts of right classes, of localized images (top-1 and, past 5 classes, top-5) and
        of good boxes for the ground-truth class, over real examples."""
        labels, valid = batch["label"], batch["valid"]

        def localized(boxes):  # IoU >= 0.5 with any ground-truth box of the image's class
            iou = box_ops.pairwise_iou(boxes[:, None], batch["boxes"])[:, 0]
            return jnp.any((iou >= IOU_THRESHOLD) & batch["box_valid"], axis=-1)

        good_box = localized(self.box_of(predictions["boxes"], labels))
        count = lambda hit: jnp.sum(hit & valid, dtype=jnp.int32)  # noqa: E731
        stats = {"total": jnp.sum(valid, dtype=jnp.int32),
                 "class_correct": count(predictions["label"] == labels),
                 "localized": count((predictions["label"] == labels) & good_box),
                 "gt_class_localized": count(good_box)}
        if predictions["logits"].shape[-1] > 5:
            _, top5 = jax.lax.top_k(predictions["logits"], 5)
            stats["top5_localized"] = count(jnp.any(top5 == labels[:, None], -1) & good_box)
        return stats

    def summarize(self, statistics) -> dict[str, float]:
        total = statistics["total"]
        error = lambda key: classification_metrics(statistics[key], total)["error_percent"]  # noqa: E731
        summary = {"class_error": error("class_correct"), "loc_error": error("localized"),
                   "gt_class_loc_error": error("gt_class_localized")}
        if "top5_localized" in statistics:
            summary["top5_loc_error"] = error("top5_localized")
        return summary

    def pictures(self, batch, predictions) -> np.ndarray:
        """ground truth (the target box and class) | prediction (box and class), a row each."""
        rows = []
        for i, image in enumerate(batch["image"]):
            truth = pics.labeled_boxes(image, batch["box"][i][None], [batch["label"][i]],
                                       self.class_names)
            rows.append([truth, self.overlay(image, jax.tree.map(lambda x: x[i], predictions))])
        return pics.image_grid(rows, titles=("ground truth", "prediction"))

    def overlay(self, image, predictions) -> np.ndarray:
        """The image with the predicted box, captioned with the predicted class and its
        probability."""
        logits = np.asarray(predictions["logits"], np.float64)
        odds = np.exp(logits - logits.max())
        label = int(predictions["label"])
        return pics.labeled_boxes(image, np.asarray(predictions["box"])[None], [label],
                                  self.class_names, [odds[label] / odds.sum()])

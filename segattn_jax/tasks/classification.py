"""Image classification (error %), with the attention modules' transformed inputs in pictures."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from segattn_jax.metrics.classification import classification_metrics, correct_count
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

TRANSFORMED = "transformed"  # name under which attention models sow what they attended to


class ClassificationTask(Task):
    preprocess = "classification"

    def loss(self, variables, batch: Batch, rng):
        """Cross-entropy; plus `task.aux_loss_weight` times the auxiliary classifier's, for
        models that return {"logits", "aux_logits"} in training (Inception)."""
        outputs, model_state = self.apply_train(variables, batch["image"], train=True,
                                                rngs={"dropout": rng})
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs

        def cross_entropy(logits):
            return optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), batch["label"]).mean()

        loss = cross_entropy(logits)
        metrics = {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).mean()}
        if isinstance(outputs, dict) and "aux_logits" in outputs:
            metrics["aux_loss"] = cross_entropy(outputs["aux_logits"])
            loss = loss + self.config.task.get("aux_loss_weight", 0.0) * metrics["aux_loss"]
        return loss, metrics, model_state

    def predict(self, variables, inputs):
        logits, state = self.model.apply(variables, inputs["image"], train=False,
                                         mutable=["intermediates"])
        outputs = {"logits": logits, "label": jnp.argmax(logits, -1).astype(jnp.int32)}
        for path, value in traverse_util.flatten_dict(state.get("intermediates", {})).items():
            if path[-1] == TRANSFORMED:
                outputs[TRANSFORMED] = value[0]
        return outputs

    def statistics(self, batch: Batch, predictions):
        """Top-1 and top-5 counts (ILSVRC tables report both; top-5 only past 5 classes)."""
        logits = predictions["logits"]
        counts = {"top1": correct_count(logits, batch["label"], batch["valid"])}
        if logits.shape[-1] > 5:
            counts["top5"] = correct_count(logits, batch["label"], batch["valid"], top_k=5)
        return counts

    def summarize(self, statistics) -> dict[str, float]:
        metrics = classification_metrics(*statistics["top1"])
        summary = {"accuracy": 100.0 * metrics["accuracy"],
                   "error_percent": metrics["error_percent"]}
        if "top5" in statistics:
            summary["top5_error_percent"] = classification_metrics(
                *statistics["top5"])["error_percent"]
        return summary

    @staticmethod
    def _input_and_attended(image: np.ndarray, transformed: np.ndarray | None) -> list[np.ndarray]:
        """The input, upscaled, and what an attention model made of it (if it has a transformer),
        which `image_grid` brings to the input's height whatever its output size."""
        row = [pics.upscale(pics.to_rgb_uint8(image))]
        if transformed is not None:
            row.append(pics.to_rgb_uint8(np.clip(transformed, 0, 1)))
        return row

    def pictures(self, batch, predictions) -> np.ndarray:
        """input | transformed input (if the model has one) | true and predicted class in words,
        green when right and red when wrong."""
        rows = []
        for i, image in enumerate(batch["image"]):
            transformed = predictions[TRANSFORMED][i] if TRANSFORMED in predictions else None
            tiles = self._input_and_attended(image, transformed)
            truth, guess = int(batch["label"][i]), int(predictions["label"][i])
            color = pics.RIGHT_COLOR if truth == guess else pics.WRONG_COLOR
            tiles.append(pics.text_panel(
                [(f"true: {pics.class_name(self.class_names, truth)}", pics.TEXT_COLOR),
                 (f"predicted: {pics.class_name(self.class_names, guess)}", color)],
                height=tiles[0].shape[0]))
            rows.append(tiles)
        titles = ("input", *(["transformed"] if len(rows[0]) == 3 else []), "class")
        return pics.image_grid(rows, titles=titles)

    def overlay(self, image, predictions) -> np.ndarray:
        """input | transformed input (if any) | the predicted class and its probability."""
        tiles = self._input_and_attended(image, predictions.get(TRANSFORMED))
        guess = int(predictions["label"])
        odds = np.exp(np.asarray(predictions["logits"], np.float64) - np.max(predictions["logits"]))
        probability = float(odds[guess] / odds.sum())  # softmax
        tiles.append(pics.text_panel(
            [(f"predicted: {pics.class_name(self.class_names, guess)}", pics.TEXT_COLOR),
             (f"probability: {probability:.2f}", pics.TEXT_COLOR)], height=tiles[0].shape[0]))
        return pics.image_grid([tiles])

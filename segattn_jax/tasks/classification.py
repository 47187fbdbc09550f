"""Image classification (error %), with the attention modules' transformed inputs in pictures."""
from __future__ import annotations

import jax
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

    def loss(self, params, batch: Batch, rng):
        logits = self.model.apply({"params": params}, batch["image"], train=True,
                                  rngs={"dropout": rng})
        loss = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["label"]).mean()
        return loss, {"accuracy": (jnp.argmax(logits, -1) == batch["label"]).mean()}

    def predict(self, params, images):
        logits, state = self.model.apply({"params": params}, images, train=False,
                                         mutable=["intermediates"])
        outputs = {"logits": logits, "label": jnp.argmax(logits, -1).astype(jnp.int32)}
        for path, value in traverse_util.flatten_dict(state.get("intermediates", {})).items():
            if path[-1] == TRANSFORMED:
                outputs[TRANSFORMED] = value[0]
        return outputs

    def statistics(self, batch: Batch, predictions):
        return correct_count(predictions["logits"], batch["label"], batch["valid"])

    def summarize(self, statistics) -> dict[str, float]:
        metrics = classification_metrics(*statistics)
        return {"accuracy": 100.0 * metrics["accuracy"], "error_percent": metrics["error_percent"]}

    @staticmethod
    def _input_and_attended(image: np.ndarray, transformed: np.ndarray | None) -> list[np.ndarray]:
        """The input, and what an attention model made of it (if it has a transformer)."""
        row = [pics.to_uint8(image)]
        if transformed is not None:
            row.append(pics.to_uint8(np.clip(transformed, 0, 1)))
        return row

    def pictures(self, batch, predictions) -> np.ndarray:
        """input | transformed input (if the model has one) | a green/red bar: right/wrong."""
        rows = []
        for i, image in enumerate(batch["image"]):
            transformed = predictions[TRANSFORMED][i] if TRANSFORMED in predictions else None
            right = predictions["label"][i] == batch["label"][i]
            bar = np.full((image.shape[0], 4, 3), (0, 200, 0) if right else (220, 0, 0), np.uint8)
            rows.append([*self._input_and_attended(image, transformed), bar])
        return pics.image_grid(rows)

    def overlay(self, image, predictions) -> np.ndarray:
        return pics.image_grid([self._input_and_attended(image, predictions.get(TRANSFORMED))])

"""Semantic segmentation: per-pixel cross-entropy with an ignore label; FCN-paper metrics."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segattn_jax.metrics.segmentation import confusion_matrix, segmentation_metrics
from segattn_jax.models.patch_classifier import sliding_window_logits
from segattn_jax.ops.superpixels import superpixel_vote
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task


LOSS_NORMALIZATIONS = ("pixels", "images")


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int,
                        normalization: str = "pixels") -> jax.Array:
    """Cross-entropy over the pixels whose label is not `ignore_label`: their mean ('pixels'),
    or its sum per image averaged over the images ('images': Caffe's SoftmaxWithLoss with
    `normalize: false` at batch 1, the loss of FCN's reference nets, whose learning rates of
    1e-10 and below are sized for it)."""
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(f"Unknown task.loss_normalization {normalization!r}; valid: "
                         f"{LOSS_NORMALIZATIONS}.")
    valid = labels != ignore_label
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0))
    if normalization == "images":
        return jnp.sum(ce * valid) / labels.shape[0]
    return jnp.sum(ce * valid) / jnp.maximum(jnp.sum(valid), 1)


class SegmentationTask(Task):
    """Per-pixel classification. When the input pipeline makes superpixels
    (`dataset.preprocess.superpixels`), predictions also carry Farabet et al.'s vote inside them
    ('superpixel_label_map'), evaluated beside the per-pixel map under 'superpixels/'."""

    preprocess = "segmentation"
    any_input_size = True

    def __init__(self, config):
        super().__init__(config)
        if config.dataset.preprocess.get("superpixels"):
            self.input_keys = ("image", "superpixels")

    @property
    def num_classes(self) -> int:
        return self.config.model.num_classes

    @property
    def ignore_label(self) -> int:
        return self.config.task.ignore_label

    def loss(self, variables, batch: Batch, rng):
        logits, model_state = self.apply_train(variables, batch["image"], train=True,
                                               rngs={"dropout": rng})
        loss = pixel_cross_entropy(logits, batch["label"], self.ignore_label,
                                   self.config.task.get("loss_normalization", "pixels"))
        valid = batch["label"] != self.ignore_label
        correct = (jnp.argmax(logits, -1) == batch["label"]) & valid
        return loss, {"pixel_accuracy": correct.sum() / jnp.maximum(valid.sum(), 1)}, model_state

    def predict(self, variables, inputs):
        logits = self.model.apply(variables, inputs["image"], train=False)
        predictions = {"label_map": jnp.argmax(logits, axis=-1).astype(jnp.int32)}
        if "superpixels" in inputs:  # absent for image files given to `predict`
            predictions["superpixel_label_map"] = superpixel_vote(jax.nn.softmax(logits),
                                                                  inputs["superpixels"])
        return predictions

    def _confusion(self, batch: Batch, label_map: jax.Array) -> jax.Array:
        valid = jnp.broadcast_to(batch["valid"][:, None, None], batch["label"].shape)
        return confusion_matrix(batch["label"], label_map, self.num_classes, valid_mask=valid,
                                ignore_label=self.ignore_label)

    def statistics(self, batch: Batch, predictions) -> Any:
        pixels = self._confusion(batch, predictions["label_map"])
        if "superpixel_label_map" not in predictions:
            return pixels
        return {"pixels": pixels,
                "superpixels": self._confusion(batch, predictions["superpixel_label_map"])}

    def summarize(self, statistics) -> dict[str, float]:
        def percent(confusion):
            return {k: 100.0 * float(v)
                    for k, v in segmentation_metrics(np.asarray(confusion)).items()}

        if not isinstance(statistics, dict):
            return percent(statistics)
        return {**percent(statistics["pixels"]),
                **{f"superpixels/{k}": v for k, v in percent(statistics["superpixels"]).items()}}

    def _present(self, *masks: np.ndarray) -> np.ndarray:
        """Class ids that occur in any of `masks`, ignore label excluded."""
        ids = np.unique(np.concatenate([np.ravel(m) for m in masks]))
        return ids[ids != self.ignore_label]

    def pictures(self, batch, predictions) -> np.ndarray:
        """input | ground truth | prediction [| superpixel vote] | legend of the classes shown,
        upscaled."""
        voted = predictions.get("superpixel_label_map")
        rows = []
        for i, (image, label) in enumerate(zip(batch["image"], batch["label"])):
            maps = [predictions["label_map"][i]] + ([] if voted is None else [voted[i]])
            tiles = [pics.upscale(pics.to_rgb_uint8(image)),
                     pics.upscale(pics.colorize_mask(label, self.num_classes,
                                                     ignore_label=self.ignore_label))]
            tiles += [pics.upscale(pics.colorize_mask(m, self.num_classes)) for m in maps]
            tiles.append(pics.legend(self._present(label, *maps), self.class_names,
                                     height=tiles[0].shape[0]))
            rows.append(tiles)
        titles = ("input", "ground truth", "prediction",
                  *(() if voted is None else ("superpixel vote",)), "classes")
        return pics.image_grid(rows, titles=titles)

    def overlay(self, image, predictions) -> np.ndarray:
        """The prediction's classes tinted over the image (background untinted), upscaled, and a
        legend of the tinted classes."""
        label_map = predictions["label_map"]
        tinted = pics.upscale(pics.overlay(pics.to_uint8(image), label_map, self.num_classes))
        shown = self._present(label_map)
        return pics.image_grid([[tinted, pics.legend(shown[shown != 0], self.class_names,
                                                     height=tinted.shape[0])]])


class PatchClassifierTask(SegmentationTask):
    """Segmentation by a centre-pixel patch classifier (models/patch_classifier.py), trained
    convolutionalized and evaluated both ways on the same weights: the dense net's label map and
    the sliding window's, each with the segmentation metrics under its name, and the number of
    valid pixels the two label differently (the lectures' claim: none)."""

    WAYS = ("convolutionalized", "sliding_window")

    def predict(self, variables, inputs):
        logits = sliding_window_logits(self.model, variables, inputs["image"])
        return {**super().predict(variables, inputs),
                "sliding_window_label_map": jnp.argmax(logits, axis=-1).astype(jnp.int32)}

    def statistics(self, batch: Batch, predictions) -> Any:
        dense, sliding = predictions["label_map"], predictions["sliding_window_label_map"]
        valid = batch["valid"][:, None, None] & (batch["label"] != self.ignore_label)
        return {"convolutionalized": self._confusion(batch, dense),
                "sliding_window": self._confusion(batch, sliding),
                "differing_pixels": jnp.sum((dense != sliding) & valid)}

    def summarize(self, statistics) -> dict[str, float]:
        differing = {"differing_pixels": float(statistics["differing_pixels"])}
        metrics = dict(differing)
        for way in self.WAYS:  # under each way's name, so a table row of either way shows it
            way_metrics = {**super().summarize(statistics[way]), **differing}
            metrics.update({f"{way}/{name}": value for name, value in way_metrics.items()})
        return metrics

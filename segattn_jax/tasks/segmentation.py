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
        loss, accuracy = self._pixel_loss(logits, batch["label"])
        return loss, {"pixel_accuracy": accuracy}, model_state

    def _pixel_loss(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(the configured pixel cross-entropy, the pixel accuracy) of one label map's logits."""
        loss = pixel_cross_entropy(logits, labels, self.ignore_label,
                                   self.config.task.get("loss_normalization", "pixels"))
        valid = labels != self.ignore_label
        correct = (jnp.argmax(logits, -1) == labels) & valid
        return loss, correct.sum() / jnp.maximum(valid.sum(), 1)

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

    def _shown_label_maps(self, predictions) -> dict[str, Any]:
        """Column title -> the (N, H, W) label maps that pictures show beside the ground truth."""
        maps = {"prediction": predictions["label_map"]}
        if "superpixel_label_map" in predictions:
            maps["superpixel vote"] = predictions["superpixel_label_map"]
        return maps

    def pictures(self, batch, predictions) -> np.ndarray:
        """input | ground truth | prediction [| superpixel vote] | legend of the classes shown,
        upscaled."""
        shown = self._shown_label_maps(predictions)
        rows = []
        for i, (image, label) in enumerate(zip(batch["image"], batch["label"])):
            maps = [label_maps[i] for label_maps in shown.values()]
            tiles = [pics.upscale(pics.to_rgb_uint8(image)),
                     pics.upscale(pics.colorize_mask(label, self.num_classes,
                                                     ignore_label=self.ignore_label))]
            tiles += [pics.upscale(pics.colorize_mask(m, self.num_classes)) for m in maps]
            tiles.append(pics.legend(self._present(label, *maps), self.class_names,
                                     height=tiles[0].shape[0]))
            rows.append(tiles)
        return pics.image_grid(rows, titles=("input", "ground truth", *shown, "classes"))

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


class RecurrentSegmentationTask(SegmentationTask):
    """Segmentation by Pinheiro & Collobert's recurrent network (models/pinheiro.py), whose model
    gives every instance's logits: the loss is the sum of every instance's pixel loss, as the
    paper trains; the label map and metrics are the last instance's, and each instance's metrics
    are also reported under 'instance_<t>/' (what each application of the network adds)."""

    def loss(self, variables, batch: Batch, rng):
        logits, model_state = self.apply_train(variables, batch["image"], train=True,
                                               rngs={"dropout": rng})
        metrics, total = {}, 0.0
        for t, instance_logits in enumerate(logits, start=1):
            loss, accuracy = self._pixel_loss(instance_logits, batch["label"])
            total += loss
            metrics[f"instance_{t}/pixel_accuracy"] = accuracy
        return total, {"pixel_accuracy": accuracy, **metrics}, model_state

    def predict(self, variables, inputs):
        logits = self.model.apply(variables, inputs["image"], train=False)
        label_maps = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # (T, N, H, W)
        # Batch first, as every prediction, so that evaluation can shard and unpad it.
        return {"label_map": label_maps[-1], "instance_label_maps": jnp.moveaxis(label_maps, 0, 1)}

    def statistics(self, batch: Batch, predictions) -> Any:
        instance_maps = predictions["instance_label_maps"]
        return [self._confusion(batch, instance_maps[:, t]) for t in range(instance_maps.shape[1])]

    def summarize(self, statistics) -> dict[str, float]:
        metrics = super().summarize(statistics[-1])
        for t, confusion in enumerate(statistics, start=1):
            metrics.update({f"instance_{t}/{k}": v
                            for k, v in super().summarize(confusion).items()})
        return metrics

    def _shown_label_maps(self, predictions) -> dict[str, Any]:
        instance_maps = predictions["instance_label_maps"]
        return {f"instance {t + 1}": instance_maps[:, t] for t in range(instance_maps.shape[1])}


class ProposalSegmentationTask(SegmentationTask):
    """Segmentation by DeconvNet (models/deconvnet.py), evaluated as the paper does: the network
    labels each object proposal (`dataset.proposals`, attached to evaluation batches) and the
    proposals' score maps are merged by a pixel-wise max. Those are the label map and the
    metrics; the same network on the whole image is reported beside them under 'whole_image/'
    (without proposals configured, the whole image is all there is). Training examples are
    whatever the input pipeline makes (DeconvNet's object crops)."""

    def __init__(self, config):
        super().__init__(config)
        if config.dataset.proposals.get("method"):
            self.input_keys = ("image", "proposals", "proposal_valid")

    def init_variables(self, rng, inputs):
        """Initialized on one proposal-sized crop: the size the network is trained at."""
        size = self.model.proposal_size
        return dict(self.model.init({"params": rng}, jnp.zeros((1, size, size, 3)), train=False))

    def predict(self, variables, inputs):
        whole = jnp.argmax(self.model.apply(variables, inputs["image"], train=False), axis=-1)
        if "proposals" not in inputs:  # image files given to `predict`
            return {"label_map": whole.astype(jnp.int32)}
        merged = self.model.apply(variables, inputs["image"], train=False,
                                  proposals=inputs["proposals"],
                                  proposal_valid=inputs["proposal_valid"])
        return {"label_map": jnp.argmax(merged, axis=-1).astype(jnp.int32),
                "whole_image_label_map": whole.astype(jnp.int32)}

    def statistics(self, batch: Batch, predictions) -> Any:
        if "whole_image_label_map" not in predictions:  # no proposals configured
            return self._confusion(batch, predictions["label_map"])
        return {"proposals": self._confusion(batch, predictions["label_map"]),
                "whole_image": self._confusion(batch, predictions["whole_image_label_map"])}

    def summarize(self, statistics) -> dict[str, float]:
        if not isinstance(statistics, dict):
            return super().summarize(statistics)
        whole = super().summarize(statistics["whole_image"])
        return {**super().summarize(statistics["proposals"]),
                **{f"whole_image/{k}": v for k, v in whole.items()}}

    def _shown_label_maps(self, predictions) -> dict[str, Any]:
        maps = {"proposals": predictions["label_map"]}
        if "whole_image_label_map" in predictions:
            maps["whole image"] = predictions["whole_image_label_map"]
        return maps

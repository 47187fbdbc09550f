"""Dense captioning (DenseCap): regions found and described in one pass; the dense-captioning mAP
(`metrics/dense_captioning.py`) with METEOR, or a unigram-F1 stand-in for quick runs.

The vocabulary is built from the training phrases when a run starts and saved in its workdir, as
for captioning (`data/captions.py`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from segattn_jax.data import captions as captions_lib
from segattn_jax.metrics.captioning import meteor_scores
from segattn_jax.metrics.dense_captioning import dense_captioning_map
from segattn_jax.models import build_model
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch
from segattn_jax.tasks.captioning import decode_captions, text_from_bytes
from segattn_jax.tasks.detection import RegionTask

TARGET_KEYS = ("boxes", "box_valid", "phrases")
SHOWN_REGIONS = 5  # pictures draw each image's best regions
PHRASE_SCORES = ("meteor", "unigram_f1")


def unigram_f1(references, candidates) -> list[float]:
    """A quick, Java-free phrase similarity: the best word-overlap F1 against any reference. Not
    METEOR (no stems, synonyms or fragmentation penalty): its mAP is reported under its own name."""
    def f1(reference: list[str], candidate: list[str]) -> float:
        common = sum(min(reference.count(w), candidate.count(w)) for w in set(candidate))
        return 0.0 if not common else 2 * common / (len(reference) + len(candidate))

    return [max(f1(captions_lib.words(r), captions_lib.words(c)) for r in refs)
            for refs, c in zip(references, candidates)]


class DenseCaptioningTask(RegionTask):
    preprocess = "dense_captioning"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        if config.task.phrase_score not in PHRASE_SCORES:
            raise ValueError(f"Unknown task.phrase_score {config.task.phrase_score!r}; valid: "
                             f"{PHRASE_SCORES}.")
        self.vocabulary: captions_lib.Vocabulary | None = None
        self.model = None  # built by `prepare`, once the vocabulary size is known

    def prepare(self, workdir, training: bool) -> dict[str, Any]:
        """The workdir's phrase vocabulary (training builds and saves it first if missing), the
        model with its size, and the preprocessor's phrase encoder."""
        from segattn_jax.data import pipeline

        data, task = self.config.dataset, self.config.task
        self.vocabulary = captions_lib.vocabulary_for_run(
            workdir, pipeline.training_sources(data), min_count=task.min_word_count,
            max_length=task.max_length, create=training, texts=captions_lib.phrase_texts)
        self.model = build_model(self.config.model, vocab_size=len(self.vocabulary))
        return {"captions": captions_lib.CaptionEncoder(self.vocabulary, task.max_length)}

    def loss(self, variables, batch: Batch, rng):
        targets = {key: batch[key] for key in TARGET_KEYS}
        losses, metrics, model_state = self.model_losses(variables, batch, targets, rng)
        # Phrases cut at max_length words by the preprocessor, counted in the log.
        metrics["truncated_phrases"] = jnp.sum(batch["phrase_truncated"] & batch["box_valid"])
        return sum(losses.values()), {**losses, **metrics}, model_state

    def predict(self, variables, inputs):
        """Regions (boxes, scores, valid) and each region's phrase: tokens (B, D, T), greedy or
        beam search (`task.beam_size`) from the language model."""
        model_variables = {"params": variables["params"]}
        regions = self.model.apply(model_variables, inputs)
        codes = regions.pop("codes")
        batch, count = codes.shape[:2]
        state = self.model.apply(model_variables, codes.reshape(batch * count, -1),
                                 method="caption_state")
        best = decode_captions(
            lambda state, tokens: self.model.apply(model_variables, state, tokens,
                                                   method="caption_step"),
            state, vocabulary=self.vocabulary, beam_size=self.config.task.beam_size,
            max_length=self.config.task.max_length)
        return {**regions, "tokens": best["tokens"].reshape(batch, count, -1)}

    def statistics(self, batch: Batch, predictions):
        return {**predictions, "gt_boxes": batch["boxes"], "gt_valid": batch["box_valid"],
                "gt_text": batch["phrase_text"], "example_valid": batch["valid"]}

    def _captions(self, tokens: np.ndarray) -> list[str]:
        return [self.vocabulary.decode(t) for t in tokens]

    def accumulate(self, total, statistics):
        """Appends each real image's regions (phrases decoded) and ground truth."""
        total = total or {"detections": [], "ground_truths": []}
        s = {k: np.asarray(v) for k, v in statistics.items()}
        for i in np.flatnonzero(s["example_valid"]):
            keep, real = s["valid"][i], s["gt_valid"][i]
            total["detections"].append({"boxes": s["boxes"][i][keep],
                                        "scores": s["scores"][i][keep],
                                        "captions": self._captions(s["tokens"][i][keep])})
            total["ground_truths"].append({
                "boxes": s["gt_boxes"][i][real],
                "phrases": [" ".join(captions_lib.words(text_from_bytes(t)))
                            for t in s["gt_text"][i][real]]})
        return total

    def summarize(self, statistics) -> dict[str, float]:
        """DenseCap's mAP with METEOR; with `task.phrase_score='unigram_f1'` the same protocol
        under the names mAP_unigram_f1 etc., so the two are never confused."""
        meteor = self.config.task.phrase_score == "meteor"
        summary = dense_captioning_map(statistics["detections"], statistics["ground_truths"],
                                       meteor_scores if meteor else unigram_f1)
        if not meteor:
            summary = {(k.replace("mAP", "mAP_unigram_f1") if k != "detection_mAP" else k): v
                       for k, v in summary.items()}
        return summary

    # ---- pictures -----------------------------------------------------------------------------
    def _drawn(self, image: np.ndarray, boxes, texts: list[str]) -> np.ndarray:
        image = pics.to_rgb_uint8(image)
        big = pics.upscale(image, 256)
        factor = big.shape[0] / image.shape[0]
        return pics.draw_boxes(big, np.asarray(boxes) * factor, texts,
                               list(range(1, len(texts) + 1)))

    def _best_regions(self, predictions) -> tuple[np.ndarray, list[str]]:
        valid = np.asarray(predictions["valid"])
        scores = np.where(valid, np.asarray(predictions["scores"]), -np.inf)
        best = np.argsort(-scores, kind="stable")[:SHOWN_REGIONS]
        best = best[valid[best]]
        texts = [f"{c} {float(p):.2f}" for c, p in zip(
            self._captions(np.asarray(predictions["tokens"])[best]), scores[best])]
        return np.asarray(predictions["boxes"])[best], texts

    def pictures(self, batch, predictions) -> np.ndarray:
        """ground-truth regions with their phrases | the best predicted regions with theirs and
        their scores (the paper's Figure 4)."""
        rows = []
        for i, image in enumerate(batch["image"]):
            real = np.asarray(batch["box_valid"][i])
            truth = self._drawn(image, np.asarray(batch["boxes"][i])[real][:SHOWN_REGIONS],
                                [text_from_bytes(t) for t in
                                 np.asarray(batch["phrase_text"][i])[real][:SHOWN_REGIONS]])
            predicted = self._drawn(image, *self._best_regions(
                jax.tree.map(lambda x: x[i], predictions)))
            rows.append([truth, predicted])
        return pics.image_grid(rows, titles=("ground truth", f"best {SHOWN_REGIONS} regions"))

    def overlay(self, image, predictions) -> np.ndarray:
        """The image with its best regions and their phrases (the `predict` command)."""
        return self._drawn(image, *self._best_regions(predictions))

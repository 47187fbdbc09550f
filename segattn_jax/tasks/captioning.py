"""Image captioning: teacher-forced training (soft attention with the doubly stochastic penalty,
hard attention with REINFORCE), beam-search decoding, COCO caption metrics, attention pictures.

The vocabulary is built from the training captions when a run starts and saved in its workdir
(data/captions.py); eval and predict read it from there, so a model is always decoded with the
words it was trained on.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from segattn_jax.data import captions as captions_lib
from segattn_jax.metrics.captioning import caption_metrics
from segattn_jax.models import build_model
from segattn_jax.ops.beam_search import beam_search, repeat_for_beams
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task
from segattn_jax.train import reinforce

BASELINE = "reinforce"  # the variable collection holding hard attention's moving-average baseline
_WORDS_SHOWN = 12  # attention maps per example in pictures


def box_coverage(boxes: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """The fraction of each attention cell that normalized boxes (..., 4) (ymin, xmin, ymax,
    xmax) cover: (..., h, w) in [0, 1], cells tiling the image evenly."""
    def overlap(low, high, cells):
        edges = jnp.arange(cells + 1, dtype=jnp.float32) / cells
        return jnp.clip(jnp.minimum(high[..., None], edges[1:]) - jnp.maximum(low[..., None],
                                                                            edges[:-1]), 0) * cells

    y = overlap(boxes[..., 0], boxes[..., 2], grid[0])
    x = overlap(boxes[..., 1], boxes[..., 3], grid[1])
    return y[..., :, None] * x[..., None, :]


def attention_in_boxes(alpha: jax.Array, tokens: jax.Array, word_class: jax.Array,
                       boxes: jax.Array, classes: jax.Array, valid: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
    """How much more attention a word that names an object puts inside that object's box than
    the box's share of the image: the sum over such words of mass / share, and their count.

    alpha (B, T, h, w); tokens (B, T); word_class (V,) the class a word names (-1: none);
    boxes (B, M, 4), classes (B, M), valid (B, M) the image's objects. A word naming a class with
    several objects in the image uses the union of their boxes (a cell's coverage is its largest).
    """
    grid = alpha.shape[2:]
    named = word_class[tokens]  # (B, T)
    coverage = box_coverage(boxes, grid) * valid[..., None, None]  # (B, M, h, w)
    same = (classes[:, None, :] == named[..., None]) & valid[:, None, :]  # (B, T, M)
    region = jnp.max(jnp.where(same[..., None, None], coverage[:, None], 0.0), axis=2)
    share = region.mean(axis=(-2, -1))
    counted = (named >= 0) & (share > 0)
    ratio = jnp.sum(alpha * region, axis=(-2, -1)) / jnp.where(counted, share, 1.0)
    return jnp.sum(jnp.where(counted, ratio, 0.0)), jnp.sum(counted)


def decode_captions(step: Callable, state: dict[str, jax.Array], *,
                    vocabulary: captions_lib.Vocabulary, beam_size: int, max_length: int,
                    fixed: tuple[str, ...] = ("annotations", "keys")) -> dict[str, jax.Array]:
    """Beam search (`beam_size` 1: greedy) of a sentence decoder (a caption, a translation) for
    `max_length` words plus <end>; <pad> and <start> are never generated. `step(state, tokens)`
    -> (state, outputs with 'logits' and 'alpha') is the decoder's step; the state leaves named
    in `fixed`, the same for every hypothesis of an example (the encoder's annotations), are
    closed over instead of carried, so beam search does not regroup them at every step. Returns
    `beam_search`'s best hypothesis per example."""
    v = vocabulary
    batch = next(iter(state.values())).shape[0]
    never = jnp.zeros(len(v)).at[jnp.array([v.pad, v.start])].set(-jnp.inf)
    state = repeat_for_beams(state, beam_size)
    fixed = {k: state.pop(k) for k in fixed if k in state}

    def beam_step(lstm, tokens):
        new, outputs = step({**fixed, **lstm}, tokens)
        lstm = {k: new[k] for k in lstm}
        return jax.nn.log_softmax(outputs["logits"] + never), lstm, outputs["alpha"]

    return beam_search(beam_step, state, batch_size=batch, beam_size=beam_size,
                       max_length=max_length + 1, start_id=v.start, end_id=v.end, pad_id=v.pad)


class CaptioningTask(Task):
    preprocess = "captioning"

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.vocabulary: captions_lib.Vocabulary | None = None
        self.model = None  # built by `prepare`, once the vocabulary size is known

    # ---- setup --------------------------------------------------------------------------------
    def prepare(self, workdir, training: bool) -> dict[str, Any]:
        """Loads the workdir's vocabulary (training builds and saves it first if missing), builds
        the model with its size, and gives the preprocessor its caption encoder."""
        from segattn_jax.data import pipeline

        data, task = self.config.dataset, self.config.task
        self.vocabulary = captions_lib.vocabulary_for_run(
            workdir, pipeline.training_sources(data), min_count=task.min_word_count,
            max_length=task.max_length, create=training)
        self.model = build_model(self.config.model, vocab_size=len(self.vocabulary))
        return {"captions": captions_lib.CaptionEncoder(self.vocabulary, task.max_length)}

    @property
    def _hard(self) -> bool:
        return self.model.attention == "hard"

    def init_variables(self, rng, inputs):
        tokens = jnp.zeros((inputs["image"].shape[0], 1), jnp.int32)
        variables = dict(self.model.init({"params": rng}, inputs["image"], tokens, train=False))
        if self._hard:
            variables[BASELINE] = {"baseline": jnp.zeros((), jnp.float32)}
        return variables

    # ---- training -----------------------------------------------------------------------------
    def loss(self, variables, batch: Batch, rng):
        """Per-caption negative log-likelihood (summed over words, averaged over captions, as the
        reference code), plus: soft attention's doubly stochastic penalty
        lambda * sum_i (1 - sum_t alpha_ti)^2; hard attention's REINFORCE surrogate with the
        log-likelihood as reward, the moving-average baseline and an entropy bonus; a training
        step samples locations with probability `task.sample_probability` and uses the expected
        context otherwise (the reference code's h_sampling_mask, one coin per minibatch)."""
        task = self.config.task
        tokens = batch["caption"]
        targets = tokens[:, 1:]
        mask = (targets != self.vocabulary.pad).astype(jnp.float32)
        dropout_rng, sample_rng, coin_rng = jax.random.split(rng, 3)
        use_sample = jax.random.bernoulli(coin_rng, task.sample_probability) if self._hard else False
        model_variables = {k: v for k, v in variables.items() if k != BASELINE}
        outputs, model_state = self.apply_train(
            model_variables, batch["image"], tokens[:, :-1], train=True, use_sample=use_sample,
            rngs={"dropout": dropout_rng, "sample": sample_rng})
        nll = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], targets)
        caption_nll = jnp.sum(nll * mask, axis=1)
        loss = caption_nll.mean()
        metrics = {"caption_nll": loss, "nll_per_word": jnp.sum(nll * mask) / jnp.sum(mask),
                   "word_accuracy": jnp.sum((jnp.argmax(outputs["logits"], -1) == targets) * mask)
                   / jnp.sum(mask)}
        if self.model.attention != "none":
            alpha = outputs["alpha"] * mask[..., None]
            penalty = jnp.sum((1.0 - alpha.sum(axis=1)) ** 2, axis=-1).mean()
            metrics["attention_penalty"] = penalty
            loss = loss + task.doubly_stochastic_weight * penalty
        if self._hard:
            baseline = variables[BASELINE]["baseline"]
            reward = -caption_nll
            log_prob = jnp.sum(outputs["sample_log_prob"] * mask, axis=1)
            surrogate = reinforce.reinforce_loss(log_prob, reward, baseline).mean()
            scores = jnp.log(jnp.maximum(outputs["alpha"], 1e-30))  # alpha's logits, up to a shift
            bonus = jnp.sum(reinforce.entropy(scores) * mask) / jnp.sum(mask)
            loss = loss + task.reinforce_weight * surrogate - task.entropy_weight * bonus
            model_state = {**model_state, BASELINE: {"baseline": reinforce.update_baseline(
                baseline, reward, task.baseline_decay)}}
            metrics.update(baseline=baseline, attention_entropy=bonus,
                           sampled=jnp.asarray(use_sample, jnp.float32))
        return loss, metrics, model_state

    # ---- decoding -----------------------------------------------------------------------------
    def predict(self, variables, inputs):
        """Beam search (`task.beam_size`; 1 = greedy) for `task.max_length` words plus <end>;
        hard attention decodes with the expected context (no sampling at test time). Returns
        tokens (B, T), score (B,) and alpha (B, T, h, w): the attention of each generated word.
        <pad> and <start> are never generated."""
        task = self.config.task
        model_variables = {"params": variables["params"]}
        annotations = self.model.apply(model_variables, inputs["image"], method="encode")
        state = self.model.apply(model_variables, annotations, method="initial_state")
        best = decode_captions(
            lambda state, tokens: self.model.apply(model_variables, state, tokens, method="step"),
            state, vocabulary=self.vocabulary, beam_size=task.beam_size,
            max_length=task.max_length)
        batch = annotations.shape[0]
        alpha = best["outputs"].reshape(batch, task.max_length + 1, *annotations.shape[1:3])
        return {"tokens": best["tokens"], "score": best["score"], "alpha": alpha}

    # ---- evaluation ---------------------------------------------------------------------------
    def _word_classes(self) -> np.ndarray:
        """(V,) the object class each vocabulary word names (-1: none), from the dataset's class
        names (single-word names only)."""
        index = {name.lower(): k for k, name in enumerate(self.class_names)}
        return np.array([index.get(word, -1) for word in self.vocabulary.tokens], np.int32)

    def statistics(self, batch: Batch, predictions):
        stats = {"tokens": predictions["tokens"], "references": batch["references"],
                 "valid": batch["valid"]}
        if "object_boxes" in batch and self.model.attention != "none":
            ratio_sum, words = attention_in_boxes(
                predictions["alpha"], predictions["tokens"], jnp.asarray(self._word_classes()),
                batch["object_boxes"], batch["object_classes"],
                batch["object_valid"] & batch["valid"][:, None])
            stats.update(box_ratio_sum=ratio_sum, box_words=words)
        return stats

    def accumulate(self, total, statistics):
        """Collects the decoded candidates and reference sentences of the valid examples."""
        total = total or {"candidates": [], "references": [], "box_ratio_sum": 0.0,
                          "box_words": 0}
        for tokens, references, valid in zip(statistics["tokens"], statistics["references"],
                                             statistics["valid"]):
            if valid:
                total["candidates"].append(self.vocabulary.decode(tokens))
                total["references"].append([text_from_bytes(r) for r in references])
        if "box_words" in statistics:
            total["box_ratio_sum"] += float(statistics["box_ratio_sum"])
            total["box_words"] += int(statistics["box_words"])
        return total

    def summarize(self, statistics) -> dict[str, float]:
        """BLEU-1..4, METEOR, CIDEr (percent); where the data has object boxes, how many times the
        box's share of the image the attention of object-naming words puts inside it."""
        summary = caption_metrics(statistics["references"], statistics["candidates"],
                                  java=self.config.task.java_metrics)
        if statistics["box_words"]:
            summary["attention_in_box_ratio"] = statistics["box_ratio_sum"] / statistics["box_words"]
        return {name: float(value) for name, value in summary.items()}

    # ---- pictures -----------------------------------------------------------------------------
    def _attention_row(self, image: np.ndarray, tokens: np.ndarray, alpha: np.ndarray
                       ) -> list[np.ndarray]:
        """The image, then one tile per generated word: its attention over the image, titled."""
        picture = pics.upscale(pics.to_rgb_uint8(image), 128)
        row = [picture]
        for t, token in enumerate(tokens[:_WORDS_SHOWN]):
            if int(token) == self.vocabulary.end:
                break
            word = self.vocabulary.tokens[int(token)]
            tile = picture if self.model.attention == "none" else pics.attention_overlay(
                picture, alpha[t], hard=self._hard)
            row.append(pics.titled(tile, word))
        return row

    def pictures(self, batch, predictions) -> np.ndarray:
        """Per example: the generated caption word by word, each word over the image region it
        attended to (the paper's Figures 2-3), then the reference caption."""
        rows = []
        for i, image in enumerate(batch["image"]):
            row = self._attention_row(image, predictions["tokens"][i], predictions["alpha"][i])
            reference = text_from_bytes(batch["references"][i][0])
            row.append(pics.text_panel([("reference:", pics.TEXT_COLOR),
                                        *[(line, pics.TEXT_COLOR) for line in _wrap(reference)]],
                                       height=row[1].shape[0] if len(row) > 1 else 128))
            rows.append(row)
        return pics.image_grid(rows)

    def overlay(self, image, predictions) -> np.ndarray:
        """The caption and each word's attention map for one image (the `predict` command)."""
        return pics.image_grid([self._attention_row(image, predictions["tokens"],
                                                    predictions["alpha"])])


def text_from_bytes(reference: np.ndarray) -> str:
    """A reference sentence from the preprocessor's zero-padded UTF-8 bytes."""
    return bytes(reference).rstrip(b"\0").decode("utf-8", "replace")


def _wrap(text: str, width: int = 36) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])

"""Machine translation (RNNsearch / RNNencdec, Bahdanau et al. 2015): teacher-forced training of
log p(y | x), beam-search decoding, BLEU overall, without unknown words and by source length,
and the alignment matrices (the paper's Figure 3) as pictures.

The two vocabularies (each side's shortlist) are built from the training sentences when a run
starts and saved in its workdir (data/translation.py); eval reads them from there. Training
keeps the pairs whose sides have at most `task.max_train_length` tokens (the paper's
RNNsearch-30 / -50); evaluation scores every test sentence.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from segattn_jax.data import captions as captions_lib
from segattn_jax.data import translation as translation_lib
from segattn_jax.metrics import translation as metrics_lib
from segattn_jax.models import build_model
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task
from segattn_jax.tasks.captioning import decode_captions, text_from_bytes

UNKNOWN = "UNK"  # how an <unk> in a translation is written (it matches no reference word)
_PICTURE_SIDE = 12  # pixels per alignment-matrix cell


class TranslationTask(Task):
    preprocess = "translation"
    input_keys = ("source",)

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.source_vocabulary = self.target_vocabulary = None
        self.model = None  # built by `prepare`, once the vocabulary sizes are known

    # ---- setup --------------------------------------------------------------------------------
    def prepare(self, workdir, training: bool) -> dict[str, Any]:
        """Loads the workdir's vocabularies (training builds and saves them first if missing),
        builds the model with their sizes, and gives the preprocessor its two encoders."""
        from segattn_jax.data import pipeline

        data, task = self.config.dataset, self.config.task
        self.source_vocabulary, self.target_vocabulary = translation_lib.vocabularies_for_run(
            workdir, pipeline.training_sources(data), source_key=self._key("source"),
            target_key=self._key("target"), size=task.vocabulary_size,
            max_length=task.max_length, create=training)
        self.model = build_model(self.config.model,
                                 source_vocab_size=len(self.source_vocabulary),
                                 target_vocab_size=len(self.target_vocabulary))
        encoders = [captions_lib.CaptionEncoder(v, task.max_length, split=translation_lib.tf_tokenize)
                    for v in (self.source_vocabulary, self.target_vocabulary)]
        return {"source_encoder": encoders[0], "target_encoder": encoders[1],
                "train_max_length": min(task.max_train_length, task.max_length)}

    def _key(self, side: str) -> str:
        """The dataset feature holding the `side` ('source' or 'target') sentence."""
        return self.config.dataset.preprocess.get(f"{side}_key", side)

    def training_filter(self):
        """Pairs whose two sentences have at most task.max_train_length tokens (0: all)."""
        limit = self.config.task.max_train_length
        if not limit:
            return None
        import tensorflow as tf

        keys = (self._key("source"), self._key("target"))
        return lambda example: tf.reduce_all(
            [tf.size(translation_lib.tf_tokenize(example[k])) <= limit for k in keys])

    def init_variables(self, rng, inputs):
        target = jnp.zeros((inputs["source"].shape[0], 1), jnp.int32)
        return dict(self.model.init({"params": rng}, inputs["source"], target))

    # ---- training -----------------------------------------------------------------------------
    def loss(self, variables, batch: Batch, rng):
        """-log p(y | x) summed over the target's words (and <end>), averaged over sentences."""
        del rng  # deterministic: the paper trains without dropout
        tokens = batch["target"]
        targets = tokens[:, 1:]
        mask = (targets != self.target_vocabulary.pad).astype(jnp.float32)
        outputs, model_state = self.apply_train(variables, batch["source"], tokens[:, :-1])
        nll = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], targets)
        sentence_nll = jnp.sum(nll * mask, axis=1)
        words = jnp.sum(mask)
        metrics = {"sentence_nll": sentence_nll.mean(), "nll_per_word": jnp.sum(nll * mask) / words,
                   "word_accuracy": jnp.sum((jnp.argmax(outputs["logits"], -1) == targets) * mask)
                   / words}
        return sentence_nll.mean(), metrics, model_state

    # ---- decoding -----------------------------------------------------------------------------
    def predict(self, variables, inputs):
        """Beam search (`task.beam_size`; 1 = greedy) for up to `task.max_length` words plus
        <end>. Returns tokens (B, T), score (B,) and alpha (B, T, Tx): each word's alignment."""
        task = self.config.task
        model_variables = {"params": variables["params"]}
        state = self.model.apply(model_variables, inputs["source"], method="initial_state")
        best = decode_captions(
            lambda state, tokens: self.model.apply(model_variables, state, tokens,
                                                   method="decode_step"),
            state, vocabulary=self.target_vocabulary, beam_size=task.beam_size,
            max_length=task.max_length, fixed=("annotations", "keys", "mask"))
        return {"tokens": best["tokens"], "score": best["score"], "alpha": best["outputs"]}

    # ---- evaluation ---------------------------------------------------------------------------
    def statistics(self, batch: Batch, predictions):
        return {"tokens": predictions["tokens"], "reference": batch["reference"],
                "source_words": batch["source_words"], "unknown": batch["unknown"],
                "source_truncated": batch["source_truncated"], "valid": batch["valid"]}

    def accumulate(self, total, statistics):
        """Collects the valid examples' translations (tokenized text, <unk> as UNK), tokenized
        references, source lengths and unknown-word flags."""
        total = total or {"candidates": [], "references": [], "source_words": [], "unknown": [],
                          "truncated": 0}
        for i, valid in enumerate(statistics["valid"]):
            if not valid:
                continue
            total["candidates"].append(self.target_vocabulary.decode(statistics["tokens"][i],
                                                                     unknown=UNKNOWN))
            total["references"].append(" ".join(translation_lib.tokenize(
                text_from_bytes(statistics["reference"][i]))))
            total["source_words"].append(int(statistics["source_words"][i]))
            total["unknown"].append(bool(statistics["unknown"][i]))
            total["truncated"] += int(statistics["source_truncated"][i])
        return total

    def summarize(self, statistics) -> dict[str, float]:
        """BLEU (percent) over all sentences, over those without unknown words (the paper's
        "No UNK" column), and by source length (Figure 2)."""
        candidates, references = statistics["candidates"], statistics["references"]
        if statistics["truncated"]:
            logging.warning("%d test sources were longer than task.max_length=%d tokens and were "
                            "truncated; raise it to translate them whole.", statistics["truncated"],
                            self.config.task.max_length)
        known = [i for i, unknown in enumerate(statistics["unknown"]) if not unknown]
        return {"bleu": metrics_lib.corpus_bleu(candidates, references),
                "bleu_no_unk": metrics_lib.corpus_bleu([candidates[i] for i in known],
                                                       [references[i] for i in known]),
                **metrics_lib.bleu_by_length(candidates, references, statistics["source_words"]),
                "truncated_sources": float(statistics["truncated"])}

    # ---- pictures -----------------------------------------------------------------------------
    def _words(self, vocabulary: captions_lib.Vocabulary, ids: np.ndarray) -> list[str]:
        """Tokens up to and including <end> (shown), without <start> and padding."""
        out = []
        for i in ids:
            if int(i) in (vocabulary.start, vocabulary.pad):
                continue
            out.append(vocabulary.tokens[int(i)])
            if int(i) == vocabulary.end:
                break
        return out

    def alignment_picture(self, source: np.ndarray, tokens: np.ndarray, alpha: np.ndarray
                          ) -> np.ndarray:
        """The paper's Figure 3: the alignment matrix of one translation (rows: generated words,
        columns: source words; white = weight 1), labelled, as uint8 RGB."""
        plt = pics.pyplot()
        source_words = [self.source_vocabulary.tokens[int(i)] for i in source
                        if int(i) != self.source_vocabulary.pad]
        target_words = self._words(self.target_vocabulary, tokens)
        matrix = np.asarray(alpha, np.float32)[:len(target_words), :len(source_words)]
        if not self.model.attention:  # RNNencdec: one fixed vector, no alignment
            matrix = np.zeros((len(target_words), len(source_words)), np.float32)
        inches = np.array([len(source_words) + 6, len(target_words) + 6]) * _PICTURE_SIDE / 100
        figure, axes = plt.subplots(figsize=tuple(np.maximum(inches, 2)), dpi=100)
        axes.imshow(matrix, cmap="gray", vmin=0, vmax=1, aspect="equal")
        axes.set_xticks(range(len(source_words)), source_words, rotation=90, fontsize=7)
        axes.set_yticks(range(len(target_words)), target_words, fontsize=7)
        axes.xaxis.tick_top()
        figure.tight_layout()
        return pics.figure_to_rgb(figure)

    def pictures(self, batch, predictions) -> np.ndarray:
        """One alignment matrix per example, a row each (RNNencdec: black, it has none)."""
        return pics.image_grid([[self.alignment_picture(
            batch["source"][i], predictions["tokens"][i], predictions["alpha"][i])]
            for i in range(len(batch["source"]))])

    def overlay(self, image, predictions) -> np.ndarray:
        raise ValueError("Translation reads sentences, not images: `predict` does not apply. Use "
                         "`eval`, which writes the alignment pictures of the eval split.")

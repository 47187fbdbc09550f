"""Online handwriting prediction and synthesis (Graves 2013, sec. 4-5): the loss in nats per
sequence, sampling (biased, with the synthesis window's stopping rule), and pictures of written
lines and of the window.

The reported number is the paper's: -log p(x) of a test line in nats, summed over its points
(the mixture density of each normalized offset times the end-of-stroke probability), averaged over
lines. The offsets are normalized with the training set's mean and standard deviation, measured
when a run starts and saved in its workdir (data/handwriting.StrokeStatistics), so numbers are
comparable only between runs on the same data (IAM-OnDB's raw tablet units differ from the
embedded set's).

Evaluation of the synthesis network also writes every test line's text (bias `task.sample_bias`,
at most `task.sample_points` points) and reports how often the window behaves as the paper shows:
`window_reaches_end` (% of samples the stopping rule ends before the limit: the window passed the
last character) and `window_monotone` (% whose most-weighted character never moves backwards).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from segattn_jax import compilation
from segattn_jax.data import handwriting as handwriting_lib
from segattn_jax.models.handwriting import mixture_nll, shift_inputs
from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

_PANEL = (512, 128)  # width, height in pixels of a written line's picture
_INK = "#1f3b73"


def _mask(lengths: jax.Array, size: int) -> jax.Array:
    return (jnp.arange(size)[None] < lengths[:, None]).astype(jnp.float32)


class HandwritingTask(Task):
    preprocess = "handwriting"
    input_keys = ("strokes", "points", "text", "text_length")

    def __init__(self, config):
        super().__init__(config)
        self.offsets: handwriting_lib.StrokeStatistics | None = None

    # ---- setup --------------------------------------------------------------------------------
    def prepare(self, workdir, training: bool) -> dict[str, Any]:
        """The training set's offset statistics (measured and saved by training when missing),
        which the preprocessor normalizes with."""
        from segattn_jax.data import pipeline

        data = self.config.dataset
        sources = pipeline.training_sources(data) if training else []
        self.offsets = handwriting_lib.statistics_for_run(
            workdir, sources, data.preprocess.max_points, create=training)
        return {"offset_mean": self.offsets.mean, "offset_std": self.offsets.std}

    @property
    def synthesis(self) -> bool:
        return bool(self.model.synthesis)

    def _text(self, inputs: Batch) -> tuple[jax.Array, jax.Array]:
        return inputs["text"], _mask(inputs["text_length"], inputs["text"].shape[1])

    def init_variables(self, rng, inputs):
        return dict(self.model.init({"params": rng}, inputs["strokes"], *self._text(inputs)))

    def _nll(self, outputs, inputs: Batch) -> jax.Array:
        """Per line: -log p(x) in nats over its real points."""
        mask = _mask(inputs["points"], inputs["strokes"].shape[1])
        return jnp.sum(mixture_nll(outputs, inputs["strokes"]) * mask, axis=1)

    # ---- training -----------------------------------------------------------------------------
    def loss(self, variables, batch: Batch, rng):
        del rng  # deterministic (the paper's weight noise is not used)
        outputs, model_state = self.apply_train(variables, shift_inputs(batch["strokes"]),
                                                *self._text(batch))
        nll = self._nll(outputs, batch)
        points = jnp.maximum(batch["points"].sum(), 1)
        metrics = {"nll": nll.mean(), "nll_per_point": nll.sum() / points}
        return nll.mean(), metrics, model_state

    # ---- prediction ---------------------------------------------------------------------------
    def sample(self, variables, key: jax.Array, text: jax.Array, text_length: jax.Array,
               batch: int, prime: jax.Array | None = None,
               prime_points: jax.Array | None = None) -> dict[str, jax.Array]:
        """`task.sample_points` points per line at bias `task.sample_bias` (traced), after
        running over `prime` (B, P, 3) when given."""
        task = self.config.task
        return self.model.apply({"params": variables["params"]}, key, task.sample_points,
                                text, _mask(text_length, text.shape[1]), bias=task.sample_bias,
                                prime=prime, prime_points=prime_points, batch=batch,
                                method="sample")

    def predict(self, variables, inputs):
        """The test lines' nll (nats per line), and samples: the synthesis network writes each
        line's text, the prediction network writes as many lines unconditionally."""
        outputs = self.model.apply({"params": variables["params"]},
                                   shift_inputs(inputs["strokes"]), *self._text(inputs))
        written = self.sample(variables, jax.random.key(0), inputs["text"],
                              inputs["text_length"], inputs["strokes"].shape[0])
        predictions = {"nll": self._nll(outputs, inputs), "sample": written["strokes"],
                       "written": written["written"]}
        if self.synthesis:
            predictions["phi"] = written["phi"]
        return predictions

    def write(self, variables, texts: Sequence[str], seed: int = 0,
              prime: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Host entry point: the synthesis network writes each of `texts` (the `predict`
        command's --text). Characters outside the alphabet are written as UNKNOWN ('#').
        `prime`, one preprocessed line (strokes, points, text, text_length), is primed sampling
        (the paper's sec. 5.5): the network first reads that real line and its text, then writes
        each text after it, in its writer's style."""
        if not self.synthesis:
            raise ValueError("This experiment's network predicts handwriting without text; use "
                             "the Synthesis row to write given text.")
        empty = [i for i, text in enumerate(texts) if not text]
        if not texts or empty:
            raise ValueError("The synthesis network needs at least one character to write "
                             f"(texts {empty} are empty).")
        for text in texts:
            unknown = sorted({c for c in text if c not in handwriting_lib.ALPHABET})
            if unknown:
                logging.warning("%r: characters %s are outside the alphabet and are written as "
                                "the unknown symbol %r.", text, unknown, handwriting_lib.UNKNOWN)
        primed = {}
        if prime is not None:
            prime_text = handwriting_lib.decode_text(prime["text"][:int(prime["text_length"])])
            texts = [f"{prime_text} {text}" for text in texts]
            primed = {"prime": np.repeat(np.asarray(prime["strokes"])[None], len(texts), 0),
                      "prime_points": np.full(len(texts), int(prime["points"]), np.int32)}
        ids = [handwriting_lib.encode_text(text) for text in texts]
        size = max(len(i) for i in ids)
        text = np.stack([np.pad(i, (0, size - len(i))) for i in ids])
        lengths = np.array([len(i) for i in ids], np.int32)
        sample = compilation.jit(self.sample, static_argnums=4)
        out = sample(variables, jax.random.key(seed), text, lengths, len(texts), **primed)
        return {**jax.device_get(out), "text": text, "text_length": lengths, **primed}

    # ---- evaluation ---------------------------------------------------------------------------
    def statistics(self, batch: Batch, predictions):
        valid = batch["valid"].astype(jnp.float32)
        out = {"nll": jnp.sum(predictions["nll"] * valid),
               "points": jnp.sum(batch["points"] * valid), "count": valid.sum(),
               "truncated": jnp.sum(batch["truncated"] * valid)}
        if self.synthesis:
            written = predictions["written"]
            finished = written.sum(1) < written.shape[1]
            phi = predictions["phi"]
            characters = jnp.where(_mask(batch["text_length"], phi.shape[-1])[:, None] > 0, phi,
                                   -jnp.inf)
            focus = jnp.argmax(characters, -1)  # (B, T)
            backwards = (jnp.diff(focus, axis=1) < 0) & written[:, 1:]
            out["reaches_end"] = jnp.sum(finished * valid)
            out["monotone"] = jnp.sum(~backwards.any(1) * valid)
        return out

    def summarize(self, statistics) -> dict[str, float]:
        """Nats per line and per point (not percent); the window's behaviour in percent."""
        count = max(float(statistics["count"]), 1.0)
        if statistics["truncated"]:
            logging.warning("%d test lines are longer than max_points=%d and were truncated (their "
                            "nll covers the kept points only).", int(statistics["truncated"]),
                            self.config.dataset.preprocess.max_points)
        out = {"nll": float(statistics["nll"]) / count,
               "nll_per_point": float(statistics["nll"]) / max(float(statistics["points"]), 1.0),
               "truncated_lines": float(statistics["truncated"])}
        if self.synthesis:
            out["window_reaches_end"] = 100 * float(statistics["reaches_end"]) / count
            out["window_monotone"] = 100 * float(statistics["monotone"]) / count
        return out

    # ---- pictures -----------------------------------------------------------------------------
    def _trajectory(self, strokes: np.ndarray, points: int | None = None) -> list[np.ndarray]:
        """Pen strokes in writing units (un-normalized, cumulated), a (n, 2) array per stroke."""
        strokes = np.asarray(strokes, np.float64)[:points]
        offsets = strokes[:, :2] * np.array(self.offsets.std) + np.array(self.offsets.mean)
        positions = np.cumsum(offsets, axis=0)
        ends = np.flatnonzero(strokes[:, 2] > 0.5) + 1
        return [s for s in np.split(positions, ends) if len(s)]

    def line_picture(self, strokes: np.ndarray, points: int | None = None) -> np.ndarray:
        """One written line as uint8 RGB (ink on white, equal aspect, y up as written)."""
        figure = pics.pyplot().figure(figsize=(_PANEL[0] / 100, _PANEL[1] / 100), dpi=100)
        axes = figure.add_axes((0, 0, 1, 1))
        for stroke in self._trajectory(strokes, points):
            axes.plot(stroke[:, 0], stroke[:, 1], color=_INK, linewidth=1.2)
        axes.set_aspect("equal", adjustable="datalim")
        axes.axis("off")
        return pics.figure_to_rgb(figure)

    def window_picture(self, phi: np.ndarray, written: np.ndarray, text: np.ndarray,
                       length: int) -> np.ndarray:
        """The paper's window figure: phi(t, u) over characters u (rows, labelled) and time t
        (columns), the largest weight white, for the written steps of one sample."""
        steps, length = max(int(np.sum(written)), 1), max(length, 1)
        matrix = np.asarray(phi, np.float32)[:steps, :length].T
        figure, axes = pics.pyplot().subplots(figsize=(_PANEL[0] / 100, _PANEL[1] / 100 + 0.6),
                                              dpi=100)
        axes.imshow(matrix, cmap="gray", vmin=0, vmax=max(float(matrix.max()), 1e-6),
                    aspect="auto", interpolation="nearest")
        axes.set_yticks(range(length), list(handwriting_lib.decode_text(text[:length])),
                        fontsize=6)
        axes.set_xlabel("pen point", fontsize=7)
        axes.tick_params(axis="x", labelsize=6)
        figure.tight_layout(pad=0.2)
        return pics.figure_to_rgb(figure)

    def pictures(self, batch, predictions) -> np.ndarray:
        """A row per test line: its text | the real line | the network's sample (synthesis: of
        the same text) | the window over the text's characters vs time (synthesis)."""
        rows = []
        for i in np.flatnonzero(batch["valid"]):  # not the padding of a last, partial batch
            length = int(batch["text_length"][i])
            text = handwriting_lib.decode_text(batch["text"][i][:length])
            label = pics.text_panel([(text, pics.TEXT_COLOR)], height=_PANEL[1],
                                    width=_PANEL[1] * 2)
            row = [label, self.line_picture(batch["strokes"][i], int(batch["points"][i])),
                   self.line_picture(predictions["sample"][i],
                                     int(np.sum(predictions["written"][i])))]
            if self.synthesis:
                row.append(self.window_picture(predictions["phi"][i], predictions["written"][i],
                                               batch["text"][i], length))
            rows.append(row)
        titles = ["text", "real", "sample" + (" of the text" if self.synthesis else ""),
                  *(["window"] if self.synthesis else [])]
        return pics.image_grid(rows, titles=titles)

    def written_picture(self, written: dict[str, np.ndarray], index: int) -> np.ndarray:
        """One text the `write` method wrote: the line (after the real line it was primed
        with, if any) above its window."""
        length = int(written["text_length"][index])
        line = [self.line_picture(written["strokes"][index],
                                  int(np.sum(written["written"][index])))]
        titles = [repr(handwriting_lib.decode_text(written["text"][index][:length]))]
        if "prime" in written:
            line.insert(0, self.line_picture(written["prime"][index],
                                             int(written["prime_points"][index])))
            titles.insert(0, "primed with (a real line)")
        return pics.image_grid([
            line, [self.window_picture(written["phi"][index], written["written"][index],
                                       written["text"][index], length)]], titles=titles)

    def overlay(self, image, predictions) -> np.ndarray:
        raise ValueError("Handwriting networks read pen trajectories, not images: `predict` "
                         "takes --text 'words to write' for the Synthesis row instead of "
                         "--images.")

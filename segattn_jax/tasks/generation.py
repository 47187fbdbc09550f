"""Generative modelling of binary images with a variational bound (DRAW, Gregor et al. 2015).

The reported number is the paper's: the negative variational lower bound on log p(x), in nats
per image, = reconstruction (the Bernoulli negative log-likelihood of x under sigmoid(c_T), summed
over pixels) + the sum over steps of KL(Q(Z_t | h^enc_t) || N(0, I)). It is a one-sample estimate
of the bound; evaluation draws its posterior sample with a fixed key, so it is deterministic.

Pictures are the paper's figure: each step's canvas with the read (green) and write (red) windows,
for test images (reconstruction) and for samples from the prior (generation), plus a GIF.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segattn_jax.tasks import pictures as pics
from segattn_jax.tasks.base import Batch, Task

PICTURE_STEPS = 8  # canvas columns drawn per example (evenly spaced steps, the last included)
PICTURE_SIDE = 112  # digits are drawn at 4x, big enough for the windows' boxes
READ_CLASS, WRITE_CLASS = 2, 1  # VOC palette colors of the windows: green (read), red (write)


def bound_terms(outputs: dict[str, jax.Array], images: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """Per-example (reconstruction, KL) in nats: -log Bernoulli(x | sigmoid(c_T)) summed over
    pixels, and the KL summed over steps and latent units."""
    logits = outputs["canvas"][-1]
    reconstruction = optax.sigmoid_binary_cross_entropy(logits, images).reshape(
        images.shape[0], -1).sum(-1)
    return reconstruction, outputs["kl"].sum(0)


def _batch_first(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, 0, 1)


class GenerationTask(Task):
    preprocess = "binary_image"

    def init_variables(self, rng, inputs):
        return dict(self.model.init({"params": rng, "latent": rng}, inputs["image"]))

    def inputs_for_image(self, image: np.ndarray) -> Batch:
        """An image file binarized as the training data are (at 0.5)."""
        return {"image": (np.asarray(image, np.float32) > 0.5).astype(np.float32)[None]}

    def loss(self, variables, batch: Batch, rng):
        outputs, model_state = self.apply_train(variables, batch["image"], rngs={"latent": rng})
        reconstruction, kl = bound_terms(outputs, batch["image"])
        bound = reconstruction + kl
        metrics = {"nll_bound": bound.mean(), "reconstruction": reconstruction.mean(),
                   "kl": kl.mean()}
        return bound.mean(), metrics, model_state

    def predict(self, variables, inputs):
        """The bound's terms per image, the canvas (as probabilities) and windows per step, and as
        many samples from the prior with theirs (batch first; unused ones are compiled away)."""
        images = inputs["image"]
        key = jax.random.key(0)
        outputs = self.model.apply(variables, images, rngs={"latent": key})
        reconstruction, kl = bound_terms(outputs, images)
        generated = self.model.apply(variables, images.shape[0], images.shape[1:],
                                     method=type(self.model).generate,
                                     rngs={"latent": jax.random.fold_in(key, 1)})
        predictions = {"nll_bound": reconstruction + kl, "reconstruction": reconstruction,
                       "kl": kl, "canvas": _batch_first(jax.nn.sigmoid(outputs["canvas"])),
                       "generated": _batch_first(jax.nn.sigmoid(generated["canvas"]))}
        for name in ("read_window", "write_window"):
            if name in outputs:
                predictions[name] = _batch_first(outputs[name])
        if "write_window" in generated:
            predictions["generated_write_window"] = _batch_first(generated["write_window"])
        return predictions

    def statistics(self, batch: Batch, predictions):
        valid = batch["valid"].astype(jnp.float32)
        return {name: jnp.sum(predictions[name] * valid)
                for name in ("nll_bound", "reconstruction", "kl")} | {"count": valid.sum()}

    def summarize(self, statistics) -> dict[str, float]:
        """Nats per image, as the paper reports (not percent)."""
        count = max(float(statistics["count"]), 1.0)
        return {name: float(statistics[name]) / count
                for name in ("nll_bound", "reconstruction", "kl")}

    # ---- pictures ---------------------------------------------------------------------------
    def _steps(self, total: int) -> np.ndarray:
        return np.unique(np.linspace(0, total - 1, min(PICTURE_STEPS, total)).round().astype(int))

    def _frame(self, canvas: np.ndarray, windows: dict[str, np.ndarray]) -> np.ndarray:
        """One canvas (H, W, C) in [0, 1], upscaled, with its windows' boxes (gx +- N delta / 2)."""
        picture = pics.upscale(pics.to_rgb_uint8(canvas), PICTURE_SIDE)
        scale = picture.shape[0] / canvas.shape[0]
        boxes, colors = [], []
        for name, (size, color) in {"read": (self.config.model.read_size, READ_CLASS),
                                    "write": (self.config.model.write_size, WRITE_CLASS)}.items():
            if name in windows:
                gx, gy, delta = windows[name][:3]
                half = size * delta / 2
                # Pixel a (1-based, as the filterbank numbers them) covers [a - 1, a).
                boxes.append(np.array([gx - half, gy - half, gx + half, gy + half]) - 0.5)
                colors.append(color)
        if boxes:
            picture = pics.draw_boxes(picture, np.stack(boxes) * scale, [""] * len(boxes), colors)
        return picture

    def _sequence(self, canvases: np.ndarray, windows: dict[str, np.ndarray], steps) -> list:
        return [self._frame(canvases[t], {k: w[t] for k, w in windows.items()}) for t in steps]

    def _rows(self, batch, predictions, steps):
        """(reconstruction rows: input + canvases, generation rows: canvases)."""
        reconstructions, samples = [], []
        for i, image in enumerate(batch["image"]):
            windows = {name.removesuffix("_window"): predictions[name][i]
                       for name in ("read_window", "write_window") if name in predictions}
            reconstructions.append([pics.upscale(pics.to_rgb_uint8(image), PICTURE_SIDE),
                                    *self._sequence(predictions["canvas"][i], windows, steps)])
            generated = ({"write": predictions["generated_write_window"][i]}
                         if "generated_write_window" in predictions else {})
            samples.append(self._sequence(predictions["generated"][i], generated, steps))
        return reconstructions, samples

    def pictures(self, batch, predictions) -> np.ndarray:
        """Per test image: input | its canvas at evenly spaced steps with the read (green) and
        write (red) windows; then as many samples from the prior, drawn step by step (rows
        labelled "sample")."""
        steps = self._steps(predictions["canvas"].shape[1])
        reconstructions, samples = self._rows(batch, predictions, steps)
        titles = ["input", *[f"t={t + 1}" for t in steps]]
        side = reconstructions[0][0].shape[0]
        label = pics.text_panel([("sample", pics.TEXT_COLOR)], height=side, width=side)
        return pics.image_grid(reconstructions + [[label, *row] for row in samples], titles=titles)

    def animation(self, batch, predictions) -> list[np.ndarray]:
        """GIF frames: every step of the generated samples, side by side."""
        steps = range(predictions["generated"].shape[1])
        _, samples = self._rows(batch, predictions, steps)
        return [pics.image_grid([[row[t] for row in samples]]) for t in range(len(steps))]

    def overlay(self, image, predictions) -> np.ndarray:
        """input (binarized) | its reconstruction at evenly spaced steps, with the windows."""
        batch = {"image": self.inputs_for_image(image)["image"]}
        steps = self._steps(predictions["canvas"].shape[0])
        reconstructions, _ = self._rows(batch, jax.tree.map(lambda x: x[None], predictions), steps)
        return pics.image_grid(reconstructions,
                               titles=["input", *[f"t={t + 1}" for t in steps]])

"""DRAW: Gregor, Danihelka, Graves, Rezende, Wierstra, "DRAW: A Recurrent Neural Network For
Image Generation", ICML 2015.

A variational auto-encoder whose encoder and decoder are LSTMs that run for T steps, the decoder
adding to a canvas each step, with x^_t = x - sigmoid(c_{t-1}) the error so far:

  r_t = read(x, x^_t, h^dec_{t-1})
  h^enc_t = LSTM_enc(h^enc_{t-1}, [r_t, h^dec_{t-1}])
  z_t ~ Q(Z_t | h^enc_t) = N(mu_t, sigma_t)             (reparameterized: mu + sigma * eps)
  h^dec_t = LSTM_dec(h^dec_{t-1}, z_t)
  c_t = c_{t-1} + write(h^dec_t)

The image's likelihood is Bernoulli with means sigmoid(c_T); the loss is its negative
log-likelihood plus sum_t KL(Q(Z_t | h^enc_t) || N(0, I)), a bound on -log p(x) in nats
(tasks/generation.py). With attention (`read_size`, `write_size` > 0) reading is an N x N glimpse
of x and of x^ and writing is an N x N patch, both through Gaussian filterbanks placed by the
decoder state (layers/filterbank.py); without it the encoder reads both whole images and the
decoder writes the whole canvas through one linear layer. Generation runs the decoder alone with
z_t from the prior.

Initial states are zero (canvas 0: sigmoid 0.5 everywhere), as in the common reimplementations;
the window layers start with their grids covering the image (layers/filterbank.covering_params).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.layers.filterbank import GaussianWindow, read_glimpse, write_patch


def _window_array(window) -> jax.Array:
    """A Window as (B, 5): gx, gy, delta, sigma2, gamma (what pictures draw as a box)."""
    return jnp.stack(list(window), axis=-1)


class DrawStep(nn.Module):
    """One step of DRAW, scanned over time by `DRAW`; `generate` runs the decoder alone."""

    hidden: int
    latent: int
    read_size: int
    write_size: int
    generate: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, noise: jax.Array, images: jax.Array):
        canvas, encoder_state, decoder_state = carry
        batch, height, width, channels = images.shape
        previous = decoder_state[1]  # h^dec_{t-1}
        outputs = {}
        if self.generate:
            z = noise
        else:
            error = images - jax.nn.sigmoid(canvas)
            if self.read_size:
                window, fx, fy = GaussianWindow(self.read_size, dtype=self.dtype,
                                                name="read_window")(previous, height, width)
                read = jnp.concatenate([read_glimpse(images, fx, fy, window.gamma),
                                        read_glimpse(error, fx, fy, window.gamma)], -1)
                outputs["read_window"] = _window_array(window)
            else:
                read = jnp.concatenate([images, error], -1)
            encoder_input = jnp.concatenate([read.reshape(batch, -1).astype(self.dtype),
                                             previous], -1)
            encoder_state, encoded = nn.OptimizedLSTMCell(
                self.hidden, dtype=self.dtype, name="encoder")(encoder_state, encoder_input)
            stats = nn.Dense(2 * self.latent, dtype=self.dtype, name="posterior")(encoded)
            mean, log_sigma = jnp.split(stats.astype(jnp.float32), 2, axis=-1)
            z = mean + jnp.exp(log_sigma) * noise
            # KL(N(mean, sigma) || N(0, 1)) of this step, summed over the latent units.
            outputs["kl"] = 0.5 * jnp.sum(
                jnp.square(mean) + jnp.exp(2 * log_sigma) - 2 * log_sigma - 1, axis=-1)
        decoder_state, decoded = nn.OptimizedLSTMCell(
            self.hidden, dtype=self.dtype, name="decoder")(decoder_state, z.astype(self.dtype))
        if self.write_size:
            n = self.write_size
            patch = nn.Dense(n * n * channels, dtype=self.dtype, name="writer")(decoded)
            window, fx, fy = GaussianWindow(n, write=True, dtype=self.dtype, name="write_window")(
                decoded, height, width)
            update = write_patch(patch.reshape(batch, n, n, channels), fx, fy, window.gamma)
            outputs["write_window"] = _window_array(window)
        else:
            update = nn.Dense(height * width * channels, dtype=self.dtype, name="writer")(decoded)
            update = update.reshape(batch, height, width, channels)
        canvas = canvas + update.astype(jnp.float32)
        outputs["canvas"] = canvas
        return (canvas, encoder_state, decoder_state), outputs


class DRAW(nn.Module):
    """Attributes:
      steps: T, the number of glimpses (canvas updates).
      hidden: units of each LSTM.
      latent: size of z_t.
      read_size: N of the read glimpse; 0 reads the whole image and error (no attention).
      write_size: N of the written patch; 0 writes the whole canvas (no attention).
      dtype: compute dtype of the LSTMs and linear layers; the canvas and KL stay float32.
    """

    steps: int = 64
    hidden: int = 256
    latent: int = 100
    read_size: int = 2
    write_size: int = 5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, generate: bool = False) -> dict[str, jax.Array]:
        """Encodes and reconstructs binary `images` (B, H, W, C) in [0, 1] with z_t drawn from the
        posterior (rng stream 'latent'). Returns per step (leading axis T): 'canvas' logits
        (T, B, H, W, C), 'kl' (T, B), and the attention windows (T, B, 5) where used.
        `generate`: the decoder alone with z_t from the prior; `images` only gives the shape."""
        images = images.astype(jnp.float32)
        batch = images.shape[0]
        zeros = jnp.zeros((batch, self.hidden), self.dtype)
        carry = (jnp.zeros(images.shape, jnp.float32), (zeros, zeros), (zeros, zeros))
        noise = jax.random.normal(self.make_rng("latent"), (self.steps, batch, self.latent))
        step = nn.scan(DrawStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast), out_axes=0, length=self.steps)(
            self.hidden, self.latent, self.read_size, self.write_size, generate=generate,
            dtype=self.dtype, name="step")
        _, outputs = step(carry, noise, images)
        return outputs

    def generate(self, num: int, shape: tuple[int, int, int]) -> dict[str, jax.Array]:
        """`num` images of `shape` (H, W, C) drawn from the prior: canvas logits per step
        (T, num, H, W, C) and the write windows where used (apply with method=DRAW.generate)."""
        return self(jnp.zeros((num, *shape), jnp.float32), generate=True)


class GlimpseStep(nn.Module):
    """One glimpse of the classifier: read an N x N glimpse where h_{t-1} points, update the LSTM."""

    hidden: int
    read_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, images: jax.Array):
        batch, height, width, _ = images.shape
        window, fx, fy = GaussianWindow(self.read_size, dtype=self.dtype, name="read_window")(
            carry[1], height, width)
        glimpse = read_glimpse(images, fx, fy, window.gamma)
        carry, _ = nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype, name="lstm")(
            carry, glimpse.reshape(batch, -1).astype(self.dtype))
        return carry, (glimpse, _window_array(window))


class DrawClassifier(nn.Module):
    """DRAW's read attention as a classifier (the paper's cluttered-MNIST experiment): an LSTM
    takes `steps` N x N glimpses, each placed by its previous state through the same Gaussian
    filterbank as DRAW's read, and classifies from its last state. The glimpses are sown as
    'transformed' (side by side), which the classification task's pictures show.

    Attributes: num_classes; steps (glimpses, paper 8); hidden (LSTM units, paper 256);
    read_size (N; the paper does not give it for this experiment: 12 is our choice for 100x100);
    dtype.
    """

    num_classes: int = 10
    steps: int = 8
    hidden: int = 256
    read_size: int = 12
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """images (B, H, W, C) in [0, 1] -> logits (B, num_classes) float32; `train` changes
        nothing (no dropout or batch norm)."""
        del train
        images = images.astype(jnp.float32)
        zeros = jnp.zeros((images.shape[0], self.hidden), self.dtype)
        step = nn.scan(GlimpseStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=nn.broadcast, out_axes=0, length=self.steps)(
            self.hidden, self.read_size, dtype=self.dtype, name="step")
        (_, hidden), (glimpses, windows) = step((zeros, zeros), images)
        # (T, B, N, N, C) -> (B, N, T*N, C): the glimpses in order, left to right.
        self.sow("intermediates", "transformed", jnp.concatenate(list(glimpses), axis=2))
        self.sow("intermediates", "read_windows", jnp.swapaxes(windows, 0, 1))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(hidden).astype(
            jnp.float32)

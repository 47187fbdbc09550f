"""Graves 2013, "Generating Sequences With Recurrent Neural Networks", sec. 4-5: handwriting
prediction and synthesis networks (the model; the task, sampling and tables are not in yet).

Input x_t = (dx, dy, end_of_stroke) (data/handwriting.py). Three stacked LSTMs with skip
connections: every layer reads x_t, layer n > 1 also reads h^{n-1}_t, and the output reads every
layer (eq. 1-4). The output y_t parameterizes p(x_{t+1}): a bivariate Gaussian mixture of M
components (weights pi, means mu, standard deviations sigma, correlations rho) for the offset and a
Bernoulli end-of-stroke probability e (eq. 18-22):

  e = 1 / (1 + exp(e^)),  pi = softmax(pi^),  mu = mu^,  sigma = exp(sigma^),  rho = tanh(rho^)

Synthesis adds the soft window over the text's one-hot characters c_1..c_U after the first layer
(eq. 46-51): (alpha^, beta^, kappa^) = W h^1_t, alpha = exp(alpha^), beta = exp(beta^),
kappa_t = kappa_{t-1} + exp(kappa^) (the window only moves forward),
phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2), w_t = sum_u phi(t, u) c_u; w_{t-1} feeds
the first layer, w_t the others and the output.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.data.handwriting import SYMBOLS


def mixture_params(y: jax.Array, mixtures: int) -> dict[str, jax.Array]:
    """The network output (..., 1 + 6M) -> e, pi, mu_x, mu_y, sigma_x, sigma_y, rho."""
    m = mixtures
    e_hat, pi_hat, mu_x, mu_y, s_x, s_y, rho_hat = jnp.split(
        y.astype(jnp.float32), [1, 1 + m, 1 + 2 * m, 1 + 3 * m, 1 + 4 * m, 1 + 5 * m], axis=-1)
    return {"e_logit": -e_hat[..., 0], "log_pi": jax.nn.log_softmax(pi_hat, -1), "mu_x": mu_x,
            "mu_y": mu_y, "log_sigma_x": s_x, "log_sigma_y": s_y, "rho": jnp.tanh(rho_hat)}


def mixture_nll(params: dict[str, jax.Array], target: jax.Array) -> jax.Array:
    """-log p(x_{t+1} | y_t) in nats (eq. 26) for target (..., 3): the Gaussian mixture's density
    of (dx, dy) times the Bernoulli probability of the end-of-stroke bit."""
    x, y, end = target[..., 0:1], target[..., 1:2], target[..., 2]
    sx, sy = jnp.exp(params["log_sigma_x"]), jnp.exp(params["log_sigma_y"])
    rho = jnp.clip(params["rho"], -1 + 1e-6, 1 - 1e-6)
    zx, zy = (x - params["mu_x"]) / sx, (y - params["mu_y"]) / sy
    z = zx ** 2 + zy ** 2 - 2 * rho * zx * zy
    one_minus = 1 - rho ** 2
    log_gauss = (-z / (2 * one_minus) - jnp.log(2 * jnp.pi) - params["log_sigma_x"]
                 - params["log_sigma_y"] - 0.5 * jnp.log(one_minus))
    offset = -jax.nn.logsumexp(params["log_pi"] + log_gauss, axis=-1)
    eos = -(end * jax.nn.log_sigmoid(params["e_logit"])
            + (1 - end) * jax.nn.log_sigmoid(-params["e_logit"]))
    return offset + eos


class SoftWindow(nn.Module):
    """The synthesis network's window (eq. 46-51): K Gaussians over character positions 1..U."""

    mixtures: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, kappa: jax.Array, text: jax.Array,
                 text_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """hidden (B, H); kappa (B, K) the previous offsets; text (B, U, S) one-hot; text_mask
        (B, U). Returns w_t (B, S), kappa_t and phi (B, U + 1): the weights of the U characters
        and of the position after the last one (the stopping test of sampling reads it)."""
        params = nn.Dense(3 * self.mixtures, dtype=self.dtype, name="params")(hidden)
        alpha, beta, kappa_step = jnp.split(jnp.exp(params.astype(jnp.float32)), 3, axis=-1)
        kappa = kappa + kappa_step
        positions = jnp.arange(1, text.shape[1] + 2, dtype=jnp.float32)  # u = 1 .. U + 1
        phi = jnp.sum(alpha[:, None] * jnp.exp(-beta[:, None] * (kappa[:, None] - positions[
            None, :, None]) ** 2), axis=-1)
        lengths = text_mask.sum(-1)
        phi = jnp.where(positions[None] <= lengths[:, None] + 1, phi, 0.0)
        window = jnp.einsum("bu,bus->bs", phi[:, :-1] * text_mask, text.astype(jnp.float32))
        return window, kappa, phi


class HandwritingStep(nn.Module):
    """One time step of the three stacked LSTMs (and the window, when synthesizing)."""

    hidden: int
    layers: int
    window_mixtures: int
    synthesis: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x: jax.Array, text: jax.Array, text_mask: jax.Array):
        states, window, kappa = carry
        outputs, below, new_states, phi = [], None, [], None
        for n in range(self.layers):
            inputs = [x] + ([below] if below is not None else [])
            if self.synthesis:
                inputs.append(window)  # w_{t-1} for the first layer, w_t for the others
            state, below = nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype, name=f"lstm{n}")(
                states[n], jnp.concatenate(inputs, -1).astype(self.dtype))
            new_states.append(state)
            outputs.append(below)
            if self.synthesis and n == 0:
                window, kappa, phi = SoftWindow(self.window_mixtures, dtype=self.dtype,
                                                name="window")(below, kappa, text, text_mask)
        features = jnp.concatenate(outputs + ([window] if self.synthesis else []), -1)
        extras = {"phi": phi, "kappa": kappa} if self.synthesis else {}
        return (tuple(new_states), window, kappa), (features, extras)


class HandwritingNet(nn.Module):
    """Attributes:
      hidden: units per LSTM layer (paper 400 for both networks).
      layers: stacked LSTMs (paper 3).
      mixtures: M, output mixture components (paper 20).
      window_mixtures: K, window Gaussians (paper 10).
      synthesis: False: the prediction network; True: conditioned on text through the window.
      dtype: compute dtype; the mixture parameters are float32.
    """

    hidden: int = 400
    layers: int = 3
    mixtures: int = 20
    window_mixtures: int = 10
    synthesis: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, strokes: jax.Array, text: jax.Array | None = None,
                 text_mask: jax.Array | None = None) -> dict[str, jax.Array]:
        """strokes (B, T, 3) x_1..x_T; text (B, U) character ids and text_mask (B, U) for
        synthesis. Returns the mixture parameters of p(x_{t+1} | x_1..x_t [, text]) per step
        (each (B, T, ...)), and for synthesis the window's phi (B, T, U + 1) and kappa."""
        batch = strokes.shape[0]
        if self.synthesis:
            if text is None or text_mask is None:
                raise ValueError("The synthesis network needs the text (ids and mask).")
            one_hot = jax.nn.one_hot(text, len(SYMBOLS), dtype=jnp.float32)
        else:
            one_hot = jnp.zeros((batch, 1, len(SYMBOLS)), jnp.float32)
            text_mask = jnp.zeros((batch, 1), jnp.float32)
        zeros = jnp.zeros((batch, self.hidden), self.dtype)
        carry = (tuple((zeros, zeros) for _ in range(self.layers)),
                 jnp.zeros((batch, len(SYMBOLS)), jnp.float32),
                 jnp.zeros((batch, self.window_mixtures), jnp.float32))
        step = nn.scan(HandwritingStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast, nn.broadcast), out_axes=0)(
            self.hidden, self.layers, self.window_mixtures, self.synthesis, dtype=self.dtype,
            name="step")
        _, (features, extras) = step(carry, jnp.swapaxes(strokes, 0, 1).astype(jnp.float32),
                                     one_hot, text_mask.astype(jnp.float32))
        y = nn.Dense(1 + 6 * self.mixtures, dtype=self.dtype, name="output")(
            jnp.swapaxes(features, 0, 1))
        out = mixture_params(y, self.mixtures)
        out.update({k: jnp.swapaxes(v, 0, 1) for k, v in extras.items()})
        return out

"""Graves 2013, "Generating Sequences With Recurrent Neural Networks", sec. 4-5: handwriting
prediction and synthesis networks, and sampling from them (biased, primed, with the synthesis
network's stopping rule). The loss, metrics and pictures are tasks/handwriting.py's.

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

The LSTMs are the paper's, with peepholes (layers/recurrent.PeepholeLSTMCell); derivatives are
clipped as in sec. 2.1 (LSTM pre-activations to [-10, 10], outputs y to [-100, 100]).
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.data.handwriting import SYMBOLS
from segattn_jax.layers.recurrent import PeepholeLSTMCell
from segattn_jax.ops.gradients import clip_gradient


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


def shift_inputs(strokes: jax.Array) -> jax.Array:
    """The network's inputs x_0..x_{T-1} for targets x_1..x_T (B, T, 3): a zero row first."""
    return jnp.concatenate([jnp.zeros_like(strokes[:, :1]), strokes[:, :-1]], 1)


def sample_mixture(params: dict[str, jax.Array], key: jax.Array, bias: float | jax.Array = 0.0
                   ) -> jax.Array:
    """One point (..., 3) drawn from p(x | y) with the paper's sampling bias b (sec. 5.4):
    pi = softmax(pi^ (1 + b)), sigma = exp(sigma^ - b); b = 0 samples the model as trained,
    larger b writes more legibly (closer to the most likely trajectory)."""
    keys = jax.random.split(key, 3)
    component = jax.random.categorical(keys[0], params["log_pi"] * (1 + bias))

    def pick(name):
        return jnp.take_along_axis(params[name], component[..., None], -1)[..., 0]

    sigma_x, sigma_y = (jnp.exp(pick(f"log_sigma_{axis}") - bias) for axis in "xy")
    rho = pick("rho")
    z = jax.random.normal(keys[1], (*component.shape, 2))
    dx = pick("mu_x") + sigma_x * z[..., 0]
    dy = pick("mu_y") + sigma_y * (rho * z[..., 0] + jnp.sqrt(1 - rho ** 2) * z[..., 1])
    end = jax.random.bernoulli(keys[2], jax.nn.sigmoid(params["e_logit"]))
    return jnp.stack([dx, dy, end.astype(jnp.float32)], -1)


def window_passed_end(phi: jax.Array, lengths: jax.Array) -> jax.Array:
    """The synthesis stopping rule (sec. 5.3): phi(t, U + 1) > phi(t, u) for every character
    u <= U. phi (..., U_max + 1) as SoftWindow returns it; lengths (...) the texts' U."""
    positions = jnp.arange(phi.shape[-1])
    beyond = jnp.take_along_axis(phi, lengths[..., None].astype(jnp.int32), -1)[..., 0]
    characters = jnp.where(positions < lengths[..., None], phi, -jnp.inf).max(-1)
    return beyond > characters


class SoftWindow(nn.Module):
    """The synthesis network's window (eq. 46-51): K Gaussians over character positions 1..U.

    `initial_speed` sets the bias of kappa's step so that at initialization the window moves that
    many characters per pen point (the data's average; the paper gives no initialization). With a
    zero bias it moves one character per point, runs past a line's text within its first few
    points, and, its weights then near zero everywhere, gets no gradient to come back: training
    never learns the alignment (measured on the embedded lines)."""

    mixtures: int = 10
    initial_speed: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, kappa: jax.Array, text: jax.Array,
                 text_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """hidden (B, H); kappa (B, K) the previous offsets; text (B, U, S) one-hot; text_mask
        (B, U). Returns w_t (B, S), kappa_t and phi (B, U + 1): the weights of the U characters
        and of the position after the last one (the stopping test of sampling reads it)."""
        k = self.mixtures

        def bias_init(key, shape, dtype=jnp.float32):
            del key
            return jnp.zeros(shape, dtype).at[2 * k:].set(jnp.log(self.initial_speed))

        params = nn.Dense(3 * k, dtype=self.dtype, bias_init=bias_init, name="params")(hidden)
        alpha, beta, kappa_step = jnp.split(jnp.exp(params.astype(jnp.float32)), 3, axis=-1)
        kappa = kappa + kappa_step
        positions = jnp.arange(1, text.shape[1] + 2, dtype=jnp.float32)  # u = 1 .. U + 1
        phi = jnp.sum(alpha[:, None] * jnp.exp(-beta[:, None] * (kappa[:, None] - positions[
            None, :, None]) ** 2), axis=-1)
        lengths = text_mask.sum(-1)
        phi = jnp.where(positions[None] <= lengths[:, None] + 1, phi, 0.0)
        window = jnp.einsum("bu,bus->bs", phi[:, :-1] * text_mask, text.astype(jnp.float32))
        return window, kappa, phi


class HandwritingCore(nn.Module):
    """The per-step network (three stacked LSTMs with skips, and the window when synthesizing)
    and the output layer, as methods that training and sampling both scan."""

    hidden: int
    layers: int
    mixtures: int
    window_mixtures: int
    synthesis: bool
    lstm_gradient_clip: float
    output_gradient_clip: float
    window_speed: float = 0.1
    dtype: Any = jnp.float32

    def setup(self):
        self.cells = [PeepholeLSTMCell(self.hidden, self.lstm_gradient_clip, dtype=self.dtype)
                      for _ in range(self.layers)]
        if self.synthesis:
            self.window = SoftWindow(self.window_mixtures, self.window_speed, dtype=self.dtype)
        self.output = nn.Dense(1 + 6 * self.mixtures, dtype=self.dtype)

    def initial_carry(self, batch: int):
        zeros = jnp.zeros((batch, self.hidden), self.dtype)
        return (tuple((zeros, zeros) for _ in range(self.layers)),
                jnp.zeros((batch, len(SYMBOLS)), jnp.float32),
                jnp.zeros((batch, self.window_mixtures), jnp.float32))

    def step(self, carry, x: jax.Array, text: jax.Array, text_mask: jax.Array):
        """One time step: carry (LSTM states, w_{t-1}, kappa_{t-1}), x_t (B, 3), text one-hot
        (B, U, S). Returns the new carry and (the output layer's input, {phi, kappa})."""
        states, window, kappa = carry
        outputs, new_states, phi = [], [], None
        below = None
        for n, cell in enumerate(self.cells):
            inputs = [x] + ([below] if below is not None else [])
            if self.synthesis:
                inputs.append(window)  # w_{t-1} for the first layer, w_t for the others
            state, below = cell(states[n], jnp.concatenate(inputs, -1).astype(self.dtype))
            new_states.append(state)
            outputs.append(below)
            if self.synthesis and n == 0:
                window, kappa, phi = self.window(below, kappa, text, text_mask)
        features = jnp.concatenate(outputs + ([window] if self.synthesis else []), -1)
        extras = {"phi": phi, "kappa": kappa} if self.synthesis else {}
        return (tuple(new_states), window, kappa), (features, extras)

    def mixture(self, features: jax.Array) -> dict[str, jax.Array]:
        """The mixture parameters from the output layer (derivatives into it clipped)."""
        y = self.output(features)
        if self.output_gradient_clip:
            y = clip_gradient(y, self.output_gradient_clip)
        return mixture_params(y, self.mixtures)


def _teacher_forced_step(core: HandwritingCore, carry, xs, text, text_mask):
    """A step over given points: xs is x_t, or (x_t, valid) where a false `valid` keeps the
    carry (the padding after a prime; training has none and skips the masking)."""
    x, valid = xs if isinstance(xs, tuple) else (xs, None)
    new, outputs = core.step(carry, x, text, text_mask)
    if valid is not None:
        new = jax.tree.map(lambda a, b: jnp.where(valid.reshape(-1, *([1] * (a.ndim - 1))), a, b),
                           new, carry)
    return new, outputs


def _sampling_step(core: HandwritingCore, carry, key, text, text_mask, *, bias):
    """Feeds back the point it draws; a sequence whose window passed its text's end stops
    (its later points are zeros, `written` false)."""
    state, x, done = carry
    state, (features, extras) = core.step(state, x, text, text_mask)
    point = sample_mixture(core.mixture(features), key, bias)
    point = jnp.where(done[:, None], 0.0, point)
    stop = (window_passed_end(extras["phi"], text_mask.sum(-1)) if core.synthesis
            else jnp.zeros_like(done))
    return (state, point, done | stop), {"strokes": point, "written": ~done, **extras}


class HandwritingNet(nn.Module):
    """Attributes:
      hidden: units per LSTM layer (paper 400 for both networks).
      layers: stacked LSTMs (paper 3).
      mixtures: M, output mixture components (paper 20).
      window_mixtures: K, window Gaussians (paper 10).
      synthesis: False: the prediction network; True: conditioned on text through the window.
      lstm_gradient_clip, output_gradient_clip: the paper's derivative clipping (10, 100; 0: off).
      window_speed: characters per pen point the window moves at initialization (the data's
        average: SoftWindow says why).
      dtype: compute dtype; the mixture parameters are float32.
    """

    hidden: int = 400
    layers: int = 3
    mixtures: int = 20
    window_mixtures: int = 10
    synthesis: bool = False
    lstm_gradient_clip: float = 10.0
    output_gradient_clip: float = 100.0
    window_speed: float = 0.1
    dtype: Any = jnp.float32

    def setup(self):
        self.core = HandwritingCore(self.hidden, self.layers, self.mixtures,
                                    self.window_mixtures, self.synthesis,
                                    self.lstm_gradient_clip, self.output_gradient_clip,
                                    self.window_speed, dtype=self.dtype)

    def _text(self, batch: int, text, text_mask):
        """The text as one-hot characters and its mask (a dummy one-character text when the
        network predicts without text)."""
        if not self.synthesis:
            return (jnp.zeros((batch, 1, len(SYMBOLS)), jnp.float32),
                    jnp.zeros((batch, 1), jnp.float32))
        if text is None or text_mask is None:
            raise ValueError("The synthesis network needs the text (ids and mask).")
        return jax.nn.one_hot(text, len(SYMBOLS), dtype=jnp.float32), text_mask.astype(jnp.float32)

    def _run(self, carry, strokes: jax.Array, valid: jax.Array | None, one_hot, mask):
        scan = nn.scan(_teacher_forced_step, variable_broadcast="params",
                       split_rngs={"params": False}, in_axes=(0, nn.broadcast, nn.broadcast))
        xs = jnp.swapaxes(strokes, 0, 1).astype(jnp.float32)
        if valid is not None:
            xs = (xs, jnp.swapaxes(valid, 0, 1))
        return scan(self.core, carry, xs, one_hot, mask)

    def __call__(self, strokes: jax.Array, text: jax.Array | None = None,
                 text_mask: jax.Array | None = None) -> dict[str, jax.Array]:
        """strokes (B, T, 3) x_1..x_T; text (B, U) character ids and text_mask (B, U) for
        synthesis. Returns the mixture parameters of p(x_{t+1} | x_1..x_t [, text]) per step
        (each (B, T, ...)), and for synthesis the window's phi (B, T, U + 1) and kappa."""
        batch = strokes.shape[0]
        one_hot, mask = self._text(batch, text, text_mask)
        _, (features, extras) = self._run(self.core.initial_carry(batch), strokes, None,
                                          one_hot, mask)
        out = self.core.mixture(jnp.swapaxes(features, 0, 1))
        out.update({k: jnp.swapaxes(v, 0, 1) for k, v in extras.items()})
        return out

    def sample(self, key: jax.Array, steps: int, text: jax.Array | None = None,
               text_mask: jax.Array | None = None, bias: float = 0.0,
               prime: jax.Array | None = None, prime_points: jax.Array | None = None,
               batch: int = 1) -> dict[str, jax.Array]:
        """Writes `steps` points per sequence (sec. 5.3-5.4): strokes (B, steps, 3), written
        (B, steps) true up to where the synthesis window passed the text's end, and for
        synthesis phi (B, steps, U + 1). `prime` (B, P, 3) with `prime_points` (B,) real rows
        first runs the network over a real line (primed sampling: the text must then be the
        prime's text followed by the text to write, as the paper primes). `batch`:
        how many sequences the prediction network writes unprimed."""
        if self.synthesis and text is not None:
            batch = text.shape[0]
        elif prime is not None:
            batch = prime.shape[0]
        one_hot, mask = self._text(batch, text, text_mask)
        carry = self.core.initial_carry(batch)
        last = jnp.zeros((batch, 3), jnp.float32)
        if prime is not None:
            points = prime_points.astype(jnp.int32)
            valid = jnp.arange(prime.shape[1])[None] < points[:, None]
            carry, _ = self._run(carry, shift_inputs(prime), valid, one_hot, mask)
            last = jnp.take_along_axis(prime, jnp.maximum(points - 1, 0)[:, None, None], 1)[:, 0]
        scan = nn.scan(functools.partial(_sampling_step, bias=bias), variable_broadcast="params",
                       split_rngs={"params": False}, in_axes=(0, nn.broadcast, nn.broadcast))
        _, out = scan(self.core, (carry, last.astype(jnp.float32), jnp.zeros((batch,), bool)),
                      jax.random.split(key, steps), one_hot, mask)
        return {k: jnp.swapaxes(v, 0, 1) for k, v in out.items() if k != "kappa"}

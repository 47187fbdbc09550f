"""Recurrent cells: the GRU of RNNsearch and the peephole LSTM of Graves' handwriting networks.

Gated recurrent units (Cho et al. 2014) in the form Bahdanau et al. 2015 write them (Appendix
A.1.1):

  z = sigmoid(W_z x + U_z h),  r = sigmoid(W_r x + U_r h)
  h~ = tanh(W x + U (r * h))
  h' = (1 - z) * h + z * h~

The input projections (W_z, W_r, W) of a whole sequence are one matrix multiply before the
scan; only the recurrent ones run step by step under `jax.lax.scan` (compiled once per shape).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.ops.gradients import clip_gradient


def gru_update(state: jax.Array, projected: jax.Array, gates_kernel: jax.Array,
               candidate_kernel: jax.Array) -> jax.Array:
    """One GRU step. projected (B, 3H): the input's W_z x, W_r x, W x (+ biases), in that order;
    gates_kernel (H, 2H): [U_z, U_r]; candidate_kernel (H, H): U."""
    hidden = state.shape[-1]
    gates = jax.nn.sigmoid(projected[..., :2 * hidden] + state @ gates_kernel)
    update, reset = gates[..., :hidden], gates[..., hidden:]
    candidate = jnp.tanh(projected[..., 2 * hidden:] + (reset * state) @ candidate_kernel)
    return (1 - update) * state + update * candidate


class GRUKernels(nn.Module):
    """The recurrent matrices [U_z, U_r] and U, orthogonal at initialization (the paper's
    Appendix B.1)."""

    features: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        orthogonal = nn.initializers.orthogonal()

        def stacked(key, shape, dtype):  # each H x H block orthogonal
            keys = jax.random.split(key, shape[1] // shape[0])
            return jnp.concatenate([orthogonal(k, (shape[0], shape[0]), dtype) for k in keys], 1)

        h = self.features
        return (self.param("gates", stacked, (h, 2 * h), self.param_dtype),
                self.param("candidate", orthogonal, (h, h), self.param_dtype))


class GRU(nn.Module):
    """A GRU over a padded batch of sequences: inputs (B, T, D), mask (B, T) true on real steps
    (padding at the end). Padded steps keep the state, so `reverse=True` (the backward encoder)
    starts at each sequence's own last step. Returns the states (B, T, H) and the last real
    step's state (B, H) (the first, when reversed)."""

    features: int
    kernel_init: Any = nn.initializers.normal(0.01)  # the paper's N(0, 0.01^2), biases zero
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, mask: jax.Array, reverse: bool = False
                 ) -> tuple[jax.Array, jax.Array]:
        batch = inputs.shape[0]
        projected = nn.Dense(3 * self.features, kernel_init=self.kernel_init, dtype=self.dtype,
                             name="input")(inputs)
        gates_kernel, candidate_kernel = GRUKernels(self.features, name="recurrent")()
        gates_kernel, candidate_kernel = (k.astype(self.dtype) for k in (gates_kernel,
                                                                        candidate_kernel))

        def step(state, xs):
            x, valid = xs
            new = gru_update(state, x, gates_kernel, candidate_kernel)
            state = jnp.where(valid[:, None], new, state)
            return state, state

        initial = jnp.zeros((batch, self.features), projected.dtype)
        last, states = jax.lax.scan(step, initial, (jnp.swapaxes(projected, 0, 1),
                                                    jnp.swapaxes(mask, 0, 1)), reverse=reverse)
        return jnp.swapaxes(states, 0, 1), last


class PeepholeLSTMCell(nn.Module):
    """Graves' LSTM (2013, eq. 7-11): input, forget and output gates that also read the cell
    through diagonal "peephole" weights (i and f read c_{t-1}, o reads c_t):

      i = sigmoid(W_xi x + W_hi h + w_ci * c + b_i),  f = sigmoid(W_xf x + W_hf h + w_cf * c + b_f)
      c' = f * c + i * tanh(W_xc x + W_hc h + b_c),   o = sigmoid(W_xo x + W_ho h + w_co * c' + b_o)
      h' = o * tanh(c')

    `gradient_clip` > 0 clips the derivative wrt the pre-activations (the paper: 10).
    Carry (c, h), as flax's cells order it."""

    features: int
    gradient_clip: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], inputs: jax.Array
                 ) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        cell, hidden = carry
        gates = nn.Dense(4 * self.features, dtype=self.dtype, name="gates")(
            jnp.concatenate([inputs, hidden], -1).astype(self.dtype))
        if self.gradient_clip:
            gates = clip_gradient(gates, self.gradient_clip)
        peephole = self.param("peephole", nn.initializers.zeros_init(), (3, self.features))
        gate_i, gate_f, candidate, gate_o = jnp.split(gates.astype(jnp.float32), 4, axis=-1)
        cell_new = (jax.nn.sigmoid(gate_f + peephole[1] * cell) * cell
                    + jax.nn.sigmoid(gate_i + peephole[0] * cell) * jnp.tanh(candidate))
        hidden = jax.nn.sigmoid(gate_o + peephole[2] * cell_new) * jnp.tanh(cell_new)
        return (cell_new, hidden.astype(self.dtype)), hidden.astype(self.dtype)

"""Beam search for any autoregressive decoder, jittable: a fixed number of steps under
`jax.lax.scan`, every shape static.

A hypothesis that emits <end> is finished: from then on it can only be extended by <pad> at no
cost, so it keeps its score and competes with the open ones to the end. The best hypothesis is
the one with the highest total log-probability, as Show, Attend and Tell's reference code ranks
them (`length_normalize` divides by the length instead). `beam_size=1` is greedy decoding.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# step_fn(state, tokens (B*K,)) -> (log-probabilities (B*K, V), new state, per-step output)
StepFn = Callable[[Any, jax.Array], tuple[jax.Array, Any, Any]]


def _regroup(tree: Any, batch_size: int, beam_size: int, beam_index: jax.Array) -> Any:
    """Leaves (B*K, ...) reordered so that beam k of example b holds old beam beam_index[b, k]."""

    def gather(x):
        grouped = x.reshape(batch_size, beam_size, *x.shape[1:])
        index = beam_index.reshape(batch_size, beam_size, *([1] * (x.ndim - 1)))
        return jnp.take_along_axis(grouped, index, axis=1).reshape(x.shape)

    return jax.tree.map(gather, tree)


def beam_search(step_fn: StepFn, state: Any, *, batch_size: int, beam_size: int, max_length: int,
                start_id: int, end_id: int, pad_id: int = 0, length_normalize: bool = False
                ) -> dict[str, jax.Array]:
    """Decodes `max_length` tokens for each of `batch_size` examples.

    `state`'s leaves have a leading B*K axis (each example's state repeated K = beam_size times,
    example-major); `step_fn` must not see the beam structure. Returns the best hypothesis per
    example: tokens (B, max_length) int32 (<end> included, <pad> after), score (B,) (its total
    log-probability), length (B,) (tokens up to and including <end>), and outputs: step_fn's
    per-step outputs along the hypothesis, stacked to (B, max_length, ...).
    """
    b, k = batch_size, beam_size
    scores = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf) * jnp.ones((b, 1))  # one live beam
    last = jnp.full((b * k,), start_id, jnp.int32)
    finished = jnp.zeros((b, k), bool)
    lengths = jnp.zeros((b, k), jnp.int32)
    _, _, output_shapes = jax.eval_shape(step_fn, state, last)
    history = jnp.zeros((b, k, max_length), jnp.int32)
    outputs = jax.tree.map(lambda s: jnp.zeros((b * k, max_length, *s.shape[1:]), s.dtype),
                           output_shapes)

    def step(carry, t):
        state, last, scores, finished, lengths, history, outputs = carry
        log_probs, state, output = step_fn(state, last)
        vocab = log_probs.shape[-1]
        log_probs = log_probs.astype(jnp.float32).reshape(b, k, vocab)
        only_pad = jnp.where(jnp.arange(vocab) == pad_id, 0.0, -jnp.inf)
        log_probs = jnp.where(finished[..., None], only_pad, log_probs)
        scores, flat_index = jax.lax.top_k((scores[..., None] + log_probs).reshape(b, k * vocab), k)
        beam_index, token = flat_index // vocab, (flat_index % vocab).astype(jnp.int32)
        outputs = jax.tree.map(lambda h, o: h.at[:, t].set(o), outputs, output)
        state, outputs = _regroup((state, outputs), b, k, beam_index)
        history = jnp.take_along_axis(history, beam_index[..., None], axis=1).at[:, :, t].set(token)
        was_finished = jnp.take_along_axis(finished, beam_index, axis=1)
        lengths = jnp.take_along_axis(lengths, beam_index, axis=1) + (~was_finished)
        finished = was_finished | (token == end_id)
        return (state, token.reshape(-1), scores, finished, lengths, history, outputs), None

    carry = (state, last, scores, finished, lengths, history, outputs)
    carry, _ = jax.lax.scan(step, carry, jnp.arange(max_length))
    _, _, scores, _, lengths, history, outputs = carry
    ranking = scores / jnp.maximum(lengths, 1) if length_normalize else scores
    best = jnp.argmax(ranking, axis=1)

    def pick(x):
        return jnp.take_along_axis(x, best.reshape(b, *([1] * (x.ndim - 1))), axis=1)[:, 0]

    outputs = jax.tree.map(lambda o: pick(o.reshape(b, k, *o.shape[1:])), outputs)
    return {"tokens": pick(history), "score": pick(scores), "length": pick(lengths),
            "outputs": outputs}


def repeat_for_beams(tree: Any, beam_size: int) -> Any:
    """Leaves (B, ...) -> (B*K, ...), each example repeated K times (the layout beam_search uses)."""
    return jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)

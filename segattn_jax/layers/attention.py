"""Attention over a set of annotation vectors: the additive score of Bahdanau et al. (2015) that
Show, Attend and Tell reuses, and the two ways of reading a context from its weights.

Soft attention takes the expectation of the annotations under alpha (deterministic,
differentiable); hard attention samples one location from Multinoulli(alpha) and is trained with
REINFORCE (train/reinforce.py), using the sample's log-probability this module returns.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class AdditiveAttention(nn.Module):
    """Scores e_i = v^T tanh(U a_i + W q + b) of L annotations a_i against a query q.

    `project` runs U once per sequence (its result is reused at every decoding step); `__call__`
    adds the query and returns the scores (logits of alpha), masked to -inf where `mask` is False.

    Attributes:
      features: the hidden size of the scoring MLP.
      dtype: compute dtype; parameters stay float32.
    """

    features: int
    dtype: Any = jnp.float32

    def setup(self):
        self.key_projection = nn.Dense(self.features, dtype=self.dtype, name="keys")
        self.query_projection = nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                                         name="query")
        self.score = nn.Dense(1, dtype=self.dtype, name="score")

    def project(self, annotations: jax.Array) -> jax.Array:
        """(B, L, D) annotations -> (B, L, features) projected keys."""
        return self.key_projection(annotations)

    def __call__(self, keys: jax.Array, query: jax.Array, mask: jax.Array | None = None
                 ) -> jax.Array:
        """keys (B, L, F) from `project`, query (B, Q) -> scores (B, L) in float32."""
        hidden = jnp.tanh(keys + self.query_projection(query)[:, None, :])
        scores = self.score(hidden)[..., 0].astype(jnp.float32)
        if mask is not None:
            scores = jnp.where(mask, scores, -jnp.inf)
        return scores


def expected_context(alpha: jax.Array, annotations: jax.Array) -> jax.Array:
    """Soft attention's context sum_i alpha_i a_i: alpha (B, L), annotations (B, L, D) -> (B, D)."""
    return jnp.einsum("bl,bld->bd", alpha.astype(annotations.dtype), annotations)


def sampled_context(rng: jax.Array, scores: jax.Array, annotations: jax.Array
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Hard attention: a location s ~ Multinoulli(softmax(scores)) per example.

    Returns (the annotation at s (B, D), s (B,), log p(s) (B,), differentiable in the scores).
    """
    location = jax.random.categorical(rng, scores, axis=-1)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(scores, axis=-1), location[:, None],
                                   axis=1)[:, 0]
    context = jnp.take_along_axis(annotations, location[:, None, None], axis=1)[:, 0]
    return context, location, log_prob

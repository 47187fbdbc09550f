"""REINFORCE (Williams 1992) as surrogate losses, so a model with discrete samples (hard attention,
glimpse locations, ...) still trains in one jitted step with `jax.grad`.

For a sample s ~ p_theta and a reward R(s), grad E[R] = E[(R(s) - b) grad log p_theta(s)] for any
baseline b that does not depend on s. The surrogate `-stop_gradient(R - b) * log p(s)` has exactly
that gradient (negated, for minimizing), and `update_baseline` keeps the moving average of R that
Show, Attend and Tell uses as b (0.9 old + 0.1 new).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def reinforce_loss(log_prob: jax.Array, reward: jax.Array, baseline: jax.Array | float = 0.0
                   ) -> jax.Array:
    """Per-sample surrogate whose gradient is minus the REINFORCE estimate of grad E[reward].

    log_prob: log p_theta(s) of each sample (differentiable); reward: R(s) (treated as a
    constant); baseline: b, a scalar or broadcastable to `reward`.
    """
    return -jax.lax.stop_gradient(reward - baseline) * log_prob


def update_baseline(baseline: jax.Array, reward: jax.Array, decay: float = 0.9) -> jax.Array:
    """The moving-average baseline after one batch: decay * b + (1 - decay) * mean reward."""
    return decay * baseline + (1.0 - decay) * jnp.mean(jax.lax.stop_gradient(reward))


def entropy(logits: jax.Array, axis: int = -1) -> jax.Array:
    """Entropy of the categorical distribution softmax(logits) along `axis` (a differentiable
    bonus that keeps the sampling policy from collapsing early)."""
    log_p = jax.nn.log_softmax(logits, axis=axis)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=axis)

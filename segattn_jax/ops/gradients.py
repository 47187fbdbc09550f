"""Gradient surgery the papers' training recipes rely on."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def clip_gradient(x: jax.Array, bound: float) -> jax.Array:
    """Identity on the forward pass; the gradient flowing back through it is clipped to
    [-bound, bound] elementwise. Graves (2013, sec. 2.1) clips LSTM pre-activations at 10 and the
    mixture network's outputs at 100; MNC's reference code clips the gradient its cascade sends
    into the RPN's box deltas. Unlike norm clipping, one rare large derivative is capped
    without rescaling every other gradient."""
    return x


def _clip_forward(x, bound):
    del bound
    return x, None


def _clip_backward(bound, residual, g):
    del residual
    return (jnp.clip(g, -bound, bound),)


clip_gradient.defvjp(_clip_forward, _clip_backward)


def clip_each_images_gradient(x: jax.Array, bound: float) -> jax.Array:
    """`clip_gradient` with `bound` on one image's gradient, x's leading axis being the batch:
    the losses here average over the batch, so one image's share of the gradient is 1/B of it.
    MNC's reference code (and DenseCap's bounded row, after it) bounds one image's gradient:
    its batch."""
    return clip_gradient(x, bound / x.shape[0])

"""Classification accuracy as summable sufficient statistics.

`correct_count` runs inside the jitted eval step and returns (correct, total) counts; counts from
batches, devices and hosts add, so the accuracy of the whole eval set is exact even when the last
batch is padded (mark padding with `valid`). `classification_metrics` turns the sums into numbers
on the host. Top-k is there because ILSVRC-style classification and localization tables report
top-5 error.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def correct_count(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    valid: jnp.ndarray | None = None,
    top_k: int = 1,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Number of examples whose label is among the top_k logits, and number of examples counted.

    Args:
      logits: (..., num_classes) scores.
      labels: (...) integer class ids.
      valid: optional (...) boolean; False entries (padding) are not counted.
      top_k: a hit when the label is among the k highest scores (ties: lower class index first).

    Returns:
      (correct, total) int32 scalars; jit-able.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {logits.shape} must be labels {labels.shape} plus a trailing class axis."
        )
    if not 1 <= top_k <= logits.shape[-1]:
        raise ValueError(f"top_k must be in [1, num_classes={logits.shape[-1]}], got {top_k}.")
    if valid is not None and jnp.shape(valid) != labels.shape:
        raise ValueError(f"valid {jnp.shape(valid)} must have the labels' shape {labels.shape}.")
    _, top_classes = jax.lax.top_k(logits, top_k)
    hit = jnp.any(top_classes == labels[..., None], axis=-1)
    counted = jnp.ones(labels.shape, bool) if valid is None else jnp.asarray(valid, bool)
    correct = jnp.sum(hit & counted, dtype=jnp.int32)
    total = jnp.sum(counted, dtype=jnp.int32)
    return correct, total


def classification_metrics(correct: int, total: int) -> dict[str, float]:
    """Accuracy in [0, 1] and error in percent (what the papers' tables print) from summed
    counts."""
    correct, total = int(correct), int(total)
    if total <= 0:
        raise ValueError(
            "total is 0: no example was counted; check the eval split and the valid mask.")
    if not 0 <= correct <= total:
        raise ValueError(f"correct={correct} must be in [0, total={total}].")
    accuracy = correct / total
    return {"accuracy": accuracy, "error_percent": 100.0 * (1.0 - accuracy)}

"""Classification sufficient statistics against a numpy count."""
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from segattn_jax.metrics.classification import classification_metrics, correct_count


def test_top1_and_top5_counts_match_numpy_and_skip_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    valid = np.arange(64) < 50  # last 14 rows are batch padding
    ranks = np.argsort(-logits, axis=-1)
    for k in (1, 5):
        hits = (ranks[:, :k] == labels[:, None]).any(-1)
        correct, total = jax.jit(correct_count, static_argnames="top_k")(logits, labels, valid, top_k=k)
        assert (int(correct), int(total)) == (int(hits[valid].sum()), 50)


def test_counts_on_an_explicitly_sharded_batch():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(16, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=16)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))  # explicit axes by default
    sharding = NamedSharding(mesh, P("data"))
    correct, total = jax.jit(correct_count)(jax.device_put(logits, sharding), jax.device_put(labels, sharding))
    assert (int(correct), int(total)) == (int((logits.argmax(-1) == labels).sum()), 16)


def test_ties_resolve_to_lower_class_like_argmax():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    correct, total = correct_count(logits, np.array([0, 2]))
    assert (int(correct), int(total)) == (1, 2)


def test_metrics_from_counts():
    assert classification_metrics(3, 4) == {"accuracy": 0.75, "error_percent": pytest.approx(25.0)}
    with pytest.raises(ValueError, match="total is 0"):
        classification_metrics(0, 0)
    with pytest.raises(ValueError, match="trailing class axis"):
        correct_count(np.zeros((4, 3)), np.zeros((5,), int))

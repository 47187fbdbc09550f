"""The REINFORCE surrogate against the exact gradient of a small categorical problem."""
import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax.train import reinforce

LOGITS = jnp.array([0.3, -0.5, 1.0, 0.0, -1.2])
REWARD = jnp.array([1.0, 3.0, -2.0, 0.5, 4.0]) + 10.0  # an offset makes the baseline matter


def _expected_reward(logits):
    return jnp.sum(jax.nn.softmax(logits) * REWARD)


def _reinforce_gradients(num: int, baseline: float, seed: int = 0) -> np.ndarray:
    """One REINFORCE gradient estimate of grad E[R] per sample, (num, K)."""

    def estimate(key):
        sample = jax.random.categorical(key, LOGITS)

        def surrogate(logits):
            log_prob = jax.nn.log_softmax(logits)[sample]
            return reinforce.reinforce_loss(log_prob, REWARD[sample], baseline)

        return -jax.grad(surrogate)(LOGITS)  # the loss is minimized: its gradient is -estimate

    return np.asarray(jax.vmap(estimate)(jax.random.split(jax.random.key(seed), num)))


def test_mean_estimate_matches_the_exact_gradient_and_the_baseline_lowers_variance():
    exact = np.asarray(jax.grad(_expected_reward)(LOGITS))
    num = 20_000
    with_baseline = _reinforce_gradients(num, baseline=float(_expected_reward(LOGITS)))
    without = _reinforce_gradients(num, baseline=0.0)
    for estimates in (with_baseline, without):
        standard_error = estimates.std(0) / np.sqrt(num)
        assert np.all(np.abs(estimates.mean(0) - exact) < 4 * standard_error), (
            estimates.mean(0), exact, standard_error)
    assert with_baseline.var(0).sum() < 0.1 * without.var(0).sum()


def test_moving_average_baseline_tracks_the_reward():
    baseline = jnp.zeros(())
    for _ in range(100):
        baseline = reinforce.update_baseline(baseline, jnp.array([2.0, 4.0]), decay=0.9)
    np.testing.assert_allclose(reinforce.update_baseline(jnp.zeros(()), jnp.array([2.0, 4.0])),
                               0.3, rtol=1e-6)  # 0.9 * 0 + 0.1 * 3
    np.testing.assert_allclose(baseline, 3.0, rtol=1e-3)


def test_entropy_matches_scipy():
    import scipy.stats

    logits = jnp.array([[0.2, 1.0, -3.0], [0.0, 0.0, 0.0]])
    expected = scipy.stats.entropy(np.asarray(jax.nn.softmax(logits)), axis=-1)
    np.testing.assert_allclose(reinforce.entropy(logits), expected, rtol=1e-5)

"""Graves' handwriting networks: the mixture density against scipy, causality, and the
synthesis window (monotone, over the text's real characters only)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from segattn_jax.data.handwriting import SYMBOLS, encode_text
from segattn_jax.models.handwriting import HandwritingNet, mixture_nll, mixture_params


def test_mixture_nll_is_the_bivariate_gaussian_mixture_and_bernoulli():
    rng = np.random.default_rng(0)
    m = 3
    y = rng.normal(size=(1 + 6 * m,)).astype(np.float32)
    target = np.array([0.3, -0.2, 1.0], np.float32)
    params = mixture_params(jnp.asarray(y), m)
    pi = np.exp(np.asarray(params["log_pi"]))
    density = 0.0
    for j in range(m):
        sx, sy = np.exp(params["log_sigma_x"][j]), np.exp(params["log_sigma_y"][j])
        rho = float(params["rho"][j])
        cov = [[sx * sx, rho * sx * sy], [rho * sx * sy, sy * sy]]
        density += pi[j] * stats.multivariate_normal(
            [float(params["mu_x"][j]), float(params["mu_y"][j])], cov).pdf(target[:2])
    e = 1 / (1 + np.exp(y[0]))  # the paper's end-of-stroke probability, eq. 18
    want = -np.log(density) - np.log(e)
    assert float(mixture_nll(params, jnp.asarray(target))) == pytest.approx(want, rel=1e-4)
    not_end = float(mixture_nll(params, jnp.asarray(target * np.array([1, 1, 0]))))
    assert not_end == pytest.approx(-np.log(density) - np.log(1 - e), rel=1e-4)


def _strokes(batch=2, steps=7):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, steps, 3)).astype(np.float32)
    x[..., 2] = rng.random((batch, steps)) < 0.2
    return jnp.asarray(x)


@pytest.mark.parametrize("synthesis", [False, True])
def test_predictions_at_step_t_read_only_the_points_up_to_t(synthesis):
    model = HandwritingNet(hidden=8, mixtures=2, window_mixtures=2, synthesis=synthesis)
    text = jnp.asarray(np.stack([np.pad(encode_text("ab"), (0, 2)), encode_text("abcd")]))
    mask = (jnp.arange(4)[None] < jnp.array([[2], [4]])).astype(jnp.float32)
    args = (text, mask) if synthesis else ()
    strokes = _strokes()
    variables = model.init(jax.random.key(0), strokes, *args)
    out = model.apply(variables, strokes, *args)
    assert out["mu_x"].shape == (2, 7, 2) and out["e_logit"].shape == (2, 7)
    changed = model.apply(variables, strokes.at[:, 4].set(5.0), *args)
    np.testing.assert_allclose(changed["mu_x"][:, :4], out["mu_x"][:, :4], rtol=1e-6)
    assert not np.allclose(changed["mu_x"][:, 4:], out["mu_x"][:, 4:])
    if synthesis:
        kappa = np.asarray(out["kappa"])
        assert (np.diff(kappa, axis=1) > 0).all()  # the window only moves forward
        assert out["phi"].shape == (2, 7, 5)  # U + 1 positions
        assert float(jnp.abs(out["phi"][0, :, 3:]).max()) == 0.0  # past "ab" + one: nothing
        other = model.apply(variables, strokes, text.at[0, 2:].set(len(SYMBOLS) - 1), mask)
        np.testing.assert_allclose(other["mu_x"][0], out["mu_x"][0], rtol=1e-6)  # padding unread
        assert not np.allclose(model.apply(variables, strokes, text.at[:, 0].set(5), mask)["mu_x"],
                               out["mu_x"])  # the text is read

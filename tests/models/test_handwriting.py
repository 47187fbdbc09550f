"""Graves' handwriting networks: the mixture density against scipy, causality, the synthesis
window (monotone, over the text's real characters only), the peephole LSTM and derivative
clipping, biased sampling, the stopping rule and priming."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from segattn_jax.data.handwriting import SYMBOLS, encode_text
from segattn_jax.layers.recurrent import PeepholeLSTMCell
from segattn_jax.ops.gradients import clip_gradient
from segattn_jax.models.handwriting import (HandwritingNet, mixture_nll, mixture_params,
                                            sample_mixture, window_passed_end)


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


def test_peephole_lstm_is_graves_equations_and_clips_only_the_gradient():
    cell = PeepholeLSTMCell(4, gradient_clip=0.5)
    rng = np.random.default_rng(0)
    x, c, h = (jnp.asarray(rng.normal(size=(2, n)), jnp.float32) for n in (3, 4, 4))
    variables = cell.init(jax.random.key(0), (c, h), x)
    peephole = rng.normal(size=(3, 4)).astype(np.float32)
    variables = {"params": {**variables["params"], "peephole": jnp.asarray(peephole)}}
    (c_new, h_new), _ = cell.apply(variables, (c, h), x)
    kernel, bias = (np.asarray(variables["params"]["gates"][k]) for k in ("kernel", "bias"))
    z = np.concatenate([x, h], -1) @ kernel + bias
    i, f, g, o = np.split(z, 4, axis=-1)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    want_c = sigmoid(f + peephole[1] * c) * c + sigmoid(i + peephole[0] * c) * np.tanh(g)
    want_h = sigmoid(o + peephole[2] * want_c) * np.tanh(want_c)
    np.testing.assert_allclose(c_new, want_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_new, want_h, rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(clip_gradient(v, 0.5) * jnp.array([0.1, 3.0, -7.0])))(
        jnp.ones(3))
    np.testing.assert_allclose(grad, [0.1, 0.5, -0.5])


def test_window_stopping_rule():
    phi = jnp.array([[0.1, 0.5, 0.2, 0.0], [0.0, 0.1, 0.2, 0.3], [0.0, 0.1, 0.4, 0.3]])
    # Texts of 2, 3 and 2 characters: position U (0-based) is the one past the end.
    np.testing.assert_array_equal(window_passed_end(phi, jnp.array([2, 3, 2])),
                                  [False, True, True])


def test_biased_samples_follow_the_mixture_and_sharpen_with_the_bias():
    params = mixture_params(jnp.zeros(1 + 6 * 2), 2)
    params.update(log_pi=jnp.log(jnp.array([0.8, 0.2])), mu_x=jnp.array([1.0, -10.0]),
                  mu_y=jnp.array([2.0, 0.0]), log_sigma_x=jnp.log(jnp.array([0.5, 1.0])),
                  log_sigma_y=jnp.log(jnp.array([0.25, 1.0])), rho=jnp.array([0.6, 0.0]),
                  e_logit=jnp.array(np.log(0.3 / 0.7), jnp.float32))
    keys = jax.random.split(jax.random.key(0), 20_000)
    points = np.asarray(jax.vmap(lambda k: sample_mixture(params, k))(keys))
    first = points[points[:, 0] > -5]  # the first component's samples
    assert len(first) / len(points) == pytest.approx(0.8, abs=0.02)
    np.testing.assert_allclose(first[:, :2].mean(0), [1.0, 2.0], atol=0.03)
    np.testing.assert_allclose(np.cov(first[:, :2].T), [[0.25, 0.6 * 0.125], [0.6 * 0.125, 0.0625]],
                               atol=0.01)
    assert points[:, 2].mean() == pytest.approx(0.3, abs=0.02)
    biased = np.asarray(jax.vmap(lambda k: sample_mixture(params, k, 2.0))(keys))
    # pi ~ pi^(1 + b): sharpened towards the likelier component.
    assert (biased[:, 0] > -5).mean() == pytest.approx(0.8 ** 3 / (0.8 ** 3 + 0.2 ** 3), abs=0.005)
    assert biased[biased[:, 0] > -5, 0].std() == pytest.approx(0.5 * np.exp(-2.0), rel=0.05)


@pytest.mark.parametrize("synthesis", [False, True])
def test_sampling_stops_after_the_text_and_priming_reads_only_the_prime(synthesis):
    model = HandwritingNet(hidden=8, mixtures=2, window_mixtures=2, synthesis=synthesis)
    text = jnp.asarray(np.stack([np.pad(encode_text("ab"), (0, 2)), encode_text("abcd")]))
    mask = (jnp.arange(4)[None] < jnp.array([[2], [4]])).astype(jnp.float32)
    variables = model.init(jax.random.key(0), _strokes(), text, mask)
    if synthesis:  # the window moves 0.3 characters a step: "ab" ends first, then "abcd"
        params = variables["params"]["core"]["window"]["params"]
        bias = np.zeros(6, np.float32)
        bias[4:] = np.log(0.3)
        variables = {"params": {**variables["params"], "core": {
            **variables["params"]["core"], "window": {"params": {
                "kernel": jnp.zeros_like(params["kernel"]), "bias": jnp.asarray(bias)}}}}}

    def sample(prime, points):
        return model.apply(variables, jax.random.key(1), 30, text, mask, bias=0.5, prime=prime,
                           prime_points=points, batch=2, method="sample")

    out = sample(None, None)
    assert out["strokes"].shape == (2, 30, 3)
    written = np.asarray(out["written"]).sum(1)
    if synthesis:
        assert 5 < written[0] < written[1] < 30  # stopped when the window passed the text
        assert not np.asarray(out["strokes"])[0, written[0]:].any()
    else:
        assert (written == 30).all()
    prime = _strokes(2, 5)
    junk = prime.at[:, 3:].set(9.0)  # after the 3 primed points: never read
    primed = sample(prime, jnp.array([3, 3]))
    np.testing.assert_allclose(sample(junk, jnp.array([3, 3]))["strokes"], primed["strokes"],
                               rtol=1e-6)
    assert not np.allclose(sample(prime, jnp.array([5, 5]))["strokes"], primed["strokes"])


def test_the_window_starts_at_the_configured_speed():
    """At initialization the window moves about `window_speed` characters per point, so it does
    not run past the text before training can align it."""
    model = HandwritingNet(hidden=8, mixtures=2, window_mixtures=3, synthesis=True,
                           window_speed=0.1)
    text = jnp.asarray(encode_text("abcdefgh"))[None]
    out = model.apply(model.init(jax.random.key(0), _strokes(1, 40), text, jnp.ones((1, 8))),
                      _strokes(1, 40), text, jnp.ones((1, 8)))
    steps = np.diff(np.asarray(out["kappa"])[0], axis=0)
    assert np.median(steps) == pytest.approx(0.1, rel=0.5)
    assert float(np.asarray(out["kappa"])[0, -1].mean()) < 8  # still on the text after 40 points

"""DRAW: the bound's two terms, generation from the prior, gradients reaching the attention
windows, learning, the mini rows trained and evaluated, and the paper-scale row on mocked
binarized_mnist."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from segattn_jax import predict
from segattn_jax.models.draw import DRAW, DrawClassifier
from segattn_jax.tasks.generation import bound_terms
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, step_on_mock_data

_SMALL = dict(steps=3, hidden=16, latent=4)


def _images(batch=2, size=12):
    return (jax.random.uniform(jax.random.key(0), (batch, size, size, 1)) > 0.6).astype(
        jnp.float32)


def _init(model, images):
    return model.init({"params": jax.random.key(1), "latent": jax.random.key(2)}, images)


def test_the_kl_term_is_the_closed_form_of_the_posterior_and_reconstruction_is_bernoulli():
    """With the posterior layer's weights zeroed and its bias set to (mean m, log sigma s) for
    every unit, KL(N(m, e^s) || N(0, 1)) = 0.5 (m^2 + e^2s - 2s - 1) per unit and step; the
    reconstruction term is -log Bernoulli(x | sigmoid(c_T)) summed over pixels."""
    model = DRAW(read_size=2, write_size=3, **_SMALL)
    images = _images()
    variables = _init(model, images)
    m, s = 0.7, -0.4
    params = jax.tree.map(lambda x: x, variables["params"])
    posterior = params["step"]["posterior"]
    posterior["kernel"] = jnp.zeros_like(posterior["kernel"])
    posterior["bias"] = jnp.concatenate([jnp.full(4, m), jnp.full(4, s)])
    outputs = model.apply({"params": params}, images, rngs={"latent": jax.random.key(3)})
    reconstruction, kl = bound_terms(outputs, images)
    want_kl = 3 * 4 * 0.5 * (m ** 2 + np.exp(2 * s) - 2 * s - 1)
    np.testing.assert_allclose(np.asarray(kl), [want_kl] * 2, rtol=1e-5)
    p = 1 / (1 + np.exp(-np.asarray(outputs["canvas"][-1], np.float64)))
    x = np.asarray(images, np.float64)
    want = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(2, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(reconstruction), want, rtol=1e-5)


@pytest.mark.parametrize("attention", [True, False])
def test_generation_runs_the_decoder_alone_from_the_prior(attention):
    sizes = dict(read_size=2, write_size=3) if attention else dict(read_size=0, write_size=0)
    model = DRAW(**sizes, **_SMALL)
    variables = _init(model, _images())
    rngs = {"latent": jax.random.key(5)}
    generated = model.apply(variables, 3, (12, 12, 1), method=DRAW.generate, rngs=rngs)
    assert generated["canvas"].shape == (3, 3, 12, 12, 1)
    assert ("write_window" in generated) == attention and "kl" not in generated
    # The encoder's weights play no part in generation.
    params = jax.tree.map(lambda x: x, variables["params"])
    params["step"]["encoder"] = jax.tree.map(lambda x: x + 1.0, params["step"]["encoder"])
    again = model.apply({"params": params}, 3, (12, 12, 1), method=DRAW.generate, rngs=rngs)
    np.testing.assert_array_equal(np.asarray(again["canvas"]), np.asarray(generated["canvas"]))


def test_the_bound_reaches_where_to_read_and_where_to_write():
    """The attention is learned by backpropagation: the bound's gradient wrt both window
    layers is finite and nonzero."""
    model = DRAW(read_size=2, write_size=3, **_SMALL)
    images = _images()
    variables = _init(model, images)

    def loss(params):
        outputs = model.apply({"params": params}, images, rngs={"latent": jax.random.key(3)})
        return sum(t.mean() for t in bound_terms(outputs, images))

    grads = jax.grad(loss)(variables["params"])["step"]
    for name in ("read_window", "write_window"):
        norm = float(optax.global_norm(grads[name]))
        assert np.isfinite(norm) and norm > 0, (name, norm)


def test_draw_learns_to_encode_a_batch_of_digits(tfds_dir, tmp_path):
    """The learning test: 150 Adam steps on one batch of 8 tiny digits (28x28, 4 glimpses) take
    the bound from ~545 nats (an empty canvas: 784 log 2) to under 200."""
    config = experiment_config("draw", "DRAW,mini", tfds_dir, **{
        "optimizer.schedule": "constant", "optimizer.learning_rate": 3e-3})
    experiment = loop.Experiment(config, tmp_path, training=True)
    batch = next(experiment.eval_batches())
    state = experiment.new_state()
    train_batch = {k: v for k, v in batch.items() if k != "valid"}
    state, first = experiment.train_step(state, train_batch)
    for _ in range(150):
        state, metrics = experiment.train_step(state, train_batch)
    assert float(first["nll_bound"]) > 500, float(first["nll_bound"])
    assert float(metrics["nll_bound"]) < 200, float(metrics["nll_bound"])


def test_mini_row_trains_with_pictures_gif_and_predicts(tfds_dir, tmp_path):
    """train (2 steps and an evaluation) writes the canvas pictures and the generation GIF;
    predict draws an image file's reconstruction."""
    config = experiment_config("draw", "DRAW,mini", tfds_dir, **{"train.num_steps": 2})
    workdir = tmp_path / "run"
    assert "nll_bound" in loop.train_and_evaluate(config, workdir)["eval"]
    assert (workdir / "pictures" / "step_000002.png").is_file()
    with Image.open(workdir / "pictures" / "step_000002.gif") as gif:
        assert gif.n_frames == 4  # one per glimpse
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    predict.predict_files(config, workdir, [str(image)])
    assert (workdir / "predictions" / "digit.png").is_file()


@pytest.mark.parametrize("row, compiled", [("DRAW", True), ("DRAW-no-attention", False)])
def test_paper_scale_row_trains_and_evaluates_on_mock_binarized_mnist(row, compiled, tmp_path,
                                                                      monkeypatch):
    """The paper-scale rows (binarized_mnist's stored 0/1 pixels, 64 glimpses, 256-unit LSTMs,
    100 latent units) take a step and evaluate offline on mocked data (the row without
    attention only traces its step: `traced_step`)."""
    config = load_experiment(ROOT / "experiments" / "draw.py").get_config(row)
    batch, metrics, result, experiment = step_on_mock_data(config, tmp_path, monkeypatch,
                                                           compiled=compiled)
    assert batch["image"].shape == (2, 28, 28, 1)
    assert set(np.unique(batch["image"])) <= {0.0, 1.0}
    if compiled:
        assert np.isfinite(float(metrics["loss"]))
        assert result["nll_bound"] > 0 and result["kl"] >= 0
    else:
        assert metrics["loss"].shape == () and result["nll_bound"].shape == (2,)
    model = experiment.task.model
    assert (model.steps, model.hidden, model.latent) == (64, 256, 100)


def test_classifier_glimpses_where_its_state_points_and_learns_the_window():
    """The classifier's gradient reaches its read window's layer (attention is trained by
    backpropagation through the filterbank), and its glimpses are sown for the pictures."""
    model = DrawClassifier(steps=3, hidden=16, read_size=4)
    images = jax.random.uniform(jax.random.key(0), (2, 20, 20, 1))
    labels = jnp.array([1, 7])
    variables = model.init(jax.random.key(1), images)

    def loss(params):
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads = jax.grad(loss)(variables["params"])
    window = grads["step"]["read_window"]["params"]
    assert float(jnp.abs(window["kernel"]).max()) > 0 and float(jnp.abs(window["bias"]).max()) > 0
    _, state = model.apply(variables, images, mutable=["intermediates"])
    assert state["intermediates"]["transformed"][0].shape == (2, 4, 12, 1)  # 3 glimpses of 4x4
    assert state["intermediates"]["read_windows"][0].shape == (2, 3, 5)


def test_cluttered_classification_row_trains_and_evaluates(tfds_dir, tmp_path):
    """The DRAW row (the CNN row is the Spatial Transformer experiments' tested CNN)."""
    config = experiment_config("draw_cluttered", "DRAW,mini", tfds_dir, **{"train.num_steps": 2})
    workdir = tmp_path / "run"
    assert "error_percent" in loop.train_and_evaluate(config, workdir)["eval"]
    assert (workdir / "pictures" / "step_000002.png").is_file()


def test_cluttered_paper_scale_row_steps_on_mock_100x100_digits(tmp_path, monkeypatch):
    config = load_experiment(ROOT / "experiments" / "draw_cluttered.py").get_config("DRAW")
    batch, metrics, result, experiment = step_on_mock_data(config, tmp_path, monkeypatch)
    assert batch["image"].shape == (2, 100, 100, 1)
    assert np.isfinite(float(metrics["loss"]))
    assert 0.0 <= result["error_percent"] <= 100.0
    model = experiment.task.model
    assert (model.steps, model.hidden, model.read_size) == (8, 256, 12)

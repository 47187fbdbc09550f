"""RNNsearch / RNNencdec: the GRU against the paper's equations, padding, the bidirectional
annotations, attention, the decoding step against teacher forcing, learning the synthetic pair,
the mini row trained and evaluated, and the paper-scale row on mocked WMT'14."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segattn_jax.layers.recurrent import gru_update
from segattn_jax.models.rnnsearch import RNNSearch
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, step_on_mock_data

_SMALL = dict(source_vocab_size=20, target_vocab_size=24, embed=8, hidden=16, maxout=6,
              alignment=12)
_SOURCE = jnp.array([[2, 5, 6, 7, 3, 0, 0], [2, 8, 9, 10, 11, 12, 3]])
_TARGET = jnp.array([[2, 5, 6, 7, 8], [2, 9, 10, 0, 0]])


class _Jitted:
    """A module whose `init` and `apply` are jitted (`method` static): eager applies of the
    recurrences cost seconds per call."""

    def __init__(self, module):
        self.init = jax.jit(module.init)
        self.apply = jax.jit(module.apply, static_argnames="method")


def _model(attention=True):
    model = _Jitted(RNNSearch(attention=attention, **_SMALL))
    params = model.init(jax.random.key(0), _SOURCE, _TARGET)["params"]
    # The paper's initialization is near zero (v_a zero: uniform attention); random weights of
    # scale 0.5 make every path visible.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape)
                                       for k, x in zip(keys, leaves)])
    return model, {"params": params}


def test_gru_update_is_the_papers_equations():
    rng = np.random.default_rng(0)
    h, x = rng.normal(size=(2, 3)), rng.normal(size=(2, 9))
    gates, candidate = rng.normal(size=(3, 6)), rng.normal(size=(3, 3))
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    z = sigmoid(x[:, :3] + h @ gates[:, :3])
    r = sigmoid(x[:, 3:6] + h @ gates[:, 3:])
    want = (1 - z) * h + z * np.tanh(x[:, 6:] + (r * h) @ candidate)
    got = gru_update(jnp.asarray(h), jnp.asarray(x), jnp.asarray(gates), jnp.asarray(candidate))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_padding_changes_nothing(attention):
    """More <pad> after a sentence (source and target) leaves its logits and alignment as they
    were: the encoders skip padded steps in both directions and attention never looks there."""
    model, variables = _model(attention)
    out = model.apply(variables, _SOURCE, _TARGET)
    padded = model.apply(variables, jnp.pad(_SOURCE, ((0, 0), (0, 4))),
                         jnp.pad(_TARGET, ((0, 0), (0, 3))))
    np.testing.assert_allclose(padded["logits"][:, :5], out["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(padded["alpha"][:, :5, :7], out["alpha"], atol=1e-6)
    if attention:
        assert float(jnp.abs(padded["alpha"][:, :, 7:]).max()) == 0.0


def test_annotations_see_both_sides_and_attention_is_a_distribution_over_words():
    model, variables = _model()
    memory, _ = model.apply(variables, _SOURCE, method="encode")
    changed = _SOURCE.at[1, 5].set(4)  # a later word
    memory2, _ = model.apply(variables, changed, method="encode")
    forward, backward = np.split(np.asarray(memory["annotations"] - memory2["annotations"]), 2, -1)
    assert np.abs(forward[1, :5]).max() == 0.0  # ->h_j only reads words 1..j
    assert np.abs(backward[1, :5]).max() > 0.0  # <-h_j reads words j..Tx
    alpha = np.asarray(model.apply(variables, _SOURCE, _TARGET)["alpha"])
    np.testing.assert_allclose(alpha.sum(-1), 1.0, rtol=1e-5)
    assert alpha[0, :, 5:].max() == 0.0  # the first sentence's padding
    assert alpha.std(-1).min() > 1e-3  # not uniform: scores depend on the annotations


@pytest.mark.parametrize("attention", [True, False])
def test_decoding_step_by_step_gives_the_teacher_forced_logits(attention):
    model, variables = _model(attention)
    out = model.apply(variables, _SOURCE, _TARGET)
    state = model.apply(variables, _SOURCE, method="initial_state")
    for t in range(_TARGET.shape[1]):
        state, step = model.apply(variables, state, _TARGET[:, t], method="decode_step")
        np.testing.assert_allclose(step["logits"], out["logits"][:, t], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(step["alpha"], out["alpha"][:, t], atol=1e-6)


def test_rnnencdec_reads_the_source_only_through_one_vector():
    model, variables = _model(attention=False)
    assert "U_a" not in variables["params"] and "backward_encoder" not in variables["params"]
    memory, _ = model.apply(variables, _SOURCE, method="encode")
    assert memory["annotations"].shape == (2, 1, 16)
    np.testing.assert_array_equal(model.apply(variables, _SOURCE, _TARGET)["alpha"], 1.0)


@pytest.mark.parametrize("attention", [True, False])
def test_weight_std_initializes_every_matrix_outside_the_recurrence_and_alignment(attention):
    """`weight_std` (paper 0.01; the mini rows 0.1) reaches the embeddings, the encoders' and the
    decoder's input matrices, the context matrix C and the deep output; the recurrent matrices
    stay orthogonal and the alignment model keeps N(0, 0.001^2)."""
    widths = dict(source_vocab_size=300, target_vocab_size=300, embed=64, hidden=128, maxout=64,
                  alignment=128)
    model = RNNSearch(attention=attention, weight_std=0.1, **widths)
    params = jax.jit(model.init)(jax.random.key(0), _SOURCE, _TARGET)["params"]
    flat = {jax.tree_util.keystr(path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    scaled = [k for k in flat if ("kernel" in k or "embedding" in k)
              and "recurrent" not in k and "['U']" not in k and "_a'" not in k]
    assert len(scaled) == 11, scaled
    for name in scaled:
        assert 0.09 < flat[name].std() < 0.11, (name, flat[name].std())
    for name in [k for k in flat if "recurrent" in k or "['U']" in k]:
        block = flat[name][:, :128]
        np.testing.assert_allclose(block.T @ block, np.eye(128), atol=1e-4, err_msg=name)
    if attention:
        assert flat["['decoder']['W_a']['kernel']"].std() < 0.0011
        assert flat["['U_a']['kernel']"].std() < 0.0011


@pytest.mark.parametrize("attention, length, steps, floor", [(True, 8, 400, 0.5),
                                                             (False, 5, 600, 0.4)])
def test_both_models_learn_to_reverse_sequences(attention, length, steps, floor):
    """Reversing random symbols needs the whole source: Adam takes the next-word accuracy far
    above chance (1/8). Measured: RNNsearch 0.95-1.00 on 8 symbols after 400 steps (seeds 0-2;
    at 300 it is still learning: 0.43-0.79), RNNencdec 0.58 on 5 symbols after 600 (it learns,
    more slowly: the paper's point in small)."""
    model = RNNSearch(source_vocab_size=12, target_vocab_size=12, embed=16, hidden=32, maxout=16,
                      alignment=32, attention=attention)
    rng = np.random.default_rng(0)

    def batch():
        words = rng.integers(4, 12, size=(32, length))
        source = np.concatenate([np.full((32, 1), 2), words, np.full((32, 1), 3)], 1)
        target = np.concatenate([np.full((32, 1), 2), words[:, ::-1], np.full((32, 1), 3)], 1)
        return jnp.asarray(source), jnp.asarray(target)

    source, target = batch()
    params = jax.jit(model.init)(jax.random.key(0), source, target[:, :-1])["params"]
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, source, target):
        def loss(p):
            logits = model.apply({"params": p}, source, target[:, :-1])["logits"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, target[:, 1:]).mean()
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    for _ in range(steps):
        params, opt_state, value = step(params, opt_state, *batch())
    source, target = batch()
    logits = jax.jit(model.apply)({"params": params}, source, target[:, :-1])["logits"]
    accuracy = float((jnp.argmax(logits, -1) == target[:, 1:]).mean())
    assert accuracy > floor, (accuracy, float(value))


def test_mini_row_trains_with_alignment_pictures(tfds_dir, tmp_path):
    config = experiment_config("rnnsearch", "RNNsearch-30,mini", tfds_dir,
                               **{"train.num_steps": 2})
    workdir = tmp_path / "run"
    metrics = loop.train_and_evaluate(config, workdir)["eval"]
    assert "bleu_len_11_20" in metrics and "bleu_no_unk" in metrics
    assert (workdir / "pictures" / "step_000002.png").is_file()
    assert (workdir / "vocabulary_source.txt").is_file()
    assert (workdir / "vocabulary_target.txt").is_file()


@pytest.mark.parametrize("row", ["RNNsearch-50"])
def test_paper_scale_row_trains_and_evaluates_on_mock_wmt14(row, tmp_path, monkeypatch):
    """The paper-scale rows (WMT'14 en->fr features, 30k shortlists, 1000-unit GRUs, Adadelta)
    build their vocabularies, take a step and evaluate offline on mocked data."""
    config = load_experiment(ROOT / "experiments" / "rnnsearch.py").get_config(row)
    config.update_from_flattened_dict({"task.max_length": 12, "task.beam_size": 2,
                                       "task.max_train_length": 0})
    batch, metrics, result, experiment = step_on_mock_data(config, tmp_path, monkeypatch,
                                                           training=True)
    assert batch["source"].shape == (2, 14) and batch["target"].shape == (2, 14)
    assert np.isfinite(float(metrics["loss"]))
    assert 0.0 <= result["bleu"] <= 100.0
    model = experiment.task.model
    assert (model.embed, model.hidden, model.maxout, model.alignment) == (620, 1000, 500, 1000)
    assert model.weight_std == 0.01  # Appendix B.1
    assert (tmp_path / "vocabulary_target.txt").is_file()

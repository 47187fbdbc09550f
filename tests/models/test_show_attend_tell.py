"""Show, Attend and Tell: the three rows through the train loop, learning, hard attention's
REINFORCE state, the attention-in-box measure, bad inputs, and the paper-scale row on mocked
COCO."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from segattn_jax import predict
from segattn_jax.models.show_attend_tell import ShowAttendTell
from segattn_jax.tasks.captioning import attention_in_boxes, box_coverage
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import run_once
from tests.conftest import ROOT, experiment_config, step_on_mock_data



def test_box_coverage_and_attention_ratio_by_hand():
    coverage = box_coverage(jnp.array([0.0, 0.0, 0.5, 0.25]), (2, 4))  # top-left quarter row
    np.testing.assert_allclose(coverage, [[1, 0, 0, 0], [0, 0, 0, 0]])
    alpha = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0, 0].set(0.5).at[0, 0, 1, 3].set(0.5)
    alpha = alpha.at[0, 1].set(1 / 8)
    tokens = jnp.array([[7, 9]])  # word 7 names class 2; word 9 names nothing
    word_class = jnp.full(10, -1, jnp.int32).at[7].set(2)
    boxes = jnp.array([[[0.0, 0.0, 0.5, 0.25], [0.5, 0.5, 1.0, 1.0]]])
    ratio_sum, words = attention_in_boxes(alpha, tokens, word_class, boxes, jnp.array([[2, 1]]),
                                          jnp.array([[True, True]]))
    assert int(words) == 1
    np.testing.assert_allclose(ratio_sum, 0.5 / (1 / 8))  # half the mass in 1/8 of the image


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_teacher_forcing_equals_decoding_step_by_step(attention):
    """The training pass (recurrence under scan, output layer once over all steps) gives the
    logits and attention that decoding's one-step calls give on the same words."""
    model = ShowAttendTell(vocab_size=12, attention=attention, encoder_channels=(4, 8, 8),
                           embed_dim=8, lstm_dim=16, attention_dim=8)
    images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    tokens = jnp.array([[1, 5, 7, 4], [1, 9, 4, 11]])
    variables = run_once(functools.partial(model.init, train=False),
                         jax.random.key(1, impl="rbg"), images, tokens)
    forced = jax.jit(functools.partial(model.apply, train=False))(variables, images, tokens)
    state = jax.jit(lambda v, x: model.apply(v, model.apply(v, x, method="encode"),
                                             method="initial_state"))(variables, images)
    step = jax.jit(functools.partial(model.apply, method="step"))
    for t in range(tokens.shape[1]):
        state, outputs = step(variables, state, tokens[:, t])
        np.testing.assert_allclose(outputs["logits"], forced["logits"][:, t], atol=1e-5)
        np.testing.assert_allclose(outputs["alpha"], forced["alpha"][:, t], atol=1e-6)


def test_no_attention_row_runs_a_few_steps(tfds_dir, tmp_path):
    """(Hard attention: the mini-row test; soft: the learning test.)"""
    config = experiment_config("show_attend_tell", "No-attention,mini", tfds_dir,
                               **{"train.num_steps": 2})
    experiment = loop.Experiment(config, tmp_path, training=True)
    state = experiment.new_state()
    batch = next(experiment.eval_batches())
    train_batch = {k: v for k, v in batch.items() if k != "valid"}
    for _ in range(2):
        state, metrics = experiment.train_step(state, train_batch)
    assert np.isfinite(float(metrics["loss"]))
    assert "reinforce" not in state.model_state
    result = experiment.evaluate(state.variables)
    assert 0.0 <= result["BLEU-4"] <= result["BLEU-1"] <= 100.0 and result["CIDEr"] >= 0.0
    assert "attention_in_box_ratio" not in result  # a model without attention has none


def test_soft_attention_learns_the_captions_of_a_batch(tfds_dir, tmp_path):
    """The learning test: 200 Adam steps on one batch of 8 shapes/tiny scenes take greedy BLEU-4
    on that batch from ~0 to 53 (100 and 100 with seeds 1 and 2; the bar is 40)."""
    config = experiment_config("show_attend_tell", "Soft-attention,mini", tfds_dir, **{
        "task.beam_size": 1, "optimizer.schedule": "constant", "optimizer.warmup_steps": 0,
        "optimizer.learning_rate": 3e-3, "model.dropout_rate": 0.0})
    experiment = loop.Experiment(config, tmp_path, training=True)
    task = experiment.task
    batch = next(experiment.eval_batches())

    def batch_bleu4(variables):
        predictions = jax.device_get(jax.jit(task.predict)(variables, task.inputs(batch)))
        return task.summarize(task.accumulate(None, task.statistics(batch, predictions)))["BLEU-4"]

    state = experiment.new_state()
    before = batch_bleu4(state.variables)
    train_batch = {k: v for k, v in batch.items() if k != "valid"}
    for _ in range(200):
        state, _ = experiment.train_step(state, train_batch)
    after = batch_bleu4(state.variables)
    assert before < 5.0 and after > 40.0, (before, after)


def test_hard_row_trains_predicts_and_rejects_bad_inputs(tfds_dir, tmp_path):
    """train -> predict, with hard attention's REINFORCE baseline in the checkpoint; predict on a
    non-image file and eval in a workdir without the vocabulary fail with what to do, and write
    nothing."""
    config = experiment_config("show_attend_tell", "Hard-attention,mini", tfds_dir,
                               **{"train.num_steps": 2})
    workdir = tmp_path / "run"
    metrics = loop.train_and_evaluate(config, workdir)["eval"]
    assert (workdir / "vocabulary.txt").is_file()
    assert (workdir / "pictures" / "step_000002.png").is_file()
    assert 0.0 <= metrics["BLEU-4"] <= metrics["BLEU-1"] <= 100.0
    assert metrics["attention_in_box_ratio"] > 0.0  # where attention falls in the named boxes
    # The moving average of the reward (-caption NLL) moved, and was checkpointed.
    baseline = float(loop.Experiment(config, workdir).restore_variables()["reinforce"]["baseline"])
    assert baseline < 0.0 and np.isfinite(baseline)
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    predict.predict_files(config, workdir, [str(image)])
    assert (workdir / "predictions" / "scene.png").is_file()

    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="not an image file"):
        predict.predict_files(config, workdir, [str(not_image)])
    (workdir / "vocabulary.txt").rename(tmp_path / "vocabulary.txt")
    with pytest.raises(FileNotFoundError, match="vocabulary.txt is missing.*Train in this"):
        loop.evaluate(config, workdir)
    assert not (workdir / "vocabulary.txt").exists()  # eval never writes a new one


@pytest.mark.parametrize("cell, compiled", [("Hard-attention,COCO", True),
                                            ("Soft-attention,Flickr8k", False)])
def test_paper_scale_row_trains_and_evaluates_on_mock_data(cell, compiled, tmp_path,
                                                           monkeypatch):
    """The paper-scale configs (VGG16 conv5_3 at 224x224, frozen; LSTM 1800; beam 3; COCO with
    Karpathy's train + restval) run a step and an evaluation offline on mocked coco_captions /
    flickr/8k (the soft row only traces its step: `traced_step`); only the vocabulary threshold
    is lowered for mock data's random words."""
    config = load_experiment(ROOT / "experiments" / "show_attend_tell.py").get_config(cell)
    config.update_from_flattened_dict({"task.min_word_count": 1, "task.java_metrics": False})
    batch, metrics, result, experiment = step_on_mock_data(config, tmp_path, monkeypatch,
                                                           training=True, compiled=compiled)
    assert batch["image"].shape == (2, 224, 224, 3)
    assert experiment.task.model.lstm_dim == 1800
    if compiled:
        assert np.isfinite(float(metrics["loss"]))
        assert 0.0 <= result["BLEU-1"] <= 100.0
    else:
        assert metrics["loss"].shape == () and result["tokens"].shape[0] == 2

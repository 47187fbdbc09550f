"""DenseCap: the gradient through bilinear interpolation to the boxes, the mini rows through the
loop and the CLI, learning, bad inputs, and the paper-scale row on Visual Genome fixture data."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import pipeline
from segattn_jax.data.visual_genome import VisualGenome
from segattn_jax.models.densecap import DenseCap
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from tests import cli
from tests.conftest import ROOT, cli_overrides, experiment_config
from tests.data.test_visual_genome import write_visual_genome

_SMALL = dict(vocab_size=12, width=0.0625, feature_layer="conv4_3", anchor_scales=(1.0, 2.0),
              samples=32, proposals=10, max_detections=5, embed_dim=8, lstm_dim=16)


def _init(model, inputs):
    """The model's variables, initialized as the train loop does (compiled without backend
    optimizations: it runs once)."""
    return jax.jit(model.init).lower({"params": jax.random.key(1)}, inputs).compile(
        {"xla_backend_optimization_level": 0})({"params": jax.random.key(1)}, inputs)


def _inputs_and_targets():
    inputs = {"image": jax.random.uniform(jax.random.key(0), (2, 64, 64, 3)),
              "image_hw": jnp.array([[64, 64], [48, 64]], jnp.int32)}
    targets = {"boxes": jnp.array([[[8, 8, 40, 40], [30, 20, 60, 44]]] * 2, jnp.float32),
               "box_valid": jnp.array([[True, True], [True, False]]),
               "phrases": jnp.array([[[1, 5, 6, 2, 0], [1, 7, 4, 8, 2]]] * 2, jnp.int32)}
    return inputs, targets


@pytest.mark.parametrize("pooling", ["bilinear", "roi_pool"])
def test_only_bilinear_interpolation_sends_the_recognition_gradient_to_the_boxes(pooling):
    """The paper's point about its localization layer: the losses computed on the region
    features (final objectness, final box, captioning) reach the box-regression conv through
    the box coordinates with bilinear interpolation, and not at all through RoI pooling. An
    image without regions gives finite losses and gradients."""
    model = DenseCap(pooling=pooling, **_SMALL)
    inputs, targets = _inputs_and_targets()
    variables = _init(model, inputs)
    rngs = {"sample": jax.random.key(2), "dropout": jax.random.key(3)}

    @jax.jit
    def recognition_loss_and_grad(params, targets):
        def loss(params):
            losses, metrics = model.apply({"params": params}, inputs, targets, method="losses",
                                          rngs=rngs)
            return losses["end_objectness"] + losses["end_box"] + losses["caption"], (
                {**losses, **metrics})
        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, _), grads = recognition_loss_and_grad(variables["params"], targets)
    to_boxes = float(jnp.abs(grads["rpn"]["deltas"]["kernel"]).sum())
    assert (to_boxes > 0) == (pooling == "bilinear"), to_boxes
    backbone = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["backbone"]))
    assert backbone > 0  # both train the features

    no_regions = {**targets, "box_valid": jnp.zeros_like(targets["box_valid"])}
    (_, values), grads = recognition_loss_and_grad(variables["params"], no_regions)
    assert all(np.isfinite(float(v)) for v in values.values())
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(values["caption"]) == 0.0 and float(values["positive_regions"]) == 0.0


@pytest.mark.parametrize("row", ["Full-image-RNN", "FCLN-RoI-pool"])  # FCLN: CLI and learning
def test_row_runs_a_few_steps_and_evaluates(row, tfds_dir, tmp_path):
    config = experiment_config("densecap", f"{row},mini", tfds_dir, **{"train.num_steps": 2})
    experiment = loop.Experiment(config, tmp_path, training=True)
    state = experiment.new_state()
    batch = {k: v for k, v in next(experiment.eval_batches()).items() if k != "valid"}
    for _ in range(2):
        state, metrics = experiment.train_step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    result = experiment.evaluate(state.variables)
    assert 0.0 <= result["mAP_unigram_f1"] <= result["detection_mAP"] <= 100.0


def test_fcln_learns_the_phrases_of_a_batch(tfds_dir, tmp_path):
    """The learning test: 200 Adam steps on one batch of 8 shapes/tiny scenes (objects of 4-28
    px at 64x64) take the phrases' word accuracy on the sampled regions from ~0.1 to 1.0 and
    the dense-captioning AP at IoU 0.3 on that batch from 0 to 14.9 (the bar is 5)."""
    config = experiment_config("densecap", "FCLN,mini", tfds_dir, **{
        "optimizer.schedule": "constant", "optimizer.warmup_steps": 0,
        "optimizer.learning_rate": 3e-3, "model.dropout_rate": 0.0})
    experiment = loop.Experiment(config, tmp_path, training=True)
    task = experiment.task
    batch = next(experiment.eval_batches())
    predict = jax.jit(task.predict)

    def batch_ap(variables):
        predictions = jax.device_get(predict(variables, task.inputs(batch)))
        summary = task.summarize(task.accumulate(None, task.statistics(batch, predictions)))
        return summary["mAP_unigram_f1@iou0.3"]

    state = experiment.new_state()
    before = batch_ap(state.variables)
    train_batch = {k: v for k, v in batch.items() if k != "valid"}
    for _ in range(200):
        state, metrics = experiment.train_step(state, train_batch)
    after = batch_ap(state.variables)
    assert float(metrics["word_accuracy"]) > 0.95, float(metrics["word_accuracy"])
    assert before < 2.0 and after > 5.0, (before, after)


def test_fcln_through_the_cli_with_predict(tfds_dir, tmp_path):
    overrides = cli_overrides("densecap", tfds_dir, **{"train.num_steps": 2})
    config_arg = ["--config", "experiments/densecap.py:FCLN,mini"]
    workdir = tmp_path / "run"
    result = cli.run(["train", *config_arg, "--workdir", str(workdir), *overrides], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "vocabulary.txt").is_file()
    assert (workdir / "pictures" / "step_000002.png").is_file()
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(image)
    result = cli.run(["predict", *config_arg, "--workdir", str(workdir), *overrides,
                      "--images", str(image)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (workdir / "predictions" / "scene.png").is_file()


def test_paper_scale_row_trains_and_evaluates_on_visual_genome_fixture_data(tmp_path):
    """The paper-scale FCLN (full VGG16 conv5_3, 12 anchors, 256 sampled regions, 300
    proposals, LSTM 512, the paper's loss weights) on the Visual Genome builder's fixture: one
    step and an evaluation, at 224 px instead of 720 to keep the test short. Phrases longer than
    max_length (lowered to 3 here) are truncated and counted; rare words become <unk>."""
    manual = tmp_path / "data" / "downloads" / "manual"
    write_visual_genome(manual)
    config = load_experiment(ROOT / "experiments" / "densecap.py").get_config("FCLN")
    config.update_from_flattened_dict({
        "dataset.data_dir": str(tmp_path / "data"), "dataset.preprocess.canvas": (224, 224),
        "dataset.preprocess.min_side": 224.0, "dataset.preprocess.max_side": 224.0,
        "task.max_length": 3, "task.min_word_count": 2, "task.phrase_score": "unigram_f1",
        "train.batch_size": 1, "eval.batch_size": 1, "mesh.data": 1})
    VisualGenome(data_dir=config.dataset.data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    experiment = loop.Experiment(config, tmp_path / "run", training=True)
    # Only "the" is seen twice in the training phrases: every other word is <unk>.
    assert experiment.task.vocabulary.tokens[4:] == ("the",)
    state = experiment.new_state()
    batch = next(pipeline.train_iterator(config.dataset.name, "train",
                                         preprocess=experiment.preprocess, global_batch_size=1,
                                         seed=0, data_dir=config.dataset.data_dir))
    state, metrics = experiment.train_step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert int(metrics["truncated_phrases"]) == 1  # "the man s hat on the left"
    result = experiment.evaluate(state.variables)
    assert 0.0 <= result["detection_mAP"] <= 100.0
    model = experiment.task.model
    assert (model.samples, model.proposals, model.lstm_dim, model.width) == (256, 300, 512, 1.0)

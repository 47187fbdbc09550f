"""Classification + localization: the main-object preprocessor, the box coding, ILSVRC's
localization counts on hand-made cases, a mini row trained and evaluated, the paper-scale rows on
the ILSVRC builder's fixture, and a learning test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.data import pipeline, preprocess
from segattn_jax.tasks import build_task
from segattn_jax.tasks.localization import corners, fractions
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import initial_variables
from tests.conftest import ROOT, experiment_config
from tests.data.test_imagenet_localization import prepare, write_download

EXPERIMENT = ROOT / "experiments" / "localization.py"
SEED = tf.constant([0, 0], tf.int64)


def scene(boxes, labels, **extra):
    """A 40x80 example in TFDS's detection layout with normalized (ymin, xmin, ymax, xmax)."""
    return {"image": tf.zeros([40, 80, 3], tf.uint8),
            "objects": {"bbox": tf.constant(boxes, tf.float32),
                        "label": tf.constant(labels, tf.int64)}, **extra}


def test_the_main_object_is_the_largest_box_and_every_box_of_its_class_is_a_reference():
    # Class 2's box (0.5 x 0.5 of the image) beats class 1's two smaller ones.
    example = scene([[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.3, 0.8]],
                    [1, 2, 1])
    out = preprocess.localization(example, SEED, False, size=64, max_boxes=4)
    assert int(out["label"]) == 2 and out["image"].shape == (64, 64, 3)
    np.testing.assert_allclose(out["box"], [32, 32, 64, 64])  # pixels of the 64x64 warp
    np.testing.assert_array_equal(out["box_valid"], [False, True, False, False])
    # An image-level label (ILSVRC's) picks the class; its largest box is the target.
    out = preprocess.localization({**example, "label": tf.constant(1, tf.int64)}, SEED, False,
                                  size=64, max_boxes=4)
    assert int(out["label"]) == 1
    np.testing.assert_allclose(out["box"], [32, 0, 51.2, 19.2], rtol=1e-5)
    np.testing.assert_array_equal(out["box_valid"], [True, False, True, False])


def test_training_mirrors_image_and_box_together():
    image = np.zeros([32, 32, 3], np.uint8)
    image[:, :8] = 255  # the left quarter lit, where the box is
    example = {**scene([[0.0, 0.0, 1.0, 0.25]], [3]), "image": tf.constant(image)}
    seen = set()
    for i in range(8):
        out = preprocess.localization(example, tf.constant([i, 0], tf.int64), True, size=32)
        x1, _, x2, _ = np.asarray(out["box"])
        lit = np.flatnonzero(np.asarray(out["image"])[0, :, 0] > 0.5)
        assert (lit.min(), lit.max() + 1) == (round(x1), round(x2))
        seen.add(round(x1))
    assert seen == {0, 24}  # both orientations occur


def test_an_image_without_a_box_of_its_class_trains_its_class_only(tfds_dir):
    example = scene([[0.0, 0.0, 0.5, 0.5]], [1], label=tf.constant(4, tf.int64))
    out = preprocess.localization(example, SEED, False, size=32)
    assert not out["has_box"] and not out["box_valid"].numpy().any()
    task = task_for("PCR", tfds_dir)
    size = task.config.model.input_size
    batch = {"image": jnp.zeros((2, size, size, 3)), "label": jnp.array([4, 4]),
             "box": jnp.array([[0, 0, 0, 0], [0, 0, size, size]], jnp.float32),
             "has_box": jnp.array([False, True])}
    variables = initial_variables(task, jax.random.key(0), {"image": batch["image"][:1]})
    _, metrics, _ = jax.jit(task.loss)(variables, batch, jax.random.key(1))
    # The box loss is the second image's alone: the centred half-size box vs the whole image.
    assert float(metrics["box_loss"]) == pytest.approx(0.5 * (0.5 ** 2 + 0.5 ** 2))


def test_central_crop_keeps_the_boxes_in_its_pixels():
    """A 40x80 image: shorter side to 32 (scale 0.8, 64 wide), the central 32 columns (16..48)."""
    example = scene([[0.25, 0.25, 0.75, 0.5], [0.0, 0.0, 1.0, 0.1]], [2, 2])
    out = preprocess.localization(example, SEED, False, size=32, crop="center")
    assert out["image"].shape == (32, 32, 3) and bool(out["has_box"])
    np.testing.assert_allclose(out["box"], [0, 8, 16, 24], atol=1e-4)  # x 16..32 -> 0..16
    np.testing.assert_array_equal(out["box_valid"][:2], [True, False])  # the second is cut off
    with pytest.raises(ValueError, match="crop"):
        preprocess.localization(example, SEED, False, crop="squash")


def test_box_coding_round_trips_through_image_fractions():
    boxes = jnp.array([[4.0, 8.0, 20.0, 40.0], [0.0, 0.0, 64.0, 32.0]])
    coded = fractions(boxes, (32, 64))
    np.testing.assert_allclose(coded[1], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(corners(coded, (32, 64)), boxes, rtol=1e-6)


def task_for(row: str, tfds_dir: str):
    return build_task(experiment_config("localization", f"{row},mini", tfds_dir))


@pytest.mark.parametrize("row", ["SCR", "PCR"])
def test_ilsvrc_counts_on_hand_made_predictions(row, tfds_dir):
    """Image 0: right class, box IoU 0.5 with the second reference -> localized. Image 1: wrong
    class, but its true class's box is right -> a localization error, not a gt-class one.
    Image 2: right class, box off -> both errors. Image 3 is padding."""
    task = task_for(row, tfds_dir)
    num_classes = task.config.model.num_classes
    references = np.zeros((4, 2, 4), np.float32)
    references[:, 0] = [40, 40, 60, 60]
    references[:, 1] = [0, 0, 20, 20]
    batch = {"label": jnp.array([1, 2, 3, 0]), "valid": jnp.array([True, True, True, False]),
             "boxes": jnp.asarray(references), "box_valid": jnp.array([[True, True]] * 4)}
    predicted_label = jnp.array([1, 0, 3, 0])
    logits = jax.nn.one_hot(predicted_label, num_classes) * 5.0
    logits = logits.at[1, 2].set(4.0)  # image 1's true class is second: top-5 localized
    good, half, bad = [0, 0, 20, 20], [0, 0, 20, 10], [30, 0, 50, 20]
    if row == "SCR":
        boxes = jnp.array([[half], [good], [bad], [bad]], jnp.float32)
    else:  # the box of the true class differs from the predicted class's in image 1
        boxes = np.tile(np.array(bad, np.float32), (4, num_classes, 1))
        boxes[0, 1], boxes[1, 2] = half, good
        boxes = jnp.asarray(boxes)
    predictions = {"logits": logits, "label": predicted_label, "boxes": boxes,
                   "box": task.box_of(boxes, predicted_label)}
    stats = jax.device_get(task.statistics(batch, predictions))
    assert {k: int(v) for k, v in stats.items()} == {
        "total": 3, "class_correct": 2, "localized": 1, "gt_class_localized": 2,
        "top5_localized": 2}
    summary = task.summarize(task.accumulate(None, stats))
    assert summary["loc_error"] == pytest.approx(200 / 3)
    assert summary["gt_class_loc_error"] == pytest.approx(100 / 3)
    assert summary["class_error"] == pytest.approx(100 / 3)
    assert summary["top5_loc_error"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("row", ["SCR", "PCR"])
def test_loss_trains_only_the_true_class_box(row, tfds_dir):
    """The box loss reads the shared box (SCR) or the true class's (PCR): the gradient reaches
    only that box's weights."""
    task = task_for(row, tfds_dir)
    size = task.config.model.input_size
    batch = {"image": jnp.zeros((2, size, size, 3)), "label": jnp.array([3, 3]),
             "box": jnp.array([[0, 0, 32, 32], [8, 8, 40, 60]], jnp.float32),
             "has_box": jnp.array([True, True])}
    variables = initial_variables(task, jax.random.key(0), {"image": batch["image"][:1]})
    grads = jax.jit(jax.grad(lambda p: task.loss({"params": p}, batch, jax.random.key(1))[0]))(
        variables["params"])
    bias = np.asarray(grads["box"]["bias"]).reshape(-1, 4)
    assert bias.shape[0] == (1 if row == "SCR" else task.config.model.num_classes)
    trained = 0 if row == "SCR" else 3
    assert np.abs(bias[trained]).min() > 0
    assert not np.delete(bias, trained, axis=0).any()


def test_mini_row_trains_and_evaluates(tmp_path, tfds_dir):
    """The PCR row (SCR's differs only in the box layer's width, see the loss test above)."""
    config = experiment_config("localization", "PCR,mini", tfds_dir, **{"train.num_steps": 2})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    for key in ("class_error", "loc_error", "gt_class_loc_error", "top5_loc_error"):
        assert 0.0 <= metrics[key] <= 100.0, metrics
    # A localized image has the right class and a good box for it.
    assert metrics["loc_error"] >= max(metrics["class_error"], metrics["gt_class_loc_error"])
    assert (tmp_path / "pictures" / "step_000002.png").is_file()


@pytest.mark.parametrize("row", ["PCR", "PCR-all"])
def test_paper_scale_row_trains_and_evaluates_on_the_ilsvrc_fixture(row, tmp_path):
    """The paper-scale config (central 224x224 crops, 1000 classes, SGD; SCR/PCR freeze the
    conv layers) on the ImageNet CLS-LOC builder's fixture (Kaggle's layout): a step and an
    eval, where the validation image left without a usable box counts as an error. Only the
    width is cut (1/16)."""
    write_download(tmp_path / "manual")
    prepare(tmp_path / "manual", tmp_path / "data")
    config = load_experiment(EXPERIMENT).get_config(row)
    config.update_from_flattened_dict({
        "model.width": 0.0625, "train.batch_size": 2, "eval.batch_size": 2, "mesh.data": 1,
        "dataset.data_dir": str(tmp_path / "data")})
    experiment = loop.Experiment(config, tmp_path / "run")
    state = experiment.new_state()
    before = jax.device_get(state.variables["params"])
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
        global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
    assert batch["image"].shape[1:3] == (224, 224) and batch["has_box"].all()
    state, metrics = experiment.train_step(state, batch)
    result = experiment.evaluate(state.variables)
    assert np.isfinite(float(metrics["loss"])), metrics
    after = jax.device_get(state.variables["params"])
    conv_moved = not np.array_equal(before["backbone"]["conv1_1"]["kernel"],
                                    after["backbone"]["conv1_1"]["kernel"])
    assert conv_moved == (row == "PCR-all")
    assert not np.array_equal(before["box"]["kernel"], after["box"]["kernel"])
    assert not np.array_equal(before["backbone"]["fc8"]["kernel"],
                              after["backbone"]["fc8"]["kernel"])  # VGG16's own classifier
    assert result["loc_error"] >= 100 / 3  # one of the 3 validation images has no box


def test_paper_rows_carry_table_8():
    experiment = load_experiment(EXPERIMENT)
    for row, error in (("SCR", 36.4), ("PCR", 34.3), ("PCR-all", 33.1)):
        config = experiment.get_config(row)
        assert config.paper.gt_class_loc_error == error
        assert config.model.class_specific == row.startswith("PCR")
    assert experiment.table_runs("mini") == ["SCR,mini", "PCR,mini"]
    with pytest.raises(ValueError, match="mini rows: SCR, PCR"):
        experiment.get_config("PCR-all,mini")


def test_pcr_learns_to_localize_one_batch(tmp_path, tfds_dir):
    """Trained on one batch of shapes/tiny, the gt-class localization error falls well below
    its value at initialization (the centred half-size box)."""
    config = experiment_config("localization", "PCR,mini", tfds_dir, **{
        "train.num_steps": 150, "optimizer.warmup_steps": 10, "model.dropout_rate": 0.0,
        "optimizer.learning_rate": 1e-3})
    experiment = loop.Experiment(config, tmp_path)
    batch = next(experiment.eval_batches())
    task = experiment.task

    def errors(variables):
        predictions = jax.device_get(jax.jit(task.predict)(variables, task.inputs(batch)))
        return task.summarize(task.accumulate(None, task.statistics(batch, predictions)))

    state = experiment.new_state()
    before = errors(state.variables)
    for _ in range(150):
        state, _ = experiment.train_step(state, batch)
    after = errors(state.variables)
    assert after["gt_class_loc_error"] <= before["gt_class_loc_error"] - 40, (before, after)
    assert after["class_error"] <= 25, after

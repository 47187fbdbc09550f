"""DeepPose: LRN against TensorFlow's, joint crops against tf.image.crop_and_resize, the person
crop's joint bookkeeping, the simulated predictions' statistics, invisible joints masked out,
the mini table (one cascade run shared by its three rows, through the loop that `train`
runs), the paper-scale config on mocked FLIC and on the LSP builder's fixture, and a learning
test."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax import table
from segattn_jax.data import pipeline, preprocess
from segattn_jax.layers.normalization import local_response_norm
from segattn_jax.metrics.pose import JOINT_NAMES, NUM_JOINTS
from segattn_jax.models.deeppose import DeepPose, crop_around
from segattn_jax.tasks import build_task
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import initial_variables
from tests.conftest import ROOT, experiment_config, fast_overrides
from tests.data.test_lsp import prepare as prepare_lsp
from tests.data.test_lsp import write_download as write_lsp

EXPERIMENT = ROOT / "experiments" / "deeppose.py"


def test_local_response_norm_matches_tensorflow():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 12)).astype(np.float32) * 30
    for radius, bias, alpha, beta in ((2, 2.0, 1e-4, 0.75), (1, 1.0, 0.01, 0.5)):
        expected = tf.nn.local_response_normalization(x, radius, bias, alpha, beta).numpy()
        np.testing.assert_allclose(local_response_norm(jnp.asarray(x), radius, bias, alpha, beta),
                                   expected, rtol=1e-5, atol=1e-6)


def test_joint_crops_match_tensorflow_crop_and_resize():
    """A crop of side 4 at 1:1 around (x, y) = (8, 8) is pixels 6..9; any other crop samples
    the points tf.image.crop_and_resize samples for the same box."""
    images = np.random.default_rng(1).uniform(size=(2, 20, 24, 3)).astype(np.float32)
    exact = crop_around(jnp.asarray(images), jnp.array([[[8.0, 8.0]]] * 2), jnp.array([4.0, 4.0]), 4)
    np.testing.assert_allclose(exact[0, 0], images[0, 6:10, 6:10], rtol=1e-6)
    centres = np.array([[[5.3, 9.1], [12.7, 4.2]], [[10.0, 10.0], [3.4, 15.5]]], np.float32)
    side = np.array([7.5, 5.0], np.float32)
    size = 6
    crops = np.asarray(crop_around(jnp.asarray(images), jnp.asarray(centres), jnp.asarray(side), size))
    boxes, index = [], []
    for n in range(2):
        for x, y in centres[n]:
            step = side[n] / size  # first and last sample points, in pixel-centre coordinates
            y0, x0 = y - side[n] / 2 + step / 2 - 0.5, x - side[n] / 2 + step / 2 - 0.5
            y1, x1 = y0 + step * (size - 1), x0 + step * (size - 1)
            boxes.append([y0 / 19, x0 / 23, y1 / 19, x1 / 23])
            index.append(n)
    expected = tf.image.crop_and_resize(images, boxes, index, [size, size]).numpy()
    np.testing.assert_allclose(crops.reshape(-1, size, size, 3), expected, rtol=1e-4, atol=1e-5)


def person(joint_xy=(21.0, 31.0), box=(0.25, 0.2, 0.75, 0.6)):
    """A 64x64 black example with a white 2x2 block centred on joint 0 (the right ankle) and
    the other joints at the image centre, in the `poses` layout."""
    image = np.zeros((64, 64, 3), np.uint8)
    x, y = int(joint_xy[0]), int(joint_xy[1])
    image[y - 1:y + 1, x - 1:x + 1] = 255
    joints = np.full((NUM_JOINTS, 2), 32.0, np.float32)
    joints[0] = joint_xy
    return {"image": tf.constant(image), "joints": tf.constant(joints),
            "visible": tf.constant([True] * NUM_JOINTS), "person_box": tf.constant(box)}


def test_person_crop_keeps_joints_on_their_pixels_and_flips_left_and_right():
    seed = tf.constant([0, 0], tf.int64)
    out = preprocess.pose(person(), seed, False, size=48, margin=0.1)
    image = np.asarray(out["image"])[..., 0]
    ys, xs = np.nonzero(image > 0.05)
    weights = image[ys, xs]
    centroid = (np.sum(weights * (xs + 0.5)) / weights.sum(), np.sum(weights * (ys + 0.5)) / weights.sum())
    np.testing.assert_allclose(centroid, np.asarray(out["joints"])[0], atol=0.35)
    # Mirrored: the right ankle becomes the left ankle, at the mirrored position.
    left_ankle = JOINT_NAMES.index("left_ankle")
    mirrored = [preprocess.pose(person(), tf.constant([i, 0], tf.int64), True, size=48, flip=True)
                for i in range(8)]
    flipped = [m for m in mirrored if not np.allclose(m["joints"], out["joints"])]
    assert flipped and len(flipped) < len(mirrored)
    np.testing.assert_allclose(flipped[0]["joints"][left_ankle],
                               [48 - out["joints"][0][0], out["joints"][0][1]], rtol=1e-5)


def test_joints_outside_the_crop_are_invisible():
    seed = tf.constant([0, 0], tf.int64)
    out = preprocess.pose(person(joint_xy=(2.0, 3.0), box=(0.4, 0.4, 0.6, 0.6)), seed, False,
                          size=32)
    assert not out["visible"][0] and out["visible"][1:].numpy().all()


def test_simulated_predictions_follow_the_previous_stages_error_statistics():
    rng = np.random.default_rng(2)
    joints = rng.uniform(0, 100, size=(4000, NUM_JOINTS, 2)).astype(np.float32)
    errors = rng.normal([3.0, -2.0], [4.0, 1.0], size=joints.shape).astype(np.float32)
    visible = np.ones(joints.shape[:2], bool)
    centres = np.asarray(DeepPose._simulated(jnp.asarray(joints + errors), jnp.asarray(joints),
                                             jnp.asarray(visible), jax.random.key(0)))
    real = np.isclose(centres, joints + errors).all(-1)
    assert 0.45 < real.mean() < 0.55  # half the crops are around the real estimates
    simulated = (centres - joints)[~real]
    np.testing.assert_allclose(simulated.mean(0), [3.0, -2.0], atol=0.15)
    np.testing.assert_allclose(simulated.std(0), [4.0, 1.0], rtol=0.05)


def test_invisible_joints_are_out_of_the_loss_even_when_nan(tfds_dir):
    """Unannotated joints may be NaN: the step stays finite and they change nothing; with every
    joint invisible the loss is 0."""
    task = build_task(experiment_config("deeppose", "stage3,mini", tfds_dir))
    rng = np.random.default_rng(3)
    image = jnp.asarray(rng.uniform(size=(2, 48, 48, 3)), jnp.float32)
    joints = jnp.asarray(rng.uniform(5, 40, size=(2, NUM_JOINTS, 2)), jnp.float32)
    visible = jnp.asarray(rng.uniform(size=(2, NUM_JOINTS)) < 0.6)
    variables = initial_variables(task, jax.random.key(0), {"image": image[:1]})

    @jax.jit
    def step(joints, visible):  # one compilation for the three cases
        def loss(params):
            batch = {"image": image, "joints": joints, "visible": visible}
            return task.loss({"params": params}, batch, jax.random.key(1))[:2]
        return jax.value_and_grad(loss, has_aux=True)(variables["params"])

    (value, metrics), grads = step(joints, visible)
    (nan_value, nan_metrics), nan_grads = step(
        jnp.where(visible[..., None], joints, jnp.nan), visible)
    assert np.isfinite(float(value)) and float(value) > 0
    np.testing.assert_allclose(float(nan_value), float(value), rtol=1e-6)
    for g, h in zip(jax.tree.leaves(grads), jax.tree.leaves(nan_grads)):
        np.testing.assert_allclose(h, g, rtol=1e-5, atol=1e-7)
    (none_value, _), none_grads = step(jnp.full_like(joints, jnp.nan), jnp.zeros_like(visible))
    assert float(none_value) == 0.0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(none_grads))


def test_later_stages_move_each_joint_by_their_output_times_the_crop_side():
    """With stage 2's output fixed to (dx, dy) for joint i, its estimate of joint i is stage 1's
    plus (dx, dy) x the crop side (sigma x the torso diameter of stage 1's estimate, or the
    smallest crop): the refinement's sign and scale."""
    model = DeepPose(stages=2, input_size=32, crop_size=8, width=0.0625, first_stride=2,
                     sigma=1.5, min_crop=0.1)
    images = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 64, 64, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images)
    params = jax.tree.map(lambda x: x, variables["params"])
    rng = np.random.default_rng(5)
    params["stage1"]["fc8"]["bias"] = jnp.asarray(rng.uniform(-0.3, 0.3, 2 * NUM_JOINTS))
    shift = rng.uniform(-0.5, 0.5, (NUM_JOINTS, 2))
    params["stage2"]["fc8"]["bias"] = jnp.asarray(shift.reshape(-1))
    stage1, stage2 = model.apply({"params": params}, images)
    stage1, stage2 = np.asarray(stage1), np.asarray(stage2)
    shoulder, hip = JOINT_NAMES.index("left_shoulder"), JOINT_NAMES.index("right_hip")
    side = np.maximum(1.5 * np.linalg.norm(stage1[:, shoulder] - stage1[:, hip], axis=-1), 6.4)
    np.testing.assert_allclose(stage2, stage1 + shift[None] * side[:, None, None], rtol=1e-5)


def test_mini_table_trains_the_cascade_once_for_its_three_rows(tmp_path, tfds_dir):
    markdown = table.run_table(str(EXPERIMENT), "mini", tmp_path,
                               overrides=fast_overrides("deeppose", tfds_dir,
                                                        **{"train.num_steps": 2}))
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["cascade_mini"]
    metrics = json.loads((tmp_path / "cascade_mini" / "metrics.json").read_text())["eval"]
    rows = {line.split("|")[1].strip(): line.split("|") for line in markdown.splitlines()
            if "| stage" in line}
    assert list(rows) == ["stage1", "stage2", "stage3"]
    for stage, cells in rows.items():
        assert float(cells[2]) == load_experiment(EXPERIMENT).PAPER[stage]["pcp"]
        upper_arm = metrics[f"{stage}/pcp/upper_arm"]  # each row shows its own stage's
        assert cells[5].strip() == f"{upper_arm:.1f}"
    assert f"figure: {tmp_path / 'pdj.png'}" in markdown and (tmp_path / "pdj.png").is_file()
    assert (tmp_path / "cascade_mini" / "pictures" / "step_000002.png").is_file()


def test_paper_scale_config_trains_and_evaluates_on_mock_flic(tmp_path, monkeypatch):
    """FLIC at the paper's sizes (440 px crops, 220x220 inputs to every stage); only the width
    is cut (1/16). FLIC has no leg annotations: leg PCP is absent, not NaN."""
    config = load_experiment(EXPERIMENT).get_config("stage3")
    config.update_from_flattened_dict({"model.width": 0.0625, "train.batch_size": 2,
                                       "eval.batch_size": 2, "mesh.data": 1})
    monkeypatch.setattr(pipeline, "num_examples", lambda builder, split: 2)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=2):
        experiment = loop.Experiment(config, tmp_path / "run")
        state = experiment.new_state()
        batch = next(pipeline.train_iterator(
            config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
            global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
        assert batch["image"].shape == (2, 440, 440, 3)
        assert not batch["visible"][:, JOINT_NAMES.index("left_knee")].any()
        state, metrics = experiment.train_step(state, batch)
        result = experiment.evaluate(state.variables)
    assert np.isfinite(float(metrics["loss"])), metrics
    assert "pcp/lower_leg" not in result and "stage1/pcp/lower_leg" not in result


def test_lsp_rows_carry_table_1_and_read_the_lsp_fixture(tmp_path):
    """',lsp' is Table 1's data (LSP + LSPET, tested on LSP) with the paper's numbers beside the
    rows; on the builder's fixture its whole-image crops make the batches of the FLIC test's
    program (same network and sizes; that test compiles and steps it)."""
    experiment_module = load_experiment(EXPERIMENT)
    assert experiment_module.table_runs("lsp") == ["stage1,lsp", "stage2,lsp", "stage3,lsp"]
    config = experiment_module.get_config("stage2,lsp")
    assert config.paper.pcp == 60 and config.dataset.name == "lsp/extended"
    assert config.table_run == "cascade,lsp"
    write_lsp(tmp_path / "manual")
    prepare_lsp(tmp_path / "manual", tmp_path / "data", "extended")
    config.update_from_flattened_dict({"model.width": 0.0625, "train.batch_size": 2,
                                       "eval.batch_size": 2, "mesh.data": 1,
                                       "dataset.data_dir": str(tmp_path / "data")})
    experiment = loop.Experiment(config, tmp_path / "run")
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
        global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
    assert batch["image"].shape == (2, 440, 440, 3) and batch["joints"].shape == (2, NUM_JOINTS, 2)
    assert batch["visible"].any()
    assert experiment.input_spec["image"].shape == (1, 440, 440, 3)


def test_stage1_learns_one_batch(tmp_path, tfds_dir):
    """Trained on one batch of poses/tiny, stage 1's joint error falls to a fraction of its
    error at initialization (every joint at the crop's centre)."""
    config = experiment_config("deeppose", "stage3,mini", tfds_dir, **{
        "optimizer.warmup_steps": 10, "model.dropout_rate": 0.0, "optimizer.learning_rate": 1e-3})
    experiment = loop.Experiment(config, tmp_path)
    batch = next(experiment.eval_batches())
    task = experiment.task

    def error(variables):
        estimates = jax.device_get(jax.jit(task.predict)(variables, task.inputs(batch)))["stage1"]
        distance = np.linalg.norm(estimates - batch["joints"], axis=-1)
        return distance[batch["visible"]].mean()

    state = experiment.new_state()
    before = error(state.variables)
    for _ in range(150):
        state, metrics = experiment.train_step(state, batch)
    assert error(state.variables) < 0.4 * before, (before, error(state.variables))

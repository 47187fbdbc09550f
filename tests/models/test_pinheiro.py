"""Pinheiro & Collobert's recurrent convolutional network: one f for every instance, each instance
fed the image and the previous one's class probabilities, the context growing with each instance,
the input checks, the table on the embedded scenes and the paper rows on the Stanford Background
fixture."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax import table
from segattn_jax.models.patch_classifier import PatchClassifier
from segattn_jax.models.pinheiro import RecurrentConvNet
from tests.conftest import ROOT, experiment_config, fast_overrides, trained_on_coloured_boxes

# f: 5x5 convolutions and 2x2 pools, 16x16 patches (the mini rows' geometry, slimmer).
SMALL = dict(num_classes=4, features=((4,), (6,)), conv_kernel=5)


def init(model, size=(24, 28)):
    return jax.jit(model.init, static_argnames="train")(jax.random.key(0),
                                                        jnp.zeros((1, *size, 3)), train=False)


def apply(model, variables, images):
    return jax.jit(model.apply, static_argnames="train")(variables, images, train=False)


def test_one_f_for_every_instance_fed_the_image_and_the_previous_probabilities():
    one, three = RecurrentConvNet(instances=1, **SMALL), RecurrentConvNet(instances=3, **SMALL)
    variables = init(three)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, init(one))
    assert variables["params"]["f"]["conv1_1"]["kernel"].shape == (5, 5, 3 + 4, 4)
    images = jax.random.uniform(jax.random.key(1), (2, 24, 28, 3))
    logits = apply(three, variables, images)
    assert logits.shape == (3, 2, 24, 28, 4)
    np.testing.assert_allclose(logits[0], apply(one, variables, images)[0], rtol=1e-5, atol=1e-5)
    f = PatchClassifier(4, ((4,), (6,)), fc6_kernel=1, conv_kernel=5, pool_window=2,
                        activation="tanh", hidden=0)
    f_variables = {"params": variables["params"]["f"]}
    second = f.apply(f_variables, jnp.concatenate([images, jax.nn.softmax(logits[0])], -1),
                     train=False)
    np.testing.assert_allclose(logits[1], second, rtol=1e-4, atol=1e-5)


def test_each_instance_widens_the_context_by_f_s_patch():
    """A pixel 10 columns away is outside one instance's 16x16 patch, inside two instances'."""
    model = RecurrentConvNet(instances=2, **SMALL)
    variables = init(model, (16, 40))
    image = jax.random.uniform(jax.random.key(2), (1, 16, 40, 3))
    changed = image.at[0, 8, 30].set(1.0 - image[0, 8, 30])
    before, after = apply(model, variables, image), apply(model, variables, changed)
    moved = np.abs(np.asarray(after - before)).max(axis=-1)[:, 0, 8]  # (instances, columns)
    assert moved[0, 20] == 0 and moved[1, 20] > 0  # 10 columns left of the changed pixel
    assert moved[0, 23] > 0  # 7 columns: inside one patch


def test_bad_inputs_say_what_is_expected():
    model = RecurrentConvNet(instances=2, **SMALL)
    variables = init(model)
    with pytest.raises(ValueError, match=r"RGB images \(N, H, W, 3\)"):
        model.apply(variables, jnp.zeros((1, 24, 28, 1)), train=False)
    with pytest.raises(ValueError, match="instances must be >= 1; got 0"):
        init(RecurrentConvNet(instances=0, **SMALL))


def test_table_rows_are_runs_of_1_2_3_instances_reporting_every_instance(tmp_path, tfds_dir):
    """The 2-instance row trains through the table command and reports both instances' metrics
    (the last instance's are the row's); the table lists the three rows (the other two, the same
    network with another `instances`, are left untrained here: the suite's time)."""
    path = str(ROOT / "experiments" / "pinheiro.py")
    overrides = fast_overrides("pinheiro", tfds_dir, **{"train.num_steps": 2})
    table.run_table(path, "2-instances,mini", tmp_path, overrides=overrides)
    run = table.run_dir(tmp_path, "2-instances,mini")
    metrics = table.finished_metrics(run, 2)
    assert {"instance_1/pixel_accuracy", "instance_2/mean_iou"} <= set(metrics)
    assert "instance_3/pixel_accuracy" not in metrics
    assert metrics["pixel_accuracy"] == metrics["instance_2/pixel_accuracy"]
    assert (run / "pictures" / "step_000002.png").is_file()
    markdown = table.run_table(path, "mini", tmp_path, overrides=overrides, collect_only=True)
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["1-instance", "2-instances", "3-instances"]
    assert f"| {table._format(metrics['pixel_accuracy'])} |" in rows[1]


def test_paper_rows_trace_on_the_stanford_background_fixture(tmp_path):
    """The paper-scale rows (fold 1 held out, the paper's 8x8/2x2/tanh f) read the builder's
    fixture into the 320x240 canvas, and the 3-instance step traces at full size."""
    from segattn_jax.data import pipeline
    from segattn_jax.train import loop
    from segattn_jax.train.config import load_experiment
    from tests.conftest import traced_step
    from tests.data.test_stanford_background import prepare, write_download

    module = load_experiment(ROOT / "experiments" / "pinheiro.py")
    assert [module.get_config(r).model.instances for r in module.ROWS] == [1, 2, 3]
    config = module.get_config("3-instances")
    assert (config.dataset.train_split, config.dataset.eval_split) == (
        "fold2+fold3+fold4+fold5", "fold1")
    assert (config.model.conv_kernel, config.model.pool_window, config.model.activation,
            config.model.hidden) == (8, 2, "tanh", 0)
    write_download(tmp_path / "manual")
    prepare(tmp_path / "manual", tmp_path / "data")
    config.update_from_flattened_dict({"dataset.data_dir": str(tmp_path / "data"),
                                       "train.batch_size": 2, "eval.batch_size": 2,
                                       "mesh.data": 1})
    experiment = loop.Experiment(config, tmp_path / "run")
    batch = next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
        global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
    assert batch["image"].shape == (2, 240, 320, 3)
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert predictions["instance_label_maps"].shape == (2, 3, 240, 320)
    assert {"loss", "instance_3/pixel_accuracy"} <= set(metrics)


def test_the_recurrent_task_learns(tfds_dir):
    """Learning test: the 2-instance network (the mini rows' f) with the recurrent task's loss
    on every instance segments noisy red and green boxes: held-out mean IU of the last instance
    above 60."""
    config = experiment_config("pinheiro", "2-instances,mini", tfds_dir, **{
        "model.num_classes": 3, "optimizer.learning_rate": 1e-2, "optimizer.warmup_steps": 10})
    task, variables, test = trained_on_coloured_boxes(config)
    predictions = jax.jit(task.predict)(variables, task.inputs(test))
    metrics = task.summarize(task.statistics(test, predictions))
    assert metrics["mean_iou"] > 60.0, metrics

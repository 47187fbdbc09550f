"""The patch classifier: its geometry, the lectures' claim that sliding it over an image and running
it convolutionalized give the same label map, and its table trained on the embedded scenes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax import table
from segattn_jax.train import loop
from segattn_jax.models.patch_classifier import PatchClassifier, patch_size, sliding_window_logits
from tests.conftest import ROOT, experiment_config, fast_overrides

SMALL = dict(num_classes=5, features=((4, 4), (8,)), fc6_kernel=3, hidden=8)  # 23x23 patches


def small_model_and_variables(seed=0):
    model = PatchClassifier(**SMALL)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 24, 24, 3)), train=False)
    return model, variables


def images(shape, seed=1):
    return jax.random.uniform(jax.random.key(seed), shape)


def test_patch_size_traces_fc6_back_through_convs_and_pools():
    # fc6 5 <- pool 3/2: 11 <- two 3x3 convs: 15 <- pool: 31 <- two convs: 35.
    assert patch_size(((16, 16), (32, 32)), 5) == 35
    assert patch_size(((4, 4), (8,)), 3) == 23  # 3 <- pool: 7 <- conv: 9 <- pool: 19 <- 23
    assert PatchClassifier(num_classes=2, features=((8,),), fc6_kernel=1).patch_size == 5
    # Pinheiro's f: 1 <- 2x2 pool: 2 <- 8x8 conv: 9 <- pool: 18 <- conv: 25.
    assert patch_size(((25,), (50,)), 1, conv_kernel=8, pool_window=2) == 25


def test_one_pixels_logits_see_exactly_its_centred_patch():
    """The gradient of one output pixel's logits w.r.t. the image is nonzero on the P x P window
    centred on that pixel and nowhere else: the dense net labels each pixel from its own patch."""
    model, variables = small_model_and_variables()
    size, (row, col) = model.patch_size, (12, 17)  # windows inside the 40x40 image

    def pixel_score(image):
        return model.apply(variables, image, train=False)[0, row, col].sum()

    grad = np.abs(np.asarray(jax.jit(jax.grad(pixel_score))(images((1, 40, 40, 3)))))[0].sum(-1)
    rows, cols = np.nonzero(grad)
    half = size // 2
    assert (rows.min(), rows.max()) == (row - half, row + half)
    assert (cols.min(), cols.max()) == (col - half, col + half)


def test_sliding_window_runs_the_classifier_on_each_pixels_patch():
    model, variables = small_model_and_variables()
    image = images((2, 10, 12, 3))
    logits = jax.jit(lambda v, x: sliding_window_logits(model, v, x))(variables, image)
    padded, size = np.asarray(model.pad(image)), model.patch_size
    for row, col in [(0, 0), (4, 7), (9, 11)]:
        patch = padded[:, row:row + size, col:col + size]
        expected = model.apply(variables, patch, method=PatchClassifier.classify_patches)
        np.testing.assert_allclose(logits[:, row, col], expected, rtol=1e-5, atol=1e-5)


# Pinheiro & Collobert's f (models/pinheiro.py): 8x8 convolutions, 2x2 pools, tanh, a linear
# classifier, over the image and the previous instance's class scores (3 + 4 channels).
PINHEIRO_F = dict(num_classes=4, features=((4,), (6,)), fc6_kernel=1, conv_kernel=8,
                  pool_window=2, activation="tanh", hidden=0)


@pytest.mark.parametrize("fields,channels", [(SMALL, 3), (dict(num_classes=9), 3), (PINHEIRO_F, 7)],
                         ids=["small", "mini", "pinheiro_f"])
def test_sliding_window_and_convolutionalized_give_the_same_label_map(fields, channels):
    model = PatchClassifier(**fields)
    image = images((2, 20, 23, channels))
    variables = model.init(jax.random.key(3), image, train=False)
    dense = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, image)
    sliding = jax.jit(lambda v, x: sliding_window_logits(model, v, x))(variables, image)
    assert dense.shape == sliding.shape == (2, 20, 23, fields["num_classes"])
    np.testing.assert_allclose(dense, sliding, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(dense, -1), np.argmax(sliding, -1))


def test_fc6_is_one_matrix_used_as_a_dense_layer_and_as_a_convolution():
    model, variables = small_model_and_variables()
    assert variables["params"]["fc6"]["kernel"].shape == (3 * 3 * 8, 8)
    assert sorted(variables["params"]) == ["conv1_1", "conv1_2", "conv2_1", "fc6", "fc7", "score"]
    linear = PatchClassifier(**PINHEIRO_F).init(jax.random.key(0), jnp.zeros((1, 25, 25, 7)),
                                                 train=False)["params"]
    assert sorted(linear) == ["conv1_1", "conv2_1", "score"]  # hidden=0: fc6 is the classifier
    assert linear["score"]["kernel"].shape == (6, 4)


def test_bad_inputs_say_what_is_expected():
    model, variables = small_model_and_variables()
    with pytest.raises(ValueError, match=r"patches of shape \(N, 23, 23, C\)"):
        model.apply(variables, jnp.zeros((2, 20, 20, 3)), method=PatchClassifier.classify_patches)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        model.apply(variables, jnp.zeros((20, 20, 3)), train=False)
    with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
        PatchClassifier(num_classes=2, activation="gelu").init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
    with pytest.raises(ValueError, match="at least one conv in every block"):
        PatchClassifier(num_classes=2, features=((4,), ())).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


def test_learns_the_shapes_of_a_batch(tmp_path, tfds_dir):
    """Learning test: trained on one batch of shapes/tiny with the mini row's recipe, the
    convolutionalized classifier labels the batch's shapes (mean IU on it above 40; an
    all-background map scores 9), and the sliding window labels the batch exactly alike."""
    config = experiment_config("patch_classifier", "mini", tfds_dir, **{
        "optimizer.learning_rate": 0.01, "optimizer.warmup_steps": 10, "train.num_steps": 150})
    experiment = loop.Experiment(config, tmp_path)
    batch = next(experiment.eval_batches())
    state = experiment.new_state()
    for _ in range(150):
        state, _ = experiment.train_step(state, batch)
    statistics = jax.device_get(jax.jit(experiment._eval_step)(state.variables, batch))
    metrics = experiment.task.summarize(statistics)
    assert metrics["differing_pixels"] == 0
    assert metrics["convolutionalized/mean_iou"] > 40, metrics


def test_table_rows_are_two_evaluations_of_one_run(tmp_path, tfds_dir):
    path = str(ROOT / "experiments" / "patch_classifier.py")
    overrides = fast_overrides("patch_classifier", tfds_dir, **{"train.num_steps": 2})
    markdown = table.run_table(path, "mini", tmp_path, overrides=overrides)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["patch_classifier"]
    metrics = table.finished_metrics(tmp_path / "patch_classifier", 2)
    assert metrics["differing_pixels"] == 0
    for name in ("pixel_accuracy", "mean_iou", "differing_pixels"):
        assert metrics[f"sliding_window/{name}"] == metrics[f"convolutionalized/{name}"]
    rows = [line for line in markdown.splitlines() if line.startswith(("| sliding", "| convol"))]
    assert len(rows) == 2 and rows[0].split("|")[2:] == rows[1].split("|")[2:], markdown

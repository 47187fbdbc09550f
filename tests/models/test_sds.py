"""SDS and Hypercolumns: the location-specific hypercolumn classifiers in their efficient form
are the paper's (classify the upsampled, concatenated hypercolumn, then interpolate between the
grid's classifiers); the region pathway sees only the region; the rows train and evaluate
through the loop on shapes with cached grouping proposals; the paper-scale rows trace a step on
SBD instances prepared from a fixture in the download's format."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segattn_jax.models.sds import SDS, HypercolumnClassifier
from segattn_jax.train import loop
from tests.conftest import experiment_config, paper_scale_batch, traced_step
from tests.data.test_sbd_instances import build_sbd


def test_hypercolumn_classifiers_classify_the_upsampled_hypercolumn_then_interpolate():
    classes, grid, size, n = 3, 4, 12, 5
    rng = np.random.default_rng(0)
    layers = {"pool2": rng.normal(size=(n, 6, 6, 4)), "conv4_3": rng.normal(size=(n, 3, 3, 5)),
              "fc7": rng.normal(size=(n, 7))}
    layers = {k: jnp.asarray(v, jnp.float32) for k, v in layers.items()}
    labels = jnp.array([0, 2, 1, 2, 0])
    head = HypercolumnClassifier(classes, grid, size)
    params = jax.tree.map(  # random biases too
        lambda x: x + jnp.asarray(rng.normal(size=x.shape), x.dtype),
        head.init(jax.random.key(0), layers, labels))
    ours = np.asarray(head.apply(params, layers, labels))

    # The paper's form: every layer upsampled to size x size (bilinear at pixel centres),
    # concatenated; each of the grid x grid classifiers of the region's class scores every
    # pixel; a pixel's score is the bilinear blend of the classifiers nearest to it.
    hypercolumn = np.concatenate(
        [np.asarray(jax.image.resize(layers[k], (n, size, size, layers[k].shape[-1]), "linear"))
         for k in ("conv4_3", "pool2")]
        + [np.broadcast_to(np.asarray(layers["fc7"])[:, None, None], (n, size, size, 7))], -1)
    names = ("conv4_3", "pool2", "fc7")
    kernel = np.concatenate([np.asarray(params["params"][f"{k}_kernel"]) for k in names])
    kernel = kernel.reshape(len(kernel), -1)  # (channels, classes * cells)
    bias = sum(np.asarray(params["params"][f"{k}_bias"]) for k in names).reshape(-1)
    scores = (hypercolumn @ kernel + bias).reshape(n, size, size, classes, grid * grid)
    scores = scores[np.arange(n), :, :, np.asarray(labels)]  # (n, size, size, grid * grid)
    centres = (np.arange(grid) + 0.5) / grid
    pixel = (np.arange(size) + 0.5) / size
    blend = np.stack([np.interp(pixel, centres, np.eye(grid)[k]) for k in range(grid)], -1)
    expected = np.einsum("nijab,ia,jb->nij", scores.reshape(n, size, size, grid, grid),
                         blend, blend)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_region_pathway_sees_the_region_and_the_image_mean_elsewhere():
    model = SDS(num_classes=2, width=0.0625, feature_layer="conv4_3", warp_size=16,
                context_padding=0.0)
    images = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 32, 32, 3)), jnp.float32)
    boxes = jnp.array([[[0.0, 0.0, 32.0, 32.0]]])
    masks = jnp.zeros((1, 1, 8, 8)).at[..., :4].set(1.0)  # the box's left half
    box_crop, region_crop = model.crops(images, boxes, masks)
    box_crop, region_crop = np.asarray(box_crop[0, 0]), np.asarray(region_crop[0, 0])
    np.testing.assert_allclose(region_crop[:, :8], box_crop[:, :8])
    np.testing.assert_allclose(region_crop[:, 8:], np.broadcast_to(
        np.asarray(images).mean((1, 2))[0], region_crop[:, 8:].shape), rtol=1e-5)


def test_hypercolumns_mini_row_trains_and_evaluates(tfds_dir, tmp_path):
    """The Hypercolumns row: the SDS detector and the hypercolumn masks; the proposals' masks
    come through the input pipeline from the cache."""
    config = experiment_config("sds", "Hypercolumns,mini", tfds_dir, **{"train.num_steps": 2})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    for name in ("APr50", "APr70", "mAP"):
        assert 0.0 <= metrics[name] <= 100.0, metrics
    assert metrics["seconds_per_image"] > 0 and metrics["proposal_seconds_per_image"] > 0
    assert (tmp_path / "pictures" / "step_000002.png").is_file()


def test_sds_train_step_is_finite_and_its_masks_refine_the_regions(tfds_dir, tmp_path):
    """SDS's row (coarse refinement): a finite step with gradients in both pathways; at
    initialization a detection's mask is its region's own mask (the refinement starts there)."""
    config = experiment_config("sds", "SDS,mini", tfds_dir)
    experiment = loop.Experiment(config, tmp_path)
    batch = next(experiment.eval_batches())
    assert batch["proposal_masks"].shape == (8, 32, 16, 16)  # the cache's 16 x 16 regions
    task = experiment.task
    state = experiment.new_state()
    state, metrics = experiment.train_step(state, batch)
    assert np.isfinite(float(metrics["loss"])) and float(metrics["mask"]) > 0
    predictions = jax.device_get(jax.jit(task.predict)(experiment.new_state().variables,
                                                       task.inputs(batch)))
    keep = predictions["valid"]
    regions = np.take_along_axis(np.asarray(batch["proposal_masks"]),
                                 predictions["indices"][..., None, None], axis=1)[keep]
    masks = predictions["masks"][keep]
    m = masks.shape[-1]
    upsampled = np.asarray(jax.image.resize(regions, (len(regions), m, m), "linear"))
    assert len(masks) and np.mean((masks >= 0.5) == (upsampled >= 0.5)) > 0.9


@pytest.fixture(scope="module")
def sbd_data_dir(tmp_path_factory) -> str:
    """SBD instances prepared once for the module: both rows read the same grouping regions."""
    return build_sbd(tmp_path_factory.mktemp("sbd"))


@pytest.mark.parametrize("row", ["SDS", "Hypercolumns"])
def test_paper_scale_rows_trace_a_step_on_the_sbd_fixture(row, sbd_data_dir, tmp_path):
    experiment, batch = paper_scale_batch("sds", row, sbd_data_dir, tmp_path / "run")
    assert batch["image"].shape == (2, 512, 512, 3) and batch["masks"].shape == (2, 64, 112, 112)
    assert batch["proposals"].shape == (2, 2000, 4)
    assert batch["proposal_masks"].shape == (2, 2000, 16, 16)
    assert batch["proposal_valid"].any(axis=1).all()
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert metrics["mask"].shape == () and predictions["masks"].shape == (2, 100, 28, 28)


def test_without_region_proposals_sds_says_which_method_makes_them(tfds_dir):
    from segattn_jax.tasks import build_task
    for method in ("", "selective_search"):
        config = experiment_config("sds", "SDS,mini", tfds_dir,
                                   **{"dataset.proposals.method": method})
        with pytest.raises(ValueError, match="proposals.method=hierarchical_grouping"
                           if method else "set --config.dataset.proposals.method"):
            build_task(config)

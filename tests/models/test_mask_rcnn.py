"""Mask R-CNN: its mask losses against direct transcriptions, the learning test (the mini row's
model; the instance task's loop run and pictures are MNC's mini-row test), the paper-scale rows
on COCO instances prepared from a fixture, and the task's refusal to run without masks."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segattn_jax.backbones import pretrained
from segattn_jax.models.mask_rcnn import MaskRCNN, mask_loss
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from tests.conftest import ROOT, experiment_config, paper_scale_batch, traced_step
from tests.data.test_coco_instances import build_coco
from tests.models.detection_checks import learn_one_batch

PAPER_ROWS = ["R-50-C4", "R-50-FPN", "R-101-FPN", "X-101-FPN", "R-50-C4-RoIPool",
              "R-50-C4-softmax", "R-50-FPN-RoIPool", "R-50-FPN-softmax"]


def test_mask_losses_read_only_the_ground_truth_class():
    """Sigmoid: the binary cross-entropy of the RoI's class channel, mean over pixels, then over
    the foreground RoIs (the others' channels get no gradient); softmax: the per-pixel
    cross-entropy over background + classes with the class inside the mask."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(1, 3, 4, 4, 3)), jnp.float32)
    targets = jnp.asarray(rng.uniform(size=(1, 3, 4, 4)) > 0.5, jnp.float32)
    labels = jnp.array([[2, 1, 0]])  # object classes 1 and 0, then a background RoI
    weights = jnp.array([[1.0, 1.0, 0.0]])
    bce = optax.sigmoid_binary_cross_entropy
    expected = (bce(logits[0, 0, ..., 1], targets[0, 0]).mean()
                + bce(logits[0, 1, ..., 0], targets[0, 1]).mean()) / 2
    np.testing.assert_allclose(mask_loss(logits, labels, targets, weights), expected, rtol=1e-6)
    grad = jax.grad(lambda x: mask_loss(x, labels, targets, weights))(logits)
    assert not np.asarray(grad[0, 0, ..., [0, 2]]).any() and np.asarray(grad[0, 0, ..., 1]).any()
    assert not np.asarray(grad[0, 2]).any()
    classes = np.where(np.asarray(targets) > 0.5, np.asarray(labels)[..., None, None], 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(classes))
    np.testing.assert_allclose(mask_loss(logits, labels, targets, weights, "softmax"),
                               (ce[0, 0].mean() + ce[0, 1].mean()) / 2, rtol=1e-6)


@pytest.mark.parametrize("row", ["R-50-FPN", "R-50-C4"])
def test_mask_rcnn_learns_the_masks_of_a_batch(row, tfds_dir, tmp_path):
    """The learning test of the instance-segmentation task: 150 steps on one batch of
    shapes/tiny scenes take its mask APr@0.5 (VOC protocol) from 0 to 73 (FPN, measured; 88
    after 200 steps; box mAP 95; C4: 0 to 64); a step with an image without objects stays
    finite. The mini table (README) measures generalization."""
    config = experiment_config("mask_rcnn", f"{row},mini", tfds_dir,
                               **{"task.ap_metric": "voc"})
    if row == "R-50-C4":
        with config.unlocked():
            config.model.rpn_samples = 128  # of 240 anchors on its 4x4 conv4
    before, after = learn_one_batch(config, tmp_path, 150, metric="APr50")
    assert before < 5.0 and after > 40.0, (before, after)


@pytest.fixture(scope="module")
def coco_data_dir(tmp_path_factory) -> str:
    """COCO instances prepared once for the module from the fixture in the download's format."""
    tmp_path = tmp_path_factory.mktemp("coco")
    build_coco(tmp_path)
    return str(tmp_path / "data")


@pytest.mark.parametrize("row", PAPER_ROWS)
def test_paper_scale_rows_trace_a_step_on_the_coco_fixture(row, coco_data_dir, tmp_path):
    """Each paper-scale config (coco_instances 2017, 1344x1344 canvas, ResNet-50/101-FPN or
    ResNeXt-101-FPN with frozen batch norm and its stem and conv2 frozen, SGD) reads COCO
    instances prepared from a fixture in the download's format and traces its train step and
    predictions (`traced_step`; the mini row compiles and runs the same model)."""
    experiment, batch = paper_scale_batch("mask_rcnn", row, coco_data_dir, tmp_path / "run")
    # 30x40 images: shorter side 800 (longer 1067 <= 1333), in the canvas; 3 objects, 1 crowd.
    assert batch["image"].shape == (2, 1344, 1344, 3)
    np.testing.assert_array_equal(batch["image_hw"], [[800, 1067]] * 2)
    assert batch["masks"].shape == (2, 100, 112, 112)
    assert sorted(batch["box_valid"].sum(1)) == [0, 3] and batch["difficult"].sum() == 1
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert metrics["mask"].shape == () and metrics["loss"].shape == ()
    resolution = 14 if "-C4" in row else 28  # the paper's Figure 4: C4 14x14, FPN 28x28
    assert predictions["masks"].shape == (2, 100, resolution, resolution)


def test_c4_head_is_the_imagenet_resnets_conv5():
    """The C4 model's backbone holds exactly ResNet-50's ImageNet variables (classifier aside),
    conv5 included, so `init_from` a converted ResNet-50 loads its RoI head too; its RPN sees
    conv4 (stride 16) with 15 anchors a position."""
    model = MaskRCNN(num_classes=80, architecture="c4")
    inputs = {"image": jnp.zeros((1, 128, 128, 3)), "image_hw": jnp.array([[128, 128]])}
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs))
    ours = flax.traverse_util.flatten_dict({k: v["backbone"] for k, v in variables.items()})
    imagenet = pretrained.variables_template("resnet50", 0)
    assert {p: a.shape for p, a in ours.items()} == {p: a.shape for p, a in imagenet.items()}
    assert any(path[1].startswith("conv5_block3") for path in ours)
    assert variables["params"]["rpn"]["objectness"]["kernel"].shape == (1, 1, 1024, 15)
    with pytest.raises(ValueError, match="architecture"):
        MaskRCNN(num_classes=80, architecture="c5").init(jax.random.key(0), inputs)


def test_instance_segmentation_without_masks_says_what_to_set(tfds_dir):
    config = experiment_config("mask_rcnn", "R-50-FPN,mini", tfds_dir,
                               **{"dataset.preprocess.mask_size": None})
    with pytest.raises(ValueError, match="dataset.preprocess.mask_size"):
        build_task(config)
    with pytest.raises(ValueError, match="mini rows are"):
        load_experiment(ROOT / "experiments" / "mask_rcnn.py").get_config("R-101-FPN,mini")

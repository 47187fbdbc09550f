"""YOLO and SSD: the losses against the papers' equations written as loops, SSD's default boxes
and hard negative mining, finite train steps on images without objects, a mini row trained
and evaluated, the paper-scale rows on mocked VOC, and a learning test per detector."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from segattn_jax.data import pipeline
from segattn_jax.models.ssd import SSD, default_box_scales, default_boxes, hard_negatives, ssd_loss
from segattn_jax.models.yolo import YOLO, yolo_loss
from segattn_jax.ops import boxes as box_ops
from segattn_jax.tasks import build_task
from segattn_jax.train import loop
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import initial_variables
from tests.conftest import ROOT, experiment_config, traced_step
from tests.models.detection_checks import learn_one_batch
from tests.data.test_detection_data import voc_like_as_dataset

EXPERIMENT = ROOT / "experiments" / "single_shot.py"
# Rows whose models differ; the others differ from one of these only in the augmentation,
# which every row's config is checked for below.
STEPPED_ROWS = ["YOLO", "Fast-YOLO", "SSD300*", "SSD512"]


def test_ssd300_has_the_papers_8732_default_boxes_with_eq4_scales():
    """SSD300's sources are 38, 19, 10, 5, 3, 1 with 4, 6, 6, 6, 4, 4 boxes: 8732 (the paper);
    conv4_3's first cell holds boxes of 30 px and sqrt(30 * 60) px centred at 300 / 38 / 2."""
    model = SSD(num_classes=20)
    inputs = {"image": jnp.zeros((1, 300, 300, 3)), "image_hw": jnp.full((1, 2), 300)}
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), inputs))
    logits, offsets, defaults = jax.eval_shape(
        lambda v: model.apply(v, inputs["image"], method=SSD.raw_outputs), variables)
    assert logits.shape == (1, 8732, 21) and offsets.shape == (1, 8732, 4)
    assert defaults.shape == (8732, 4)
    # Eq. 4 with m = 5 layers from 0.2 to 0.9 after conv4_3's 0.1, and one step more.
    np.testing.assert_allclose(default_box_scales(6), [0.1, 0.2, 0.375, 0.55, 0.725, 0.9, 1.075])
    boxes = np.asarray(default_boxes([(38, 38)], 300, [0.1, 0.2], [(2,)]))
    center = 300 / 38 / 2
    side, between = 30.0, math.sqrt(30.0 * 60.0)
    wide = (30 * math.sqrt(2), 30 / math.sqrt(2))
    np.testing.assert_allclose(boxes[:4], center + np.array([
        [-side / 2, -side / 2, side / 2, side / 2],
        [-between / 2, -between / 2, between / 2, between / 2],
        [-wide[0] / 2, -wide[1] / 2, wide[0] / 2, wide[1] / 2],
        [-wide[1] / 2, -wide[0] / 2, wide[1] / 2, wide[0] / 2]]), rtol=1e-5)
    assert boxes.shape == (38 * 38 * 4, 4)
    np.testing.assert_allclose(boxes[4, :2] - boxes[0, :2], [300 / 38, 0], rtol=1e-5)


def test_hard_negatives_keep_the_highest_loss_negatives_at_three_to_one():
    rng = np.random.default_rng(0)
    loss = rng.uniform(size=(3, 50)).astype(np.float32)
    negative = rng.uniform(size=(3, 50)) < 0.8
    positives = np.array([2, 0, 20])
    mined = np.asarray(hard_negatives(jnp.asarray(loss), jnp.asarray(negative),
                                      jnp.asarray(positives), 3.0))
    for i in range(3):
        candidates = np.flatnonzero(negative[i])
        expected = candidates[np.argsort(-loss[i, candidates])][:3 * positives[i]]
        np.testing.assert_array_equal(np.flatnonzero(mined[i]), np.sort(expected))


def test_ssd_loss_worked_example():
    """One object equal to default box 0: box 0 is the one positive (class 2 + 1), its offsets
    are the targets (box loss 0), and the class loss is the positive's softmax loss plus the 3
    highest-loss negatives', over N = 1. An image without objects adds nothing."""
    defaults = jnp.asarray([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 20, 10, 30],
                            [60, 60, 70, 70], [80, 0, 90, 10]], jnp.float32)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 4)), jnp.float32)
    targets = {"boxes": jnp.asarray([[[0, 0, 10, 10]], [[0, 0, 0, 0]]], jnp.float32),
               "classes": jnp.asarray([[2], [0]]), "box_valid": jnp.asarray([[True], [False]])}
    offsets = jnp.zeros((2, 6, 4)).at[1].set(5.0)  # the empty image's offsets are never read
    losses, metrics = ssd_loss(logits, offsets, defaults, targets)
    log_softmax = np.asarray(jax.nn.log_softmax(logits[0]))
    negative_losses = np.sort(-log_softmax[1:, 0])[::-1]
    expected = -log_softmax[0, 3] + negative_losses[:3].sum()
    np.testing.assert_allclose(float(losses["class"]), expected, rtol=1e-5)
    assert float(losses["box"]) == 0.0
    assert float(metrics["positives_per_image"]) == 0.5


def _yolo_loss_loops(out, gt_boxes, gt_classes, grid, size, lambda_coord=5.0, lambda_noobj=0.5):
    """The paper's eq. 3, cell by cell, for one image whose objects lie in different cells."""
    cell = size / grid
    total = 0.0
    owner = {}
    for box, label in zip(gt_boxes, gt_classes):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        owner[(int(cy // cell), int(cx // cell))] = (box, label)
    for i in range(grid):
        for j in range(grid):
            predictions = out["box"][i, j]
            confidences = out["confidence"][i, j]
            if (i, j) not in owner:
                total += lambda_noobj * np.sum(confidences ** 2)
                continue
            box, label = owner[(i, j)]
            pixel = []
            for p in predictions:  # centre in the cell, sqrt of the size relative to the image
                cx, cy = (p[0] + j) * cell, (p[1] + i) * cell
                half_w, half_h = p[2] ** 2 * size / 2, p[3] ** 2 * size / 2
                pixel.append((cx - half_w, cy - half_h, cx + half_w, cy + half_h))
            ious = box_ops.pairwise_iou(np.array(pixel, np.float32),
                                        np.array([box], np.float32))[:, 0]
            r = int(np.argmax(ious))
            tx, ty = (box[0] + box[2]) / 2 / cell - j, (box[1] + box[3]) / 2 / cell - i
            tw, th = math.sqrt((box[2] - box[0]) / size), math.sqrt((box[3] - box[1]) / size)
            p = predictions[r]
            total += lambda_coord * ((p[0] - tx) ** 2 + (p[1] - ty) ** 2 + (p[2] - tw) ** 2
                                     + (p[3] - th) ** 2)
            total += (confidences[r] - ious[r]) ** 2
            total += lambda_noobj * sum(c ** 2 for k, c in enumerate(confidences) if k != r)
            onehot = np.eye(out["class_probs"].shape[-1])[label]
            total += np.sum((out["class_probs"][i, j] - onehot) ** 2)
    return total


def test_yolo_loss_matches_the_papers_equation_written_as_loops():
    grid, size, num_classes, per_cell = 4, 64.0, 3, 2
    rng = np.random.default_rng(2)
    out = {"class_probs": rng.uniform(size=(1, grid, grid, num_classes)),
           "confidence": rng.uniform(size=(1, grid, grid, per_cell)),
           "box": rng.uniform(0.2, 0.8, size=(1, grid, grid, per_cell, 4))}
    out = {k: v.astype(np.float32) for k, v in out.items()}
    gt = np.array([[[3, 5, 20, 30], [40, 36, 62, 60], [0, 0, 0, 0]]], np.float32)
    classes = np.array([[1, 2, 0]])
    model = YOLO(num_classes=num_classes, grid=grid, boxes_per_cell=per_cell)
    pixel = model.pixel_boxes(jnp.asarray(out["box"]), size)
    losses, _ = yolo_loss({k: jnp.asarray(v) for k, v in out.items()}, pixel,
                          {"boxes": gt, "classes": classes,
                           "box_valid": np.array([[True, True, False]])},
                          grid=grid, size=size, lambda_coord=5.0, lambda_noobj=0.5)
    expected = _yolo_loss_loops({k: v[0] for k, v in out.items()}, gt[0, :2], classes[0, :2],
                                grid, size)
    np.testing.assert_allclose(float(sum(losses.values())), expected, rtol=1e-5)


def _batch() -> dict:
    """Two 128x128 images: the first without objects, the second with one real and one
    degenerate (zero-width) box."""
    boxes = np.zeros((2, 4, 4), np.float32)
    boxes[1, 0] = [16, 16, 80, 80]
    boxes[1, 1] = [40, 40, 40, 60]
    return {"image": np.random.default_rng(0).uniform(size=(2, 128, 128, 3)).astype(np.float32),
            "image_hw": np.full((2, 2), 128, np.int32), "boxes": boxes,
            "classes": np.array([[0, 0, 0, 0], [3, 1, 0, 0]], np.int32),
            "difficult": np.zeros((2, 4), bool),
            "box_valid": np.array([[False] * 4, [True, True, False, False]])}


def test_predict_warps_other_sizes_and_maps_boxes_back(tfds_dir):
    """`predict` on an image file of another size: the detector reads it warped to its input
    size, and its boxes come back in the file's pixels."""
    config = experiment_config("single_shot", "SSD300,mini", tfds_dir)
    task = build_task(config)
    variables = initial_variables(task, jax.random.key(0), task.inputs(_batch()))
    image = np.random.default_rng(1).uniform(size=(90, 200, 3)).astype(np.float32)
    detections = jax.jit(task.predict)(variables, task.inputs_for_image(image))
    kept = np.asarray(detections["boxes"][0])[np.asarray(detections["valid"][0])]
    assert len(kept) and (kept[:, [0, 2]] <= 200).all() and (kept[:, [1, 3]] <= 90).all()
    assert kept[:, 2].max() > 128  # boxes reach past the network's 128 px: mapped back


def test_mini_row_trains_and_evaluates(tfds_dir, tmp_path):
    """SSD300's mini row (YOLO trains and evaluates in its paper-scale test)."""
    config = experiment_config("single_shot", "SSD300,mini", tfds_dir, **{"train.num_steps": 2})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    assert 0.0 <= metrics["mAP"] <= 100.0 and metrics["seconds_per_image"] > 0
    assert "AP/star" in metrics
    assert (tmp_path / "pictures" / "step_000002.png").is_file()


def test_faster_rcnn_row_is_the_rcnn_experiments_config_in_this_table():
    """rcnn.py's Faster R-CNN trained in one run; the mini row at this table's input size (its
    YOLO and SSD rows' 128x128, with anchors for it), from scratch: the table times it."""
    experiment = load_experiment(EXPERIMENT)
    for arg, rcnn_arg in (("Faster-R-CNN,mini", "Faster-R-CNN-joint,mini"),
                          ("Faster-R-CNN", "Faster-R-CNN-joint-07+12")):
        config = experiment.get_config(arg)
        rcnn = load_experiment(ROOT / "experiments" / "rcnn.py").get_config(rcnn_arg)
        sized = set()
        if arg.endswith(",mini"):
            size = experiment.get_config("SSD300,mini").dataset.preprocess.warp_size
            assert tuple(config.dataset.preprocess.canvas) == (size, size) == (128, 128)
            assert config.model.anchor_scales == (1.0, 2.0, 4.0)  # 16-64 px objects
            assert not config.init_from_runs and not config.requires_init_from
            sized = {"canvas", "min_side", "max_side", "anchor_scales", "pre_nms_train",
                     "pre_nms_test", "min_proposal_size"}

        def unsized(group):
            return {k: v for k, v in group.items() if k not in sized}
        assert unsized(config.model) == unsized(rcnn.model)
        assert unsized(config.dataset.preprocess) == unsized(rcnn.dataset.preprocess)
        assert (config.experiment, config.row) == ("single_shot", "Faster-R-CNN")
        assert config.paper.mAP == 73.2
    assert experiment.table_runs("mini") == [f"{row},mini" for row in experiment.MINI_ROWS]


def test_paper_scale_configs_warp_to_the_models_input_with_their_augmentation():
    experiment = load_experiment(EXPERIMENT)
    augment = {"YOLO": "yolo", "Fast-YOLO": "yolo", "SSD300": "ssd", "SSD300*": "ssd_zoom",
               "SSD300-flip-only": "flip", "SSD512": "ssd", "SSD512*": "ssd_zoom"}
    for row, expected in augment.items():
        config = experiment.get_config(row)
        assert config.dataset.preprocess.warp_size == config.model.input_size
        assert config.dataset.preprocess.augment == expected, row
        assert config.dataset.extra_train == ("voc/2012:train+validation",)
        assert config.paper.mAP == experiment.PAPER[row]["mAP"]


@pytest.mark.parametrize("row", STEPPED_ROWS)
def test_paper_scale_row_trains_and_evaluates_on_mock_voc(row, tmp_path, monkeypatch):
    """The paper-scale config (voc/2007 + voc/2012 trainval -> 2007 test at 448 / 300 / 512,
    the paper's augmentation and SGD recipe) runs a step and an eval offline on mocked VOC;
    only the width is cut (1/16). YOLO's is compiled and run (its only trained and evaluated
    config); the SSDs, whose layers the mini row compiles and runs at 128x128, and Fast-YOLO,
    which differs from YOLO in its layers only, trace their step (`traced_step`)."""
    compiled = row == "YOLO"
    config = load_experiment(EXPERIMENT).get_config(row)
    config.update_from_flattened_dict({"model.width": 0.0625, "train.batch_size": 2,
                                       "eval.batch_size": 2, "mesh.data": 1})
    if config.model.name == "yolo":
        config.model.hidden = 64  # not 4096 x the 7x7 map
    monkeypatch.setattr(pipeline, "num_examples", lambda builder, split: 4)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=4, as_dataset_fn=voc_like_as_dataset(4)):
        experiment = loop.Experiment(config, tmp_path / "run")
        batch = next(pipeline.train_iterator(
            config.dataset.name, config.dataset.train_split, preprocess=experiment.preprocess,
            global_batch_size=2, seed=0, data_dir=config.dataset.data_dir))
        assert batch["image"].shape[1:3] == (config.model.input_size,) * 2
        if not compiled:
            metrics, detections = traced_step(experiment, experiment.abstract_state, batch)
            assert metrics["loss"].shape == ()
            assert detections["boxes"].shape == (2, config.model.max_detections, 4)
            return
        state, metrics = experiment.train_step(experiment.new_state(), batch)
        result = experiment.evaluate(state.variables)
    assert np.isfinite(float(metrics["loss"])), metrics
    assert 0.0 <= result["mAP"] <= 100.0 and result["seconds_per_image"] > 0
    assert "AP/person" in result


@pytest.mark.parametrize("row, steps, bar", [("SSD300", 150, 40.0), ("YOLO", 150, 40.0)])
def test_detector_learns_to_detect_the_objects_of_a_batch(row, steps, bar, tfds_dir, tmp_path):
    """The learning test of each loss: `steps` steps on one batch of shapes/tiny scenes take
    the batch's VOC07 mAP from chance to above `bar`; a step with an image without objects
    stays finite. The mini table (README) measures generalization."""
    config = experiment_config("single_shot", f"{row},mini", tfds_dir,
                               **{"dataset.preprocess.augment": "none"})
    before, after = learn_one_batch(config, tmp_path, steps)
    assert before < 10.0 and after > bar, (before, after)

"""MNC: the cascade's gradient reaches stage 1's box regression (and not in the
no-box-gradient row), the mini row trains and evaluates through the loop (5 stages and mask
voting at test time), and the paper-scale rows trace a step on SBD instances prepared from a
fixture in the download's format."""
import jax
import numpy as np
import pytest

from segattn_jax.train import loop
from segattn_jax.train.state import initial_variables
from tests.conftest import experiment_config, paper_scale_batch, traced_step
from tests.data.test_sbd_instances import build_sbd


@pytest.mark.parametrize("row", ["MNC", "MNC-no-box-gradient"])
def test_stage_2_and_3_losses_reach_the_rpn_box_regression(row, tfds_dir, tmp_path):
    """The paper's point of differentiable RoI warping: the mask and classification losses alone
    (no RPN loss) have a gradient at the RPN's box-regression layer, through the boxes the RoIs
    are warped from; the ablation row (Faster R-CNN's approximate joint training) has none."""
    config = experiment_config("mnc", f"{row},mini", tfds_dir)
    experiment = loop.Experiment(config, tmp_path)
    batch = next(experiment.eval_batches())
    task = experiment.task
    variables = initial_variables(task, jax.random.key(0), task.inputs(batch))
    targets = {k: batch[k] for k in task.target_keys}

    def cascade_losses(params):
        losses, _, _ = task.model_losses({**variables, "params": params}, batch, targets,
                                         jax.random.key(1))
        return losses["mask"] + losses["head_class"] + losses["head_box"]

    grads = jax.jit(jax.grad(cascade_losses))(variables["params"])
    reached = np.abs(np.asarray(grads["rpn"]["deltas"]["kernel"])).sum() > 0
    assert reached == (row == "MNC")
    assert not np.asarray(grads["rpn"]["objectness"]["kernel"]).any()


def test_mini_row_trains_and_evaluates_with_five_stages(tfds_dir, tmp_path):
    # MNC-5-stage,mini evaluates the MNC run's weights; the same model trained here instead.
    config = experiment_config("mnc", "MNC,mini", tfds_dir,
                               **{"train.num_steps": 2, "model.stages": 5,
                                  "model.mask_voting": True})
    metrics = loop.train_and_evaluate(config, tmp_path)["eval"]
    for name in ("APr50", "APr70", "mAP", "proposal_recall50"):
        assert 0.0 <= metrics[name] <= 100.0, metrics
    assert metrics["seconds_per_image"] > 0
    assert (tmp_path / "pictures" / "step_000002.png").is_file()


@pytest.mark.parametrize("row", ["MNC", "MNC-5-stage"])
def test_paper_scale_rows_trace_a_step_on_the_sbd_fixture(row, tmp_path):
    # MNC-5-stage evaluates an MNC run's weights (evaluate_only, init_from that run); without
    # one, its step (MNC's) and its 5-stage predictions are traced here.
    experiment, batch = paper_scale_batch("mnc", row, build_sbd(tmp_path), tmp_path / "run",
                                          evaluate_only=False)
    # 20x30 images: shorter side 600 (longer 900 <= 1000) in the 1000x1000 canvas.
    assert batch["image"].shape == (2, 1000, 1000, 3) and batch["masks"].shape == (2, 64, 112, 112)
    np.testing.assert_array_equal(batch["image_hw"], [[600, 900]] * 2)
    metrics, predictions = traced_step(experiment, experiment.abstract_state, batch)
    assert metrics["mask"].shape == () and predictions["masks"].shape == (2, 100, 28, 28)

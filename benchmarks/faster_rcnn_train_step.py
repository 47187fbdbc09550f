"""Faster R-CNN train step at the paper's size: full-width VGG16, a 600x1000 input, batch 2,
21 classes (`experiments/rcnn.py:Faster-R-CNN-joint`, the whole network's step, with a 600x1000
canvas), 2000 proposals after NMS, 128 RoIs per image.

Reported: step time, images/s, XLA's FLOP count and the achieved fraction of this machine's
measured fp32 matmul FLOP/s, XLA's temporary memory and the process's peak RSS, and the share of
the step the detection-specific ops take: proposal selection (top-k + NMS over 12000 anchors),
target assignment (anchor and RoI matching and sampling) and RoIPool forward + backward, each
timed alone as a jitted function at the step's sizes. The issue's floor: under 15% together.

Run: `.venv/bin/python benchmarks/faster_rcnn_train_step.py` (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from report import (best_seconds, config_train_step, machine, markdown_table, matmul_gflops,
                    step_breakdown)
from segattn_jax import compilation
from segattn_jax.layers import rcnn
from segattn_jax.layers.roi import roi_pool
from segattn_jax.models import build_model
from segattn_jax.models.fast_rcnn import feature_stride
from segattn_jax.ops import boxes as box_ops
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "rcnn.py"
BATCH, HEIGHT, WIDTH, OBJECTS, MAX_BOXES = 2, 600, 1000, 3, 64


def _config():
    config = load_experiment(EXPERIMENT).get_config("Faster-R-CNN-joint").unlock()
    config.dataset.preprocess.canvas = (HEIGHT, WIDTH)
    config.model.dtype = "float32"
    return config


def _batch() -> dict[str, np.ndarray]:
    """Random images with OBJECTS boxes each, padded to MAX_BOXES as the pipeline pads them."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [WIDTH * 0.6, HEIGHT * 0.6], (BATCH, MAX_BOXES, 2))
    wh = rng.uniform(64, 300, (BATCH, MAX_BOXES, 2))
    valid = np.arange(MAX_BOXES)[None].repeat(BATCH, 0) < OBJECTS
    return {"image": rng.uniform(size=(BATCH, HEIGHT, WIDTH, 3)).astype(np.float32),
            "image_hw": np.array([[HEIGHT, WIDTH]] * BATCH, np.int32),
            "boxes": np.concatenate([xy, xy + wh], -1).astype(np.float32),
            "classes": rng.integers(0, 20, (BATCH, MAX_BOXES)).astype(np.int32),
            "difficult": np.zeros((BATCH, MAX_BOXES), bool), "box_valid": valid}


def detection_op_fns(config) -> dict:
    """The step's detection-specific ops alone, jitted, on inputs of the step's shapes."""
    m = build_model(config.model)  # the module's settings, defaults included
    stride = feature_stride(m.feature_layer)
    feature_hw = (HEIGHT // stride, WIDTH // stride)
    channels = 512
    anchors = jnp.asarray(box_ops.anchors(feature_hw, stride, m.anchor_size, m.anchor_scales,
                                          m.anchor_ratios))
    rng = np.random.default_rng(1)
    batch = jax.tree.map(jnp.asarray, _batch())
    num = anchors.shape[0]
    objectness = jnp.asarray(rng.normal(size=(BATCH, num)), jnp.float32)
    deltas = jnp.asarray(rng.normal(size=(BATCH, num, 4)) * 0.1, jnp.float32)
    features = jnp.asarray(rng.normal(size=(BATCH, *feature_hw, channels)), jnp.float32)
    propose = compilation.jit(lambda o, d: rcnn.propose(
        anchors, o, d, batch["image_hw"], pre_nms=m.pre_nms_train, post_nms=m.post_nms_train,
        nms_threshold=m.rpn_nms_threshold, min_size=m.min_proposal_size))
    proposals, proposal_valid = propose(objectness, deltas)

    @compilation.jit
    def assign(o, d, p, pv):
        rpn = rcnn.rpn_loss(jax.random.key(0), anchors, o, d, batch["boxes"],
                            batch["box_valid"], batch["image_hw"], num_samples=m.rpn_samples)
        samples = rcnn.sample_rois(jax.random.key(1), p, pv, batch["boxes"], batch["classes"],
                                   batch["box_valid"], num=m.rois_per_image,
                                   background=(m.background_low, 0.5))
        return rpn, samples

    rois = assign(objectness, deltas, proposals, proposal_valid)[1]["rois"]
    pool = compilation.jit(jax.value_and_grad(
        lambda f: jnp.sum(roi_pool(f, rois, 7, spatial_scale=1.0 / stride) ** 2)))
    return {
        "proposals (top-k + NMS)": lambda: jax.block_until_ready(
            propose(objectness, deltas)),
        "target assignment": lambda: jax.block_until_ready(
            assign(objectness, deltas, proposals, proposal_valid)),
        "RoIPool fwd + bwd": lambda: jax.block_until_ready(pool(features)),
    }


def run(repeats: int = 2) -> list[dict]:
    config = _config()
    peak = matmul_gflops()
    step, info = config_train_step(config, _batch(), jax.random.key(2))
    ops = detection_op_fns(config)
    seconds = best_seconds({"step": step, **ops}, repeats)
    rows = step_breakdown(seconds, list(ops), info, batch=BATCH, peak_gflops=peak)
    rows.append({"part": "detection ops together", "ms": 1e3 * sum(seconds[n] for n in ops),
                 "share_of_step": sum(seconds[n] for n in ops) / seconds["step"],
                 "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def main() -> None:
    print(machine())
    print(f"Faster R-CNN train step (VGG16, {HEIGHT}x{WIDTH}, batch {BATCH}, 21 classes); "
          "detection ops timed alone at the step's sizes (floor: under 15% together):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()

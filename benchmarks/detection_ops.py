"""NMS and RoIAlign alone at Faster R-CNN's sizes, ours (jitted) vs TensorFlow's ops.

Run: `.venv/bin/python benchmarks/detection_ops.py` (about a minute on 2 CPU cores).

- NMS: 2000 proposals -> at most 300 at IoU 0.7 (the RPN at test time), vs
  `tf.image.non_max_suppression` in a `tf.function`;
- RoIAlign: 2000 boxes on a VGG16 conv5 map of a 600x1000 image (38x63x512, stride 16), 7x7 bins
  with 2x2 samples, vs `tf.image.crop_and_resize` at 14x14 followed by 2x2 average pooling (the same
  bilinear points) in a `tf.function`.
ratio = TF seconds / ours (> 1: ours is faster).
"""
from __future__ import annotations

import jax
import numpy as np
import tensorflow as tf

from report import best_seconds, machine, markdown_table
from segattn_jax import compilation
from segattn_jax.layers.roi import roi_align
from segattn_jax.ops.nms import nms

NUM_BOXES, NMS_OUTPUT, NMS_IOU = 2000, 300, 0.7
FEATURE_HW, CHANNELS, STRIDE, BINS, SAMPLES = (38, 63), 512, 16, 7, 2


def _boxes(rng: np.random.Generator) -> np.ndarray:
    height, width = FEATURE_HW[0] * STRIDE, FEATURE_HW[1] * STRIDE
    xy = rng.uniform(0, [width * 0.8, height * 0.8], (NUM_BOXES, 2))
    wh = rng.uniform(16, [width * 0.4, height * 0.4], (NUM_BOXES, 2))
    return np.concatenate([xy, np.minimum(xy + wh, [width, height])], 1).astype(np.float32)


def nms_row(rng: np.random.Generator) -> dict:
    boxes, scores = _boxes(rng), rng.uniform(size=NUM_BOXES).astype(np.float32)
    ours = compilation.jit(lambda b, s: nms(b, s, iou_threshold=NMS_IOU, max_output=NMS_OUTPUT))
    yx = tf.constant(boxes[:, [1, 0, 3, 2]])
    reference = tf.function(lambda b, s: tf.image.non_max_suppression(b, s, NMS_OUTPUT, NMS_IOU))
    seconds = best_seconds({"ours": lambda: jax.block_until_ready(ours(boxes, scores)),
                            "tf": lambda: reference(yx, tf.constant(scores)).numpy()}, repeats=20)
    return _row(f"NMS {NUM_BOXES} -> {NMS_OUTPUT} boxes, IoU {NMS_IOU}", seconds)


def roi_align_row(rng: np.random.Generator) -> dict:
    features = rng.normal(size=(1, *FEATURE_HW, CHANNELS)).astype(np.float32)
    boxes = _boxes(rng)
    ours = compilation.jit(lambda f, b: roi_align(f, b[None], BINS, spatial_scale=1 / STRIDE,
                                          sampling_ratio=SAMPLES))
    # crop_and_resize's end points sit on the box corners; RoIAlign's first/last samples sit half
    # a sample step inside the box (aligned=True: box edges are pixel edges, centres at -0.5).
    height, width = FEATURE_HW
    x1, y1, x2, y2 = (boxes / STRIDE - 0.5).T
    step_y, step_x = (y2 - y1) / (BINS * SAMPLES), (x2 - x1) / (BINS * SAMPLES)
    normalized = np.stack([(y1 + step_y / 2) / (height - 1), (x1 + step_x / 2) / (width - 1),
                           (y2 - step_y / 2) / (height - 1), (x2 - step_x / 2) / (width - 1)], 1)

    @tf.function
    def reference(f, b):
        crops = tf.image.crop_and_resize(f, b, tf.zeros(NUM_BOXES, tf.int32),
                                         (BINS * SAMPLES, BINS * SAMPLES))
        return tf.nn.avg_pool2d(crops, SAMPLES, SAMPLES, "VALID")

    tf_features, tf_boxes = tf.constant(features), tf.constant(normalized.astype(np.float32))
    seconds = best_seconds({"ours": lambda: jax.block_until_ready(ours(features, boxes)),
                            "tf": lambda: reference(tf_features, tf_boxes).numpy()}, repeats=10)
    return _row(f"RoIAlign {NUM_BOXES} boxes, {height}x{width}x{CHANNELS}, {BINS}x{BINS}",
                seconds)


def _row(name: str, seconds: dict[str, float]) -> dict:
    return {"op": name, "ours ms": 1e3 * seconds["ours"], "tf ms": 1e3 * seconds["tf"],
            "ratio (tf / ours)": seconds["tf"] / seconds["ours"]}


def main() -> None:
    print(machine())
    rng = np.random.default_rng(0)
    print(markdown_table([nms_row(rng), roi_align_row(rng)]))


if __name__ == "__main__":
    main()

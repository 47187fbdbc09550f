"""Per-example preprocessing: `preprocess(example, seed, train) -> model inputs` (TensorFlow).

`seed` is a stateless-RNG seed (shape [2], int) that the pipeline derives from the example's
position in the stream, so augmentation is reproducible and resumable. Experiment configs name a
preprocessor from `PREPROCESSORS`; new ones compose the small helpers below.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

Preprocess = Callable[[dict[str, tf.Tensor], tf.Tensor, bool], dict[str, tf.Tensor]]


def to_float_image(image: tf.Tensor) -> tf.Tensor:
    """uint8 image -> float32 in [0, 1]."""
    return tf.cast(image, tf.float32) / 255.0


def random_flip_left_right(tensors: Sequence[tf.Tensor], seed: tf.Tensor) -> list[tf.Tensor]:
    """Mirrors all `tensors` (H, W, ...) together with probability 1/2, so labels stay aligned."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    return [tf.cond(flip, lambda t=t: tf.reverse(t, axis=[1]), lambda t=t: t) for t in tensors]


def segmentation(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool) -> dict[str, tf.Tensor]:
    """{'image' float32 (H, W, 3) in [0, 1], 'label' int32 (H, W)}; random flip when training."""
    image = to_float_image(example["image"])
    label = tf.cast(example["segmentation_mask"][..., 0], tf.int32)
    if train:
        image, label = random_flip_left_right([image, label], seed)
    return {"image": image, "label": label}


def classification(example: dict[str, tf.Tensor], seed: tf.Tensor, train: bool) -> dict[str, tf.Tensor]:
    """{'image' float32 (H, W, C) in [0, 1], 'label' int32 ()}; no augmentation (digits aren't
    mirror-symmetric, and the distorted sets carry their own distortions)."""
    del seed, train
    return {"image": to_float_image(example["image"]), "label": tf.cast(example["label"], tf.int32)}


PREPROCESSORS: dict[str, Preprocess] = {
    "segmentation": segmentation,
    "classification": classification,
}

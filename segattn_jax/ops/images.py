"""Image conversions shared by the datasets that store images and the pictures tasks draw (numpy),
and the models that take a fixed input size (jax).

Lives here, not in `tasks.pictures`, so that dataset builders can use it without importing the tasks
(and with them every model).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 in [0, 255] (clipped, rounded); uint8 passes through."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"to_uint8 expects a float image in [0, 1] or uint8, got {image.dtype}; "
            "color integer class masks with tasks.pictures.colorize_mask."
        )
    return np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)


def warp_to_square(images: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Images (B, H, W, C) warped to `size` x `size` (no aspect kept, as YOLO and SSD train),
    and the (x, y, x, y) factors that map boxes found on them back to the input. The input
    pipeline warps training and eval images already; this serves `predict` on image files."""
    height, width = images.shape[1:3]
    factor = jnp.asarray([width / size, height / size] * 2, jnp.float32)
    if (height, width) != (size, size):
        images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]),
                                  "bilinear")
    return images, factor


def check_training_size(images: jax.Array, size: int, model: str) -> None:
    """Fixed-input detectors train only on images the pipeline warped to their size (boxes are
    targets in those pixels, so warping here would be wrong): fails with the config key to set."""
    if images.shape[1:3] != (size, size):
        raise ValueError(f"{model} trains on {size}x{size} images; got {images.shape[1:3]}: set "
                         "dataset.preprocess.warp_size to model.input_size.")


# RGB -> YUV (the analog PAL matrix, scikit-image's `rgb2yuv`): Farabet et al.'s input space.
RGB_TO_YUV = np.array([[0.299, 0.587, 0.114],
                        [-0.14714119, -0.28886916, 0.43601035],
                        [0.61497538, -0.51496512, -0.10001026]], np.float32)


def rgb_to_yuv(images: jax.Array) -> jax.Array:
    """(..., 3) RGB in [0, 1] -> YUV (Y in [0, 1], U and V centred on 0)."""
    return images @ jnp.asarray(RGB_TO_YUV.T, images.dtype)

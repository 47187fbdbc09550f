"""Image conversions in numpy, shared by the datasets that store images and the pictures tasks draw.

Lives here, not in `tasks.pictures`, so that dataset builders can use it without importing the tasks
(and with them every model).
"""
from __future__ import annotations

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

"""Selective search (Uijlings et al. 2013, "fast" mode, as R-CNN and Fast R-CNN use it): the
class-agnostic region proposals of one image.

Apart from the proposal cache (`data/proposals.py`, which imports TensorFlow) because the cache
runs it in spawned worker processes: each of them imports only this module (numpy, and OpenCV
when it searches), not TensorFlow's ~8 s.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class SelectiveSearch:
    """OpenCV's selective search in fast mode (opencv-contrib's ximgproc).

    upscale: images are resized by this factor first (its segmentation scale `base_k` is in
      pixels: small images such as the embedded 64x64 scenes need 2x to separate small objects).
    base_k: the Felzenszwalb segmentation scale (OpenCV's default 150 for ~500 px images).
    max_proposals: the first N boxes in OpenCV's order (R-CNN uses ~2000 per image).
    """

    upscale: float = 1.0
    base_k: int = 150
    max_proposals: int = 2000

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(N <= max_proposals, 4) normalized (ymin, xmin, ymax, xmax) boxes of a uint8 RGB
        image (H, W, 3)."""
        import cv2  # opencv-contrib-python-headless; imported here: only proposal users need it

        cv2.setNumThreads(1)  # one image per process; the pool gives the parallelism
        height, width = image.shape[:2]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if self.upscale != 1.0:
            image = cv2.resize(image, None, fx=self.upscale, fy=self.upscale,
                               interpolation=cv2.INTER_LINEAR)
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(np.ascontiguousarray(image[..., ::-1]))  # OpenCV wants BGR
        search.switchToSelectiveSearchFast(self.base_k, self.base_k)
        rects = search.process()[:self.max_proposals].astype(np.float32) / self.upscale
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32)
        x, y, w, h = rects.T
        boxes = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=1)
        return np.clip(boxes, 0.0, 1.0).astype(np.float32)


def timed_search(args: tuple[SelectiveSearch, np.ndarray]) -> tuple[np.ndarray, float]:
    """(boxes, seconds) of `method(image)` for `args = (method, image)`: a worker's task."""
    method, image = args
    began = time.perf_counter()
    boxes = method(image)
    return boxes, time.perf_counter() - began

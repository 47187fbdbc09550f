"""Selective search (Uijlings et al. 2013): the class-agnostic region proposals of one image,
as boxes ("fast" mode through OpenCV, as R-CNN and Fast R-CNN use it) or as regions with their
masks (`HierarchicalGrouping`, SDS's candidates).

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

    @property
    def cache_name(self) -> str:
        return f"selective_search_fast_x{self.upscale:g}_k{self.base_k}_n{self.max_proposals}"

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




@dataclasses.dataclass(frozen=True)
class HierarchicalGrouping:
    """Selective search's hierarchical grouping (Uijlings et al. 2013, Sec. 3) with the region
    of every proposal, which SDS needs and OpenCV's implementation does not return.

    Felzenszwalb-Huttenlocher segments are merged greedily, the most similar neighbours first,
    by the paper's colour (25-bin histogram intersection) + size + fill similarities, once per
    colour space (its diversification); every segment and every merge is a proposal, the
    largest first. Returns (boxes (N, 4) normalized (ymin, xmin, ymax, xmax), masks (N, M, M)
    uint8): each region relative to its box (`ops.masks`), sampled at M x M cell centres.

    upscale: images are resized by this factor first (`scale` and `min_size` are in pixels).
    scale / sigma / min_size: the segmentation (scikit-image's felzenszwalb).
    colour_spaces: 'rgb' and / or 'hsv'; identical regions found in several are kept once.
    """

    upscale: float = 1.0
    scale: float = 100.0
    sigma: float = 0.8
    min_size: int = 20
    colour_spaces: tuple[str, ...] = ("rgb", "hsv")
    max_proposals: int = 2000
    mask_size: int = 16

    @property
    def cache_name(self) -> str:
        return (f"grouping_{'+'.join(self.colour_spaces)}_x{self.upscale:g}_k{self.scale:g}_"
                f"s{self.sigma:g}_min{self.min_size}_n{self.max_proposals}_m{self.mask_size}")

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from skimage import color, segmentation, transform

        image = np.asarray(image, np.float64) / 255.0
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if self.upscale != 1.0:
            size = [round(s * self.upscale) for s in image.shape[:2]]
            image = transform.resize(image, size, order=1, anti_aliasing=False)
        segments = segmentation.felzenszwalb(image, scale=self.scale, sigma=self.sigma,
                                             min_size=self.min_size)
        regions: dict[tuple, tuple[int, np.ndarray]] = {}  # (box, mask bytes) -> (size, mask)
        for space in self.colour_spaces:
            if space not in ("rgb", "hsv"):
                raise ValueError(f"colour_spaces holds 'rgb' and/or 'hsv'; got {space!r}.")
            pixels = image if space == "rgb" else color.rgb2hsv(image)
            for size, box, mask in _group(segments, pixels, self.mask_size):
                if mask.any():  # a thin region can miss every cell centre of its box
                    regions.setdefault((box, mask.tobytes()), (size, mask))
        order = sorted(regions, key=lambda key: -regions[key][0])[:self.max_proposals]
        height, width = segments.shape
        boxes = np.array([key[0] for key in order], np.float32).reshape(-1, 4)
        boxes /= np.array([height, width, height, width], np.float32)
        masks = np.stack([regions[key][1] for key in order]) if order else np.zeros(
            (0, self.mask_size, self.mask_size), np.uint8)
        return boxes, masks


def _group(segments: np.ndarray, pixels: np.ndarray, mask_size: int):
    """Yields (size, (r0, c0, r1, c1) box in pixels, box-relative mask) of every segment and of
    every merge of the greedy grouping of `segments` (H, W) over `pixels` (H, W, 3) in [0, 1]."""
    height, width = segments.shape
    count = int(segments.max()) + 1
    bins = 25
    index = np.minimum((pixels * bins).astype(np.int64), bins - 1)  # (H, W, 3)
    flat = (segments[..., None] * 3 + np.arange(3)) * bins + index
    hist = np.bincount(flat.ravel(), minlength=count * 3 * bins).reshape(count, 3 * bins)
    hist = hist / hist.sum(1, keepdims=True)
    sizes = np.bincount(segments.ravel(), minlength=count).astype(np.float64)
    rows, cols = np.indices(segments.shape)
    boxes = np.stack([np.full(count, height), np.full(count, width), np.zeros(count, int),
                      np.zeros(count, int)], 1)
    np.minimum.at(boxes[:, 0], segments.ravel(), rows.ravel())
    np.minimum.at(boxes[:, 1], segments.ravel(), cols.ravel())
    np.maximum.at(boxes[:, 2], segments.ravel(), rows.ravel() + 1)
    np.maximum.at(boxes[:, 3], segments.ravel(), cols.ravel() + 1)
    members = [[i] for i in range(count)]
    hist, sizes, boxes = list(hist), list(sizes), [tuple(b) for b in boxes]
    image_size = float(height * width)

    def similarity(a, b):
        r0, c0 = min(boxes[a][0], boxes[b][0]), min(boxes[a][1], boxes[b][1])
        r1, c1 = max(boxes[a][2], boxes[b][2]), max(boxes[a][3], boxes[b][3])
        colour = np.minimum(hist[a], hist[b]).sum() / 3.0
        size = 1.0 - (sizes[a] + sizes[b]) / image_size
        fill = 1.0 - ((r1 - r0) * (c1 - c0) - sizes[a] - sizes[b]) / image_size
        return colour + size + fill

    pairs = np.concatenate([np.stack([segments[:, :-1].ravel(), segments[:, 1:].ravel()], 1),
                            np.stack([segments[:-1].ravel(), segments[1:].ravel()], 1)])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    neighbours: dict[int, set[int]] = {i: set() for i in range(count)}
    for a, b in pairs:
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))
    scores = {(int(a), int(b)): similarity(a, b) for a, b in pairs}
    while scores:
        a, b = max(scores, key=scores.get)
        new = len(members)
        members.append(members[a] + members[b])
        hist.append((hist[a] * sizes[a] + hist[b] * sizes[b]) / (sizes[a] + sizes[b]))
        sizes.append(sizes[a] + sizes[b])
        boxes.append((min(boxes[a][0], boxes[b][0]), min(boxes[a][1], boxes[b][1]),
                      max(boxes[a][2], boxes[b][2]), max(boxes[a][3], boxes[b][3])))
        around = (neighbours.pop(a) | neighbours.pop(b)) - {a, b}
        scores = {k: v for k, v in scores.items() if a not in k and b not in k}
        neighbours[new] = around
        for other in around:
            neighbours[other] -= {a, b}
            neighbours[other].add(new)
            scores[(other, new)] = similarity(other, new)
    inside = np.zeros(count, bool)
    steps = (np.arange(mask_size) + 0.5) / mask_size
    for region, segment_ids in enumerate(members):
        r0, c0, r1, c1 = boxes[region]
        inside[:] = False
        inside[segment_ids] = True
        sample_rows = np.minimum((r0 + steps * (r1 - r0)).astype(int), height - 1)
        sample_cols = np.minimum((c0 + steps * (c1 - c0)).astype(int), width - 1)
        mask = inside[segments[sample_rows][:, sample_cols]].astype(np.uint8)
        yield sizes[region], (int(r0), int(c0), int(r1), int(c1)), mask


def timed_search(args: tuple[SelectiveSearch | HierarchicalGrouping, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(boxes, masks or None, seconds) of `method(image)` for `args = (method, image)`: a
    worker's task."""
    method, image = args
    began = time.perf_counter()
    found = method(image)
    boxes, masks = found if isinstance(found, tuple) else (found, None)
    return boxes, masks, time.perf_counter() - began

"""Class-agnostic region proposals for R-CNN and Fast R-CNN: selective search (Uijlings et al.
2013, "fast" mode, as both papers use it), computed once per image and cached beside the dataset.

Each split's proposals are stored as one .npz in the dataset's directory, keyed by TFDS's
per-example `tfds_id`, so the input pipeline can attach them to an example whatever the shuffle or
the process's shard. Boxes are stored in TFDS's normalized (ymin, xmin, ymax, xmax), so the
detection preprocessor resizes and mirrors them exactly as it does the objects' boxes.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tqdm import tqdm

from segattn_jax.data import pipeline

CACHE_DIR = "proposals"
CACHE_VERSION = "v2"  # v2: ids prefixed with the dataset's full name (pipeline.examples)


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

    def cache_name(self, split: str) -> str:
        split = split.replace("/", "_").replace("[", "_").replace("]", "").replace(":", "-")
        return (f"selective_search_fast_x{self.upscale:g}_k{self.base_k}_"
                f"n{self.max_proposals}_{split}.{CACHE_VERSION}.npz")

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
class Proposals:
    """Every cached proposal of the splits it was loaded for, and a lookup by `tfds_id`."""

    ids: np.ndarray           # (N,) tfds_id strings
    boxes: np.ndarray         # (N, max_proposals, 4) normalized, zero-padded
    counts: np.ndarray        # (N,) real proposals per image
    seconds_per_image: float  # measured when the cache was computed

    @property
    def max_proposals(self) -> int:
        return self.boxes.shape[1]

    def lookup(self, tfds_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(boxes (max_proposals, 4) normalized, count) of one example, inside tf.data."""
        row = self._table.lookup(tfds_id)
        check = tf.debugging.assert_non_negative(
            row, message="An example has no cached proposals: delete the dataset's "
            f"{CACHE_DIR}/ directory so they are computed again.")
        with tf.control_dependencies([check]):
            return tf.gather(self._boxes, row), tf.gather(self._counts, row)

    def __post_init__(self):
        keys = tf.constant(self.ids)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(self.ids), dtype=tf.int64)),
            default_value=-1)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_boxes", tf.constant(self.boxes))
        object.__setattr__(self, "_counts", tf.constant(self.counts.astype(np.int32)))


def _search_one(args: tuple[SelectiveSearch, np.ndarray]) -> tuple[np.ndarray, float]:
    method, image = args
    began = time.perf_counter()
    boxes = method(image)
    return boxes, time.perf_counter() - began


def _compute(builder: tfds.core.DatasetBuilder, split: str, method: SelectiveSearch,
             path: epath.Path) -> None:
    """Runs `method` on every image of `split` (all cores) and writes the cache atomically."""
    examples = pipeline.examples(builder, split).map(
        lambda e: {"image": e["image"], "tfds_id": e["tfds_id"]})
    ids, found, seconds = [], [], []

    def work():
        for example in tfds.as_numpy(examples):
            ids.append(example["tfds_id"])
            yield method, example["image"]

    total = pipeline.num_examples(builder, split)
    with multiprocessing.get_context("spawn").Pool(pipeline.available_cores()) as pool:
        for boxes, took in tqdm(pool.imap(_search_one, work(), chunksize=8), total=total,
                                desc=f"selective search ({split})", unit="image"):
            found.append(boxes)
            seconds.append(took)
    padded = np.zeros((len(found), method.max_proposals, 4), np.float32)
    for i, boxes in enumerate(found):
        padded[i, :len(boxes)] = boxes
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / (path.name + ".partial")
    with partial.open("wb") as file:
        np.savez(file, ids=np.array(ids, dtype=object).astype(bytes), boxes=padded,
                 counts=np.array([len(b) for b in found], np.int32),
                 seconds=np.array(seconds, np.float64))
    partial.rename(path)


def _cache_path(builder: tfds.core.DatasetBuilder, split: str, method: SelectiveSearch
                ) -> epath.Path:
    return epath.Path(builder.data_dir) / CACHE_DIR / method.cache_name(split)


def compute_missing(sources: list[tuple[tfds.core.DatasetBuilder, str]],
                    method: SelectiveSearch) -> None:
    """Computes and caches the proposals of those (dataset, split) `sources` that have none."""
    for builder, split in sources:
        path = _cache_path(builder, split, method)
        if not path.exists():
            logging.info("Computing %s proposals of %s %s once; cached in %s.", method,
                         builder.info.full_name, split, path)
            _compute(builder, split, method, path)


def load(sources: list[tuple[tfds.core.DatasetBuilder, str]], method: SelectiveSearch
         ) -> Proposals:
    """The proposals of the (dataset, split) `sources`, computed (and cached in each dataset's
    directory) where missing."""
    compute_missing(sources, method)
    parts = []
    for builder, split in sources:
        with _cache_path(builder, split, method).open("rb") as file:
            parts.append(dict(np.load(file)))
    seconds = np.concatenate([p["seconds"] for p in parts])
    return Proposals(ids=np.concatenate([p["ids"] for p in parts]),
                     boxes=np.concatenate([p["boxes"] for p in parts]),
                     counts=np.concatenate([p["counts"] for p in parts]),
                     seconds_per_image=float(seconds.mean()) if len(seconds) else 0.0)

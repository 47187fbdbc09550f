"""Class-agnostic region proposals for R-CNN and Fast R-CNN: selective search
(`ops/selective_search.py`), computed once per image and cached beside the dataset.

Each split's proposals are stored as one .npz in the dataset's directory, keyed by TFDS's
per-example `tfds_id`, so the input pipeline can attach them to an example whatever the shuffle or
the process's shard. Boxes are stored in TFDS's normalized (ymin, xmin, ymax, xmax), so the
detection preprocessor resizes and mirrors them exactly as it does the objects' boxes.
"""
from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tqdm import tqdm

from segattn_jax.data import pipeline
from segattn_jax.ops.selective_search import SelectiveSearch, timed_search

CACHE_DIR = "proposals"
CACHE_VERSION = "v2"  # v2: ids prefixed with the dataset's full name (pipeline.examples)


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
        for boxes, took in tqdm(pool.imap(timed_search, work(), chunksize=8), total=total,
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
    split = split.replace("/", "_").replace("[", "_").replace("]", "").replace(":", "-")
    name = (f"selective_search_fast_x{method.upscale:g}_k{method.base_k}_"
            f"n{method.max_proposals}_{split}.{CACHE_VERSION}.npz")
    return epath.Path(builder.data_dir) / CACHE_DIR / name


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

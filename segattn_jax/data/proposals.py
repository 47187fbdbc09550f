"""Class-agnostic region proposals for R-CNN, Fast R-CNN (boxes) and SDS (boxes with their
regions' masks): selective search (`ops/selective_search.py`), computed once per image and
cached beside the dataset.

Each split's proposals are stored as one .npz in the dataset's directory, keyed by TFDS's
per-example `tfds_id`, so the input pipeline can attach them to an example whatever the shuffle or
the process's shard. Boxes are stored in TFDS's normalized (ymin, xmin, ymax, xmax), so the
detection preprocessor resizes and mirrors them exactly as it does the objects' boxes; masks are
stored relative to their box (`ops.masks`), bit-packed (256 regions at 16 x 16 take 8 KB).
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
from segattn_jax.ops.selective_search import HierarchicalGrouping, SelectiveSearch, timed_search

Method = SelectiveSearch | HierarchicalGrouping

CACHE_DIR = "proposals"
CACHE_VERSION = "v2"  # v2: ids prefixed with the dataset's full name (pipeline.examples)


@dataclasses.dataclass(frozen=True)
class Proposals:
    """Every cached proposal of the splits it was loaded for, and a lookup by `tfds_id`."""

    ids: np.ndarray           # (N,) tfds_id strings
    boxes: np.ndarray         # (N, max_proposals, 4) normalized, zero-padded
    counts: np.ndarray        # (N,) real proposals per image
    seconds_per_image: float  # measured when the cache was computed
    packed_masks: np.ndarray | None = None  # (N, max_proposals, ceil(M * M / 8)) np.packbits
    mask_size: int = 0

    @property
    def max_proposals(self) -> int:
        return self.boxes.shape[1]

    def lookup(self, tfds_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(boxes (max_proposals, 4) normalized, count) of one example, inside tf.data."""
        row = self._row(tfds_id)
        return tf.gather(self._boxes, row), tf.gather(self._counts, row)

    def lookup_masks(self, tfds_id: tf.Tensor) -> tf.Tensor:
        """(max_proposals, M, M) float32 box-relative masks of one example, inside tf.data."""
        if self.packed_masks is None:
            raise ValueError("These proposals have no masks: use a method that makes regions "
                             "(--config.dataset.proposals.method=hierarchical_grouping).")
        packed = tf.gather(self._packed, self._row(tfds_id))  # (P, bytes) uint8
        shifts = tf.constant([7, 6, 5, 4, 3, 2, 1, 0], tf.uint8)
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[..., None], shifts), 1)
        size = self.mask_size
        bits = tf.reshape(bits, [self.max_proposals, -1])[:, :size * size]
        return tf.reshape(tf.cast(bits, tf.float32), [self.max_proposals, size, size])

    def _row(self, tfds_id: tf.Tensor) -> tf.Tensor:
        """The example's row in the cache; an example without one stops the pipeline."""
        row = self._table.lookup(tfds_id)
        check = tf.debugging.assert_non_negative(
            row, message="An example has no cached proposals: delete the dataset's "
            f"{CACHE_DIR}/ directory so they are computed again.")
        with tf.control_dependencies([check]):
            return tf.identity(row)

    def __post_init__(self):
        keys = tf.constant(self.ids)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(self.ids), dtype=tf.int64)),
            default_value=-1)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_boxes", tf.constant(self.boxes))
        object.__setattr__(self, "_counts", tf.constant(self.counts.astype(np.int32)))
        if self.packed_masks is not None:
            object.__setattr__(self, "_packed", tf.constant(self.packed_masks))


def _compute(builder: tfds.core.DatasetBuilder, split: str, method: Method,
             path: epath.Path) -> None:
    """Runs `method` on every image of `split` (all cores) and writes the cache atomically."""
    examples = pipeline.examples(builder, split).map(
        lambda e: {"image": e["image"], "tfds_id": e["tfds_id"]})
    ids, found, regions, seconds = [], [], [], []

    def work():
        for example in tfds.as_numpy(examples):
            ids.append(example["tfds_id"])
            yield method, example["image"]

    total = pipeline.num_examples(builder, split)
    with multiprocessing.get_context("spawn").Pool(pipeline.available_cores()) as pool:
        for boxes, masks, took in tqdm(pool.imap(timed_search, work(), chunksize=8),
                                       total=total, desc=f"{method.cache_name} ({split})",
                                       unit="image"):
            found.append(boxes)
            regions.append(masks)
            seconds.append(took)
    padded = np.zeros((len(found), method.max_proposals, 4), np.float32)
    for i, boxes in enumerate(found):
        padded[i, :len(boxes)] = boxes
    extra = {}
    if isinstance(method, HierarchicalGrouping):
        size = method.mask_size
        masks = np.zeros((len(found), method.max_proposals, size * size), np.uint8)
        for i, m in enumerate(regions):
            masks[i, :len(m)] = m.reshape(len(m), -1)
        extra = {"packed_masks": np.packbits(masks, axis=-1), "mask_size": size}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / (path.name + ".partial")
    with partial.open("wb") as file:
        np.savez(file, ids=np.array(ids, dtype=object).astype(bytes), boxes=padded,
                 counts=np.array([len(b) for b in found], np.int32),
                 seconds=np.array(seconds, np.float64), **extra)
    partial.rename(path)


def _cache_path(builder: tfds.core.DatasetBuilder, split: str, method: Method) -> epath.Path:
    split = split.replace("/", "_").replace("[", "_").replace("]", "").replace(":", "-")
    return (epath.Path(builder.data_dir) / CACHE_DIR
            / f"{method.cache_name}_{split}.{CACHE_VERSION}.npz")


def compute_missing(sources: list[tuple[tfds.core.DatasetBuilder, str]],
                    method: Method) -> None:
    """Computes and caches the proposals of those (dataset, split) `sources` that have none."""
    for builder, split in sources:
        path = _cache_path(builder, split, method)
        if not path.exists():
            logging.info("Computing %s proposals of %s %s once; cached in %s.", method,
                         builder.info.full_name, split, path)
            _compute(builder, split, method, path)


def load(sources: list[tuple[tfds.core.DatasetBuilder, str]], method: Method) -> Proposals:
    """The proposals of the (dataset, split) `sources`, computed (and cached in each dataset's
    directory) where missing."""
    compute_missing(sources, method)
    parts = []
    for builder, split in sources:
        with _cache_path(builder, split, method).open("rb") as file:
            parts.append(dict(np.load(file)))
    seconds = np.concatenate([p["seconds"] for p in parts])
    masks = {}
    if "packed_masks" in parts[0]:
        masks = {"packed_masks": np.concatenate([p["packed_masks"] for p in parts]),
                 "mask_size": int(parts[0]["mask_size"])}
    return Proposals(**masks, ids=np.concatenate([p["ids"] for p in parts]),
                     boxes=np.concatenate([p["boxes"] for p in parts]),
                     counts=np.concatenate([p["counts"] for p in parts]),
                     seconds_per_image=float(seconds.mean()) if len(seconds) else 0.0)

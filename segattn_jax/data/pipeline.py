"""Input pipeline: TFDS -> tf.data -> numpy batches (the only place TensorFlow runs).

The training stream is a pure function of (seed, position): each epoch is a seeded shuffle of this
process's shard, and each example's augmentation seed is folded from its global position in the
stream. So `start_step=k` reproduces exactly what step k saw in an uninterrupted run, restarts
need no iterator checkpoint, and every process reads a disjoint shard. Resuming costs at most one
epoch of reading (the skip within the current epoch); epochs are full permutations when the shard
fits in `shuffle_buffer`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath


def _hide_gpus_from_tensorflow() -> None:
    """TF must not claim GPU memory or devices that JAX owns."""
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as e:  # TF already initialized its devices
        logging.warning("Could not hide GPUs from TensorFlow: %s", e)


_hide_gpus_from_tensorflow()

import tensorflow_datasets as tfds  # noqa: E402  (after hiding GPUs)

from segattn_jax.data.preprocess import Preprocess  # noqa: E402

_INT64_MAX = np.iinfo(np.int64).max
# Salts keep the shuffle and augmentation random streams independent for the same user seed.
_SHUFFLE_SALT, _AUGMENT_SALT, _EVAL_SALT = 0x5EED1, 0x5EED2, 0x5EED3


def load_builder(name: str | tfds.core.DatasetBuilder, data_dir: str | None = None
                 ) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `name` (e.g. 'shapes', 'distorted_digits/rts'), prepared.

    Embedded datasets (builders with `generated_locally`) are generated on first use; real
    datasets must be prepared beforehand. Prepare embedded sets before a multi-host launch too, so
    processes don't generate concurrently. A builder instance (e.g. a custom config) is accepted.
    """
    builder = name if isinstance(name, tfds.core.DatasetBuilder) else tfds.builder(
        name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    full_name = builder.info.full_name
    if getattr(builder, "generated_locally", False):
        logging.info("Generating embedded dataset %s in %s (first use only).", full_name,
                     builder.data_dir_root)
        builder.download_and_prepare()
        return builder
    raise ValueError(
        f"Dataset {full_name} is not prepared in {builder.data_dir_root}. Prepare it once (downloads "
        f"need internet; some sets need manual files, see the builder's docs):\n"
        f"  tfds build {full_name.rsplit('/', 1)[0]} --imports=segattn_jax.data.builders "
        f"--data_dir={builder.data_dir_root}\n"
        f"or point data_dir at a TFDS data directory that already holds it.")


def label_names(name: str | tfds.core.DatasetBuilder, preprocess_name: str,
                data_dir: str | None = None) -> tuple[str, ...]:
    """Names of the labels that preprocessor `preprocess_name` makes from dataset `name`, for
    pictures and legends: the builder's `LABEL_NAMES[preprocess_name]` where it declares them
    (e.g. segmentation masks with a background class), else the names of its 'label' ClassLabel
    feature (or its objects' 'label', for detection), else () (pictures then say 'class k').
    Needs no prepared data."""
    builder = name if isinstance(name, tfds.core.DatasetBuilder) else tfds.builder(
        name, data_dir=data_dir)
    declared = getattr(builder, "LABEL_NAMES", {}).get(preprocess_name)
    if declared:
        return tuple(declared)
    features = builder.info.features
    if "label" in features.keys():
        label = features["label"]
    elif "objects" in features.keys() and "label" in features["objects"].keys():
        label = features["objects"]["label"]  # detection: the objects' classes
    else:
        label = None
    return tuple(label.names) if isinstance(label, tfds.features.ClassLabel) else ()


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # local: only needed for the defaults

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"Need 0 <= process_index < process_count, got {process_index}, "
                         f"{process_count}.")
    return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                         f"number of processes ({process_count}); change the batch size.")
    return global_batch_size // process_count


def examples(builder: tfds.core.DatasetBuilder, split) -> tf.data.Dataset:
    """The split's examples in file order, each with its `tfds_id` (what cached per-example data,
    such as region proposals, is keyed by), prefixed with the dataset's full name: TFDS's own
    ids repeat across configs (voc/2007 and voc/2012 both name theirs 'voc-train...')."""
    prefix = builder.info.full_name + ":"
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(add_tfds_id=True))
    return ds.map(lambda e: {**e, "tfds_id": tf.strings.join([prefix, e["tfds_id"]])})


def parse_source(source: str) -> tuple[str, str]:
    """'voc/2012:train+validation' -> ('voc/2012', 'train+validation'): a dataset and split
    (`config.dataset.extra_train`); the split may hold slices ('voc/2012:train[:50%]')."""
    name, colon, split = source.partition(":")
    if not colon or not name or not split:
        raise ValueError(f"Extra training data {source!r} must be 'dataset:split', e.g. "
                         "'voc/2012:train+validation' (--config.dataset.extra_train).")
    return name, split


def training_sources(data) -> list[tuple[tfds.core.DatasetBuilder, str]]:
    """Each (builder, split) a run trains on: `data.train_split` of `data.name`, then every
    `data.extra_train` source (`data` is a config's `dataset`)."""
    sources = [(data.name, data.train_split), *map(parse_source, data.extra_train)]
    return [(load_builder(name, data.data_dir), split) for name, split in sources]


def num_examples(builder: tfds.core.DatasetBuilder, split) -> int:
    """The number of examples of `split` (a name or a tfds split expression) from the builder's
    metadata."""
    return builder.info.splits[split].num_examples


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def _options(num_threads: int | None) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # A bounded private pool, and no intra-op fan-out per op: the host also feeds the accelerators.
    options.threading.private_threadpool_size = num_threads or min(48, available_cores())
    options.threading.max_intra_op_parallelism = 1
    return options


def _fold_in(key: tf.Tensor, data: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))


def _count_kept(ds: tf.data.Dataset, counts_file: epath.Path | None, key: str) -> int:
    """The number of examples of a filtered dataset: from `counts_file` when it has `key`,
    else counted (one pass) and added to it."""
    counts = json.loads(counts_file.read_text()) if counts_file and counts_file.exists() else {}
    if key not in counts:
        counts[key] = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
        if counts_file is not None:
            counts_file.parent.mkdir(parents=True, exist_ok=True)
            counts_file.write_text(json.dumps(counts, indent=1))
    return counts[key]


def train_iterator(name: str | tfds.core.DatasetBuilder, split: str, *, preprocess: Preprocess,
                   global_batch_size: int, seed: int, start_step: int = 0,
                   data_dir: str | None = None, shuffle_buffer: int = 10_000,
                   process_index: int | None = None, process_count: int | None = None,
                   num_threads: int | None = None, extra: Iterable[str] = (),
                   keep: Callable[[dict[str, tf.Tensor]], tf.Tensor] | None = None,
                   keep_counts: epath.Path | None = None, keep_id: str = ""
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Endless, shuffled, augmented batches of this process's shard: global_batch_size //
    process_count examples each, starting at `start_step` (resume) of the seeded stream.

    `extra` adds other datasets' splits ('dataset:split', e.g. the papers' VOC 07+12 training
    set is voc/2007 trainval plus 'voc/2012:train+validation'); every epoch shuffles them all.
    `keep(example)` (a raw example -> bool tensor) trains on a subset, e.g. the translation
    papers' sentence pairs up to 30 words; the kept examples are counted once, at start (a full
    pass over the split: minutes for WMT'14's 40M pairs). With `keep_counts`, a JSON file, counts
    are read from and saved there by (dataset, split, shard, `keep_id`: what identifies the filter),
    so a resumed run does not count again."""
    process_index, process_count = _process(process_index, process_count)
    local_batch = _local_batch_size(global_batch_size, process_count)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")
    examples_in_shard, shard_size = None, 0
    for source_name, source_split in [(name, split), *map(parse_source, extra)]:
        builder = load_builder(source_name, data_dir)
        shard = tfds.even_splits(source_split, n=process_count,
                                 drop_remainder=True)[process_index]
        size = num_examples(builder, shard)
        if size == 0:
            raise ValueError(f"Split {source_split!r} of {builder.info.full_name} has too few "
                             f"examples for {process_count} processes.")
        ds = examples(builder, shard)
        if keep is not None:
            ds = ds.filter(keep)
            total, size = size, _count_kept(ds, keep_counts, ":".join([
                builder.info.full_name, source_split, f"{process_index}/{process_count}", keep_id]))
            logging.info("Training on %d of the %d examples of %s:%s (this process's shard); "
                         "the task's filter left out the rest.", size, total,
                         builder.info.full_name, source_split)
            if size == 0:
                raise ValueError(f"The task's training filter keeps no example of "
                                 f"{builder.info.full_name}:{source_split}; relax it (for "
                                 f"translation, raise --config.task.max_train_length).")
        examples_in_shard = ds if examples_in_shard is None else examples_in_shard.concatenate(ds)
        shard_size += size
    buffer = min(shuffle_buffer, shard_size)
    shuffle_key = tf.constant([seed, _SHUFFLE_SALT], tf.int64)

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.random.stateless_uniform(  # full-range int64 drawn from (seed, epoch)
            [], seed=_fold_in(shuffle_key, index), minval=None, maxval=None, dtype=tf.int64)
        return examples_in_shard.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    # Resume: start at the epoch holding step `start_step`, skip only within that epoch.
    start = start_step * local_batch
    first_epoch, offset = divmod(start, shard_size)
    stream = tf.data.Dataset.range(first_epoch, _INT64_MAX).flat_map(epoch).skip(offset)
    stream = tf.data.Dataset.zip((tf.data.Dataset.range(start, _INT64_MAX), stream))
    augment_key = tf.constant([seed, _AUGMENT_SALT], tf.int64)

    def apply(local_position: tf.Tensor, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        step, within = local_position // local_batch, local_position % local_batch
        position = step * global_batch_size + process_index * local_batch + within
        return preprocess(example, _fold_in(augment_key, position), True)

    stream = stream.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    stream = stream.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(stream.with_options(_options(num_threads))))


def element_spec(name: str | tfds.core.DatasetBuilder, split: str, *, preprocess: Preprocess,
                 data_dir: str | None = None) -> dict[str, tf.TensorSpec]:
    """Shapes and dtypes of one preprocessed eval example: what a model is initialized with."""
    ds = examples(load_builder(name, data_dir), split)
    return ds.map(lambda example: preprocess(example, tf.constant([0, 0], tf.int64), False)
                  ).element_spec


def eval_iterator(name: str | tfds.core.DatasetBuilder, split: str, *, preprocess: Preprocess,
                  global_batch_size: int, data_dir: str | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  num_threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over this process's shard of `split` in full-size batches.

    Every example is seen exactly once across processes. Padding examples (zeros) fill the last
    batch and, where shards differ in size, extra batches, so that all processes yield the same
    number of batches; the boolean 'valid' key marks the real examples, so metrics are exact.
    """
    process_index, process_count = _process(process_index, process_count)
    local_batch = _local_batch_size(global_batch_size, process_count)
    builder = load_builder(name, data_dir)
    largest_shard = math.ceil(num_examples(builder, split) / process_count)
    num_batches = math.ceil(largest_shard / local_batch)
    shard = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
    eval_key = tf.constant([0, _EVAL_SALT], tf.int64)

    def apply(index: tf.Tensor, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        out = preprocess(example, _fold_in(eval_key, index), False)
        if "valid" in out:
            raise ValueError("Preprocessors must not produce a 'valid' key; the pipeline adds it.")
        return {**out, "valid": tf.constant(True)}

    ds = examples(builder, shard).enumerate()
    ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch).prefetch(tf.data.AUTOTUNE).with_options(_options(num_threads))
    return _pad_batches(tfds.as_numpy(ds), ds.element_spec, local_batch, num_batches)


def _zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.full(shape, b"", dtype=object) if dtype == object else np.zeros(shape, dtype)


def _pad_batches(batches: Iterable[dict[str, np.ndarray]], element_spec, batch_size: int,
                 num_batches: int) -> Iterator[dict[str, np.ndarray]]:
    """Pads the last batch to `batch_size` and appends all-padding batches up to `num_batches`."""
    template = None
    count = 0
    for batch in batches:
        template = batch
        missing = batch_size - len(batch["valid"])
        if missing:
            batch = {k: np.concatenate([v, _zeros((missing, *v.shape[1:]), v.dtype)])
                     for k, v in batch.items()}
        count += 1
        yield batch
    for _ in range(num_batches - count):
        if template is None:  # this process's shard is empty: shapes must come from the spec
            shapes = {k: s.shape[1:] for k, s in element_spec.items()}
            if not all(s.is_fully_defined() for s in shapes.values()):
                raise ValueError("Cannot pad an empty eval shard: preprocess outputs need static "
                                 "shapes.")
            template = {k: _zeros((1, *shapes[k]), element_spec[k].dtype.as_numpy_dtype)
                        for k in shapes}
        yield {k: _zeros((batch_size, *v.shape[1:]), v.dtype) for k, v in template.items()}


from segattn_jax.data import builders  # noqa: E402,F401  (registers every builder's name)

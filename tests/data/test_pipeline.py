import itertools

import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.data import pipeline, preprocess


def _identity(example, seed, train):
    """Raw image (identifies the example) and the augmentation seed the pipeline handed over."""
    del train
    return {"image": example["image"], "seed": seed}


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _train(builder, **kwargs):
    kwargs = {"preprocess": _identity, "global_batch_size": 4, "seed": 0, "process_index": 0,
              "process_count": 1, **kwargs}
    return pipeline.train_iterator(builder, "train", **kwargs)


def _ids(batch_images):
    return [image.tobytes() for image in batch_images]


def test_segmentation_batches(tiny_shapes):
    batch = next(pipeline.train_iterator(
        tiny_shapes, "train", preprocess=preprocess.segmentation, global_batch_size=4, seed=0,
        process_index=0, process_count=1))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 32, 32) and batch["label"].dtype == np.int32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert batch["label"].max() < 9


def test_epochs_are_seeded_permutations(tiny_shapes):
    batches = _take(_train(tiny_shapes), 8)  # 16 examples, 4 per batch: two epochs
    epochs = [sum((_ids(b["image"]) for b in batches[e * 4:(e + 1) * 4]), []) for e in range(2)]
    assert len(set(epochs[0])) == 16 and set(epochs[0]) == set(epochs[1])
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = _take(_train(tiny_shapes), 8)
    other_seed = _take(_train(tiny_shapes, seed=1), 8)
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["seed"], b["seed"])
    assert _ids(batches[0]["image"]) != _ids(other_seed[0]["image"])
    seeds = np.concatenate([b["seed"] for b in batches])
    assert len({s.tobytes() for s in seeds}) == len(seeds)  # one augmentation seed per position


@pytest.mark.parametrize("start_step", [1, 5, 9])
def test_resume_yields_the_same_batches(tiny_shapes, start_step):
    reference = _take(_train(tiny_shapes, seed=3), 12)
    resumed = _take(_train(tiny_shapes, seed=3, start_step=start_step), 12 - start_step)
    for a, b in zip(reference[start_step:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["seed"], b["seed"])


def test_process_shards_are_disjoint(tiny_shapes):
    per_process = [_take(_train(tiny_shapes, global_batch_size=4, process_index=p,
                                process_count=2), 4) for p in range(2)]
    assert all(b["image"].shape[0] == 2 for batches in per_process for b in batches)
    seen = [set(sum((_ids(b["image"]) for b in batches), [])) for batches in per_process]
    assert len(seen[0]) == len(seen[1]) == 8  # one epoch of each 8-example shard
    assert not seen[0] & seen[1]
    step0_seeds = np.concatenate([batches[0]["seed"] for batches in per_process])
    assert len({s.tobytes() for s in step0_seeds}) == 4  # distinct global positions


def test_batch_size_must_divide_over_processes(tiny_shapes):
    with pytest.raises(ValueError, match="multiple"):
        _train(tiny_shapes, global_batch_size=5, process_count=2)


@pytest.mark.parametrize("process_count,global_batch_size", [(1, 3), (2, 4), (3, 3)])
def test_eval_covers_every_example_once(tiny_shapes, process_count, global_batch_size):
    everything = [ex["image"].tobytes() for ex in tiny_shapes.as_dataset(split="test").as_numpy_iterator()]
    seen, counts = [], []
    for p in range(process_count):
        batches = list(pipeline.eval_iterator(
            tiny_shapes, "test", preprocess=_identity, global_batch_size=global_batch_size,
            process_index=p, process_count=process_count))
        counts.append(len(batches))
        for b in batches:
            assert b["image"].shape[0] == global_batch_size // process_count
            assert b["valid"].dtype == bool
            seen += _ids(b["image"][b["valid"]])
            assert not b["image"][~b["valid"]].any()  # padding is zeros
    assert len(set(counts)) == 1  # every process runs the same number of eval steps
    assert sorted(seen) == sorted(everything)


def test_load_builder_prepares_embedded_and_rejects_missing_real(tmp_path):
    builder = pipeline.load_builder("shapes/tiny", data_dir=str(tmp_path))
    assert builder.is_prepared() and builder.info.splits["train"].num_examples == 64
    with pytest.raises(ValueError, match="tfds build"):
        pipeline.load_builder("distorted_digits/mnist_r", data_dir=str(tmp_path))


def test_tensorflow_sees_no_gpu():
    assert not tf.config.get_visible_devices("GPU")


def test_extra_training_data_joins_every_epoch(tfds_dir):
    """The papers' 07+12 recipe on embedded data: shapes/tiny's train split plus, as extra
    training data, its test split; each epoch is one permutation of both."""
    builder = pipeline.load_builder("shapes/tiny", tfds_dir)
    sizes = [pipeline.num_examples(builder, split) for split in ("train", "test")]
    epoch = sum(sizes)
    assert epoch % 4 == 0, sizes  # whole batches per epoch keep the check simple
    batches = _take(pipeline.train_iterator(
        "shapes/tiny", "train", preprocess=_identity, global_batch_size=4, seed=0,
        process_index=0, process_count=1, data_dir=tfds_dir, extra=("shapes/tiny:test",)),
        epoch // 4)
    seen = sum((_ids(b["image"]) for b in batches), [])
    every = [e["image"].tobytes() for split in ("train", "test")
             for e in pipeline.examples(builder, split).as_numpy_iterator()]
    assert sorted(seen) == sorted(every)
    ids = {e["tfds_id"] for e in pipeline.examples(builder, "test").as_numpy_iterator()}
    assert all(i.startswith(b"shapes/tiny/") for i in ids) and len(ids) == sizes[1]
    with pytest.raises(ValueError, match="dataset:split"):
        next(pipeline.train_iterator("shapes/tiny", "train", preprocess=_identity,
                                     global_batch_size=4, seed=0, process_index=0,
                                     process_count=1, data_dir=tfds_dir, extra=("voc/2012",)))

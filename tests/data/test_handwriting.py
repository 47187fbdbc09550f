"""The embedded online-handwriting set: the paper's (dx, dy, end_of_stroke) format, writers,
text encoding with the unknown symbol, the builder, the preprocessor and the offset statistics."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax.data import handwriting, pipeline, preprocess


def _writer(**changes):
    fields = dict(font="scripts", size=10.0, slant=0.2, speed=1.0, wobble=0.2)
    return handwriting.Writer(**{**fields, **changes})


def test_lines_are_offsets_with_end_of_stroke_bits():
    """Summing the offsets gives the pen path; each stroke ends with a 1 bit, the line's last
    point included; longer texts give longer lines, both in points and in width."""
    short = handwriting.write_line("cat", _writer(), np.random.default_rng(0))
    long = handwriting.write_line("cat and dog", _writer(), np.random.default_rng(0))
    assert short.dtype == np.float32 and short.shape[1] == 3
    assert set(np.unique(short[:, 2])) == {0.0, 1.0} and short[-1, 2] == 1.0
    path = np.cumsum(long[:, :2], axis=0)
    assert len(long) > 2 * len(short)
    assert np.ptp(path[:, 0]) > 2.5 * np.ptp(np.cumsum(short[:, :2], axis=0)[:, 0])
    steps = np.linalg.norm(long[1:, :2], axis=1)[long[:-1, 2] == 0]  # within strokes
    assert np.median(steps) == pytest.approx(1.0, rel=0.3)  # the writer's pen speed


def test_writers_differ_in_slant_speed_and_are_reproducible():
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    a = handwriting.write_line("hello", _writer(), rng())
    np.testing.assert_array_equal(a, handwriting.write_line("hello", _writer(), rng()))
    fast = handwriting.write_line("hello", _writer(speed=2.0), rng())
    assert len(fast) < 0.7 * len(a)
    upright = np.cumsum(handwriting.write_line("l", _writer(slant=0.0, wobble=0.0), rng())[:, :2], 0)
    slanted = np.cumsum(handwriting.write_line("l", _writer(slant=0.5, wobble=0.0), rng())[:, :2], 0)
    # A tall letter leans right: its top is further right than its bottom.
    lean = lambda p: p[np.argmax(p[:, 1]), 0] - p[np.argmin(p[:, 1]), 0]  # noqa: E731
    assert lean(slanted) > lean(upright) + 2.0


def test_text_outside_the_alphabet_maps_to_the_unknown_symbol():
    ids = handwriting.encode_text("Hi é!")
    assert ids.tolist() == [handwriting.SYMBOLS.index(c) for c in "Hi "] + [0, handwriting.SYMBOLS.index("!")]
    assert handwriting.SYMBOLS[0] == handwriting.UNKNOWN
    with pytest.raises(ValueError, match="no visible characters"):
        handwriting.write_line("   ", _writer(), np.random.default_rng(0))


def test_builder_separates_writers_and_stores_lines(tfds_dir):
    builder = pipeline.load_builder("synthetic_handwriting/tiny", tfds_dir)
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    test = list(tfds.as_numpy(builder.as_dataset(split="test")))
    assert len(train) == 40 and len(test) == 10
    assert {int(e["writer"]) for e in train} <= set(range(4))
    assert {int(e["writer"]) for e in test} <= {4, 5}
    for example in train[:5]:
        text = example["text"].decode()
        assert 1 <= len(text) <= 10 and (handwriting.encode_text(text) > 0).all()
        assert example["strokes"].shape[1] == 3 and example["strokes"][-1, 2] == 1.0


def test_tf_text_encoding_matches_the_python_one():
    for text in ["Hi é!", "", "a#b~c", "The cat."]:
        np.testing.assert_array_equal(handwriting.tf_encode_text(tf.constant(text)).numpy(),
                                      handwriting.encode_text(text))


def test_preprocessor_normalizes_offsets_pads_and_counts_truncation():
    strokes = np.array([[0, 0, 0], [2, 4, 0], [4, -2, 1], [1, 1, 1]], np.float32)
    example = {"strokes": tf.constant(strokes), "text": tf.constant("abcdé")}
    out = preprocess.handwriting(example, tf.constant([0, 0]), True, max_points=6, max_chars=8,
                                 offset_mean=(1.0, 0.0), offset_std=(2.0, 4.0))
    assert out["strokes"].shape == (6, 3) and int(out["points"]) == 4
    np.testing.assert_allclose(out["strokes"].numpy()[:4, :2],
                               (strokes[:, :2] - [1, 0]) / [2, 4])
    np.testing.assert_array_equal(out["strokes"].numpy()[:4, 2], strokes[:, 2])
    assert not out["strokes"].numpy()[4:].any() and not bool(out["truncated"])
    np.testing.assert_array_equal(out["text"].numpy(), [*handwriting.encode_text("abcd"), 0, 0, 0,
                                                        0])
    assert int(out["text_length"]) == 5 and not bool(out["text_truncated"])
    cut = preprocess.handwriting(example, tf.constant([0, 0]), False, max_points=3, max_chars=2)
    assert int(cut["points"]) == 3 and bool(cut["truncated"])
    assert int(cut["text_length"]) == 2 and bool(cut["text_truncated"])
    with pytest.raises(ValueError, match="max_points and max_chars"):
        preprocess.handwriting(example, tf.constant([0, 0]), True, max_points=0, max_chars=2)


def test_offset_statistics_are_measured_once_saved_and_required(tfds_dir, tmp_path):
    builder = pipeline.load_builder("synthetic_handwriting/tiny", tfds_dir)
    offsets = np.concatenate([e["strokes"][:, :2] for e in tfds.as_numpy(
        builder.as_dataset(split="train"))])
    lengths = [len(e["strokes"]) for e in tfds.as_numpy(builder.as_dataset(split="train"))]
    with pytest.raises(FileNotFoundError, match="train first"):
        handwriting.statistics_for_run(tmp_path, [], 100, create=False)
    stats = handwriting.statistics_for_run(tmp_path, [(builder, "train")], 100, create=True)
    np.testing.assert_allclose(stats.mean, offsets.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.std, offsets.std(0), rtol=1e-4)
    assert (stats.lines, stats.truncated) == (40, sum(n > 100 for n in lengths))
    assert handwriting.statistics_for_run(tmp_path, [], 100, create=False) == stats
    shorter = handwriting.statistics_for_run(tmp_path, [(builder, "train")], 50, create=True)
    assert shorter.truncated == sum(n > 50 for n in lengths) > stats.truncated  # counted again
    assert shorter.mean == stats.mean

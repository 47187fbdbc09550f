"""Caption data: vocabulary, the captioning preprocessor on shapes, and the Flickr builders."""
import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import captions, flickr, pipeline
from segattn_jax.data.preprocess import make_preprocess


def test_vocabulary_keeps_frequent_words_maps_the_rest_to_unk_and_round_trips(tmp_path):
    sentences = ["A red Circle.", "a red square", "A blue circle!", "a zebra"]
    vocabulary = captions.Vocabulary.build(sentences, min_count=2)
    assert vocabulary.tokens == (*captions.SPECIAL, "a", "circle", "red")  # by count, then a-z
    assert vocabulary.encode("A RED, zebra") == [4, 6, vocabulary.unk]
    assert vocabulary.decode([4, 6, 5, vocabulary.end, 4]) == "a red circle"
    vocabulary.save(tmp_path)
    assert captions.Vocabulary.load(tmp_path).tokens == vocabulary.tokens
    with pytest.raises(FileNotFoundError, match="vocabulary.txt is missing"):
        captions.Vocabulary.load(tmp_path / "elsewhere")


def test_caption_encoder_matches_python_normalization_and_truncates():
    vocabulary = captions.Vocabulary.build(["a red circle above a blue star"] * 5)
    encoder = captions.CaptionEncoder(vocabulary, max_length=4)
    ids = encoder.encode(tf.constant("A red, CIRCLE above a green star")).numpy()
    words = vocabulary.encode("A red, CIRCLE above a green star")[:4]
    assert list(ids) == [vocabulary.start, *words, vocabulary.end]
    short = encoder.encode(tf.constant("a star")).numpy()
    assert list(short) == [vocabulary.start, *vocabulary.encode("a star"), vocabulary.end,
                           vocabulary.pad, vocabulary.pad]


def test_vocabulary_counts_every_training_source(tiny_shapes, tmp_path, monkeypatch):
    """COCO's row trains on train + restval (`dataset.extra_train`): Karpathy's word counts
    include both, so the vocabulary must too."""
    monkeypatch.setattr(pipeline, "load_builder", lambda name, data_dir=None: tiny_shapes)
    data = ml_collections.ConfigDict({"name": "shapes/test32", "train_split": "train",
                                      "extra_train": ("shapes/test32:test",), "data_dir": None})
    sources = pipeline.training_sources(data)
    assert [split for _, split in sources] == ["train", "test"]
    train, test = (captions.training_sentences(tiny_shapes, split) for split in ("train", "test"))
    min_count = 3
    both = captions.Vocabulary.build(train + test, min_count)
    assert both.tokens != captions.Vocabulary.build(train, min_count).tokens  # the test can fail
    vocabulary = captions.vocabulary_for_run(tmp_path, sources, min_count=min_count,
                                             max_length=30, create=True)
    assert vocabulary.tokens == both.tokens


def test_captioning_preprocess_on_shapes(tiny_shapes, tmp_path):
    vocabulary = captions.vocabulary_for_run(tmp_path, [(tiny_shapes, "train")], min_count=1,
                                             max_length=30, create=True)
    assert (tmp_path / captions.VOCABULARY_FILE).exists()
    preprocess = make_preprocess("captioning", {
        "captions": captions.CaptionEncoder(vocabulary, 30), "max_references": 2,
        "max_objects": 6})
    example = next(iter(pipeline.examples(tiny_shapes, "test")))
    out = preprocess(example, tf.constant([0, 1], tf.int64), False)
    caption = example["caption"].numpy().decode()
    assert vocabulary.decode(out["caption"].numpy()[1:]) == " ".join(captions.words(caption))
    references = out["references"].numpy()
    assert references.shape == (2, 256) and not references[1].any()  # shapes has one
    assert bytes(references[0]).rstrip(b"\0").decode() == caption
    count = len(example["objects"]["label"])
    np.testing.assert_array_equal(out["object_valid"].numpy(), np.arange(6) < count)
    np.testing.assert_allclose(out["object_boxes"].numpy()[:count], example["objects"]["bbox"])


def _write_flickr(manual, split_of: dict[str, str]):
    (manual / "Flicker8k_Dataset").mkdir(parents=True)
    images = []
    for i, (name, split) in enumerate(split_of.items()):
        Image.fromarray(np.full((20 + i, 30, 3), 40 * i, np.uint8)).save(
            manual / "Flicker8k_Dataset" / name)
        images.append({"filename": name, "imgid": i, "split": split, "sentences": [
            {"raw": f"A dog number {i}, sentence {k}.", "tokens": [], "imgid": i,
             "sentid": 5 * i + k} for k in range(5)]})
    (manual / "dataset_flickr8k.json").write_text(json.dumps({"images": images,
                                                               "dataset": "flickr8k"}))


def test_flickr_builder_reads_karpathys_layout(tmp_path):
    manual = tmp_path / "manual"
    _write_flickr(manual, {"a.jpg": "train", "b.jpg": "train", "c.jpg": "val", "d.jpg": "test"})
    builder = flickr.Flickr(config="8k", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        "train": 2, "val": 1, "test": 1}
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
    assert example["image/filename"] == b"d.jpg" and example["image"].shape == (23, 30, 3)
    assert list(example["captions"]["text"][:2]) == [b"A dog number 3, sentence 0.",
                                                     b"A dog number 3, sentence 1."]


def test_flickr_builder_names_what_is_missing(tmp_path):
    builder = flickr.Flickr(config="30k", data_dir=str(tmp_path / "data"))
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(AssertionError, match="(?s)is empty.*dataset_flickr30k.json"):  # TFDS's
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual)))
    (manual / "dataset_flickr30k.json").write_text('{"images": []}')
    with pytest.raises(FileNotFoundError, match="needs .*flickr30k-images"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual)))

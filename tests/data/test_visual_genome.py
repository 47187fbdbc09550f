"""The Visual Genome builder on a fixture in the download's layout, and the dense_captioning
preprocessor (phrases encoded, truncated, unknown words, images without regions)."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from segattn_jax.data import captions, preprocess, visual_genome


def write_visual_genome(manual) -> None:
    """Four images in VG_100K / VG_100K_2 with regions that the builder keeps, clips or drops."""
    sizes = {1: (40, 60), 2: (30, 30), 3: (50, 40), 4: (20, 20)}  # id -> (height, width)
    regions = {
        1: [{"phrase": "A red Car.", "x": 10, "y": 5, "width": 20, "height": 10},
            {"phrase": "the man's hat on the left", "x": 50, "y": 30, "width": 30, "height": 30},
            {"phrase": " ".join(["word"] * 11), "x": 0, "y": 0, "width": 5, "height": 5},
            {"phrase": "no area", "x": 5, "y": 5, "width": 0, "height": 4}],
        2: [{"phrase": "white cloud in blue sky", "x": 0, "y": 0, "width": 30, "height": 15}],
        3: [{"phrase": "green grass", "x": 0, "y": 25, "width": 40, "height": 25}],
        4: [{"phrase": "", "x": 0, "y": 0, "width": 5, "height": 5}],  # left without regions
    }
    images = []
    for image_id, (height, width) in sizes.items():
        folder = manual / ("VG_100K" if image_id % 2 else "VG_100K_2")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((height, width, 3), 30 * image_id, np.uint8)).save(
            folder / f"{image_id}.jpg")
        images.append({"image_id": image_id, "width": width, "height": height,
                       "url": f"https://example.org/{folder.name}/{image_id}.jpg"})
    (manual / "image_data.json").write_text(json.dumps(images))
    (manual / "region_descriptions.json").write_text(json.dumps([
        {"id": i, "regions": [{"region_id": 10 * i + k, "image_id": i, **r}
                              for k, r in enumerate(rs)]} for i, rs in regions.items()]))
    (manual / "densecap_splits.json").write_text(json.dumps(
        {"train": [1, 4], "val": [2], "test": [3]}))


def build(tmp_path) -> tfds.core.DatasetBuilder:
    manual = tmp_path / "manual"
    write_visual_genome(manual)
    builder = visual_genome.VisualGenome(data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


def test_builder_reads_the_download_with_densecaps_preprocessing(tmp_path):
    builder = build(tmp_path)
    # Image 4 has no region left; the split file puts 1 (and 4) in train, 2 in val, 3 in test.
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        "train": 1, "val": 1, "test": 1}
    examples = {int(e["image/id"]): e for e in tfds.as_numpy(builder.as_dataset(split="train"))}
    first = examples[1]
    assert first["image"].shape == (40, 60, 3)
    # Normalized phrases; the 11-word phrase and the empty box are dropped.
    assert list(first["objects"]["phrase"]) == [b"a red car", b"the man s hat on the left"]
    # (ymin, xmin, ymax, xmax), the second box clipped to the 60x40 image.
    np.testing.assert_allclose(first["objects"]["bbox"],
                               [[5 / 40, 10 / 60, 15 / 40, 30 / 60], [30 / 40, 50 / 60, 1, 1]])


def test_without_the_split_file_images_split_by_id_and_without_files_it_says_what_to_get(
        tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    split_of = visual_genome.VisualGenome._splits(epath.Path(empty), list(range(20_000)))
    counts = {s: sum(v == s for v in split_of.values()) for s in ("train", "val", "test")}
    assert counts["val"] == pytest.approx(20_000 * 5000 / 87398, rel=0.1)
    assert counts["test"] == pytest.approx(counts["val"], rel=0.15)
    assert split_of == visual_genome.VisualGenome._splits(epath.Path(empty), list(range(20_000)))
    (empty / "image_data.json").write_text("[]")  # the rest of the download is missing
    with pytest.raises(FileNotFoundError, match="needs .*region_descriptions.json in"):
        visual_genome.VisualGenome(data_dir=str(tmp_path / "other")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(empty)))


def test_dense_captioning_preprocessor_encodes_truncates_and_pads():
    vocabulary = captions.Vocabulary.build(["red car", "red hat"], min_count=1)
    encoder = captions.CaptionEncoder(vocabulary, max_length=2)
    example = {"image": tf.zeros((20, 40, 3), tf.uint8),
               "objects": {"bbox": tf.constant([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]),
                           "phrase": tf.constant(["Red car", "a red hat today"])}}
    out = preprocess.dense_captioning(example, tf.constant([0, 0]), True, captions=encoder,
                                      max_boxes=3)
    v = vocabulary
    np.testing.assert_array_equal(out["phrases"].numpy(), [
        [v.start, v.ids["red"], v.ids["car"], v.end],
        [v.start, v.unk, v.ids["red"], v.end],  # 'a' is unknown; cut after two words
        [v.pad] * 4])
    np.testing.assert_array_equal(out["phrase_truncated"].numpy(), [False, True, False])
    np.testing.assert_array_equal(out["box_valid"].numpy(), [True, True, False])
    np.testing.assert_allclose(out["boxes"].numpy()[1], [20, 10, 40, 20])  # never mirrored
    assert bytes(out["phrase_text"].numpy()[1]).rstrip(b"\0") == b"a red hat today"
    no_regions = {"image": example["image"],
                  "objects": {"bbox": tf.zeros((0, 4)), "phrase": tf.constant([], tf.string)}}
    out = preprocess.dense_captioning(no_regions, tf.constant([0, 0]), True, captions=encoder,
                                      max_boxes=3)
    assert out["phrases"].shape == (3, 4) and not out["box_valid"].numpy().any()

"""The VOC2012 + SBD segmentation builder on a fixture in the layout their archives extract:
palette-PNG masks read as class ids with 255 kept as ignore, SBD's .mat masks, the papers'
splits (seg11valid = VOC2011 val minus SBD train), the segmentation preprocessor reading an
example, and errors for an incomplete manual directory and a mask with values outside the
classes."""
import shutil

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import pipeline, voc_segmentation as voc
from segattn_jax.data.preprocess import make_preprocess

# Image ids: SBD train (a, b), VOC2012 seg train (c), VOC2012 seg val (b, d, e); VOC2011 val
# (b, d): seg11valid is d (b is in SBD train).
SIZES = {"2008_000001": (12, 16), "2008_000002": (10, 14), "2008_000003": (9, 9),
         "2008_000004": (11, 8), "2011_000005": (8, 10)}
SBD_TRAIN, VOC12_TRAIN = ["2008_000001", "2008_000002"], ["2008_000003"]
VOC12_VAL, VOC11_VAL = ["2008_000002", "2008_000004", "2011_000005"], ["2008_000002", "2008_000004"]


def class_mask(image_id: str, shape) -> np.ndarray:
    """A distinct mask per image: class k = the id's last digit in a block, a 255 border."""
    mask = np.zeros(shape, np.uint8)
    mask[2:6, 3:7] = int(image_id[-1]) * 3
    mask[0, :] = voc.IGNORE_LABEL
    return mask


def write_palette_png(path, mask) -> None:
    image = Image.fromarray(mask, mode="P")
    palette = np.random.default_rng(0).integers(0, 256, (256, 3), np.uint8)  # colours != ids
    image.putpalette(palette.ravel().tolist())
    image.save(path)


def write_download(manual) -> None:
    voc12, sbd = manual / voc.VOC2012, manual / voc.SBD
    for folder in (voc12 / "JPEGImages", voc12 / "SegmentationClass",
                   voc12 / "ImageSets" / "Segmentation", sbd / "img", sbd / "cls",
                   manual / voc.VOC2011 / "ImageSets" / "Segmentation"):
        folder.mkdir(parents=True)
    for image_id, shape in SIZES.items():
        Image.new("RGB", shape[::-1], (90, 120, 150)).save(voc12 / "JPEGImages" / f"{image_id}.jpg")
        write_palette_png(voc12 / "SegmentationClass" / f"{image_id}.png", class_mask(image_id, shape))
    for image_id in SBD_TRAIN:
        shape = SIZES[image_id]
        Image.new("RGB", shape[::-1], (10, 20, 30)).save(sbd / "img" / f"{image_id}.jpg")
        sbd_mask = class_mask(image_id, shape)
        sbd_mask[sbd_mask == voc.IGNORE_LABEL] = 1  # SBD has no ignore label
        scipy.io.savemat(sbd / "cls" / f"{image_id}.mat",
                         {"GTcls": {"Segmentation": sbd_mask, "CategoriesPresent": [1]}})
    lists = voc12 / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC12_TRAIN) + "\n")
    (lists / "val.txt").write_text("\n".join(VOC12_VAL) + "\n")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (manual / voc.VOC2011 / "ImageSets" / "Segmentation" / "val.txt").write_text(
        "\n".join(VOC11_VAL) + "\n")


def prepare(manual, data_dir) -> tfds.core.DatasetBuilder:
    builder = voc.VocSegmentation(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc") / "manual"
    write_download(root)
    return root


@pytest.fixture(scope="module")
def examples(manual, tmp_path_factory):
    builder = prepare(manual, tmp_path_factory.mktemp("voc_data"))
    return builder, {split: {e["image/filename"].decode(): e
                             for e in tfds.as_numpy(builder.as_dataset(split=split))}
                     for split in ("train", "seg11valid", "val", "voc12_train")}


def test_splits_are_the_papers(examples):
    _, splits = examples
    assert sorted(splits["train"]) == SBD_TRAIN
    assert sorted(splits["seg11valid"]) == ["2008_000004"]  # VOC2011 val minus SBD train
    assert sorted(splits["val"]) == VOC12_VAL
    assert sorted(splits["voc12_train"]) == VOC12_TRAIN


def test_masks_are_class_ids_with_255_ignored(examples):
    _, splits = examples
    example = splits["val"]["2011_000005"]
    expected = class_mask("2011_000005", SIZES["2011_000005"])
    np.testing.assert_array_equal(example["segmentation_mask"][..., 0], expected)
    assert example["image"].shape == (*SIZES["2011_000005"], 3)
    # SBD's masks come from its .mat files, its images from its own img/ folder.
    sbd = splits["train"]["2008_000002"]
    assert set(np.unique(sbd["segmentation_mask"])) == {0, 1, 6}
    assert abs(int(sbd["image"][..., 0].mean()) - 10) <= 3


def test_segmentation_preprocessor_reads_an_example_and_the_legend_names_voc(examples):
    builder, splits = examples
    raw = {k: v for k, v in splits["seg11valid"]["2008_000004"].items() if k != "image/filename"}
    out = make_preprocess("segmentation")(raw, np.zeros(2, np.int32), False)
    assert out["label"].numpy()[0, 0] == voc.IGNORE_LABEL and out["image"].shape == (11, 8, 3)
    assert pipeline.label_names(builder, "segmentation")[15] == "person"


def test_incomplete_manual_directory_says_what_is_missing(manual, tmp_path):
    partial = tmp_path / "manual"
    shutil.copytree(manual, partial)
    (partial / voc.VOC2011 / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"VOC2011/ImageSets/Segmentation/val.txt.*"
                                                r"VOCtrainval_25-May-2011"):
        prepare(partial, tmp_path / "data")


def test_mask_with_values_outside_the_classes_names_the_file(manual, tmp_path):
    broken = tmp_path / "manual"
    shutil.copytree(manual, broken)
    path = broken / voc.VOC2012 / "SegmentationClass" / "2008_000004.png"
    write_palette_png(path, np.full(SIZES["2008_000004"], 40, np.uint8))
    with pytest.raises(ValueError, match=r"2008_000004.png has pixel values \[40\]"):
        prepare(broken, tmp_path / "data")
    with pytest.raises(ValueError, match="palette PNGs"):
        Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
        voc.read_palette_png(tmp_path / "rgb.png")

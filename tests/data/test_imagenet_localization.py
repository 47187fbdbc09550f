"""The ImageNet localization (ILSVRC-2012 CLS-LOC) builder on a fixture in the layout of Kaggle's
download: labels, normalized / clipped / dropped boxes, splits, class names, errors for an
incomplete manual directory, and the detection preprocessor reading an example."""
import io
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import imagenet_localization, pipeline, preprocess

MAPPING = ("n01440764 tench, Tinca tinca\n"
           "n01443537 goldfish, Carassius auratus\n"
           "n03126707 crane\n")
SYNSETS = ["n01440764", "n01443537", "n03126707"]
TENCH, GOLDFISH, CRANE = range(3)
# ImageId -> (height, width, image mode), as ILSVRC has them: mostly RGB JPEGs, a few grayscale or
# CMYK ones, and a PNG named .JPEG ("PNG")
TRAIN = {"n01440764_10026": (40, 60, "RGB"), "n01443537_7": (30, 20, "L"),
         "n01440764_99": (10, 10, "RGB")}  # the last has no boxes: not in the CSV
VAL = {"ILSVRC2012_val_00000001": (50, 40, "RGB"), "ILSVRC2012_val_00000002": (20, 30, "CMYK"),
       "ILSVRC2012_val_00000003": (16, 16, "PNG")}
TRAIN_CSV = ("ImageId,PredictionString\n"
             # kept; a crane box, clipped; degenerate (xmax == xmin); negative, clipped; outside
             "n01440764_10026,n01440764 10 5 30 25 n03126707 50 30 80 50 n01440764 20 10 20 30 "
             "n01440764 -5 -5 10 10 n01440764 70 0 90 10 \n"
             "n01443537_7,n01443537 2 3 18 27\n")
VAL_CSV = ("ImageId,PredictionString\n"
           "ILSVRC2012_val_00000001,n03126707 4 10 36 40 n03126707 0 0 40 50\n"
           "ILSVRC2012_val_00000002,n01443537 3 2 27 18 \n"
           "ILSVRC2012_val_00000003,n01440764 8 4 8 12\n")  # only a degenerate box: no objects


def write_download(manual) -> None:
    """The fixture in the manual directory, as Kaggle's archive extracts it."""
    root = manual / "ILSVRC" / "Data" / "CLS-LOC"
    for split, images in (("train", TRAIN), ("val", VAL)):
        for image_id, (height, width, mode) in images.items():
            folder = root / split / (image_id.split("_")[0] if split == "train" else "")
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB" if mode == "PNG" else mode, (width, height),
                              100 if mode == "L" else (100,) * (4 if mode == "CMYK" else 3))
            image.save(folder / f"{image_id}.JPEG", format="PNG" if mode == "PNG" else "JPEG")
    (manual / "LOC_synset_mapping.txt").write_text(MAPPING)
    (manual / "LOC_train_solution.csv").write_text(TRAIN_CSV)
    (manual / "LOC_val_solution.csv").write_text(VAL_CSV)


def prepare(manual, data_dir) -> tfds.core.DatasetBuilder:
    builder = imagenet_localization.ImagenetLocalization(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imagenet_localization")
    write_download(tmp / "manual")
    return tmp, prepare(tmp / "manual", tmp / "data")


def _read(builder, split) -> dict:
    """ImageId -> example (the image's shape stands in for its id: all differ)."""
    shape_to_id = {(h, w): i for i, (h, w, _) in {**TRAIN, **VAL}.items()}
    return {shape_to_id[e["image"].shape[:2]]: e
            for e in tfds.as_numpy(builder.as_dataset(split=split))}


def test_builder_reads_labels_and_normalized_clipped_boxes(prepared):
    _, builder = prepared
    assert builder.info.full_name == "imagenet_localization/cls_loc_2012/1.0.0"
    # Only the training images with boxes; all validation images, even one left without boxes.
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation")} == {
        "train": 2, "validation": 3}
    train, val = _read(builder, "train"), _read(builder, "validation")
    assert set(train) == {"n01440764_10026", "n01443537_7"}
    tench = train["n01440764_10026"]
    assert tench["image"].shape == (40, 60, 3) and tench["label"] == TENCH
    # (ymin, xmin, ymax, xmax) / (40, 60); the crane box keeps its class and is clipped, the
    # negative one clipped at 0, the zero-width and the outside boxes dropped.
    np.testing.assert_allclose(tench["objects"]["bbox"], [
        [5 / 40, 10 / 60, 25 / 40, 30 / 60], [30 / 40, 50 / 60, 1, 1], [0, 0, 10 / 40, 10 / 60]],
        rtol=1e-6)
    np.testing.assert_array_equal(tench["objects"]["label"], [TENCH, CRANE, TENCH])
    goldfish = train["n01443537_7"]
    assert goldfish["label"] == GOLDFISH
    np.testing.assert_allclose(goldfish["objects"]["bbox"], [[3 / 30, 2 / 20, 27 / 30, 18 / 20]],
                               rtol=1e-6)
    # Validation: the class of the boxes.
    assert [val[i]["label"] for i in sorted(VAL)] == [CRANE, GOLDFISH, TENCH]
    np.testing.assert_allclose(val["ILSVRC2012_val_00000001"]["objects"]["bbox"],
                               [[10 / 50, 4 / 40, 40 / 50, 36 / 40], [0, 0, 1, 1]], rtol=1e-6)
    np.testing.assert_allclose(val["ILSVRC2012_val_00000002"]["objects"]["bbox"],
                               [[2 / 20, 3 / 30, 18 / 20, 27 / 30]], rtol=1e-6)
    assert val["ILSVRC2012_val_00000003"]["objects"]["bbox"].shape == (0, 4)
    # Every image decodes to RGB and is stored as a JPEG; the CMYK one and the PNG re-encoded.
    assert goldfish["image"].shape == (30, 20, 3)  # from a grayscale JPEG
    assert val["ILSVRC2012_val_00000002"]["image"].shape == (20, 30, 3)
    assert val["ILSVRC2012_val_00000003"]["image"].shape == (16, 16, 3)
    for split in ("train", "validation"):
        for example in tfds.as_numpy(builder.as_dataset(
                split=split, decoders={"image": tfds.decode.SkipDecoding()})):
            with Image.open(io.BytesIO(example["image"])) as image:
                assert image.format == "JPEG" and image.mode in ("RGB", "L")


def test_classes_are_the_mapping_files_and_pictures_get_readable_names(prepared, tmp_path):
    tmp, builder = prepared
    assert imagenet_localization.read_synset_mapping(tmp / "manual" / "LOC_synset_mapping.txt"
                                                     ) == (tuple(SYNSETS),
                                                           ("tench", "goldfish", "crane"))
    # Restored from the prepared data by a new builder, as the pipeline makes it.
    restored = tfds.builder("imagenet_localization", data_dir=str(tmp / "data"))
    assert restored.info.features["label"].names == SYNSETS
    assert restored.info.features["objects"]["label"].names == SYNSETS
    for task in ("classification", "detection", "localization"):
        assert pipeline.label_names(restored, task) == ("tench", "goldfish", "crane")
    # Unprepared, the names are unknown until the manual download is read: a clear error.
    with pytest.raises(ValueError, match="prepare the dataset first"):
        imagenet_localization.ImagenetLocalization(data_dir=str(tmp_path)).class_names


def test_an_incomplete_manual_directory_names_the_missing_file(prepared, tmp_path):
    tmp, _ = prepared
    manual = tmp_path / "manual"
    shutil.copytree(tmp / "manual", manual)
    (manual / "LOC_val_solution.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"needs \S*LOC_val_solution.csv in .*Kaggle"):
        prepare(manual, tmp_path / "data1")
    (manual / "LOC_val_solution.csv").write_text(VAL_CSV)
    image = manual / "ILSVRC/Data/CLS-LOC/train/n01443537/n01443537_7.JPEG"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{image} is missing .*extract all"):
        prepare(manual, tmp_path / "data2")


def test_detection_preprocessor_reads_an_example(prepared):
    _, builder = prepared
    (example,) = [e for e in builder.as_dataset(split="train")
                  if int(e["label"]) == TENCH]
    out = preprocess.detection(example, tf.constant([0, 0]), train=False, max_boxes=4)
    assert out["image"].shape == (40, 60, 3)
    np.testing.assert_allclose(out["boxes"].numpy()[:3],  # pixels (x1, y1, x2, y2)
                               [[10, 5, 30, 25], [50, 30, 60, 40], [0, 0, 10, 10]], atol=1e-4)
    np.testing.assert_array_equal(out["classes"].numpy(), [TENCH, CRANE, TENCH, 0])
    np.testing.assert_array_equal(out["box_valid"].numpy(), [True, True, True, False])

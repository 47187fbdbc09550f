"""The Stanford Background builder on a fixture in iccv09Data's layout: -1 (unknown) read as the
ignore label, five equal folds that partition the images, the papers' 4-vs-1 split expressions,
the segmentation preprocessor reading an example, and errors for an incomplete manual directory
and a labels file with classes outside 0-7."""
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import pipeline, stanford_background as sb
from segattn_jax.data.preprocess import make_preprocess

IDS = [f"{6000000 + i:07d}" for i in range(10)]  # 10 images: folds of 2
SHAPE = (6, 9)


def regions(index: int) -> np.ndarray:
    labels = np.full(SHAPE, index % sb.NUM_CLASSES, np.int64)
    labels[0, :2] = -1
    labels[-1, -1] = (index + 3) % sb.NUM_CLASSES
    return labels


def write_download(manual) -> None:
    root = manual / sb.ROOT
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index, image_id in enumerate(IDS):
        Image.new("RGB", SHAPE[::-1], (20 * index, 100, 50)).save(root / "images" / f"{image_id}.jpg")
        np.savetxt(root / "labels" / f"{image_id}.regions.txt", regions(index), fmt="%d")


def prepare(manual, data_dir) -> tfds.core.DatasetBuilder:
    builder = sb.StanfordBackground(data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    root = tmp_path_factory.mktemp("stanford") / "manual"
    write_download(root)
    return root


@pytest.fixture(scope="module")
def builder(manual, tmp_path_factory):
    return prepare(manual, tmp_path_factory.mktemp("stanford_data"))


def ids_of(builder, split) -> list[str]:
    return sorted(e["image/filename"].decode() for e in tfds.as_numpy(builder.as_dataset(split)))


def test_five_equal_folds_partition_the_images_and_split_four_against_one(builder):
    folds = [ids_of(builder, f"fold{k}") for k in range(1, 6)]
    assert [len(f) for f in folds] == [2] * 5 and sorted(sum(folds, [])) == IDS
    train, test = sb.fold_split(3)
    assert (train, test) == ("fold1+fold2+fold4+fold5", "fold3")
    assert ids_of(builder, train) == sorted(set(IDS) - set(folds[2]))
    with pytest.raises(ValueError, match="folds 1-5"):
        sb.fold_split(6)


def test_masks_are_the_regions_with_unknown_ignored(builder):
    examples = {e["image/filename"].decode(): e for e in tfds.as_numpy(
        builder.as_dataset("fold1+fold2+fold3+fold4+fold5"))}
    for index in (0, 7):
        expected = regions(index)
        expected[expected == -1] = sb.IGNORE_LABEL
        np.testing.assert_array_equal(examples[IDS[index]]["segmentation_mask"][..., 0], expected)
    raw = {k: v for k, v in examples[IDS[4]].items() if k != "image/filename"}
    out = make_preprocess("segmentation")(raw, np.zeros(2, np.int32), False)
    assert out["image"].shape == (*SHAPE, 3) and out["label"].numpy()[0, 0] == sb.IGNORE_LABEL
    assert pipeline.label_names(builder, "segmentation")[5] == "building"


def test_bad_downloads_say_what_is_wrong(manual, tmp_path):
    (tmp_path / "partial" / sb.ROOT / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"needs \S*iccv09Data/labels.*iccv09Data.tar.gz"):
        prepare(tmp_path / "partial", tmp_path / "data0")
    broken = tmp_path / "manual"
    shutil.copytree(manual, broken)
    (broken / sb.ROOT / "labels" / f"{IDS[3]}.regions.txt").unlink()
    with pytest.raises(FileNotFoundError, match=f"{IDS[3]}.regions.txt is missing"):
        prepare(broken, tmp_path / "data1")
    np.savetxt(broken / sb.ROOT / "labels" / f"{IDS[3]}.regions.txt", np.full(SHAPE, 9), fmt="%d")
    with pytest.raises(ValueError, match=r"regions.txt has labels \[9\] outside"):
        prepare(broken, tmp_path / "data2")

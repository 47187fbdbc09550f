"""The SBD instances builder on a fixture in the download's format (GTinst .mat files, VOC 2012's
Main lists): the papers' train / val splits, one mask and box per instance, the skipped empty
instance, and what it says when something is missing."""
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import sbd_instances
from segattn_jax.data.voc_segmentation import SBD, VOC2012


def write_sbd(manual) -> np.ndarray:
    """Three 20x30 images: 2008_000001 (train) with a cat, a dog and an instance id without
    pixels; 2008_000002 (val) with a person; 2008_000003 in VOC's val list but not in SBD."""
    sbd, lists = manual / SBD, manual / VOC2012 / "ImageSets" / "Main"
    for folder in (sbd / "img", sbd / "inst", lists):
        folder.mkdir(parents=True)
    first = np.zeros((20, 30), np.uint8)
    first[2:8, 3:12] = 1
    first[10:18, 15:29] = 2
    second = np.zeros((20, 30), np.uint8)
    second[0:20, 0:5] = 1
    for image_id, instances, categories in (("2008_000001", first, [8, 12, 3]),
                                            ("2008_000002", second, [15])):
        Image.new("RGB", (30, 20), (40, 80, 120)).save(sbd / "img" / f"{image_id}.jpg")
        scipy.io.savemat(sbd / "inst" / f"{image_id}.mat", {"GTinst": {
            "Segmentation": instances, "Categories": np.array(categories, np.uint8)[:, None],
            "Boundaries": np.zeros(len(categories))}})
    (lists / "train.txt").write_text("2008_000001\n")
    (lists / "val.txt").write_text("2008_000002\n2008_000003\n")
    return first


def build_sbd(tmp_path) -> str:
    """The fixture prepared as `sbd_instances` in tmp_path / 'data' (returned)."""
    write_sbd(tmp_path / "manual")
    sbd_instances.SbdInstances(data_dir=str(tmp_path / "data")).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))
    return str(tmp_path / "data")


def test_builder_reads_instances_in_the_papers_splits(tmp_path):
    first = write_sbd(tmp_path / "manual")
    builder = sbd_instances.SbdInstances(data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "manual")))
    assert {s: builder.info.splits[s].num_examples for s in ("train", "val")} == {
        "train": 1, "val": 1}
    assert builder.skipped == {"train": 1, "val": 0}
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
    objects = example["objects"]
    assert [sbd_instances.OBJECT_CLASSES[k] for k in objects["label"]] == ["cat", "dog"]
    np.testing.assert_allclose(objects["bbox"], [[2 / 20, 3 / 30, 8 / 20, 12 / 30],
                                                 [10 / 20, 15 / 30, 18 / 20, 29 / 30]])
    np.testing.assert_array_equal(objects["mask"][..., 0], [first == 1, first == 2])


def test_a_missing_download_says_what_to_put_where(tmp_path):
    lists = tmp_path / "manual" / VOC2012 / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2008_000001\n")  # VOC is there, SBD is not
    with pytest.raises(FileNotFoundError, match="sbd_instances needs .*inst.*benchmark.tgz"):
        sbd_instances.SbdInstances(data_dir=str(tmp_path / "data")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "manual")))

"""The LSP / LSPET builder on a fixture in the layout their archives extract: each file's own
visibility convention, coordinates moved to pixel centres at +0.5, LSP's half/half split, the
extended config's training set, the pose preprocessor reading an example, and errors for an
incomplete manual directory."""
import shutil

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from segattn_jax.data import lsp
from segattn_jax.data.preprocess import make_preprocess
from segattn_jax.metrics.pose import NUM_JOINTS

# (height, width) of each image: LSP's im0001-im0004 (first half trains, second half tests) and
# LSPET's im00001-im00002.
LSP_SIZES = [(30, 40), (20, 30), (25, 25), (40, 20)]
LSPET_SIZES = [(35, 45), (28, 28)]


def _joints(count: int, offset: float) -> np.ndarray:
    """(count, 14, 2) 1-based coordinates, distinct per image and joint, all inside 20x20."""
    image, joint = np.meshgrid(np.arange(count), np.arange(NUM_JOINTS), indexing="ij")
    return np.stack([1 + joint + offset, 2 + joint / 2 + image], -1).astype(np.float64)


def write_download(manual) -> None:
    """The fixture in the manual directory, as lsp_dataset.zip and lspet_dataset.zip extract."""
    xy = _joints(len(LSP_SIZES), 0.0)
    occluded = np.zeros((len(LSP_SIZES), NUM_JOINTS))
    occluded[0, 0] = 1  # LSP: 1 = occluded
    xy[1, 3, 0] = 100.0  # outside image 2 (30 wide): invisible although not flagged
    lsp_mat = np.concatenate([xy, occluded[..., None]], -1).transpose(2, 1, 0)  # 3 x 14 x N
    xy_et = _joints(len(LSPET_SIZES), 0.25)
    visible_et = np.ones((len(LSPET_SIZES), NUM_JOINTS))
    visible_et[1, 13] = 0  # LSPET: 1 = visible
    lspet_mat = np.concatenate([xy_et, visible_et[..., None]], -1).transpose(1, 2, 0)  # 14 x 3 x N
    for folder, mat, sizes, digits in ((lsp.LSP_DIR, lsp_mat, LSP_SIZES, 4),
                                       (lsp.LSPET_DIR, lspet_mat, LSPET_SIZES, 5)):
        (manual / folder / "images").mkdir(parents=True)
        scipy.io.savemat(manual / folder / "joints.mat", {"joints": mat})
        for i, (height, width) in enumerate(sizes):
            Image.new("RGB", (width, height), (90, 120, 150)).save(
                manual / folder / "images" / f"im{i + 1:0{digits}d}.jpg", format="JPEG")


def prepare(manual, data_dir, config: str) -> tfds.core.DatasetBuilder:
    builder = lsp.Lsp(config=config, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsp") / "manual"
    write_download(root)
    return root


def _read(builder, split) -> dict:
    return {e["image/filename"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split))}


def test_original_config_reads_joints_visibility_and_lsp_split(manual, tmp_path):
    builder = prepare(manual, tmp_path, "original")
    train, test = _read(builder, "train"), _read(builder, "test")
    assert sorted(train) == ["lsp_dataset/im0001.jpg", "lsp_dataset/im0002.jpg"]
    assert sorted(test) == ["lsp_dataset/im0003.jpg", "lsp_dataset/im0004.jpg"]
    first = train["lsp_dataset/im0001.jpg"]
    assert first["image"].shape == (30, 40, 3)
    np.testing.assert_allclose(first["joints"], _joints(4, 0.0)[0] - 0.5)
    # LSP flags occlusion: joint 0 of image 1 is the only one hidden there.
    assert not first["visible"][0] and first["visible"][1:].all()
    second = train["lsp_dataset/im0002.jpg"]
    assert not second["visible"][3] and second["visible"].sum() == NUM_JOINTS - 1  # x = 100
    np.testing.assert_allclose(first["person_box"], [0, 0, 1, 1])
    assert test["lsp_dataset/im0004.jpg"]["image"].shape == (40, 20, 3)


def test_extended_config_adds_lspet_with_its_own_visibility_convention(manual, tmp_path):
    builder = prepare(manual, tmp_path, "extended")
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
        "train": 4, "test": 2}
    train = _read(builder, "train")
    second = train["lspet_dataset/im00002.jpg"]
    assert second["image"].shape == (28, 28, 3)
    np.testing.assert_allclose(second["joints"], _joints(2, 0.25)[1] - 0.5)
    assert not second["visible"][13] and second["visible"][:13].all()  # LSPET: 0 = hidden
    assert train["lspet_dataset/im00001.jpg"]["visible"].all()


def test_pose_preprocessor_crops_the_whole_image_square(manual, tmp_path):
    """The person box is the whole image: the crop is its longer side, centred; joints keep
    their place relative to it."""
    builder = prepare(manual, tmp_path, "original")
    example = next(iter(builder.as_dataset("train").filter(
        lambda e: tf.strings.regex_full_match(e["image/filename"], ".*im0001.jpg"))))
    out = make_preprocess("pose", {"size": 20, "margin": 0.0})(example, tf.constant([0, 0]),
                                                                False)
    # 30x40 image -> a 40x40 square centred on it (5 rows of padding above), scaled by 20/40.
    expected = (_joints(4, 0.0)[0] - 0.5 + [0.0, 5.0]) * 0.5
    np.testing.assert_allclose(out["joints"].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(out["visible"].numpy(), example["visible"].numpy())


def test_an_incomplete_or_wrong_manual_directory_says_what_is_missing(manual, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"needs \S*lspet_dataset/joints.mat"):
        only_lsp = tmp_path / "only_lsp"
        shutil.copytree(manual / lsp.LSP_DIR, only_lsp / lsp.LSP_DIR)
        prepare(only_lsp, tmp_path / "data1", "extended")
    broken = tmp_path / "broken"
    shutil.copytree(manual, broken)
    image = broken / lsp.LSP_DIR / "images" / "im0003.jpg"
    image.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{image} is missing .*extract the whole"):
        prepare(broken, tmp_path / "data2", "original")
    scipy.io.savemat(broken / lsp.LSP_DIR / "joints.mat", {"joints": np.zeros((14, 3, 4))})
    with pytest.raises(ValueError, match=r"expected joints of shape 3 x 14 x N \(LSP's layout\)"):
        prepare(broken, tmp_path / "data3", "original")

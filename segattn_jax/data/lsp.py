"""Leeds Sports Pose (Johnson & Everingham, BMVC 2010) and its extension LSPET (CVPR 2011), from
their manual downloads: the data of DeepPose's Table 1 (Toshev & Szegedy 2014: "11000 training
and 1000 testing images", i.e. LSP's 1000 training images plus LSPET's 10000, tested on LSP's
1000 test images).

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`), as
the two archives (lsp_dataset.zip, lspet_dataset.zip) extract:
  lsp_dataset/joints.mat      `joints`, 3 x 14 x 2000: x, y in pixels and a flag that is 1 where
                              the joint is occluded (LSP's convention)
  lsp_dataset/images/im0001.jpg ... im2000.jpg
  lspet_dataset/joints.mat    `joints`, 14 x 3 x 10000: x, y and a flag that is 1 where the joint
                              is visible (the extension's convention is the opposite)
  lspet_dataset/images/im00001.jpg ... im10000.jpg     (config 'extended' only)
Configs: 'original' (train: the first half of lsp_dataset/joints.mat, im0001-im1000; test: the
second half, im1001-im2000: LSP's standard split) and 'extended' (train: LSP's train + LSPET;
test: LSP's test).
Features, the `poses` layout the `pose` preprocessor reads: image; joints (14, 2) float32 (x, y)
in pixels with pixel centres at +0.5 (the files' 1-based MATLAB coordinates minus 0.5); visible
(14,) bool: not flagged occluded and inside the image; person_box: the whole image, as DeepPose
starts on LSP, whose images are cropped around the person. The joint order is JOINT_NAMES'
(right ankle ... head top), left and right the person's own.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath

from segattn_jax.data.imagenet_localization import read_jpeg
from segattn_jax.metrics.pose import NUM_JOINTS

LSP_DIR, LSPET_DIR = "lsp_dataset", "lspet_dataset"


def read_joints(path, *, extension: bool) -> np.ndarray:
    """(N, 14, 3) float32 (x, y, visible flag) from an LSP (extension=False: 3 x 14 x N, flag 1
    = occluded) or LSPET (14 x 3 x N, flag 1 = visible) joints.mat, coordinates as stored."""
    try:
        joints = scipy.io.loadmat(str(path))["joints"]
    except KeyError:
        raise ValueError(f"{path} has no 'joints' array: is it LSP's joints.mat?") from None
    expected = (NUM_JOINTS, 3) if extension else (3, NUM_JOINTS)
    if joints.ndim != 3 or joints.shape[:2] != expected:
        raise ValueError(f"{path}: expected joints of shape {expected[0]} x {expected[1]} x N "
                         f"({'LSPET' if extension else 'LSP'}'s layout), got {joints.shape}.")
    joints = np.asarray(joints, np.float32)
    if extension:
        return joints.transpose(2, 0, 1)
    joints = joints.transpose(2, 1, 0).copy()
    joints[..., 2] = 1.0 - joints[..., 2]  # LSP flags occlusion; the extension flags visibility
    return joints


@dataclasses.dataclass
class LspConfig(tfds.core.BuilderConfig):
    extended: bool = False  # train on LSPET too


class Lsp(tfds.core.GeneratorBasedBuilder):
    """LSP (and LSPET) images with 14 joints each, in the `poses` layout."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        LspConfig(name="original", description="LSP: 1000 training, 1000 test images."),
        LspConfig(name="extended", extended=True,
                  description="LSP + LSPET: 11000 training images, LSP's 1000 test images "
                  "(DeepPose's setting)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/) the extracted archives
    of http://sam.johnson.io/research/lsp.html: lsp_dataset/ (joints.mat, images/im0001.jpg ...)
    and, for the 'extended' config, lspet_dataset/ (joints.mat, images/im00001.jpg ...).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "joints": tfds.features.Tensor(shape=(NUM_JOINTS, 2), dtype=np.float32),
                "visible": tfds.features.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
                "person_box": tfds.features.BBoxFeature(),
            }),
            homepage="http://sam.johnson.io/research/lsp.html",
        )

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        folders = [LSP_DIR, LSPET_DIR] if self.builder_config.extended else [LSP_DIR]
        needed = [manual / folder / name for folder in folders for name in ("joints.mat", "images")]
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            raise FileNotFoundError(f"lsp/{self.builder_config.name} needs {', '.join(missing)}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        lsp = read_joints(manual / LSP_DIR / "joints.mat", extension=False)
        items = [(manual / LSP_DIR / "images" / f"im{i + 1:04d}.jpg", j) for i, j in enumerate(lsp)]
        half = len(items) // 2
        train, test = items[:half], items[half:]
        if self.builder_config.extended:
            lspet = read_joints(manual / LSPET_DIR / "joints.mat", extension=True)
            train += [(manual / LSPET_DIR / "images" / f"im{i + 1:05d}.jpg", j)
                      for i, j in enumerate(lspet)]
        return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

    def _generate_examples(self, items):
        for path, joints in items:
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing (its joints are in {path.parent.parent / 'joints.mat'}): "
                    "extract the whole archive. "
                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
            image, width, height = read_jpeg(path)
            xy = joints[:, :2] - 0.5  # 1-based pixel centres -> ours (pixel centres at +0.5)
            inside = ((xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0)
                      & (xy[:, 1] < height))
            name = f"{path.parent.parent.name}/{path.name}"
            yield name, {"image": image, "image/filename": name, "joints": xy.astype(np.float32),
                         "visible": (joints[:, 2] > 0.5) & inside,
                         "person_box": tfds.features.BBox(0.0, 0.0, 1.0, 1.0)}

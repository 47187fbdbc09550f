"""PASCAL VOC 2012 object instances with SBD's masks (Hariharan et al. 2011): the data of the
APr tables of SDS (Hariharan et al. 2014), Hypercolumns (2015) and MNC (Dai et al. 2016).

The builder reads the manual directory the semantic-segmentation builder (`voc_segmentation`)
reads (`<data_dir>/downloads/manual/`):
  benchmark_RELEASE/dataset/  SBD extracted: img/*.jpg, inst/*.mat (GTinst.Segmentation: an
                              instance-id map, 0 background; GTinst.Categories: each instance's
                              class 1-20)
  VOCdevkit/VOC2012/ImageSets/Main/train.txt, val.txt   (VOCtrainval_11-May-2012.tar)
Splits, as the papers use them: train = the VOC 2012 train images SBD annotates (5623), val =
the VOC 2012 val images it annotates (5732). Each instance's box is its mask's extent; an
instance whose mask is empty is skipped and counted in the preparation log. The objects are laid
out as `coco_instances`'s (bbox, label, mask), so the detection preprocess reads both alike.
"""
from __future__ import annotations

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from segattn_jax.data.imagenet_localization import read_jpeg
from segattn_jax.data.labels import VOC_OBJECT_CLASSES
from segattn_jax.data.voc_segmentation import SBD, VOC2012, read_list

OBJECT_CLASSES = VOC_OBJECT_CLASSES  # no background: detection labels are object classes


def read_sbd_instances(path) -> tuple[np.ndarray, np.ndarray]:
    """An SBD inst/*.mat -> (instance-id map (H, W), each instance's class 1-20 (N,))."""
    try:
        gt = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTinst"]
        return np.asarray(gt.Segmentation), np.atleast_1d(np.asarray(gt.Categories, np.int64))
    except (KeyError, AttributeError):
        raise ValueError(f"{path} has no GTinst.Segmentation and GTinst.Categories: is it an "
                         "SBD inst/*.mat?") from None


class SbdInstances(tfds.core.GeneratorBasedBuilder):
    """VOC 2012 train / val images with SBD's instance masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/): benchmark_RELEASE/
    (SBD, benchmark.tgz from http://home.bharathh.info/pubs/codes/SBD/download.html, extracted)
    and VOCdevkit/VOC2012/ (VOCtrainval_11-May-2012.tar from
    http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, extracted; its ImageSets/Main/train.txt
    and val.txt are the splits).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: dict[str, int] = {}  # split -> instances with an empty mask

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=OBJECT_CLASSES),
                    "mask": tfds.features.Image(shape=(None, None, 1)),
                }),
            }),
            homepage="http://home.bharathh.info/pubs/codes/SBD/download.html")

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        sbd, lists = manual / SBD, manual / VOC2012 / "ImageSets" / "Main"
        needed = [sbd / "img", sbd / "inst", lists / "train.txt", lists / "val.txt"]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise FileNotFoundError(f"sbd_instances needs {', '.join(missing)}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        annotated = {p.stem for p in (sbd / "inst").glob("*.mat")}
        return {split: self._generate_examples(
                    sbd, split, [i for i in read_list(lists / f"{split}.txt") if i in annotated])
                for split in ("train", "val")}

    def _generate_examples(self, sbd: epath.Path, split: str, ids: list[str]):
        skipped = 0
        for image_id in ids:
            image_path = sbd / "img" / f"{image_id}.jpg"
            if not image_path.exists():
                raise FileNotFoundError(f"{image_path} is missing: extract SBD's benchmark.tgz "
                                        "completely.")
            image, width, height = read_jpeg(image_path)
            instances, categories = read_sbd_instances(sbd / "inst" / f"{image_id}.mat")
            if instances.shape != (height, width):
                raise ValueError(f"{image_id}.mat is {instances.shape[1]}x{instances.shape[0]} "
                                 f"but its image is {width}x{height}.")
            if not set(categories.tolist()) <= set(range(1, len(OBJECT_CLASSES) + 1)):
                raise ValueError(f"{image_id}.mat has categories {categories.tolist()}; SBD's "
                                 f"are 1-{len(OBJECT_CLASSES)}.")
            objects = []
            for index, category in enumerate(categories, start=1):
                mask = instances == index
                if not mask.any():
                    skipped += 1
                    continue
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                objects.append({
                    "bbox": tfds.features.BBox(rows[0] / height, cols[0] / width,
                                               (rows[-1] + 1) / height, (cols[-1] + 1) / width),
                    "label": int(category) - 1,
                    "mask": mask.astype(np.uint8)[..., None]})
            yield image_id, {"image": image, "image/filename": image_id, "objects": objects}
        self.skipped[split] = skipped
        logging.info("sbd_instances %s: skipped %d instances with an empty mask.", split, skipped)

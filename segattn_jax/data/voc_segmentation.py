"""PASCAL VOC semantic segmentation with the SBD extra annotations, from their manual downloads:
the data of FCN's Table 2 (Long et al. 2015) and DeconvNet's (Noh et al. 2015).

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`):
  VOCdevkit/VOC2012/        VOCtrainval_11-May-2012.tar extracted: JPEGImages/*.jpg,
                            SegmentationClass/*.png (palette PNGs: the pixel values are class ids
                            0-20, 255 = boundary/difficult, ignored), ImageSets/Segmentation/
                            train.txt, val.txt
  benchmark_RELEASE/        SBD (Hariharan et al. 2011) extracted: dataset/img/*.jpg,
                            dataset/cls/*.mat (GTcls.Segmentation, class ids 0-20),
                            dataset/train.txt, dataset/val.txt
  VOCdevkit/VOC2011/ImageSets/Segmentation/val.txt
                            only for 'seg11valid' (from VOCtrainval_25-May-2011.tar; the list is
                            all it needs: VOC2012 holds the same images and masks)
Splits:
  train       SBD train, 8498 images with SBD's masks: what FCN and DeconvNet train on.
  seg11valid  the VOC2011 segmentation val images that are not in SBD train (736): FCN's Table 2.
  val         VOC2012 segmentation val (1449): DeconvNet's validation.
  voc12_train VOC2012 segmentation train (1464), for the VOC-only training recipes.
Features, the `shapes` segmentation layout the `segmentation` preprocessor reads: image;
segmentation_mask (H, W, 1) uint8 class ids with 255 = ignore; image/filename (the image id).
"""
from __future__ import annotations

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from segattn_jax.data import labels
from segattn_jax.data.imagenet_localization import read_jpeg

CLASS_NAMES = labels.VOC_CLASSES
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_LABEL = 255
VOC2012, VOC2011 = "VOCdevkit/VOC2012", "VOCdevkit/VOC2011"
SBD = "benchmark_RELEASE/dataset"


def check_class_ids(mask: np.ndarray, path) -> np.ndarray:
    """`mask` as uint8, after checking every value is a class id or the ignore label."""
    bad = np.setdiff1d(np.unique(mask), [*range(NUM_CLASSES), IGNORE_LABEL])
    if bad.size:
        raise ValueError(f"{path} has pixel values {bad.tolist()[:10]} outside the {NUM_CLASSES} "
                         f"VOC class ids and {IGNORE_LABEL} (ignore): is it a VOC "
                         "SegmentationClass palette PNG or an SBD cls .mat?")
    return mask.astype(np.uint8)


def read_palette_png(path) -> np.ndarray:
    """(H, W) class ids of a VOC SegmentationClass PNG: its palette indices, not its colours."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path} is a {image.mode} image; VOC masks are palette PNGs whose "
                             "pixel values are class ids (SegmentationClass/, not the colours).")
        return check_class_ids(np.asarray(image), path)


def read_sbd_mat(path) -> np.ndarray:
    """(H, W) class ids of an SBD cls/*.mat (GTcls.Segmentation)."""
    try:
        gt = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"]
        mask = np.asarray(gt.Segmentation)
    except (KeyError, AttributeError):
        raise ValueError(f"{path} has no GTcls.Segmentation: is it an SBD cls/*.mat?") from None
    return check_class_ids(mask, path)


def photo_segmentation_features() -> tfds.features.FeaturesDict:
    """The features of a real-photo semantic segmentation builder (VOC, Stanford Background):
    JPEG images of any size, their class-id masks (255 = ignore) and the image ids."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "image/filename": tfds.features.Text(),
        "segmentation_mask": tfds.features.Image(shape=(None, None, 1)),
    })


def read_list(path: epath.Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class VocSegmentation(tfds.core.GeneratorBasedBuilder):
    """VOC2012 + SBD images with class masks (255 = ignore), in the splits the papers use."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    LABEL_NAMES = {"segmentation": CLASS_NAMES}  # the masks' class ids (pipeline.label_names)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/):
    VOCdevkit/VOC2012/ (VOCtrainval_11-May-2012.tar from
    http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, extracted) and benchmark_RELEASE/ (SBD,
    benchmark.tgz from http://home.bharathh.info/pubs/codes/SBD/download.html, extracted); for
    the seg11valid split also VOCdevkit/VOC2011/ImageSets/Segmentation/val.txt (from
    VOCtrainval_25-May-2011.tar).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=photo_segmentation_features(),
            homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/")

    def _missing(self, paths) -> None:
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise FileNotFoundError(f"voc_segmentation needs {', '.join(missing)}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        voc, sbd = manual / VOC2012, manual / SBD
        lists = voc / "ImageSets" / "Segmentation"
        voc11_val = manual / VOC2011 / "ImageSets" / "Segmentation" / "val.txt"
        self._missing([voc / "JPEGImages", voc / "SegmentationClass", lists / "train.txt",
                       lists / "val.txt", sbd / "img", sbd / "cls", sbd / "train.txt", voc11_val])
        sbd_train = read_list(sbd / "train.txt")
        in_sbd_train = set(sbd_train)

        def voc_items(ids):
            return [(i, voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png")
                    for i in ids]

        seg11valid = [i for i in read_list(voc11_val) if i not in in_sbd_train]
        return {
            "train": self._generate_examples(
                [(i, sbd / "img" / f"{i}.jpg", sbd / "cls" / f"{i}.mat") for i in sbd_train]),
            "seg11valid": self._generate_examples(voc_items(seg11valid)),
            "val": self._generate_examples(voc_items(read_list(lists / "val.txt"))),
            "voc12_train": self._generate_examples(voc_items(read_list(lists / "train.txt"))),
        }

    def _generate_examples(self, items):
        for image_id, image_path, mask_path in items:
            self._missing([image_path, mask_path])
            image, width, height = read_jpeg(image_path)
            mask = (read_sbd_mat(mask_path) if mask_path.suffix == ".mat"
                    else read_palette_png(mask_path))
            if mask.shape != (height, width):
                raise ValueError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                                 f"{image_path} is {width}x{height}.")
            yield image_id, {"image": image, "image/filename": image_id,
                             "segmentation_mask": mask[..., None]}

"""The Stanford Background dataset (Gould, Fulton & Koller, ICCV 2009) from its manual download:
the data of Farabet et al. 2013's and Pinheiro & Collobert 2014's scene-labeling tables.

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`), as
iccv09Data.tar.gz extracts:
  iccv09Data/images/<id>.jpg            715 outdoor scenes of about 320x240
  iccv09Data/labels/<id>.regions.txt    one row of integers per image row: the semantic class of
                                        each pixel, 0-7 (sky, tree, road, grass, water, building,
                                        mountain, foreground object), -1 = unknown
Splits: `fold1` ... `fold5`, 143 images each: the images sorted by id, shuffled with a fixed seed,
and cut in five. The papers' 5-fold protocol trains on four (572 images) and tests on the fifth
(143), e.g. train split 'fold2+fold3+fold4+fold5', test split 'fold1'.
Features, the segmentation layout the `segmentation` preprocessor reads: image;
segmentation_mask (H, W, 1) uint8 class ids with 255 = unknown (ignored); image/filename (the id).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from segattn_jax.data.imagenet_localization import read_jpeg
from segattn_jax.data.voc_segmentation import photo_segmentation_features

CLASS_NAMES = ("sky", "tree", "road", "grass", "water", "building", "mountain", "foreground")
NUM_CLASSES = len(CLASS_NAMES)
UNKNOWN, IGNORE_LABEL = -1, 255
ROOT = "iccv09Data"
NUM_FOLDS = 5
FOLD_SEED = 0  # the fixed shuffle that makes the folds (the papers publish none)


def fold_split(fold: int) -> tuple[str, str]:
    """(train split, test split) of the papers' protocol with `fold` (1-5) held out."""
    if not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"Stanford Background has folds 1-{NUM_FOLDS}; got {fold}.")
    train = "+".join(f"fold{k}" for k in range(1, NUM_FOLDS + 1) if k != fold)
    return train, f"fold{fold}"


def read_regions(path) -> np.ndarray:
    """(H, W) uint8 class ids of a labels/<id>.regions.txt, -1 (unknown) as 255."""
    try:
        labels = np.loadtxt(str(path), dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path} is not a grid of integers ({error}).") from None
    bad = np.setdiff1d(np.unique(labels), [UNKNOWN, *range(NUM_CLASSES)])
    if bad.size:
        raise ValueError(f"{path} has labels {bad.tolist()[:10]} outside -1 (unknown) and the "
                         f"{NUM_CLASSES} classes 0-{NUM_CLASSES - 1}: is it a .regions.txt?")
    return np.where(labels == UNKNOWN, IGNORE_LABEL, labels).astype(np.uint8)


def folds(image_ids: list[str]) -> list[list[str]]:
    """The five folds: sorted ids shuffled with FOLD_SEED, cut into equal parts."""
    ids = sorted(image_ids)
    order = np.random.default_rng(FOLD_SEED).permutation(len(ids))
    return [[ids[i] for i in sorted(part)] for part in np.array_split(order, NUM_FOLDS)]


class StanfordBackground(tfds.core.GeneratorBasedBuilder):
    """Stanford Background's 715 scenes with 8 semantic classes, in five folds."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    LABEL_NAMES = {"segmentation": CLASS_NAMES}  # the masks' class ids (pipeline.label_names)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/) the extracted
    iccv09Data.tar.gz of http://dags.stanford.edu/projects/scenedataset.html: iccv09Data/ with
    images/*.jpg and labels/*.regions.txt.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=photo_segmentation_features(),
            homepage="http://dags.stanford.edu/projects/scenedataset.html")

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir) / ROOT
        missing = [str(p) for p in (root / "images", root / "labels") if not p.is_dir()]
        if missing:
            raise FileNotFoundError(f"stanford_background needs {', '.join(missing)}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        ids = [p.name.removesuffix(".jpg") for p in (root / "images").glob("*.jpg")]
        if len(ids) < NUM_FOLDS:
            raise FileNotFoundError(f"{root / 'images'} has {len(ids)} .jpg images; the dataset "
                                    "has 715. " + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        return {f"fold{k}": self._generate_examples(root, part)
                for k, part in enumerate(folds(ids), start=1)}

    def _generate_examples(self, root: epath.Path, image_ids: list[str]):
        for image_id in image_ids:
            labels_path = root / "labels" / f"{image_id}.regions.txt"
            if not labels_path.exists():
                raise FileNotFoundError(f"{labels_path} is missing (the labels of "
                                        f"{root / 'images' / image_id}.jpg): extract the whole "
                                        "archive.")
            image, width, height = read_jpeg(root / "images" / f"{image_id}.jpg")
            mask = read_regions(labels_path)
            if mask.shape != (height, width):
                raise ValueError(f"{labels_path} is {mask.shape[1]}x{mask.shape[0]} but its "
                                 f"image is {width}x{height}.")
            yield image_id, {"image": image, "image/filename": image_id,
                             "segmentation_mask": mask[..., None]}

"""ILSVRC-2012 classification with localization (CLS-LOC; Russakovsky et al. 2015), from its
manual download: the data of the classification + localization rows (Simonyan & Zisserman 2015,
Sec. 4 / Table 8: a box regressor, single-class or per-class, on top of the classifier).

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`), as
Kaggle's "ImageNet Object Localization Challenge" download extracts it (the ILSVRC2012 CLS-LOC
images, with the boxes as CSV):
  LOC_synset_mapping.txt     one class a line, "n01440764 tench, Tinca tinca" (synset id, space,
                             names); the line order is the class index (0..999)
  LOC_train_solution.csv     header "ImageId,PredictionString"; rows like
                             "n01440764_10026,n01440764 46 24 460 366 n01440764 ...": groups of 5
                             tokens (synset, xmin, ymin, xmax, ymax in pixels)
  LOC_val_solution.csv       the same, ImageId like "ILSVRC2012_val_00000001"
  ILSVRC/Data/CLS-LOC/train/<synset>/<ImageId>.JPEG
  ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG
Splits: 'train' is the training images that have boxes (those in LOC_train_solution.csv, ~544k of
the 1.28M: the paper trains its regressor on them), 'validation' the 50k validation images.
Features: the image (JPEG, stored as downloaded; the few CMYK or non-JPEG files re-encoded as RGB
JPEG), its class `label`, and its boxes as `objects` {bbox (ymin, xmin, ymax, xmax) normalized by
the image's size read from the JPEG and clipped to [0, 1], label}, the layout of TFDS's voc/coco
that the `detection` preprocessor reads. A box keeps its own synset as its label (ILSVRC's boxes
are all of the image's class); boxes empty after clipping are dropped (the image is kept).
The classes are the mapping file's, in its order (any number): the ClassLabels are named by synset
id (unique); the readable names ("tench", first of each line's names, not all unique: two
"crane"s) are `read_synset_mapping`'s second result and, once prepared, the builder's
`class_names` / `LABEL_NAMES` (what `pipeline.label_names` gives pictures).
"""
from __future__ import annotations

import csv
import dataclasses
import io

import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

MAPPING_FILE = "LOC_synset_mapping.txt"
SOLUTION_FILES = {"train": "LOC_train_solution.csv", "validation": "LOC_val_solution.csv"}
IMAGE_DIRS = {"train": "ILSVRC/Data/CLS-LOC/train", "validation": "ILSVRC/Data/CLS-LOC/val"}
CSV_HEADER = ["ImageId", "PredictionString"]


def read_synset_mapping(path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(synset ids, first readable name of each) from LOC_synset_mapping.txt, in its order."""
    synsets, names = [], []
    for number, line in enumerate(epath.Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        synset, _, rest = line.strip().partition(" ")
        if not rest.strip():
            raise ValueError(f"{path}:{number}: expected '<synset> <names>', got {line!r}.")
        synsets.append(synset)
        names.append(rest.split(",")[0].strip())
    if not synsets:
        raise ValueError(f"{path} lists no classes.")
    if len(set(synsets)) != len(synsets):
        raise ValueError(f"{path} lists a synset twice.")
    return tuple(synsets), tuple(names)


def read_solution(path) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """ImageId -> its boxes [(synset, xmin, ymin, xmax, ymax) in pixels], in the file's order."""
    boxes: dict[str, list] = {}
    with epath.Path(path).open() as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != CSV_HEADER:
            raise ValueError(f"{path}: expected the header {','.join(CSV_HEADER)}, got {header}.")
        for number, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{number}: expected ImageId,PredictionString, got {row}.")
            tokens = row[1].split()
            if len(tokens) % 5:
                raise ValueError(f"{path}:{number}: the boxes are not groups of 5 tokens "
                                 "(synset xmin ymin xmax ymax).")
            boxes.setdefault(row[0], []).extend(
                (tokens[i], *map(float, tokens[i + 1:i + 5])) for i in range(0, len(tokens), 5))
    return boxes


@dataclasses.dataclass
class ImagenetLocalizationConfig(tfds.core.BuilderConfig):
    pass


class ImagenetLocalization(tfds.core.GeneratorBasedBuilder):
    """ILSVRC-2012 CLS-LOC images with their class and object boxes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [ImagenetLocalizationConfig(
        name="cls_loc_2012", description="ILSVRC-2012 CLS-LOC: training images with boxes, and "
        "the validation set.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/) the extracted
    download of Kaggle's ImageNet Object Localization Challenge
    (https://www.kaggle.com/c/imagenet-object-localization-challenge/data, after accepting
    its terms: `kaggle competitions download -c imagenet-object-localization-challenge`,
    then unzip it there): LOC_synset_mapping.txt, LOC_train_solution.csv,
    LOC_val_solution.csv and the images, ILSVRC/Data/CLS-LOC/train/<synset>/<ImageId>.JPEG
    and ILSVRC/Data/CLS-LOC/val/<ImageId>.JPEG.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        # The classes come from the mapping file: named in _split_generators, and restored from
        # the prepared data (label.labels.txt, metadata.json) afterwards.
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(),
                }),
            }),
            supervised_keys=("image", "label"),
            homepage="https://image-net.org/challenges/LSVRC/2012/",
            metadata=tfds.core.MetadataDict(),
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        """Readable class names ("tench", ...), in label order; needs the prepared data."""
        try:  # a prepared builder's metadata loads on [] (not on .get)
            names = self.info.metadata["class_names"]
        except (KeyError, TypeError):
            names = None
        if not names:
            raise ValueError(
                f"{self.name}'s classes come from its manual download ({MAPPING_FILE}): prepare "
                f"the dataset first (tfds build {self.name} --imports=segattn_jax.data.builders "
                f"--manual_dir=...), or read the mapping with read_synset_mapping.")
        return tuple(names)

    @property
    def LABEL_NAMES(self) -> dict[str, tuple[str, ...]]:  # noqa: N802 (pipeline.label_names)
        """Readable names for the preprocessors' labels (pictures say "tench", not n01440764)."""
        return {task: self.class_names for task in ("classification", "detection", "localization")}

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        needed = [MAPPING_FILE, *SOLUTION_FILES.values(), *IMAGE_DIRS.values()]
        missing = [str(manual / name) for name in needed if not (manual / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"imagenet_localization needs {', '.join(missing)} in {manual}. "
                + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        synsets, names = read_synset_mapping(manual / MAPPING_FILE)
        features = self.info.features
        for label in (features["label"], features["objects"]["label"]):
            label.names = list(synsets)
        self.info.metadata["class_names"] = list(names)
        return {split: self._generate_examples(manual, split, read_solution(manual / file),
                                               set(synsets))
                for split, file in SOLUTION_FILES.items()}

    def _generate_examples(self, manual: epath.Path, split: str, solution: dict,
                           synsets: set[str]):
        solution_file = manual / SOLUTION_FILES[split]
        for image_id, boxes in solution.items():
            if split == "train":  # n01440764_10026, in the folder of its class
                label = image_id.rsplit("_", 1)[0]
                path = manual / IMAGE_DIRS[split] / label / f"{image_id}.JPEG"
            else:  # validation images are of the class of their boxes
                if not boxes:
                    raise ValueError(f"{image_id} has no box in {solution_file}: its class is "
                                     "unknown.")
                label = boxes[0][0]
                path = manual / IMAGE_DIRS[split] / f"{image_id}.JPEG"
            for synset in {label, *(box[0] for box in boxes)}:
                if synset not in synsets:
                    raise ValueError(f"{image_id} in {solution_file} has class {synset}, which "
                                     f"{manual / MAPPING_FILE} does not list.")
            if not path.exists():
                raise FileNotFoundError(
                    f"{path} is missing ({image_id} is in {solution_file}): extract all of the "
                    f"download's images into {manual / IMAGE_DIRS[split]}. "
                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
            image, width, height = read_jpeg(path)
            objects = []
            for synset, x1, y1, x2, y2 in boxes:
                x1, x2 = (min(max(x / width, 0.0), 1.0) for x in (x1, x2))
                y1, y2 = (min(max(y / height, 0.0), 1.0) for y in (y1, y2))
                if x2 > x1 and y2 > y1:
                    objects.append({"bbox": tfds.features.BBox(y1, x1, y2, x2), "label": synset})
            yield image_id, {"image": image, "label": label, "objects": objects}


def read_jpeg(path: epath.Path) -> tuple[bytes, int, int]:
    """The file's JPEG bytes (CMYK or non-JPEG files, a few in ILSVRC, re-encoded as RGB JPEG)
    and its width and height."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if image.format != "JPEG" or image.mode not in ("RGB", "L"):
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=95)
            data = out.getvalue()
    return data, width, height

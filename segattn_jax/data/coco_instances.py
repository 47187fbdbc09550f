"""COCO instances with their masks (Lin et al. 2014), from the official download: TFDS's `coco`
keeps boxes only, and Mask R-CNN's table needs the masks.

The builder reads the manual directory (`<data_dir>/downloads/manual/`):
  annotations/instances_train2017.json, annotations/instances_val2017.json
  train2017/, val2017/    the images, <12-digit id>.jpg, as the zips extract them
Every object's segmentation (polygons, or RLE for crowd regions) is decoded with pycocotools
into a full-image mask (stored as a PNG), its box taken from the annotation (x, y, w, h) and
its label the index of its category among COCO's 80 (sorted by category id). Crowd regions are
kept with `is_crowd` set: the detection preprocess turns them into ignored objects, as the COCO
protocol ignores them. Objects whose mask is empty or whose box has no area are skipped and
counted in the preparation log. Images without annotations are kept (they have no objects).
"""
from __future__ import annotations

import json

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

# COCO's 80 object categories in the order of their ids (1..90 with gaps).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
SPLITS = {"train": "train2017", "validation": "val2017"}


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) -> (height, width) uint8."""
    from pycocotools import mask as mask_utils
    if isinstance(segmentation, list):  # polygons: merged into one mask
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd regions)
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.asarray(mask_utils.decode(rle), np.uint8)


class CocoInstances(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 images with every object's box, class, crowd flag and mask."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2017", description="COCO 2017 train/val.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/), from
    https://cocodataset.org/#download: annotations_trainval2017.zip extracted (its
    annotations/ folder with instances_train2017.json and instances_val2017.json), and
    train2017.zip and val2017.zip extracted (train2017/ and val2017/).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: dict[str, dict[str, int]] = {}  # folder -> reason -> objects skipped

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=COCO_CLASSES),
                    "is_crowd": np.bool_,
                    "mask": tfds.features.Image(shape=(None, None, 1)),
                }),
            }),
            homepage="https://cocodataset.org",
        )

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual, folder) for split, folder in SPLITS.items()}

    def _generate_examples(self, manual: epath.Path, folder: str):
        path = manual / "annotations" / f"instances_{folder}.json"
        if not path.exists():
            raise FileNotFoundError(f"coco_instances needs {path}. "
                                    + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        data = json.loads(path.read_text())
        categories = sorted(data["categories"], key=lambda c: c["id"])
        names = tuple(c["name"] for c in categories)
        if names != COCO_CLASSES:
            raise ValueError(f"{path} has categories {names[:5]}... ({len(names)}), not COCO's 80 "
                             "object categories: is it an instances_*.json file?")
        label_of = {c["id"]: index for index, c in enumerate(categories)}
        annotations: dict[int, list] = {}
        for annotation in data["annotations"]:
            annotations.setdefault(annotation["image_id"], []).append(annotation)
        skipped = {"empty mask": 0, "zero-area box": 0}
        for image in data["images"]:
            image_path = manual / folder / image["file_name"]
            if not image_path.exists():
                raise FileNotFoundError(f"{image_path} (image {image['id']} of {path.name}) is "
                                        f"missing: extract {folder}.zip into {manual}.")
            height, width = int(image["height"]), int(image["width"])
            objects = []
            for annotation in annotations.get(image["id"], []):
                x, y, w, h = (float(v) for v in annotation["bbox"])
                x1, y1 = max(x, 0.0), max(y, 0.0)
                x2, y2 = min(x + w, float(width)), min(y + h, float(height))
                if x2 <= x1 or y2 <= y1:
                    skipped["zero-area box"] += 1
                    continue
                mask = decode_segmentation(annotation["segmentation"], height, width)
                if not mask.any():
                    skipped["empty mask"] += 1
                    continue
                objects.append({
                    "bbox": tfds.features.BBox(y1 / height, x1 / width, y2 / height, x2 / width),
                    "label": label_of[annotation["category_id"]],
                    "is_crowd": bool(annotation.get("iscrowd", 0)),
                    "mask": mask[..., None]})
            yield image["id"], {"image": image_path, "image/id": image["id"], "objects": objects}
        self.skipped[folder] = skipped
        logging.info("coco_instances %s: skipped %d objects with an empty mask and %d with a "
                     "zero-area box.", folder, skipped["empty mask"], skipped["zero-area box"])

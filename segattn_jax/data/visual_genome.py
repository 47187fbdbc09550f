"""Visual Genome region descriptions (Krishna et al. 2016) for dense captioning, from its manual
download, with DenseCap's split and preprocessing.

The builder reads what the user put in the manual directory (`<data_dir>/downloads/manual/`):
  region_descriptions.json   [{"id": image id, "regions": [{"region_id", "image_id", "phrase",
                              "x", "y", "width", "height"}, ...]}, ...]
  image_data.json            [{"image_id" (or "id"), "width", "height", "url"}, ...]
  VG_100K/, VG_100K_2/       the images, <image id>.jpg, as the two zips extract them
  densecap_splits.json       DenseCap's split (its repository's info/densecap_splits.json:
                             {"train": [ids], "val": [...], "test": [...]}, 77398/5000/5000); when
                             absent, images are split by a hash of their id in the same proportions.
Preprocessing as DenseCap: phrases lower-cased with punctuation dropped (the captioning
normalization, `data/captions.words`), regions whose phrase has more than `max_words` words (10,
the paper's) dropped, boxes clipped to the image and degenerate ones dropped, images left without
regions dropped. Images are stored as they are; the dense_captioning preprocessor resizes them
(longest side 720 in the paper-scale config). Heavily overlapping boxes (IoU >= 0.7) are merged
where the released code merges them: in the evaluation (`metrics/dense_captioning.py`), into one
region with all their phrases as references.
"""
from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from segattn_jax.data.captions import words

IMAGE_DIRS = ("VG_100K", "VG_100K_2")
SPLIT_FILE = "densecap_splits.json"
SPLIT_SIZES = {"train": 77398, "val": 5000, "test": 5000}  # DenseCap's split


@dataclasses.dataclass
class VisualGenomeConfig(tfds.core.BuilderConfig):
    max_words: int = 10


class VisualGenome(tfds.core.GeneratorBasedBuilder):
    """Visual Genome images with their region boxes and phrases, DenseCap's splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [VisualGenomeConfig(name="densecap", description="DenseCap's preprocessing.")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/), from
    https://homes.cs.washington.edu/~ranjay/visualgenome/api.html (version 1.2):
      - region_descriptions.json and image_data.json (region_descriptions.json.zip,
        image_data.json.zip, unzipped);
      - the images, as images.zip and images2.zip extract them: VG_100K/ and VG_100K_2/;
      - optionally DenseCap's split, info/densecap_splits.json of
        https://github.com/jcjohnson/densecap, as densecap_splits.json.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "phrase": tfds.features.Text(),
                }),
            }),
            homepage="https://visualgenome.org",
        )

    def _split_generators(self, dl_manager):
        manual = epath.Path(dl_manager.manual_dir)
        needed = [manual / "region_descriptions.json", manual / "image_data.json"]
        missing = [str(p) for p in needed if not p.exists()]
        if missing or not any((manual / d).exists() for d in IMAGE_DIRS):
            raise FileNotFoundError(
                f"visual_genome needs {', '.join(missing) or 'the image folders'} in {manual}. "
                + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        regions = {int(entry["id"]): entry["regions"]
                   for entry in json.loads(needed[0].read_text())}
        images = {int(entry.get("image_id", entry.get("id"))): entry
                  for entry in json.loads(needed[1].read_text())}
        split_of = self._splits(manual, sorted(regions))
        ids = {split: [i for i in sorted(regions) if split_of.get(i) == split]
               for split in SPLIT_SIZES}
        return {split: self._generate_examples(manual, ids[split], regions, images)
                for split in SPLIT_SIZES}

    @staticmethod
    def _splits(manual: epath.Path, image_ids: list[int]) -> dict[int, str]:
        """image id -> split: DenseCap's file if present, else a hash of the id."""
        path = manual / SPLIT_FILE
        if path.exists():
            return {int(i): split for split, ids in json.loads(path.read_text()).items()
                    for i in ids}
        logging.warning("%s not found: splitting Visual Genome by a hash of the image id in "
                        "DenseCap's proportions; its numbers are on its own split.", path)
        total = sum(SPLIT_SIZES.values())
        bounds = np.cumsum([SPLIT_SIZES[s] / total for s in ("val", "test")])
        split_of = {}
        for i in image_ids:
            u = zlib.crc32(str(i).encode()) / 2**32
            split_of[i] = "val" if u < bounds[0] else "test" if u < bounds[1] else "train"
        return split_of

    def _generate_examples(self, manual: epath.Path, ids: list[int], regions: dict,
                           images: dict):
        max_words = self.builder_config.max_words
        for image_id in ids:
            info = images.get(image_id)
            if info is None:
                raise ValueError(f"Image {image_id} has regions but no entry in image_data.json.")
            path = next((manual / d / f"{image_id}.jpg" for d in IMAGE_DIRS
                         if (manual / d / f"{image_id}.jpg").exists()), None)
            if path is None:
                raise FileNotFoundError(f"Image {image_id}.jpg is in none of {IMAGE_DIRS} under "
                                        f"{manual}: extract both image archives there.")
            width, height = float(info["width"]), float(info["height"])
            objects = []
            for region in regions[image_id]:
                phrase = " ".join(words(region["phrase"]))
                x1, y1 = max(float(region["x"]), 0.0), max(float(region["y"]), 0.0)
                x2 = min(float(region["x"]) + float(region["width"]), width)
                y2 = min(float(region["y"]) + float(region["height"]), height)
                if not phrase or len(phrase.split()) > max_words or x2 <= x1 or y2 <= y1:
                    continue
                objects.append({"bbox": tfds.features.BBox(y1 / height, x1 / width,
                                                           y2 / height, x2 / width),
                                "phrase": phrase})
            if objects:
                yield image_id, {"image": path, "image/id": image_id, "objects": objects}

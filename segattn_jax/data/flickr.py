"""Flickr8k and Flickr30k with Karpathy's splits, from their manual downloads.

Neither is downloadable without accepting its terms, so the builder reads what the user put in the
manual directory (`<data_dir>/downloads/manual/` by default):
  dataset_flickr8k.json   + Flicker8k_Dataset/<image files>    (Flickr8k; the zip's own spelling)
  dataset_flickr30k.json  + flickr30k-images/<image files>     (Flickr30k)
The json files are Karpathy's (caption_datasets.zip, the splits Show, Attend and Tell reports on:
Flickr8k 6000/1000/1000, Flickr30k 29000/1014/1000 train/val/test). Examples have the same
features as TFDS `coco_captions` (image, image/filename, captions: {text, id}), so the captioning
preprocessor reads all three alike.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds
from etils import epath


@dataclasses.dataclass
class FlickrConfig(tfds.core.BuilderConfig):
    annotations: str = ""   # Karpathy's json file in the manual directory
    image_dir: str = ""     # the images' directory in the manual directory


class Flickr(tfds.core.GeneratorBasedBuilder):
    """Flickr8k / Flickr30k images with 5 captions each, Karpathy's train/val/test splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        FlickrConfig(name="8k", annotations="dataset_flickr8k.json",
                     image_dir="Flicker8k_Dataset", description="Flickr8k (Hodosh et al. 2013)."),
        FlickrConfig(name="30k", annotations="dataset_flickr30k.json",
                     image_dir="flickr30k-images", description="Flickr30k (Young et al. 2014)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put into the manual directory (default <data_dir>/downloads/manual/):
      - Karpathy's split file from https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip:
        dataset_flickr8k.json (Flickr8k) or dataset_flickr30k.json (Flickr30k);
      - the images, as their archives extract them: Flicker8k_Dataset/ (Flickr8k_Dataset.zip) or
        flickr30k-images/ (flickr30k-images.tar.gz).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image/filename": tfds.features.Text(),
                "captions": tfds.features.Sequence({"text": tfds.features.Text(),
                                                    "id": np.int64}),
            }),
            homepage="https://cs.stanford.edu/people/karpathy/deepimagesent/",
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        manual = epath.Path(dl_manager.manual_dir)
        annotations, images = manual / cfg.annotations, manual / cfg.image_dir
        missing = [str(p) for p in (annotations, images) if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"flickr/{cfg.name} needs {', '.join(missing)}. "
                + " ".join(self.MANUAL_DOWNLOAD_INSTRUCTIONS.split()))
        entries = json.loads(annotations.read_text())["images"]
        by_split = {"train": [], "val": [], "test": []}
        for entry in entries:
            by_split.setdefault(entry["split"], []).append(entry)
        return {split: self._generate_examples(images, by_split[split])
                for split in ("train", "val", "test")}

    def _generate_examples(self, images: epath.Path, entries: list[dict]):
        for entry in entries:
            path = images / entry["filename"]
            if not path.exists():
                raise FileNotFoundError(f"{path} is listed in {self.builder_config.annotations} "
                                        f"but missing from {images}: extract the whole archive.")
            yield entry["filename"], {
                "image": path,
                "image/filename": entry["filename"],
                "captions": [{"text": s["raw"], "id": s["sentid"]} for s in entry["sentences"]],
            }

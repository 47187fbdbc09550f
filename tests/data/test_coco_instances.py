"""The COCO instances builder on a fixture in the download's layout (polygon, compressed and
uncompressed RLE, crowd regions, objects it must skip, an image without objects), and the
detection preprocess's box-relative masks on it."""
import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from pycocotools import mask as mask_utils

from segattn_jax.data import coco_instances, preprocess
from segattn_jax.ops.masks import paste_masks


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths of the column-major mask, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def write_coco(manual, folder="val2017") -> dict[str, np.ndarray]:
    """Two 30x40 images: the first with a polygon object, an RLE object, a crowd region, a
    zero-area box and an empty mask; the second without annotations. Returns the kept masks."""
    (manual / "annotations").mkdir(parents=True)
    (manual / folder).mkdir()
    for image_id in (1, 2):
        Image.fromarray(np.full((30, 40, 3), 50 * image_id, np.uint8)).save(
            manual / folder / f"{image_id:012d}.jpg")
    square = np.zeros((30, 40), bool)
    square[5:15, 10:20] = True  # the polygon's pixels
    blob = np.zeros((30, 40), bool)
    blob[20:28, 2:9] = True
    blob[22:24, 4:6] = False
    crowd = np.zeros((30, 40), bool)
    crowd[0:10, 30:40] = True
    categories = [{"id": i, "name": name, "supercategory": "x"} for i, name in zip(
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
         27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
         52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
         78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90], coco_instances.COCO_CLASSES)]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 18, "iscrowd": 0, "bbox": [10, 5, 10, 10],
         "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},                     # dog, polygon
        {"id": 2, "image_id": 1, "category_id": 90, "iscrowd": 0, "bbox": [2, 20, 7, 8],
         "segmentation": _rle(blob)},                                           # toothbrush, RLE
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [30, 0, 10, 10],
         "segmentation": _uncompressed_rle(crowd)},                             # person, crowd
        {"id": 4, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 0, 4],
         "segmentation": [[5, 5, 6, 5, 6, 9]]},                                 # zero-area box
        {"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 3, 3],
         "segmentation": _rle(np.zeros((30, 40), bool))},                       # empty mask
    ]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "height": 30, "width": 40} for i in (1, 2)]
    (manual / "annotations" / f"instances_{folder}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return {"square": square, "blob": blob, "crowd": crowd}


def build_coco(tmp_path) -> coco_instances.CocoInstances:
    """The fixture's train2017 and val2017 (the same two images each), prepared."""
    manual = tmp_path / "manual"
    write_coco(manual)
    builder = coco_instances.CocoInstances(data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual)))
    write_coco(tmp_path / "train_only", "train2017")
    for name in ("annotations/instances_train2017.json", "train2017"):
        (tmp_path / "train_only" / name).rename(manual / name)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual)))
    return builder


def test_builder_decodes_polygons_and_rles_keeps_crowds_and_skips_empty_objects(tmp_path):
    builder = build_coco(tmp_path)
    expected = write_coco(tmp_path / "expected")
    assert builder.skipped["val2017"] == {"empty mask": 1, "zero-area box": 1}
    examples = {int(e["image/id"]): e for e in
                tfds.as_numpy(builder.as_dataset(split="validation"))}
    assert len(examples[2]["objects"]["label"]) == 0  # kept without objects
    objects = examples[1]["objects"]
    names = [coco_instances.COCO_CLASSES[k] for k in objects["label"]]
    assert names == ["dog", "toothbrush", "person"]
    np.testing.assert_array_equal(objects["is_crowd"], [False, False, True])
    np.testing.assert_allclose(objects["bbox"][0], [5 / 30, 10 / 40, 15 / 30, 20 / 40])
    # The polygon covers its square (pycocotools' rasterization may add its border pixels).
    assert objects["mask"][0, ..., 0][expected["square"]].all()
    np.testing.assert_array_equal(objects["mask"][1, ..., 0], expected["blob"])
    np.testing.assert_array_equal(objects["mask"][2, ..., 0], expected["crowd"])

    # The detection preprocess: crowd -> ignored ("difficult"), masks relative to their boxes.
    example = next(iter(builder.as_dataset(split="validation").filter(
        lambda e: e["image/id"] == 1)))
    out = preprocess.detection(example, tf.constant([0, 0]), False, max_boxes=4, canvas=(64, 64),
                               min_side=60.0, max_side=80.0, mask_size=16)
    np.testing.assert_array_equal(out["difficult"].numpy(), [False, False, True, False])
    assert out["masks"].shape == (4, 16, 16)
    pasted = paste_masks(out["masks"].numpy()[1:2], np.array([[2, 20, 9, 28]]), 30, 40)
    np.testing.assert_array_equal(pasted[0], expected["blob"])


def test_a_missing_image_fails_naming_it(tmp_path):
    manual = tmp_path / "manual"
    for folder in ("val2017", "train2017"):
        write_coco(tmp_path / folder, folder)
        for name in (f"annotations/instances_{folder}.json", folder):
            (manual / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / name).rename(manual / name)
    (manual / "train2017" / "000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000000002.jpg .*extract train2017.zip"):
        coco_instances.CocoInstances(data_dir=str(tmp_path / "data")).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))

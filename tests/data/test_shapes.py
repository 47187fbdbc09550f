import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from segattn_jax.data import shapes
from segattn_jax.data.shapes import CLASS_NAMES, COLOURS, NUM_SEMANTIC_CLASSES, render_scene


def _scenes(n, image_size=64, max_objects=6, two_tone=False):
    return [render_scene(np.random.default_rng(i), image_size, max_objects, two_tone=two_tone)
            for i in range(n)]


@pytest.mark.parametrize("image_size,two_tone", [(64, False), (32, False), (64, True)])
def test_render_scene_invariants(image_size, two_tone):
    for scene in _scenes(150, image_size, two_tone=two_tone):
        s = image_size
        image, seg, objects = scene["image"], scene["segmentation_mask"], scene["objects"]
        assert image.shape == (s, s, 3) and image.dtype == np.uint8
        assert seg.shape == (s, s, 1) and seg.dtype == np.uint8
        labels, boxes, masks = objects["label"], objects["bbox"], objects["mask"]
        n = len(labels)
        assert 1 <= n <= 6
        assert boxes.shape == (n, 4) and masks.shape == (n, s, s, 1) and len(objects["phrase"]) == n
        assert set(np.unique(masks)) <= {0, 1}
        assert seg.max() < NUM_SEMANTIC_CLASSES
        m = masks[..., 0].astype(bool)
        # Visible masks: non-empty (fully occluded objects dropped), disjoint, and exactly the
        # foreground of the semantic mask, each carrying its own class there.
        assert m.reshape(n, -1).any(1).all()
        assert (m.sum(0) <= 1).all()
        np.testing.assert_array_equal(m.any(0), seg[..., 0] > 0)
        for i in range(n):
            assert (seg[..., 0][m[i]] == labels[i] + 1).all()
            rows, cols = np.nonzero(m[i])
            tight = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / s
            np.testing.assert_allclose(boxes[i], tight, atol=1e-6)  # contains the mask, tightly
            phrase = objects["phrase"][i]
            assert phrase.endswith(CLASS_NAMES[labels[i]])
            assert any(c in phrase.split() for c in COLOURS)
            assert phrase in scene["caption"]
        assert scene["caption"].startswith(("a ", "an "))


def test_objects_overlap_and_later_objects_occlude():
    """Some scenes have an object whose box contains pixels of a later (occluding) object."""
    occluded = 0
    for scene in _scenes(100):
        m = scene["objects"]["mask"][..., 0].astype(bool)
        boxes = np.rint(scene["objects"]["bbox"] * 64).astype(int)
        for i in range(len(m)):
            y0, x0, y1, x1 = boxes[i]
            later = m[i + 1:, y0:y1, x0:x1]
            occluded += later.any()
    assert occluded >= 10


def test_render_scene_is_deterministic_by_seed():
    a, b = (render_scene(np.random.default_rng(123)) for _ in range(2))
    c = render_scene(np.random.default_rng(124))
    for key in ("image", "segmentation_mask"):
        assert a[key].tobytes() == b[key].tobytes()
    assert a["caption"] == b["caption"] and a["objects"]["phrase"] == b["objects"]["phrase"]
    np.testing.assert_array_equal(a["objects"]["mask"], b["objects"]["mask"])
    assert a["image"].tobytes() != c["image"].tobytes()


def test_class_and_colour_statistics():
    scenes = _scenes(200)
    labels = np.concatenate([s["objects"]["label"] for s in scenes])
    assert set(labels) == set(range(len(CLASS_NAMES)))
    colour_of = {name: [] for name in CLASS_NAMES}
    for s in scenes:
        for k, phrase in zip(s["objects"]["label"], s["objects"]["phrase"]):
            colour_of[CLASS_NAMES[k]].append(next(w for w in phrase.split() if w in COLOURS))
    # Colour is independent of class: every class appears in several colours.
    assert all(len(set(c)) >= 4 for c in colour_of.values())


def test_two_tone_objects_show_both_named_colours():
    """Each two-tone object's pixels sit near the two colours its phrase names, both present on
    most objects (a line near the centre splits them; occlusion may hide one side)."""
    palette = np.array(list(COLOURS.values()), np.float32)
    both = total = 0
    for scene in _scenes(60, two_tone=True):
        image = scene["image"].astype(np.float32)
        for mask, phrase in zip(scene["objects"]["mask"][..., 0].astype(bool),
                                scene["objects"]["phrase"]):
            named = [w for w in phrase.split() if w in COLOURS]
            assert len(named) == 2 and named[0] != named[1] and " and " in phrase
            pixels = image[mask]
            if len(pixels) < 40:
                continue
            nearest = np.argmin(((pixels[:, None] - palette[None]) ** 2).sum(-1), axis=1)
            share = [np.mean(nearest == list(COLOURS).index(c)) for c in named]
            assert sum(share) > 0.9  # the named colours, not others
            both += min(share) > 0.1
            total += 1
    assert total >= 100 and both >= 0.8 * total


def test_two_tone_objects_split_bottom_up_regions():
    """Why `two_tone` exists: selective search's grouping regions trace the one-colour shapes
    (the best region's mask IoU per object is high) and split the two-tone ones."""
    from segattn_jax.ops.masks import mask_iou, paste_masks
    from segattn_jax.ops.selective_search import HierarchicalGrouping

    grouping = HierarchicalGrouping(upscale=2.0, scale=75, max_proposals=256, mask_size=32)

    def mean_best_iou(two_tone):
        best = []
        for scene in _scenes(8, two_tone=two_tone):
            boxes, masks = grouping(scene["image"])
            regions = paste_masks(masks, 64 * boxes[:, [1, 0, 3, 2]], 64, 64)
            objects = scene["objects"]["mask"][..., 0]
            iou = mask_iou(regions[None].astype(np.float32), objects[None].astype(np.float32))
            best.extend(np.asarray(iou[0]).max(0))  # each object's best region
        return np.mean(best)

    one_colour, two_tone = mean_best_iou(False), mean_best_iou(True)
    assert one_colour > 0.85 and two_tone < one_colour - 0.08, (one_colour, two_tone)


def test_builder_prepares_and_matches_render_scene(tiny_shapes):
    info = tiny_shapes.info
    assert info.splits["train"].num_examples == 16 and info.splits["test"].num_examples == 8
    assert info.features["objects"]["label"].names == list(CLASS_NAMES)
    examples = list(tfds.as_numpy(tiny_shapes.as_dataset(split="test")))
    for ex in examples:
        n = len(ex["objects"]["label"])
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
        assert ex["segmentation_mask"].shape == (32, 32, 1)
        assert ex["objects"]["mask"].shape == (n, 32, 32, 1)
        assert ex["objects"]["bbox"].shape == (n, 4)
        assert isinstance(ex["caption"], bytes) and ex["caption"]
    # Stored examples are exactly the renderer's output for (seed, split, index).
    split_id = zlib.crc32(b"test")
    expected = {render_scene(np.random.default_rng([7, split_id, i]), 32, 6)["image"].tobytes()
                for i in range(8)}
    assert {ex["image"].tobytes() for ex in examples} == expected


def test_registered_configs():
    builder = tfds.builder("shapes/tiny", data_dir="/nonexistent")
    assert builder.info.features["image"].shape == (32, 32, 3)
    assert tfds.builder("shapes").builder_config.image_size == 64
    assert tfds.builder("shapes/two_tone", data_dir="/nonexistent").builder_config.two_tone
    assert shapes.NUM_SEMANTIC_CLASSES == len(CLASS_NAMES) + 1 >= 7


def test_render_scene_rejects_bad_counts():
    with pytest.raises(ValueError, match="min_objects"):
        render_scene(np.random.default_rng(0), 64, max_objects=0)


def test_main_object_scenes_have_one_dominant_object_drawn_last():
    """The last-drawn object (on top of the others) has the largest box: its size is 1.5x any
    other's, which their rendered boxes keep up to rounding and shape (1.2x asserted)."""
    for index in range(60):
        scene = render_scene(np.random.default_rng([3, index]), 64, 3, main_object=True)
        boxes = scene["objects"]["bbox"]
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert np.argmax(sides) == len(sides) - 1
        assert (sides[:-1] <= sides[-1] / 1.2).all()  # 1.5x in size; rendering rounds
        assert len(sides) <= 3

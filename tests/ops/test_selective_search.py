"""Selective search finds a lone object's box, in TFDS's normalized (ymin, xmin, ymax, xmax);
hierarchical grouping also its region."""
import numpy as np

from segattn_jax.ops.masks import paste_masks
from segattn_jax.ops.selective_search import HierarchicalGrouping, SelectiveSearch, timed_search


def test_a_proposal_boxes_the_only_object():
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:40, 20:50] = (200, 30, 30)  # rows 10-39, columns 20-49
    boxes, masks, seconds = timed_search((SelectiveSearch(max_proposals=50), image))
    assert masks is None and boxes.shape[1] == 4 and 0 < len(boxes) <= 50 and seconds > 0
    assert (boxes >= 0).all() and (boxes <= 1).all()
    target = np.array([10 / 60, 20 / 80, 40 / 60, 50 / 80])
    assert np.abs(boxes - target).max(axis=1).min() < 0.02, boxes
    gray = SelectiveSearch(max_proposals=50, upscale=2.0)(image[..., :1])  # 1 channel, 2x
    assert np.abs(gray - target).max(axis=1).min() < 0.02, gray


def test_grouping_finds_each_object_as_a_region():
    """Two objects of different colours on a noisy background: each is some proposal's
    region (mask IoU >= 0.8 once pasted back), and every region is the union of segments."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 130, (64, 64, 3)).astype(np.uint8)
    objects = np.zeros((2, 64, 64), bool)
    rows, cols = np.indices((64, 64))
    objects[0] = (rows - 20) ** 2 + (cols - 18) ** 2 <= 10 ** 2  # a disc
    objects[1, 36:56, 30:58] = True  # a rectangle
    image[objects[0]] = (220, 40, 40)
    image[objects[1]] = (40, 80, 220)
    method = HierarchicalGrouping(upscale=2.0, scale=75, max_proposals=64, mask_size=16)
    boxes, masks, seconds = timed_search((method, image))
    assert masks.shape == (len(boxes), 16, 16) and masks.dtype == np.uint8 and seconds > 0
    assert 2 < len(boxes) <= 64 and (boxes >= 0).all() and (boxes <= 1).all()
    pasted = paste_masks(masks, boxes[:, [1, 0, 3, 2]] * 64, 64, 64)
    for target in objects:
        iou = (pasted & target).sum((1, 2)) / (pasted | target).sum((1, 2))
        assert iou.max() >= 0.8, iou.max()
    assert np.all(masks.reshape(len(masks), -1).any(1)), "a region with an empty mask"

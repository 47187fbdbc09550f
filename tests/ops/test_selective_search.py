"""Selective search finds a lone object's box, in TFDS's normalized (ymin, xmin, ymax, xmax)."""
import numpy as np

from segattn_jax.ops.selective_search import SelectiveSearch, timed_search


def test_a_proposal_boxes_the_only_object():
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:40, 20:50] = (200, 30, 30)  # rows 10-39, columns 20-49
    boxes, seconds = timed_search((SelectiveSearch(max_proposals=50), image))
    assert boxes.shape[1] == 4 and 0 < len(boxes) <= 50 and seconds > 0
    assert (boxes >= 0).all() and (boxes <= 1).all()
    target = np.array([10 / 60, 20 / 80, 40 / 60, 50 / 80])
    assert np.abs(boxes - target).max(axis=1).min() < 0.02, boxes
    gray = SelectiveSearch(max_proposals=50, upscale=2.0)(image[..., :1])  # 1 channel, 2x
    assert np.abs(gray - target).max(axis=1).min() < 0.02, gray

"""Box-relative instance masks: the input pipeline's crop (`preprocess.box_masks`) pasted back
(`ops.masks.paste_masks`) gives the scene's masks again; Mask R-CNN's RoI targets against a
direct numpy transcription; masks of different boxes compared on one grid (`mask_iou`); MNC's
mask voting against the reference code's, in image pixels."""
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from segattn_jax.data.preprocess import box_masks
from segattn_jax.data.shapes import render_scene
from segattn_jax.ops.boxes import pairwise_iou
from segattn_jax.ops.masks import (mask_iou, masks_on_grid, paste_masks, roi_mask_targets,
                                   vote_masks)


@pytest.mark.parametrize("size, worst", [(64, 0.0), (32, 0.01)])
def test_box_masks_pasted_back_are_the_scenes_masks(size, worst):
    """At M >= the objects' size (<= 32 px in 64x64 scenes) the round trip is (almost) exact."""
    for seed in range(8):
        scene = render_scene(np.random.default_rng(seed), 64, 6)
        masks, boxes = scene["objects"]["mask"], scene["objects"]["bbox"]
        relative = box_masks(tf.constant(masks), tf.constant(boxes), size).numpy()
        assert relative.shape == (len(boxes), size, size)
        back = paste_masks(relative, boxes[:, [1, 0, 3, 2]] * 64, 64, 64)
        wrong = (back != masks[..., 0].astype(bool)).sum(axis=(1, 2))
        assert (wrong <= worst * masks.sum(axis=(1, 2, 3))).all()


def test_paste_masks_fills_only_inside_the_box_and_skips_degenerate_boxes():
    masks = np.ones((2, 4, 4), np.float32)
    pasted = paste_masks(masks, np.array([[2, 3, 6, 5], [5, 5, 5, 9]]), 8, 10)
    expected = np.zeros((8, 10), bool)
    expected[3:5, 2:6] = True
    np.testing.assert_array_equal(pasted[0], expected)
    assert not pasted[1].any()
    with pytest.raises(ValueError, match="masks \\(D, m, m\\) and boxes \\(D, 4\\)"):
        paste_masks(masks[0], np.zeros((1, 4)), 8, 8)


def _reference_targets(mask, box, roi, size):
    """The target transcribed point by point: each cell centre of the RoI's size x size grid
    in the object's box-relative mask, bilinear with clamped borders, >= 0.5; 0 outside it."""
    m = mask.shape[0]
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            y = roi[1] + (i + 0.5) * (roi[3] - roi[1]) / size
            x = roi[0] + (j + 0.5) * (roi[2] - roi[0]) / size
            if not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
                continue
            v = np.clip((y - box[1]) / (box[3] - box[1]) * m - 0.5, 0, m - 1)
            u = np.clip((x - box[0]) / (box[2] - box[0]) * m - 0.5, 0, m - 1)
            v0, u0 = int(v), int(u)
            v1, u1 = min(v0 + 1, m - 1), min(u0 + 1, m - 1)
            fv, fu = v - v0, u - u0
            value = ((1 - fv) * ((1 - fu) * mask[v0, u0] + fu * mask[v0, u1])
                     + fv * ((1 - fu) * mask[v1, u0] + fu * mask[v1, u1]))
            out[i, j] = value >= 0.5
    return out


def test_roi_mask_targets_match_the_reference():
    rng = np.random.default_rng(0)
    masks = (rng.uniform(size=(1, 2, 8, 8)) > 0.5).astype(np.float32)
    boxes = np.array([[[10, 10, 30, 40], [0, 5, 8, 9]]], np.float32)
    rois = np.array([[[12, 8, 36, 38], [0, 4, 10, 10], [20, 20, 21, 21]]], np.float32)
    matched = np.array([[0, 1, 0]])
    targets = np.asarray(roi_mask_targets(jnp.asarray(masks), jnp.asarray(boxes),
                                          jnp.asarray(rois), jnp.asarray(matched), size=6))
    for r in range(3):
        np.testing.assert_array_equal(
            targets[0, r], _reference_targets(masks[0, matched[0, r]], boxes[0, matched[0, r]],
                                              rois[0, r], 6))


def test_mask_iou_on_a_pixel_grid_is_the_pasted_masks_iou():
    """On a grid of one cell per pixel, `masks_on_grid` is `paste_masks` and `mask_iou` the
    pixel IoU of the pasted masks (each scene's objects against each other)."""
    scene = render_scene(np.random.default_rng(3), 64, 6)
    masks, boxes = scene["objects"]["mask"], scene["objects"]["bbox"]
    relative = box_masks(tf.constant(masks), tf.constant(boxes), 32).numpy()
    pixels = boxes[:, [1, 0, 3, 2]] * 64
    on_grid = np.asarray(masks_on_grid(jnp.asarray(relative[None]), jnp.asarray(pixels[None]),
                                       (64, 64), 64))[0]
    pasted = paste_masks(relative, pixels, 64, 64)
    np.testing.assert_array_equal(on_grid.astype(bool), pasted)
    shifted = np.roll(pasted, 3, axis=2)  # the same objects moved 3 px: partial overlaps
    ious = np.asarray(mask_iou(jnp.asarray(on_grid[None]),
                               jnp.asarray(shifted[None].astype(np.float32))))[0]
    inter = (pasted[:, None] & shifted[None]).sum((2, 3))
    union = (pasted[:, None] | shifted[None]).sum((2, 3))
    np.testing.assert_allclose(ious, inter / union, rtol=1e-6)
    assert 0 < ious.diagonal().min() < 1


def test_mask_voting_keeps_the_score_weighted_majority_and_its_tight_box():
    """Two left halves (weights 0.4 + 0.4) outvote a whole box (0.2) on the right half; a far
    candidate (IoU 0) and another class's scores do not vote; with no weight at all a detection
    keeps its own box and mask."""
    m = 28
    box = [10.0, 20.0, 50.0, 60.0]
    left = np.zeros((m, m), np.float32)
    left[:, :14] = 1
    full = np.ones((m, m), np.float32)
    candidates = np.array([[box, box, box, [100.0, 100.0, 140.0, 140.0]]], np.float32)
    masks = np.stack([left, left, full, full])[None]
    scores = np.array([[[0.4, 0.1], [0.4, 0.1], [0.2, 0.9], [0.9, 0.9]]], np.float32)
    boxes, voted = vote_masks(np.array([[box, box]], np.float32), np.array([[0, 1]]),
                              np.stack([full, left])[None], candidates, scores, masks,
                              np.ones((1, 4), bool))
    np.testing.assert_allclose(boxes[0, 0], [10, 20, 30, 60], atol=1e-4)
    assert (np.asarray(voted[0, 0]) >= 0.5).all()  # the left half fills its tight box
    np.testing.assert_allclose(boxes[0, 1], box, atol=1e-4)  # class 1: the whole box wins
    assert (np.asarray(voted[0, 1]) >= 0.5).all()
    boxes, voted = vote_masks(np.array([[box]], np.float32), np.array([[1]]), left[None, None],
                              candidates, scores * np.array([1.0, 0.0]), masks,
                              np.ones((1, 4), bool))
    np.testing.assert_array_equal(boxes[0, 0], box)
    np.testing.assert_array_equal(voted[0, 0], left)


def _reference_voting(det_box, det_class, boxes, scores, masks, height, width):
    """The reference code's `cpu_mask_voting` + `mask_aggregation` for one detection, in image
    pixels: every candidate at box IoU >= 0.5 votes its mask binarized at 0.4 with its score
    for the class, normalized; the vote binarized at 0.4; the tight box of what is left."""
    overlap = pairwise_iou(det_box[None], boxes)[0]
    voters = np.flatnonzero(overlap >= 0.5)
    weights = scores[voters, det_class] / scores[voters, det_class].sum()
    pasted = paste_masks(masks[voters], boxes[voters], height, width, threshold=0.4)
    vote = np.tensordot(weights, pasted.astype(np.float32), axes=1) >= 0.4
    rows, cols = np.flatnonzero(vote.any(1)), np.flatnonzero(vote.any(0))
    return vote, np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def test_mask_voting_matches_the_reference_code_in_image_pixels():
    """Candidates: each object of a scene seen through jittered boxes with smoothly corrupted
    masks and random class scores; the detections, one candidate per object. Ours (a 56x56 grid
    over each box's frame, pasted back at 0.5) against the reference's image-pixel voting,
    closer than any detection's own mask is."""
    rng = np.random.default_rng(0)
    scene = render_scene(np.random.default_rng(5), 64, 6)
    objects = scene["objects"]["bbox"][:, [1, 0, 3, 2]] * 64
    size, per_object = 28, 6
    owner = np.repeat(np.arange(len(objects)), per_object)
    sides = np.concatenate([objects[owner, 2:] - objects[owner, :2]] * 2, axis=1)
    boxes = np.clip(objects[owner] + rng.uniform(-0.12, 0.12, (len(owner), 4)) * sides, 0, 64)
    yx = (boxes[:, [1, 0, 3, 2]] / 64).astype(np.float32)
    relative = box_masks(tf.constant(scene["objects"]["mask"][owner]), tf.constant(yx),
                         size).numpy()
    coarse = rng.normal(0, 0.5, (len(owner), 4, 4, 1)).astype(np.float32)  # smooth mistakes
    noise = tf.image.resize(coarse, (size, size)).numpy()[..., 0]
    masks = np.clip(relative + noise, 0, 1).astype(np.float32)
    scores = rng.uniform(0.05, 1.0, (len(owner), 3)).astype(np.float32)
    chosen = np.arange(0, len(owner), per_object)  # one candidate of each object detects it
    classes = rng.integers(0, 3, len(chosen))
    voted_boxes, voted = vote_masks(boxes[chosen][None].astype(np.float32), classes[None],
                                    masks[chosen][None], boxes[None].astype(np.float32),
                                    scores[None], masks[None], np.ones((1, len(owner)), bool))
    ours = paste_masks(np.asarray(voted[0]), np.asarray(voted_boxes[0]), 64, 64)
    own = paste_masks(masks[chosen], boxes[chosen], 64, 64, threshold=0.4)
    for i, d in enumerate(chosen):
        vote, box = _reference_voting(boxes[d], classes[i], boxes, scores, masks, 64, 64)
        np.testing.assert_allclose(voted_boxes[0, i], box, atol=1.5)
        iou = (ours[i] & vote).sum() / (ours[i] | vote).sum()
        own_iou = (own[i] & vote).sum() / (own[i] | vote).sum()
        assert iou >= 0.9 and iou > own_iou, (i, iou, own_iou)

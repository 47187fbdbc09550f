"""Instance masks, the codebase's one representation of them, and the two resamplings every
instance-segmentation model needs.

An object's mask is stored relative to its box: an (M, M) map of the box's inside, sampled at the
centres of an M x M grid over the box (`data.preprocess.detection`'s `mask_size`). That keeps the
input pipeline's shapes static and small at any image size (100 objects of a 1333 x 800 COCO
image at M = 112 take 1.25 MB, full-image masks 107 MB), and it is what the models consume:
Mask R-CNN's 28 x 28 target of an RoI is the matched object's box mask resampled into the RoI
(`roi_mask_targets`), and a predicted RoI mask goes back to image pixels the same way
(`paste_masks`), which evaluation also applies to the ground truth. At M >= the object's size in
pixels the round trip loses nothing but sub-pixel detail. MNC's test-time mask voting
(`vote_masks`) resamples its candidates' masks the same way.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.ops.boxes import (center_size, from_center_size, pairwise_iou,
                                   take_per_image)


def _grid_centres(boxes: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """(..., size) y and x pixel coordinates of the centres of a size x size grid over (..., 4)
    boxes."""
    steps = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
    x = boxes[..., 0:1] + steps * (boxes[..., 2:3] - boxes[..., 0:1])
    y = boxes[..., 1:2] + steps * (boxes[..., 3:4] - boxes[..., 1:2])
    return y, x


def resample_box_masks(masks: jax.Array, boxes: jax.Array, y: jax.Array,
                       x: jax.Array) -> jax.Array:
    """Box-relative masks read at image points: masks (N, M, M) over boxes (N, 4), the points'
    pixel coordinates y (N, S) and x (N, T) (a grid y x x per mask) -> (N, S, T) bilinear values,
    0 outside each mask's box. The one resampling every use below shares."""
    m = masks.shape[-1]
    width = jnp.maximum(boxes[:, 2:3] - boxes[:, 0:1], 1e-6)
    height = jnp.maximum(boxes[:, 3:4] - boxes[:, 1:2], 1e-6)
    # Image pixel -> the box mask's pixel coordinates (its samples at cell centres).
    u = (x - boxes[:, 0:1]) / width * m - 0.5
    v = (y - boxes[:, 1:2]) / height * m - 0.5
    inside_x = (x >= boxes[:, 0:1]) & (x <= boxes[:, 2:3])
    inside_y = (y >= boxes[:, 1:2]) & (y <= boxes[:, 3:4])
    shape = (masks.shape[0], y.shape[1], x.shape[1])
    grid_v = jnp.broadcast_to(v[:, :, None], shape)
    grid_u = jnp.broadcast_to(u[:, None, :], shape)
    values = bilinear_at(masks[..., None].astype(jnp.float32), grid_v, grid_u,
                         outside="clamp")[..., 0]
    return jnp.where(inside_y[:, :, None] & inside_x[:, None, :], values, 0.0)


def roi_mask_targets(gt_masks: jax.Array, gt_boxes: jax.Array, rois: jax.Array,
                     matched: jax.Array, size: int = 28) -> jax.Array:
    """Mask R-CNN's mask target of every RoI: its matched object's mask on a size x size grid
    over the RoI, binarized at 0.5 (the released code rasterizes the polygon into the RoI's
    28 x 28 grid; here the object's box mask is resampled bilinearly into it).

    gt_masks (B, G, M, M) box-relative, gt_boxes (B, G, 4), rois (B, R, 4), matched (B, R)
    indices into G -> (B, R, size, size) float32 in {0, 1}; grid points outside the object's
    box are 0. Not differentiated (a target).
    """
    gt_masks, gt_boxes, rois = (jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
                                for x in (gt_masks, gt_boxes, rois))
    batch, num_rois = rois.shape[:2]
    m = gt_masks.shape[-1]
    masks = take_per_image(gt_masks, matched).reshape(batch * num_rois, m, m)
    boxes = take_per_image(gt_boxes, matched).reshape(batch * num_rois, 4)
    y, x = _grid_centres(rois.reshape(batch * num_rois, 4), size)  # (BR, size) each
    values = resample_box_masks(masks, boxes, y, x)
    return (values >= 0.5).astype(jnp.float32).reshape(batch, num_rois, size, size)


def masks_on_grid(masks: jax.Array, boxes: jax.Array, canvas_hw: tuple[int, int],
                  grid: int) -> jax.Array:
    """Box-relative masks (B, N, M, M) over boxes (B, N, 4) in pixels, binarized at 0.5 on a
    grid x grid lattice of cell centres over the whole (padded) canvas: (B, N, grid, grid)
    float32 in {0, 1}. Masks of different boxes become comparable (`mask_iou`)."""
    batch, num, m = masks.shape[:3]
    height, width = canvas_hw
    steps = (jnp.arange(grid, dtype=jnp.float32) + 0.5) / grid
    y = jnp.broadcast_to(steps * height, (batch * num, grid))
    x = jnp.broadcast_to(steps * width, (batch * num, grid))
    values = resample_box_masks(masks.reshape(batch * num, m, m),
                                jnp.asarray(boxes, jnp.float32).reshape(batch * num, 4), y, x)
    return (values >= 0.5).astype(jnp.float32).reshape(batch, num, grid, grid)


def mask_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pairwise IoU of binary masks on one grid (`masks_on_grid`): a (B, N, g, g), b (B, G, g, g)
    -> (B, N, G); 0 where both are empty."""
    a, b = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
    intersection = jnp.einsum("bnp,bgp->bng", a, b)
    union = a.sum(-1)[:, :, None] + b.sum(-1)[:, None, :] - intersection
    return jnp.where(union > 0, intersection / jnp.maximum(union, 1e-6), 0.0)


def vote_masks(boxes: jax.Array, classes: jax.Array, masks: jax.Array,
               candidate_boxes: jax.Array, candidate_scores: jax.Array,
               candidate_masks: jax.Array, candidate_valid: jax.Array, *,
               iou_threshold: float = 0.5, binarize: float = 0.4, max_voters: int = 32,
               frame_scale: float = 2.0) -> tuple[jax.Array, jax.Array]:
    """MNC's mask voting (the reference code's `cpu_mask_voting`, after Gidaris & Komodakis'
    box voting): each detection's mask becomes the average of the masks, binarized at
    `binarize`, of every candidate whose box overlaps the detection's at IoU >= `iou_threshold`,
    weighted by the candidate's score for the detection's class, binarized again; the
    detection's box becomes the tight box of that mask. Finer masks from many votes.

    boxes (B, D, 4), classes (B, D) 0-based, masks (B, D, m, m): the detections (kept where no
    pixel passes the vote); candidates: boxes (B, N, 4), scores (B, N, K) per object class,
    masks (B, N, m, m) box-relative probabilities, valid (B, N). Returns boxes (B, D, 4) and
    masks (B, D, m, m) in [0, 1]. Static shapes: the `max_voters` heaviest voters of each
    detection vote, on a 2m x 2m grid over its box scaled by `frame_scale` about the centre
    (where a voter at IoU 0.5 can reach); an image at a time (`lax.map`) to bound memory.
    """
    m = masks.shape[-1]
    size = 2 * m

    def one_image(args):
        boxes, classes, masks, c_boxes, c_scores, c_masks, c_valid = args
        overlap = pairwise_iou(boxes, c_boxes)  # (D, N)
        weight = jnp.where((overlap >= iou_threshold) & c_valid[None], c_scores.T[classes], 0.0)
        weight, voters = jax.lax.top_k(weight, min(max_voters, weight.shape[1]))  # (D, V)
        weight = weight / jnp.maximum(weight.sum(-1, keepdims=True), 1e-12)
        cx, cy, width, height = center_size(boxes)
        frames = from_center_size(cx, cy, frame_scale * width, frame_scale * height)  # (D, 4)
        y, x = _grid_centres(frames, size)  # (D, size) each
        num, votes = voters.shape
        values = resample_box_masks(c_masks[voters].reshape(num * votes, m, m),
                                    c_boxes[voters].reshape(num * votes, 4),
                                    jnp.repeat(y, votes, 0), jnp.repeat(x, votes, 0))
        merged = jnp.einsum("dv,dvst->dst", weight,
                            (values >= binarize).astype(jnp.float32).reshape(num, votes, size,
                                                                             size))
        merged = (merged >= binarize).astype(jnp.float32)  # (D, size, size) over the frame
        rows, cols = merged.any(2), merged.any(1)
        first_row, last_row = jnp.argmax(rows, 1), size - 1 - jnp.argmax(rows[:, ::-1], 1)
        first_col, last_col = jnp.argmax(cols, 1), size - 1 - jnp.argmax(cols[:, ::-1], 1)
        cell_w, cell_h = frame_scale * width / size, frame_scale * height / size
        tight = jnp.stack([frames[:, 0] + first_col * cell_w, frames[:, 1] + first_row * cell_h,
                           frames[:, 0] + (last_col + 1) * cell_w,
                           frames[:, 1] + (last_row + 1) * cell_h], -1)
        voted = rows.any(1)
        new_boxes = jnp.where(voted[:, None], tight, boxes)
        ty, tx = _grid_centres(new_boxes, m)
        new_masks = resample_box_masks(merged, frames, ty, tx)
        return new_boxes, jnp.where(voted[:, None, None], new_masks, masks)

    return jax.lax.map(one_image, (jnp.asarray(boxes, jnp.float32), classes,
                                   jnp.asarray(masks, jnp.float32),
                                   jnp.asarray(candidate_boxes, jnp.float32),
                                   jnp.asarray(candidate_scores, jnp.float32),
                                   jnp.asarray(candidate_masks, jnp.float32), candidate_valid))


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float = 0.5) -> np.ndarray:
    """Box-relative masks (D, m, m) (probabilities or 0/1) back to image pixels: (D, height,
    width) bool, each pixel inside its box set where the mask, bilinearly interpolated at the
    pixel's centre, is >= `threshold` (Mask R-CNN's 0.5). Pixels outside the box are False.
    numpy, on the host (evaluation and pictures)."""
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0] or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"paste_masks takes masks (D, m, m) and boxes (D, 4); got {masks.shape} "
                         f"and {boxes.shape}.")
    out = np.zeros((masks.shape[0], height, width), bool)
    m = masks.shape[-1]
    for i, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
        c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
        r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
        if c1 <= c0 or r1 <= r0 or x2 <= x1 or y2 <= y1:
            continue
        u = (np.arange(c0, c1) + 0.5 - x1) / (x2 - x1) * m - 0.5
        v = (np.arange(r0, r1) + 0.5 - y1) / (y2 - y1) * m - 0.5
        inside = ((np.arange(r0, r1) + 0.5 >= y1) & (np.arange(r0, r1) + 0.5 <= y2))[:, None] \
            & ((np.arange(c0, c1) + 0.5 >= x1) & (np.arange(c0, c1) + 0.5 <= x2))[None, :]
        out[i, r0:r1, c0:c1] = inside & (_bilinear(mask, v, u) >= threshold)
    return out


def _bilinear(image: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(len(v), len(u)) bilinear samples of a 2-D `image` on the grid v x u, clamped at the
    border."""
    h, w = image.shape
    v, u = np.clip(v, 0.0, h - 1.0), np.clip(u, 0.0, w - 1.0)
    v0, u0 = np.floor(v).astype(int), np.floor(u).astype(int)
    v1, u1 = np.minimum(v0 + 1, h - 1), np.minimum(u0 + 1, w - 1)
    fv, fu = (v - v0)[:, None], (u - u0)[None, :]
    top = image[v0][:, u0] * (1 - fu) + image[v0][:, u1] * fu
    bottom = image[v1][:, u0] * (1 - fu) + image[v1][:, u1] * fu
    return top * (1 - fv) + bottom * fv

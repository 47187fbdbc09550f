"""YOLO (Redmon, Divvala, Girshick & Farhadi, CVPR 2016): detection as one regression.

The image is an S x S grid; each cell predicts B boxes (x, y relative to the cell, sqrt(w),
sqrt(h) relative to the image) with a confidence Pr(object) * IoU, and C class probabilities
Pr(class | object) shared by its boxes. One network (24 conv layers, 2 fully connected; Fast
YOLO 9 conv layers; the convs are `backbones/darknet.py`, whose first layers the paper pretrains
on ImageNet) reads the whole image once, so it runs far faster than region-based detectors.
Trained with the paper's sum-squared error (eq. 3): lambda_coord = 5 on the coordinates,
lambda_noobj = 0.5 on the confidence of boxes without objects, and only the "responsible"
predictor of a cell (its highest IoU with the object) regressing it.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.backbones.darknet import LEAKY_SLOPE, NETWORKS, Darknet
from segattn_jax.ops import boxes as box_ops
from segattn_jax.ops.images import check_training_size, warp_to_square
from segattn_jax.ops.nms import multiclass_nms

Array = Any


class YOLO(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2)}.

    `__call__` -> detections {boxes (B, D, 4), scores, classes, valid}; `losses(inputs,
    targets)` -> (losses, metrics), targets {boxes, classes, box_valid}.

    Attributes:
      num_classes: C. grid: S (7). boxes_per_cell: B (2).
      network: 'yolo' (24 conv layers) or 'fast' (Fast YOLO, 9).
      input_size: the fixed square input (448); other sizes are warped to it.
      width: channel multiplier of the conv layers (<1 for slim CPU runs); max_stride: the
        network's total downsampling (64; `Darknet`); hidden: the first
        fully connected layer (4096), followed by dropout 0.5.
      lambda_coord / lambda_noobj: the loss weights (5, 0.5).
      score_threshold / nms_threshold / max_detections: test time: class-specific confidence
        Pr(class | object) * confidence, per-class NMS.
    """

    input_keys = ("image", "image_hw")

    num_classes: int
    grid: int = 7
    boxes_per_cell: int = 2
    network: str = "yolo"
    input_size: int = 448
    width: float = 1.0
    max_stride: int = 64
    hidden: int = 4096
    dropout_rate: float = 0.5
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    score_threshold: float = 0.01
    nms_threshold: float = 0.5
    max_detections: int = 100
    dtype: Any = jnp.float32

    def setup(self):
        if self.network not in NETWORKS:
            raise ValueError(f"Unknown YOLO network {self.network!r}; valid: {sorted(NETWORKS)}.")
        if min(self.num_classes, self.grid, self.boxes_per_cell) < 1:
            raise ValueError(f"num_classes, grid and boxes_per_cell must be at least 1; got "
                             f"{self.num_classes}, {self.grid}, {self.boxes_per_cell}.")
        self.darknet = Darknet(NETWORKS[self.network], self.width, self.max_stride,
                               dtype=self.dtype)
        self.fc = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32)
        self.dropout = nn.Dropout(self.dropout_rate)
        # Zero-initialized, so training starts from all-zero predictions (a loss of ~14 per image
        # on the mini scenes): a random layer's outputs have std ~2 against targets in [0, 1],
        # a first loss of 160-390 per image with gradient norms in the thousands.
        self.output = nn.Dense(self.grid ** 2 * (self.num_classes + 5 * self.boxes_per_cell),
                               kernel_init=nn.initializers.zeros, dtype=self.dtype,
                               param_dtype=jnp.float32)

    def raw_outputs(self, images: Array, *, train: bool) -> dict[str, Array]:
        """class_probs (B, S, S, C), confidence (B, S, S, B'), box (B, S, S, B', 4) as
        (x, y in the cell, sqrt w, sqrt h of the image): the final layer is linear."""
        x = self.darknet(images)[0]
        x = nn.leaky_relu(self.fc(x.reshape(x.shape[0], -1)), LEAKY_SLOPE)
        x = self.output(self.dropout(x, deterministic=not train)).astype(jnp.float32)
        x = x.reshape(x.shape[0], self.grid, self.grid, -1)
        c, b = self.num_classes, self.boxes_per_cell
        return {"class_probs": x[..., :c], "confidence": x[..., c:c + b],
                "box": x[..., c + b:].reshape(*x.shape[:3], b, 4)}

    def pixel_boxes(self, box: Array, size: float) -> Array:
        """(B, S, S, B', 4) cell-relative predictions -> (x1, y1, x2, y2) pixels of a `size`
        square image."""
        cells = jnp.arange(self.grid, dtype=jnp.float32)
        cx = (box[..., 0] + cells[None, None, :, None]) / self.grid * size
        cy = (box[..., 1] + cells[None, :, None, None]) / self.grid * size
        return box_ops.from_center_size(cx, cy, jnp.square(box[..., 2]) * size,
                                        jnp.square(box[..., 3]) * size)

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        images, factor = warp_to_square(inputs["image"], self.input_size)
        out = self.raw_outputs(images, train=False)
        batch = images.shape[0]
        boxes = self.pixel_boxes(out["box"], self.input_size).reshape(batch, -1, 4) * factor
        hw = jnp.asarray(inputs["image_hw"], jnp.float32)
        boxes = box_ops.clip(boxes, hw[:, :1], hw[:, 1:])
        # Class-specific confidence (the paper's eq. 2): Pr(class | object) * confidence.
        scores = out["class_probs"][..., None, :] * out["confidence"][..., None]
        return multiclass_nms(boxes, scores.reshape(batch, -1, self.num_classes),
                              score_threshold=self.score_threshold,
                              nms_threshold=self.nms_threshold,
                              max_detections=self.max_detections)

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The paper's eq. 3 summed over cells and boxes, averaged over images."""
        images = inputs["image"]
        check_training_size(images, self.input_size, "YOLO")
        out = self.raw_outputs(images, train=True)
        return yolo_loss(out, self.pixel_boxes(out["box"], self.input_size), targets,
                         grid=self.grid, size=self.input_size, lambda_coord=self.lambda_coord,
                         lambda_noobj=self.lambda_noobj)


def cell_targets(gt_boxes: Array, gt_classes: Array, gt_valid: Array, *, grid: int,
                 size: float) -> tuple[Array, Array, Array]:
    """The object each grid cell is responsible for: the one whose centre falls in it (the
    largest, where several do; the paper leaves that case open).

    Returns has_object (B, S, S), box (B, S, S, 4) in pixels, class (B, S, S).
    """
    batch = gt_boxes.shape[0]
    cx = (gt_boxes[..., 0] + gt_boxes[..., 2]) / 2
    cy = (gt_boxes[..., 1] + gt_boxes[..., 3]) / 2
    col = jnp.clip(jnp.floor(cx / size * grid), 0, grid - 1).astype(jnp.int32)
    row = jnp.clip(jnp.floor(cy / size * grid), 0, grid - 1).astype(jnp.int32)
    in_cell = jax.nn.one_hot(row * grid + col, grid * grid, dtype=bool) & gt_valid[..., None]
    priority = jnp.where(in_cell, box_ops.area(gt_boxes)[..., None] + 1.0, 0.0)  # (B, M, S*S)
    owner = jnp.argmax(priority, axis=1)  # (B, S*S)
    has_object = jnp.any(in_cell, axis=1)
    box = jnp.take_along_axis(gt_boxes, owner[..., None], axis=1)
    classes = jnp.take_along_axis(gt_classes, owner, axis=1)
    return (has_object.reshape(batch, grid, grid), box.reshape(batch, grid, grid, 4),
            classes.reshape(batch, grid, grid))


def yolo_loss(out: dict[str, Array], predicted_boxes: Array, targets: dict[str, Array], *,
              grid: int, size: float, lambda_coord: float, lambda_noobj: float
              ) -> tuple[dict[str, Array], dict[str, Array]]:
    """YOLO's loss terms (eq. 3): coordinates of responsible predictors (x, y, sqrt w, sqrt h),
    their confidence against the IoU they achieve (Pr(object) * IoU), lambda_noobj times the
    squared confidence of every other predictor, and the class probabilities of cells with an
    object. `predicted_boxes` (B, S, S, B', 4) are `out["box"]` in pixels."""
    has_object, gt_box, gt_class = cell_targets(
        targets["boxes"], targets["classes"], targets["box_valid"], grid=grid, size=size)
    batch, num_classes = has_object.shape[0], out["class_probs"].shape[-1]
    iou = box_ops.pairwise_iou(jax.lax.stop_gradient(predicted_boxes),
                               gt_box[..., None, :])[..., 0]  # (B, S, S, B')
    responsible = jax.nn.one_hot(jnp.argmax(iou, -1), iou.shape[-1]) * has_object[..., None]
    cells = jnp.arange(grid, dtype=jnp.float32)
    cx, cy, w, h = box_ops.center_size(gt_box)
    target = jnp.stack([cx / size * grid - cells[None, None, :],
                        cy / size * grid - cells[None, :, None],
                        jnp.sqrt(w / size), jnp.sqrt(h / size)], axis=-1)
    coord = jnp.sum(jnp.square(out["box"] - target[..., None, :]), -1)
    confidence = out["confidence"]
    object_confidence = jnp.square(confidence - iou) * responsible
    no_object = jnp.square(confidence) * (1.0 - responsible)
    class_target = jax.nn.one_hot(gt_class, num_classes)
    classes = jnp.sum(jnp.square(out["class_probs"] - class_target), -1) * has_object
    per_image = lambda x: jnp.sum(x) / batch
    losses = {"coord": lambda_coord * per_image(coord * responsible),
              "object": per_image(object_confidence),
              "no_object": lambda_noobj * per_image(no_object),
              "class": per_image(classes)}
    objects = jnp.maximum(jnp.sum(responsible), 1.0)
    metrics = {"responsible_iou": jnp.sum(iou * responsible) / objects,
               "objects_per_image": jnp.sum(has_object) / batch}
    return losses, metrics

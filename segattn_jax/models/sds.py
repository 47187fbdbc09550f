"""SDS, Simultaneous Detection and Segmentation (Hariharan, Arbelaez, Girshick & Malik, ECCV
2014), and its refinement by hypercolumns (Hariharan, Arbelaez, Girshick & Malik, CVPR 2015).

SDS classifies bottom-up region proposals, each a box and a mask (selective search's
hierarchical grouping, `ops.selective_search.HierarchicalGrouping`, cached beside the dataset
as R-CNN's boxes are), with two CNN pathways: the box pathway reads the region's box warped as
R-CNN warps it; the region pathway reads the same crop with everything outside the region's
mask set to the image mean (the paper's zero after mean subtraction). Their fc7 features,
concatenated, score K + 1 classes: the paper's network "C", both pathways fine-tuned jointly;
its SVMs on these features are replaced by the fine-tuning softmax itself (Fast R-CNN found the
two equal). A region is positive for the class of an object it overlaps with mask IoU >= 0.5,
background below. Test time: per-class NMS on mask IoU (0.3), then each detection's mask refined.

SDS's refinement (Sec. 5): a coarse top-down figure-ground mask over the box, a logistic
classifier per cell of a 10 x 10 grid and per class on the box pathway's last conv features,
upsampled and combined with the region's own mask by a second logistic classifier per class
(the paper's runs per superpixel; here per mask pixel). It trains on fixed features, as the
paper's classifiers do.

Hypercolumns (`hypercolumns=True`) refine instead with the hypercolumn of each mask pixel: the
box pathway runs again on each detection's box, and a pixel's hypercolumn is its layers
`hypercolumn_layers` (the paper: pool2, conv4 and fc7) upsampled to it and concatenated. A
K x K grid of location-specific classifiers per class scores it, each pixel's score interpolated
bilinearly between the classifiers whose grid cells are nearest (Sec. 3.2). A classifier is
linear in the concatenated features, so each layer is classified at its own resolution and the
scores are upsampled (the paper's efficient form); the classifiers train with the network.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.layers import rcnn
from segattn_jax.layers.roi import context_boxes, warp_regions
from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.models.rcnn import RegionNetwork
from segattn_jax.ops.boxes import take_per_image
from segattn_jax.ops.masks import mask_iou, masks_on_grid, roi_mask_targets
from segattn_jax.ops.nms import multiclass_nms

Array = Any


def _pick_class(values: Array, classes: Array) -> Array:
    """values (N, ..., C, X) at each region's class (N,) -> (N, ..., X)."""
    index = classes.reshape(-1, *([1] * (values.ndim - 1)))
    return jnp.take_along_axis(values, index, axis=-2).squeeze(-2)


def interpolation_weights(points: int, grid: int) -> Array:
    """(points, grid) weights of the `grid` classifiers (at their cells' centres) for
    `points` positions at cell centres across a box: bilinear in each axis, the nearest
    classifier alone beyond the outermost centres; each row sums to 1."""
    position = (jnp.arange(points, dtype=jnp.float32) + 0.5) / points * grid - 0.5
    position = jnp.clip(position, 0.0, grid - 1.0)
    return jax.nn.relu(1.0 - jnp.abs(position[:, None] - jnp.arange(grid, dtype=jnp.float32)))


class RegionClassifier(nn.Module):
    """SDS's two pathways and their classifier. (box crops, region crops) (B, R, S, S, 3) ->
    (class logits (B, R, K + 1), box pathway's last conv features (B, R, D), its taps)."""

    num_classes: int
    width: float
    feature_layer: str
    dropout_rate: float
    taps: tuple[str, ...] = ()
    dtype: Any = jnp.float32

    def setup(self):
        self.box_pathway = RegionNetwork(self.width, self.feature_layer, self.dropout_rate,
                                         self.taps, self.dtype)
        self.region_pathway = RegionNetwork(self.width, self.feature_layer, self.dropout_rate,
                                            (), self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)
        self.classifier = nn.Dense(self.num_classes + 1,
                                   kernel_init=nn.initializers.normal(0.01))

    def __call__(self, box_crops: Array, region_crops: Array, *, train: bool):
        conv, box_fc7, taps = self.box_pathway(box_crops, train=train)
        _, region_fc7, _ = self.region_pathway(region_crops, train=train)
        joint = jnp.concatenate([box_fc7, region_fc7], axis=-1)
        logits = self.classifier(self.dropout(joint, deterministic=not train))
        return logits, conv, {**taps, "fc7": box_fc7}


class CoarseRefinement(nn.Module):
    """SDS's refinement. (conv features (N, D), region masks (N, m, m), classes (N,)) ->
    mask logits (N, size, size)."""

    num_classes: int
    grid: int = 10
    size: int = 28

    @nn.compact
    def __call__(self, features: Array, region_masks: Array, classes: Array) -> Array:
        cells = nn.Dense(self.num_classes * self.grid ** 2, name="coarse")(features)
        coarse = _pick_class(cells.reshape(-1, self.num_classes, self.grid ** 2), classes)
        coarse = jax.image.resize(coarse.reshape(-1, self.grid, self.grid),
                                  (coarse.shape[0], self.size, self.size), "linear")
        region = jax.image.resize(region_masks.astype(jnp.float32),
                                  (region_masks.shape[0], self.size, self.size), "linear")
        # Second stage, per class: w_coarse * coarse + w_region * (region - 1/2) + bias; it
        # starts as the region's own mask, sharpened.
        combine = self.param("combine", lambda _, shape: jnp.tile(
            jnp.array([1.0, 8.0, 0.0]), (shape[0], 1)), (self.num_classes, 3))
        w = combine[classes]  # (N, 3)
        return (w[:, 0, None, None] * coarse + w[:, 1, None, None] * (region - 0.5)
                + w[:, 2, None, None])


class HypercolumnClassifier(nn.Module):
    """Location-specific hypercolumn classifiers. ({layer: (N, h, w, C) maps over the warped
    crop, or (N, C) vectors such as fc7}, classes (N,)) -> mask logits (N, size, size) over the
    box inside the crop (the crop's `context` fraction on each side is context)."""

    num_classes: int
    grid: int = 5
    size: int = 28
    context: float = 0.0

    @nn.compact
    def __call__(self, layers: dict[str, Array], classes: Array) -> Array:
        cells = self.grid ** 2
        n = classes.shape[0]
        # Mask pixel centres, as a fraction of the warped crop.
        steps = self.context + (jnp.arange(self.size) + 0.5) / self.size * (1 - 2 * self.context)
        scores = jnp.zeros((n, self.size, self.size, cells), jnp.float32)
        for name in sorted(layers):
            x = layers[name].astype(jnp.float32)
            # Only the region's class's classifiers are applied: (C, classes, cells) weights.
            kernel = self.param(f"{name}_kernel",  # nn.Dense's init: fan-in = channels
                                nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2)),
                                (x.shape[-1], self.num_classes, cells))
            bias = self.param(f"{name}_bias", nn.initializers.zeros, (self.num_classes, cells))
            chosen = (jnp.einsum("n...c,cnk->n...k", x, kernel[:, classes])
                      + bias[classes].reshape(n, *([1] * (x.ndim - 2)), cells))
            if x.ndim == 2:  # a vector: the same at every pixel
                scores += chosen[:, None, None, :]
                continue
            height, width = x.shape[1:3]
            v = jnp.broadcast_to((steps * height - 0.5)[:, None], (n, self.size, self.size))
            u = jnp.broadcast_to((steps * width - 0.5)[None, :], (n, self.size, self.size))
            scores += bilinear_at(chosen, v, u, outside="clamp")
        weights = interpolation_weights(self.size, self.grid)
        grid_weights = weights[:, None, :, None] * weights[None, :, None, :]  # (s, s, K, K)
        return jnp.einsum("nijk,ijk->nij", scores,
                          grid_weights.reshape(self.size, self.size, -1))


class SDS(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2), proposals (B, P, 4), proposal_valid
    (B, P), proposal_masks (B, P, m, m) box-relative}.

    `__call__` -> detections {boxes, scores, classes, masks (B, D, mask_size, mask_size)
    probabilities over each box, valid}; `losses(inputs, targets)` -> (losses, metrics),
    targets {boxes, classes, box_valid, masks}.

    Attributes:
      num_classes: object classes K.
      width / feature_layer / warp_size / context_padding: the pathways' VGG16 (R-CNN's).
      rois_per_image / foreground_fraction: the fine-tuning minibatch (regions with mask IoU
        >= 0.5 foreground).
      overlap_grid: masks are compared (IoU) on this grid x grid lattice over the image.
      hypercolumns: refine with hypercolumns instead of SDS's coarse masks.
      refine_grid: SDS's coarse mask cells per side (10).
      hypercolumn_layers / hypercolumn_grid: the layers whose features make a hypercolumn (fc7
        is always added), and the K x K classifier grid (5 in the paper's SDS experiments).
      mask_size: the output masks' resolution over each box.
      score_threshold / nms_threshold / max_detections / proposals_per_chunk: test time.
    """

    input_keys = ("image", "image_hw", "proposals", "proposal_valid", "proposal_masks")

    num_classes: int
    width: float = 1.0
    feature_layer: str = "pool5"
    warp_size: int = 224
    context_padding: float = 16.0
    rois_per_image: int = 64
    foreground_fraction: float = 0.25
    overlap_grid: int = 64
    hypercolumns: bool = False
    refine_grid: int = 10
    hypercolumn_layers: tuple[str, ...] = ("pool2", "conv4_3")
    hypercolumn_grid: int = 5
    mask_size: int = 28
    dropout_rate: float = 0.5
    score_threshold: float = 0.05
    nms_threshold: float = 0.3
    max_detections: int = 100
    proposals_per_chunk: int = 32
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        taps = self.hypercolumn_layers if self.hypercolumns else ()
        self.regions = RegionClassifier(self.num_classes, self.width, self.feature_layer,
                                        self.dropout_rate, taps, self.dtype)
        if self.hypercolumns:
            self.refine = HypercolumnClassifier(self.num_classes, self.hypercolumn_grid,
                                                self.mask_size,
                                                self.context_padding / self.warp_size)
        else:
            self.refine = CoarseRefinement(self.num_classes, self.refine_grid, self.mask_size)

    def crops(self, images: Array, boxes: Array, masks: Array) -> tuple[Array, Array]:
        """(box crops, region crops) (B, R, S, S, 3) of regions (boxes (B, R, 4), masks)."""
        if images.ndim != 4:
            raise ValueError(f"SDS expects images (B, H, W, C); got {images.shape}.")
        size = self.warp_size
        box_crops = warp_regions(images, boxes, size, context_padding=self.context_padding)
        # The region's mask on the crop's pixel grid (the context box's cell centres).
        batch, num = boxes.shape[:2]
        inside = roi_mask_targets(masks.reshape(batch * num, 1, *masks.shape[2:]),
                                  boxes.reshape(batch * num, 1, 4),
                                  context_boxes(boxes, size, self.context_padding
                                                ).reshape(batch * num, 1, 4),
                                  jnp.zeros((batch * num, 1), jnp.int32), size)
        inside = inside.reshape(batch, num, size, size, 1).astype(box_crops.dtype)
        mean = jnp.mean(images, axis=(1, 2))[:, None, None, None]
        return box_crops, box_crops * inside + mean * (1 - inside)

    def overlaps(self, masks: Array, boxes: Array, canvas_hw: tuple[int, int],
                 others: tuple[Array, Array] | None = None) -> Array:
        """Mask IoU (B, N, G) of regions (masks (B, N, m, m), boxes) with `others` (their masks
        and boxes), or (B, N, N) among themselves, each set rasterized on the grid once."""
        regions = masks_on_grid(masks, boxes, canvas_hw, self.overlap_grid)
        if others is None:
            return mask_iou(regions, regions)
        return mask_iou(regions, masks_on_grid(*others, canvas_hw, self.overlap_grid))

    def refined_masks(self, images, boxes, region_masks, conv, classes, *, layers=None,
                      train: bool):
        """Mask logits (B, D, size, size) of regions of `classes` (B, D). Hypercolumns read the
        box pathway's `layers` where given (training), else run it on the boxes again."""
        batch, num = classes.shape
        flat_classes = classes.reshape(-1)
        if not self.hypercolumns:
            features = jax.lax.stop_gradient(conv).reshape(batch * num, -1)
            masks = region_masks.reshape(batch * num, *region_masks.shape[2:])
            logits = self.refine(features, masks, flat_classes)
        else:
            if layers is None:
                box_crops = warp_regions(images, boxes, self.warp_size,
                                         context_padding=self.context_padding)
                _, fc7, taps = self.regions.box_pathway(box_crops, train=train)
                layers = {**taps, "fc7": fc7}
            logits = self.refine({name: x.reshape(batch * num, *x.shape[2:])
                                  for name, x in layers.items()}, flat_classes)
        return logits.reshape(batch, num, self.mask_size, self.mask_size)

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        images, proposals = inputs["image"], inputs["proposals"]
        region_masks = inputs["proposal_masks"]
        if self.is_initializing():
            logits, conv, _ = self.regions(*self.crops(images, proposals, region_masks),
                                           train=False)
            self.refined_masks(images, proposals, region_masks, conv,
                               jnp.zeros(proposals.shape[:2], jnp.int32), train=False)
        else:
            regions, variables = self.regions.clone(parent=None), self.regions.variables
            logits, conv = rcnn.map_region_chunks(
                lambda b, m: regions.apply(variables, *self.crops(images, b, m),
                                           train=False)[:2],
                self.proposals_per_chunk, proposals, region_masks)
        overlaps = self.overlaps(region_masks, proposals, images.shape[1:3])
        detections = multiclass_nms(proposals, jax.nn.softmax(logits)[..., 1:],
                                    score_threshold=self.score_threshold,
                                    nms_threshold=self.nms_threshold,
                                    max_detections=self.max_detections,
                                    valid=inputs["proposal_valid"], overlaps=overlaps)
        chosen = detections["indices"]
        masks = self.refined_masks(images, detections["boxes"],
                                   take_per_image(region_masks, chosen),
                                   take_per_image(conv, chosen), detections["classes"],
                                   train=False)
        return {**detections, "masks": jax.nn.sigmoid(masks)}

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Region classification and mask refinement losses; 'sample' and 'dropout' RNG
        streams. Candidates are the proposals and the ground-truth regions."""
        images, proposals = inputs["image"], inputs["proposals"]
        proposal_masks = inputs["proposal_masks"]
        gt_masks = jax.image.resize(targets["masks"].astype(jnp.float32),
                                    (*targets["masks"].shape[:2], *proposal_masks.shape[2:]),
                                    "linear")
        candidate_masks = jnp.concatenate([proposal_masks, gt_masks], axis=1)
        candidates = jnp.concatenate([proposals, targets["boxes"]], axis=1)
        overlaps = self.overlaps(candidate_masks, candidates, images.shape[1:3],
                                 others=(targets["masks"], targets["boxes"]))
        samples = rcnn.sample_rois(
            self.make_rng("sample"), proposals, inputs["proposal_valid"], targets["boxes"],
            targets["classes"], targets["box_valid"], num=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, background=(0.0, 0.5),
            overlaps=overlaps)
        rois = samples["rois"]
        sampled_masks = take_per_image(candidate_masks, samples["candidates"])
        logits, conv, layers = self.regions(*self.crops(images, rois, sampled_masks),
                                            train=True)
        labels, valid = samples["labels"], samples["valid"].astype(jnp.float32)
        classification = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        accuracy = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)

        foreground = valid * (labels > 0)
        mask_logits = self.refined_masks(images, rois, sampled_masks, conv,
                                         jnp.maximum(labels - 1, 0), layers=layers, train=True)
        mask_targets = roi_mask_targets(targets["masks"], targets["boxes"], rois,
                                        samples["matched"], self.mask_size)
        per_region = optax.sigmoid_binary_cross_entropy(mask_logits, mask_targets).mean((2, 3))

        def mean(values, weights):
            return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)

        losses = {"region_class": mean(classification, valid),
                  "mask": mean(per_region, foreground)}
        return losses, {"region_accuracy": mean(accuracy, valid),
                        "foreground_regions": jnp.mean(foreground.sum(1))}

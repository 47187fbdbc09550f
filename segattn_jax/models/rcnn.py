"""R-CNN (Girshick, Donahue, Darrell & Malik, CVPR 2014): every region proposal is warped, with
16 px of context, to the CNN's input size and run through the whole CNN; per-class linear SVMs
score its fc7 features, and a class-specific linear regressor on its pool5 features refines its
box. Test time: per-class NMS (0.3).

The paper trains three things one after another: it fine-tunes the CNN as a (K + 1)-way softmax
classifier on warped proposals (IoU >= 0.5 positive, the rest background; 32 positives and 96
background windows per minibatch), then fits the SVMs on the fixed fc7 features (ground truth
positive, proposals under 0.3 IoU negative, hard negative mining, hinge loss, L2 regularization)
and the ridge regressors on pool5 (proposals with IoU >= 0.6). Here the three train in one step
of one jitted function: the SVMs and the regressor read the features through
`jax.lax.stop_gradient`, so their losses never move the CNN (as in the paper), and hard negatives
are mined from each minibatch (per class, the highest-scoring negatives) rather than from a cache
over the whole training set. They follow features that are still fine-tuning; a run's last steps
(low learning rate) fit them to nearly fixed features.

The proposals come with the input, as for Fast R-CNN (`data/proposals.py`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from segattn_jax.backbones.vgg import VGG16, scaled_features
from segattn_jax.layers import rcnn
from segattn_jax.layers.roi import warp_regions
from segattn_jax.ops import boxes as box_ops

Array = Any


class RegionNetwork(nn.Module):
    """The CNN R-CNN runs on each warped region: VGG16 up to `feature_layer` (pool5 in the paper)
    and fc6/fc7. regions (B, R, S, S, 3) -> (pool5 (B, R, D) flattened, fc7 (B, R, hidden),
    {tap: (B, R, h, w, C)} of the conv layers named in `taps`: Hypercolumns reads them)."""

    width: float = 1.0
    feature_layer: str = "pool5"
    dropout_rate: float = 0.5
    taps: tuple[str, ...] = ()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, regions: Array, *, train: bool) -> tuple[Array, Array, dict[str, Array]]:
        batch, num = regions.shape[:2]
        features, layers = VGG16(width=self.width, first_padding=1,
                                 last_layer=self.feature_layer, dtype=self.dtype,
                                 name="backbone")(
            regions.reshape(batch * num, *regions.shape[2:]), train=False)
        pool5 = features.reshape(batch, num, -1)
        fc7 = rcnn.FullyConnected(scaled_features(4096, self.width), self.dropout_rate,
                                  self.dtype, name="fc")(pool5, train=train)
        taps = {name: layers[name].reshape(batch, num, *layers[name].shape[1:])
                for name in self.taps}
        return pool5.astype(jnp.float32), fc7.astype(jnp.float32), taps


class RCNN(nn.Module):
    """inputs {image (B, H, W, 3), image_hw (B, 2), proposals (B, P, 4), proposal_valid (B, P)}.

    `__call__` -> detections {boxes, scores (SVM margins), classes, valid}; `losses(inputs,
    targets)` -> (losses, metrics), targets {boxes, classes, box_valid}.

    Attributes:
      num_classes: object classes K.
      width: channel multiplier of VGG16 and fc6/fc7.
      feature_layer / warp_size: the CNN's last conv layer and input size; their feature map
        (7x7 for pool5 at 224, as VGG16 has it) is what fc6 and the box regressor read.
      context_padding: pixels of context around each warped region (16 at 227 in the paper).
      rois_per_image / foreground_fraction: the fine-tuning minibatch (the paper: 128 windows,
        32 of them positive, over the images of a batch).
      svm_negative_iou / svm_hard_negatives / svm_positive_weight / svm_l2: the SVMs' negatives
        (IoU below 0.3 with every object of the class), how many of the highest-scoring ones
        each class trains on per step, the positives' loss weight (2 in the released code), and
        the L2 penalty (svm_l2 / 2) ||w||^2.
      regression_min_iou / regression_l2: the regressor's training regions (IoU >= 0.6) and its
        ridge penalty.
      score_threshold / nms_threshold / max_detections / proposals_per_chunk: test time (SVM
        margin threshold, per-class NMS 0.3, detections kept per image, and how many proposals
        of each image go through the CNN at once, which bounds test memory).
    """

    input_keys = ("image", "image_hw", "proposals", "proposal_valid")

    num_classes: int
    width: float = 1.0
    feature_layer: str = "pool5"
    warp_size: int = 224
    context_padding: float = 16.0
    rois_per_image: int = 64
    foreground_fraction: float = 0.25
    svm_negative_iou: float = 0.3
    svm_hard_negatives: int = 64
    svm_positive_weight: float = 2.0
    svm_l2: float = 1e-4
    regression_min_iou: float = 0.6
    regression_l2: float = 1e-4
    dropout_rate: float = 0.5
    score_threshold: float = -1.0
    nms_threshold: float = 0.3
    max_detections: int = 100
    proposals_per_chunk: int = 32
    dtype: Any = jnp.float32

    def setup(self):
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1; got {self.num_classes}.")
        self.network = RegionNetwork(self.width, self.feature_layer, self.dropout_rate,
                                     dtype=self.dtype)
        # Fine-tuning's softmax over K + 1 classes (replaced by the SVMs at test time, as in
        # the paper), the per-class SVMs on fc7, and the class-specific regressor on pool5.
        self.classifier = nn.Dense(self.num_classes + 1,
                                   kernel_init=nn.initializers.normal(0.01))
        self.svm = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)
        self.regressor = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.zeros)
        self.dropout = nn.Dropout(self.dropout_rate)

    def warp(self, images: Array, boxes: Array) -> Array:
        if images.ndim != 4:
            raise ValueError(f"RCNN expects images (B, H, W, C); got {images.shape}.")
        return warp_regions(images, boxes, self.warp_size, context_padding=self.context_padding)

    def region_features(self, images: Array, boxes: Array) -> tuple[Array, Array]:
        """Test-time (pool5, fc7) of every box (B, P, 4), `proposals_per_chunk` per image at a
        time: the CNN runs once per region, which is what makes R-CNN slow."""
        if self.is_initializing():
            return self.network(self.warp(images, boxes), train=False)[:2]
        network, variables = self.network.clone(parent=None), self.network.variables
        return rcnn.map_region_chunks(
            lambda b: network.apply(variables, self.warp(images, b), train=False)[:2],
            self.proposals_per_chunk, boxes)

    def __call__(self, inputs: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        proposals, valid = inputs["proposals"], inputs["proposal_valid"]
        pool5, fc7 = self.region_features(inputs["image"], proposals)
        if self.is_initializing():  # the fine-tuning softmax is used in training only
            self.classifier(fc7)
        deltas = self.regressor(pool5).reshape(*proposals.shape[:2], self.num_classes, 4)
        return rcnn.detect(proposals, valid, self.svm(fc7), deltas, inputs["image_hw"],
                           score_threshold=self.score_threshold,
                           nms_threshold=self.nms_threshold, max_detections=self.max_detections)

    def losses(self, inputs: dict[str, Array], targets: dict[str, Array]
               ) -> tuple[dict[str, Array], dict[str, Array]]:
        """Fine-tuning, SVM and box-regression losses; 'sample' and 'dropout' RNG streams.

        The CNN sees the sampled RoIs and, for the SVMs' positives, the ground-truth boxes."""
        samples = rcnn.sample_rois(
            self.make_rng("sample"), inputs["proposals"], inputs["proposal_valid"],
            targets["boxes"], targets["classes"], targets["box_valid"], num=self.rois_per_image,
            foreground_fraction=self.foreground_fraction, background=(0.0, 0.5))
        regions = jnp.concatenate([samples["rois"], targets["boxes"]], axis=1)
        pool5, fc7, _ = self.network(self.warp(inputs["image"], regions), train=True)
        num_rois = samples["rois"].shape[1]

        # 1. Fine-tuning: softmax over K + 1 on the sampled RoIs.
        logits = self.classifier(self.dropout(fc7[:, :num_rois], deterministic=False))
        labels, roi_valid = samples["labels"], samples["valid"].astype(jnp.float32)
        finetune = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        accuracy = jnp.argmax(logits, -1) == labels

        # 2. SVMs on fixed fc7: ground truth positive, IoU < 0.3 with the class negative.
        region_valid = jnp.concatenate([samples["valid"], targets["box_valid"]], axis=1)
        svm_losses = svm_loss(
            self.svm(jax.lax.stop_gradient(fc7)), regions, region_valid, num_rois, targets,
            negative_iou=self.svm_negative_iou, hard_negatives=self.svm_hard_negatives,
            positive_weight=self.svm_positive_weight)

        # 3. Class-specific box regression on fixed pool5, for RoIs with IoU >= 0.6.
        deltas = self.regressor(jax.lax.stop_gradient(pool5[:, :num_rois]))
        deltas = deltas.reshape(*labels.shape, self.num_classes, 4)
        true_class = jnp.take_along_axis(deltas, jnp.maximum(labels - 1, 0)[..., None, None],
                                         axis=2)[:, :, 0]
        iou = jnp.max(jnp.where(targets["box_valid"][:, None],
                                box_ops.pairwise_iou(samples["rois"], targets["boxes"]), 0.0), -1)
        regress = roi_valid * (labels > 0) * (iou >= self.regression_min_iou)
        squared = 0.5 * jnp.sum((true_class - samples["targets"]) ** 2, axis=-1)

        def l2(layer):
            return 0.5 * jnp.sum(layer.variables["params"]["kernel"] ** 2)

        losses = {
            "finetune_class": jnp.sum(finetune * roi_valid) / jnp.maximum(roi_valid.sum(), 1.0),
            "svm": svm_losses["hinge"] + self.svm_l2 * l2(self.svm),
            "box_regression": (jnp.sum(squared * regress) / jnp.maximum(regress.sum(), 1.0)
                               + self.regression_l2 * l2(self.regressor)),
        }
        metrics = {
            "finetune_accuracy": jnp.sum(accuracy * roi_valid) / jnp.maximum(roi_valid.sum(), 1),
            "foreground_rois": jnp.mean(jnp.sum((labels > 0) * roi_valid, axis=1)),
            "svm_hard_negative_score": svm_losses["hard_negative_score"],
        }
        return losses, metrics


def svm_loss(scores: Array, regions: Array, region_valid: Array, num_rois: int,
             targets: dict[str, Array], *, negative_iou: float, hard_negatives: int,
             positive_weight: float) -> dict[str, Array]:
    """R-CNN's per-class SVM hinge loss on one minibatch with hard negative mining.

    scores (B, N, K) of the regions (B, N, 4): the first `num_rois` sampled proposals, then the
    ground-truth boxes (targets' boxes, classes, box_valid). For class k the positives are the
    ground-truth boxes of class k, the negatives every region with IoU below `negative_iou` with
    every object of class k, of which only the `hard_negatives` highest-scoring in the batch
    count (the paper mines them from its cache). Returns the mean weighted hinge loss and the
    mean score of the mined negatives (it falls below -1 once they are all outside the margin).
    """
    batch, num, classes = scores.shape
    gt_valid, gt_classes = targets["box_valid"], targets["classes"]
    of_class = gt_valid[..., None] & (gt_classes[..., None] == jnp.arange(classes))  # (B, M, K)
    iou = box_ops.pairwise_iou(regions, targets["boxes"])  # (B, N, M)
    class_iou = jnp.max(jnp.where(of_class[:, None], iou[..., None], 0.0), axis=2)  # (B, N, K)
    is_gt = jnp.arange(num) >= num_rois
    positive = (region_valid & is_gt)[..., None] & jnp.pad(of_class, ((0, 0), (num_rois, 0),
                                                                      (0, 0)))
    negative = region_valid[..., None] & (class_iou < negative_iou)

    # Hard negatives: per class, the highest-scoring negatives over the whole batch.
    flat = jnp.where(negative, scores, -jnp.inf).reshape(batch * num, classes).T  # (K, B*N)
    count = min(hard_negatives, batch * num)
    hard_scores, _ = jax.lax.top_k(flat, count)  # (K, count)
    hard = jnp.isfinite(hard_scores)
    hinge_negative = jnp.where(hard, jax.nn.relu(1.0 + hard_scores), 0.0)
    hinge_positive = jnp.where(positive, jax.nn.relu(1.0 - scores), 0.0)
    total = positive_weight * hinge_positive.sum() + hinge_negative.sum()
    examples = positive.sum() + hard.sum()
    return {"hinge": total / jnp.maximum(examples, 1),
            "hard_negative_score": jnp.sum(jnp.where(hard, hard_scores, 0.0))
            / jnp.maximum(hard.sum(), 1)}

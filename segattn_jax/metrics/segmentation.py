"""Semantic segmentation metrics from one confusion matrix (Long et al. 2015, FCN, section 5).

Evaluation is split in two so that it scales to a pod:
  1. `confusion_matrix` runs inside the jitted eval step and returns a small (K, K) count matrix
     per batch. Counts add, so matrices from batches, devices and hosts are simply summed.
  2. `segmentation_metrics` turns the one matrix summed over the whole eval set into the four FCN
     numbers on the host. Averaging per-batch mean IoUs instead would weight small batches wrongly
     and is not what the paper reports.

Convention (same as sklearn and the FCN reference `score.py`): rows are ground-truth classes,
columns are predicted classes, so confusion[i, j] counts pixels of class i predicted as j.

Accumulate on the host in int64 (`np.asarray(m, np.int64)`): one batch fits int32 easily, a whole
data set of large images may not.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    labels: jnp.ndarray,
    predictions: jnp.ndarray,
    num_classes: int,
    valid_mask: jnp.ndarray | None = None,
    ignore_label: int | None = 255,
) -> jnp.ndarray:
    """Counts (label, prediction) pairs into a (num_classes, num_classes) int matrix; jit-able.

    A pixel is counted only when its label is in [0, num_classes) and is not `ignore_label`, its
    prediction is in [0, num_classes), and `valid_mask` (if given) is true there. Padding added to
    make a batch static-shaped goes in `valid_mask`; VOC's 255 boundary pixels are `ignore_label`.
    Like FCN's `fast_hist`, it bincounts the linear index label * K + prediction; excluded pixels
    go to an extra overflow bin that is cut off, so every shape stays static.

    Args:
      labels: integer ground truth of any shape, e.g. (N, H, W); with 2 or more axes the leading
        one is the batch axis (the one sharded over devices).
      predictions: integer predicted classes (e.g. argmax of logits), same shape as labels.
      num_classes: K.
      valid_mask: optional boolean array of the same shape; False pixels are not counted.
      ignore_label: label value to skip, or None.

    Returns:
      (K, K) int32 (int64 under jax x64) counts, rows = ground truth, columns = prediction.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    labels = jnp.asarray(labels)
    predictions = jnp.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must have the same shape; "
            "take the argmax over the class axis and resize predictions to the label size first."
        )
    if not all(jnp.issubdtype(x.dtype, jnp.integer) for x in (labels, predictions)):
        raise ValueError(
            f"labels ({labels.dtype}) and predictions ({predictions.dtype}) must be integer class "
            "ids; pass logits.argmax(-1), not logits."
        )
    if valid_mask is not None and jnp.shape(valid_mask) != labels.shape:
        raise ValueError(
            f"valid_mask {jnp.shape(valid_mask)} must have the labels' shape {labels.shape}.")

    # Count per example, then sum over the batch: with the batch axis sharded over devices under
    # explicit sharding (jax.make_mesh's default), a single bincount over all pixels is a scatter
    # whose output sharding JAX cannot infer; per-example counts keep the batch sharding and the
    # final sum becomes an all-reduce. A (K, K) matrix per example is small.
    batch_shape = (labels.shape[0], -1) if labels.ndim >= 2 else (1, -1)
    labels = labels.reshape(batch_shape).astype(jnp.int32)
    predictions = predictions.reshape(batch_shape).astype(jnp.int32)
    counted = ((labels >= 0) & (labels < num_classes)
               & (predictions >= 0) & (predictions < num_classes))
    if ignore_label is not None:
        counted &= labels != ignore_label
    if valid_mask is not None:
        counted &= jnp.asarray(valid_mask, bool).reshape(batch_shape)
    overflow_bin = num_classes * num_classes
    index = jnp.where(counted, labels * num_classes + predictions, overflow_bin)
    counts = jax.vmap(lambda example: jnp.bincount(example, length=overflow_bin + 1))(index)
    return counts[:, :overflow_bin].sum(axis=0).reshape(num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class, n_ii / (t_i + sum_j n_ji - n_ii); NaN for a class absent from both the
    ground truth and the predictions (0 / 0), which the means below skip."""
    confusion = _as_square_counts(confusion)
    true_positives = np.diag(confusion)
    union = confusion.sum(axis=1) + confusion.sum(axis=0) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return true_positives / union


def segmentation_metrics(confusion: np.ndarray) -> dict[str, float]:
    """The four FCN metrics (paper sec. 5) of a confusion matrix summed over the whole eval set.

    With n_ij the pixels of class i predicted as j and t_i = sum_j n_ij:
      pixel_accuracy          sum_i n_ii / sum_i t_i
      mean_accuracy           mean_i n_ii / t_i
      mean_iou                mean_i n_ii / (t_i + sum_j n_ji - n_ii)
      frequency_weighted_iou  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

    Which classes enter the means: exactly as the FCN reference `score.py` (np.nanmean), a class
    whose ratio is 0/0 is skipped. So mean IoU skips classes absent from both ground truth and
    predictions (a class that is predicted but never present scores IoU 0 and counts: those false
    positives are real errors), and mean accuracy skips classes absent from the ground truth
    (their accuracy is undefined). Counting absent classes as 0 instead would make the score
    depend on which classes happen to occur in a small eval set. Frequency-weighted IoU gives
    absent classes weight 0, like `score.py`'s `freq > 0` filter.

    Returns plain Python floats in [0, 1], ready for metric writers and JSON.
    """
    confusion = _as_square_counts(confusion)
    total = confusion.sum()
    if total == 0:
        raise ValueError(
            "The confusion matrix is empty: no pixel was counted. Check that the labels are in "
            "[0, num_classes) and that ignore_label / valid_mask do not exclude every pixel."
        )
    true_positives = np.diag(confusion)
    ground_truth_per_class = confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_accuracy = true_positives / ground_truth_per_class
    iou = per_class_iou(confusion)
    present = ground_truth_per_class > 0
    frequency = ground_truth_per_class / total
    return {
        "pixel_accuracy": float(true_positives.sum() / total),
        "mean_accuracy": float(np.nanmean(class_accuracy)),
        "mean_iou": float(np.nanmean(iou)),
        "frequency_weighted_iou": float((frequency[present] * iou[present]).sum()),
    }


def _as_square_counts(confusion: np.ndarray) -> np.ndarray:
    """Host copy in float64 (exact for counts below 2**53) after checking the shape."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(
            "confusion must be a square (num_classes, num_classes) matrix, got shape "
            f"{confusion.shape}."
        )
    return confusion.astype(np.float64)

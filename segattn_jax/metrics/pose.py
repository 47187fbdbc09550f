"""Human pose: the LSP 14-joint skeleton every pose dataset here is mapped to, and its metrics.

Joint order is the Leeds Sports Pose dataset's (Johnson & Everingham 2010), which DeepPose
(Toshev & Szegedy 2014) reports on; "left" and "right" are the person's own.

The metrics are DeepPose's, in numpy (float64) on the host, over an eval set accumulated batch by
batch: each `*_counts` function returns integer counts that are summed over batches, and its
`*_summary` turns the summed counts into rates. Inputs, per batch of N examples:
  pred, true : (N, 14, 2) joint positions (x, y) in one unit (pixels);
  visible    : (N, 14) bool, whether each ground-truth joint is annotated/valid.
Coordinates of invisible joints are never read into a result (they may be NaN or garbage).

- PCP (Percentage of Correct Parts), strict, as DeepPose's Table 1: a part is correct when BOTH
  predicted endpoints lie within `threshold` (0.5) x the ground-truth part length of their
  ground-truth positions ("<=": a zero-length ground-truth part is correct only if both ends are
  exact).
- PDJ (Percent of Detected Joints), DeepPose's figures: a joint is detected when its predicted
  position is within a fraction f of the torso diameter (left shoulder to right hip, DeepPose's
  choice for both LSP and FLIC) of the ground truth, as a curve over f.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

JOINT_NAMES = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
               "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
               "left_wrist", "neck", "head_top")
NUM_JOINTS = len(JOINT_NAMES)
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

# LSP's 10 PCP parts as (name, endpoint a, endpoint b); an endpoint is a tuple of joint indices
# whose positions are averaged, so the torso can end at the hips' midpoint (LSP has no pelvis
# joint). A part counts only where every joint of both its endpoints is visible.
LIMBS = (
    ("torso", (_J["neck"],), (_J["right_hip"], _J["left_hip"])),
    ("right_upper_leg", (_J["right_hip"],), (_J["right_knee"],)),
    ("left_upper_leg", (_J["left_hip"],), (_J["left_knee"],)),
    ("right_lower_leg", (_J["right_knee"],), (_J["right_ankle"],)),
    ("left_lower_leg", (_J["left_knee"],), (_J["left_ankle"],)),
    ("right_upper_arm", (_J["right_shoulder"],), (_J["right_elbow"],)),
    ("left_upper_arm", (_J["left_shoulder"],), (_J["left_elbow"],)),
    ("right_forearm", (_J["right_elbow"],), (_J["right_wrist"],)),
    ("left_forearm", (_J["left_elbow"],), (_J["left_wrist"],)),
    ("head", (_J["neck"],), (_J["head_top"],)),
)
LIMB_NAMES = tuple(name for name, _, _ in LIMBS)
# PCP part groups (left and right together) -> limb names; DeepPose's Table 1 reports the first
# four and their mean ("Ave"). "torso" and "head" are one-limb groups, so share the limb's value.
PCP_GROUPS = {
    "upper_arm": ("right_upper_arm", "left_upper_arm"),
    "forearm": ("right_forearm", "left_forearm"),
    "upper_leg": ("right_upper_leg", "left_upper_leg"),
    "lower_leg": ("right_lower_leg", "left_lower_leg"),
    "torso": ("torso",),
    "head": ("head",),
}
PCP_MEAN_GROUPS = ("upper_arm", "forearm", "upper_leg", "lower_leg")

# PDJ: torso diameter endpoints (DeepPose: left shoulder to right hip) and the joint groups of
# DeepPose's PDJ figures (elbows and wrists for FLIC, knees and ankles too for LSP, and the rest).
TORSO_DIAMETER_JOINTS = (_J["left_shoulder"], _J["right_hip"])
PDJ_GROUPS = {
    "elbows": (_J["right_elbow"], _J["left_elbow"]),
    "wrists": (_J["right_wrist"], _J["left_wrist"]),
    "knees": (_J["right_knee"], _J["left_knee"]),
    "ankles": (_J["right_ankle"], _J["left_ankle"]),
    "shoulders": (_J["right_shoulder"], _J["left_shoulder"]),
    "hips": (_J["right_hip"], _J["left_hip"]),
    "head": (_J["neck"], _J["head_top"]),
}
DEFAULT_PDJ_FRACTIONS = np.linspace(0.0, 0.5, 51)  # DeepPose's plots run f from 0 to 0.5


def _check_joints(pred, true, visible) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 pred/true of shape (N, 14, 2) and bool visible (N, 14), or a ValueError naming the
    expected shapes (a mismatch would otherwise broadcast into a silently wrong count)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    visible = np.asarray(visible)
    n = pred.shape[0] if pred.ndim else None
    if (pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 2) or true.shape != pred.shape
            or visible.shape != (n, NUM_JOINTS)):
        raise ValueError(f"Expected pred and true of shape (N, {NUM_JOINTS}, 2) and visible of "
                         f"shape (N, {NUM_JOINTS}); got pred {pred.shape}, true {true.shape}, "
                         f"visible {visible.shape}.")
    if visible.dtype != bool:
        if not (np.issubdtype(visible.dtype, np.integer) and np.isin(visible, (0, 1)).all()):
            raise ValueError(f"visible must be bool (or 0/1 integers), got {visible.dtype}.")
        visible = visible.astype(bool)
    return pred, true, visible


def _endpoint_table(endpoints: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged endpoint joint tuples as a padded index table (L, K) and its mask, so every limb's
    endpoint is gathered at once."""
    width = max(len(e) for e in endpoints)
    index = np.zeros((len(endpoints), width), np.int64)
    mask = np.zeros((len(endpoints), width), bool)
    for i, e in enumerate(endpoints):
        if not e or any(not 0 <= j < NUM_JOINTS for j in e):
            raise ValueError(f"Limb endpoint {e} must be a non-empty tuple of joint indices "
                             f"in [0, {NUM_JOINTS}).")
        index[i, :len(e)], mask[i, :len(e)] = e, True
    return index, mask


def _endpoints(joints: np.ndarray, visible: np.ndarray, index: np.ndarray, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Endpoint positions (N, L, 2) as the mean of their joints, and whether all those joints are
    visible (N, L). `where` (not a 0-weight product) keeps NaN in padded slots out of the mean."""
    gathered = joints[:, index]                                    # (N, L, K, 2)
    total = np.where(mask[None, :, :, None], gathered, 0.0).sum(axis=2)
    positions = total / mask.sum(axis=1)[None, :, None]
    all_visible = np.all(visible[:, index] | ~mask[None], axis=2)
    return positions, all_visible


def limb_correctness(pred, true, visible, threshold: float = 0.5,
                     limbs: Sequence[tuple] = LIMBS) -> tuple[np.ndarray, np.ndarray]:
    """Strict PCP per example and limb: `(correct, valid)`, both (N, L) bool.

    valid: every ground-truth joint of both endpoints is visible (else the limb is not scored);
    correct: valid and both predicted endpoints within `threshold` x the ground-truth limb length
    of their ground-truth positions (inclusive). Per example, so callers can inspect failures.
    """
    pred, true, visible = _check_joints(pred, true, visible)
    index_a, mask_a = _endpoint_table([a for _, a, _ in limbs])
    index_b, mask_b = _endpoint_table([b for _, _, b in limbs])
    with np.errstate(invalid="ignore", over="ignore"):  # garbage at invisible joints: no warnings
        true_a, valid_a = _endpoints(true, visible, index_a, mask_a)
        true_b, valid_b = _endpoints(true, visible, index_b, mask_b)
        pred_a, _ = _endpoints(pred, visible, index_a, mask_a)
        pred_b, _ = _endpoints(pred, visible, index_b, mask_b)
        length = np.linalg.norm(true_a - true_b, axis=-1)
        tolerance = threshold * length
        correct = ((np.linalg.norm(pred_a - true_a, axis=-1) <= tolerance)
                   & (np.linalg.norm(pred_b - true_b, axis=-1) <= tolerance))
    valid = valid_a & valid_b
    return correct & valid, valid


def pcp_counts(pred, true, visible, threshold: float = 0.5,
               limbs: Sequence[tuple] = LIMBS) -> tuple[np.ndarray, np.ndarray]:
    """Strict PCP counts `(correct, total)`, each (L,) int64, summed over the batch: add them
    over batches, then call `pcp_summary` (rates of sums, not means of per-batch rates)."""
    correct, valid = limb_correctness(pred, true, visible, threshold, limbs)
    return correct.sum(axis=0, dtype=np.int64), valid.sum(axis=0, dtype=np.int64)


def _nanmean(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over `axis` skipping NaN, NaN where all are NaN; unlike np.nanmean, without a
    RuntimeWarning (an all-invisible eval set is a normal case, not an error)."""
    values = np.asarray(values, np.float64)
    present = ~np.isnan(values)
    count = present.sum(axis=axis)
    total = np.where(present, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)


def _rates(numerator: np.ndarray, total: np.ndarray) -> np.ndarray:
    """numerator / total, NaN where total is 0 (no warning)."""
    numerator = np.asarray(numerator, np.float64)
    total = np.broadcast_to(np.asarray(total, np.float64), numerator.shape)
    return np.divide(numerator, total, out=np.full(numerator.shape, np.nan), where=total > 0)


def _check_counts(numerator, total, numerator_shape: tuple, total_shape: tuple, names: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    numerator, total = np.asarray(numerator), np.asarray(total)
    if numerator.shape != numerator_shape or total.shape != total_shape:
        raise ValueError(f"Expected {names} of shapes {numerator_shape} and {total_shape}; got "
                         f"{numerator.shape} and {total.shape}.")
    if (total < 0).any() or (numerator < 0).any() or (numerator > total).any():
        raise ValueError(f"Expected 0 <= {names.replace(' and ', ' <= ')}.")
    return numerator, total


def pcp_summary(correct, total, limbs: Sequence[tuple] = LIMBS,
                groups: Mapping[str, Sequence[str]] = PCP_GROUPS,
                mean_groups: Sequence[str] = PCP_MEAN_GROUPS) -> dict[str, float]:
    """PCP in [0, 1] from accumulated `pcp_counts`: one key per limb (correct / total), one per
    group (mean of its limbs' PCP, left and right weighted equally as in DeepPose's table) and
    "mean" (mean of `mean_groups`, DeepPose's "Ave" over upper arms, forearms, upper and lower
    legs). A limb with total 0 is NaN; groups and "mean" skip NaN values and are NaN only when
    all their members are."""
    names = [name for name, _, _ in limbs]
    correct, total = _check_counts(correct, total, (len(names),), (len(names),),
                                   "correct and total")
    per_limb = _rates(correct, total)
    result = {name: float(v) for name, v in zip(names, per_limb)}
    for group, members in groups.items():
        if (not members or any(m not in names for m in members)
                or (group in result and tuple(members) != (group,))):
            raise ValueError(f"PCP group {group!r}: members must be limb names {names} and a "
                             f"group may share a limb's name only as that one limb; got {members}.")
        result[group] = float(_nanmean([result[m] for m in members]))
    if any(g not in groups for g in mean_groups):
        raise ValueError(f"mean_groups {mean_groups} must be among the groups {list(groups)}.")
    result["mean"] = float(_nanmean([result[g] for g in mean_groups]))
    return result


def torso_diameter(joints) -> np.ndarray:
    """Per example (N,), DeepPose's PDJ scale: the distance between the left shoulder and the
    right hip of `joints` (N, 14, 2), which makes PDJ independent of the person's image size."""
    joints = np.asarray(joints, np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"Expected joints of shape (N, {NUM_JOINTS}, 2), got {joints.shape}.")
    shoulder, hip = TORSO_DIAMETER_JOINTS
    with np.errstate(invalid="ignore", over="ignore"):
        return np.linalg.norm(joints[:, shoulder] - joints[:, hip], axis=-1)


def _check_fractions(fractions) -> np.ndarray:
    fractions = np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or not np.all(np.isfinite(fractions)) or (fractions < 0).any():
        raise ValueError(f"Expected fractions of shape (F,), finite and >= 0, got shape "
                         f"{fractions.shape}.")
    return fractions


def pdj_counts(pred, true, visible, fractions=DEFAULT_PDJ_FRACTIONS
               ) -> tuple[np.ndarray, np.ndarray]:
    """PDJ counts `(detected, total)`: detected (F, 14) int64 counts joints with
    ||pred - true|| <= f x torso diameter (inclusive) for each fraction f; total (14,) int64.
    A joint counts only where it is visible and its example's ground-truth torso diameter is
    defined (left shoulder and right hip visible, distance finite and > 0). Sum over batches, then
    call `pdj_summary`."""
    pred, true, visible = _check_joints(pred, true, visible)
    fractions = _check_fractions(fractions)
    shoulder, hip = TORSO_DIAMETER_JOINTS
    with np.errstate(invalid="ignore", over="ignore"):  # garbage at invisible joints: no warnings
        diameter = torso_diameter(true)
        defined = visible[:, shoulder] & visible[:, hip] & np.isfinite(diameter) & (diameter > 0)
        counted = visible & defined[:, None]                               # (N, 14)
        distance = np.linalg.norm(pred - true, axis=-1)                    # (N, 14)
        within = distance[None] <= fractions[:, None, None] * diameter[None, :, None]  # (F, N, 14)
    detected = (within & counted[None]).sum(axis=1, dtype=np.int64)
    return detected, counted.sum(axis=0, dtype=np.int64)


def pdj_summary(detected, total, fractions=DEFAULT_PDJ_FRACTIONS,
                groups: Mapping[str, Sequence[int]] = PDJ_GROUPS,
                at: Sequence[float] = (0.2,)) -> dict[str, np.ndarray | float]:
    """PDJ curves in [0, 1] from accumulated `pdj_counts`, each a float64 array over `fractions`:
    one key per joint name (detected / total), one per group of `groups` (mean of its joints'
    curves, as DeepPose's elbows/wrists/knees/ankles figures) and "mean" (mean over all 14
    joints). Every curve is also given as a float at each fraction of `at`, under "<key>@<f>"
    (e.g. "wrists@0.2"); each such fraction must be on the grid. A joint with total 0 is NaN;
    groups and "mean" skip NaN and are NaN only when all their joints are."""
    fractions = _check_fractions(fractions)
    detected, total = _check_counts(detected, total, (len(fractions), NUM_JOINTS), (NUM_JOINTS,),
                                    "detected and total")
    per_joint = _rates(detected, total[None])                              # (F, 14)
    curves = {name: per_joint[:, j] for j, name in enumerate(JOINT_NAMES)}
    for group, members in groups.items():
        if group in curves or not members or any(not 0 <= j < NUM_JOINTS for j in members):
            raise ValueError(f"PDJ group {group!r} must not be a joint name and must list joint "
                             f"indices in [0, {NUM_JOINTS}), got {members}.")
        curves[group] = _nanmean(per_joint[:, list(members)], axis=1)
    curves["mean"] = _nanmean(per_joint, axis=1)
    result: dict[str, np.ndarray | float] = dict(curves)
    for f in at:
        matches = np.flatnonzero(np.isclose(fractions, f, rtol=0.0, atol=1e-9))
        if matches.size == 0:
            raise ValueError(f"PDJ at fraction {f} needs {f} among the fractions.")
        for key, curve in curves.items():
            result[f"{key}@{f:g}"] = float(curve[matches[0]])
    return result

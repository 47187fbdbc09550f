"""Pose metrics (DeepPose's strict PCP and PDJ) against hand-worked skeletons and a plain
Python loop written here from the papers' definitions."""
import contextlib
import math
import warnings

import numpy as np
import pytest

from segattn_jax.metrics import pose
from segattn_jax.metrics.pose import (JOINT_NAMES, LIMBS, NUM_JOINTS, PCP_GROUPS, PCP_MEAN_GROUPS,
                                      PDJ_GROUPS, limb_correctness, pcp_counts, pcp_summary,
                                      pdj_counts, pdj_summary, torso_diameter)

J = {name: i for i, name in enumerate(JOINT_NAMES)}

# A hand skeleton (x, y), y down. Lengths: head 10, upper arms 20, forearms 15, torso (neck to the
# hips' midpoint (0, 40)) 40, upper legs 30, lower legs 25; torso diameter (left shoulder (15, 0)
# to right hip (-15, 40)) = sqrt(30^2 + 40^2) = 50.
SKELETON = {
    "head_top": (0, -10), "neck": (0, 0),
    "right_shoulder": (-15, 0), "right_elbow": (-15, 20), "right_wrist": (-15, 35),
    "left_shoulder": (15, 0), "left_elbow": (15, 20), "left_wrist": (15, 35),
    "right_hip": (-15, 40), "right_knee": (-15, 70), "right_ankle": (-15, 95),
    "left_hip": (15, 40), "left_knee": (15, 70), "left_ankle": (15, 95),
}
TRUE_ONE = np.array([SKELETON[name] for name in JOINT_NAMES], np.float64)
LIMB_INDEX = {name: i for i, (name, _, _) in enumerate(LIMBS)}

# The reference's own part definitions, by joint name (endpoint = mean of the listed joints).
REFERENCE_PARTS = {
    "torso": (("neck",), ("right_hip", "left_hip")),
    "head": (("neck",), ("head_top",)),
    "right_upper_arm": (("right_shoulder",), ("right_elbow",)),
    "left_upper_arm": (("left_shoulder",), ("left_elbow",)),
    "right_forearm": (("right_elbow",), ("right_wrist",)),
    "left_forearm": (("left_elbow",), ("left_wrist",)),
    "right_upper_leg": (("right_hip",), ("right_knee",)),
    "left_upper_leg": (("left_hip",), ("left_knee",)),
    "right_lower_leg": (("right_knee",), ("right_ankle",)),
    "left_lower_leg": (("left_knee",), ("left_ankle",)),
}


def batch(n):
    """n copies of the hand skeleton: (true, pred to edit, all visible)."""
    true = np.repeat(TRUE_ONE[None], n, axis=0)
    return true, true.copy(), np.ones((n, NUM_JOINTS), bool)


def random_case(rng, n, noise=8.0, p_visible=0.8):
    true = rng.normal(scale=30.0, size=(n, NUM_JOINTS, 2))
    pred = true + rng.normal(scale=noise, size=true.shape)
    visible = rng.random((n, NUM_JOINTS)) < p_visible
    # Invisible ground truth may be garbage; the metrics must not read it.
    true[~visible] = rng.choice([np.nan, np.inf, 1e300], size=((~visible).sum(), 1))
    return pred, true, visible


# --- reference: plain loops, from the definitions ---------------------------------------------

def reference_pcp(pred, true, visible, threshold=0.5):
    names = [name for name, _, _ in LIMBS]
    correct, total = [0] * len(names), [0] * len(names)
    for n in range(len(true)):
        for i, name in enumerate(names):
            end_a, end_b = REFERENCE_PARTS[name]
            if not all(visible[n][J[j]] for j in end_a + end_b):
                continue

            def point(joints, end):
                return tuple(sum(joints[n][J[j]][k] for j in end) / len(end) for k in (0, 1))

            length = math.dist(point(true, end_a), point(true, end_b))
            ok_a = math.dist(point(pred, end_a), point(true, end_a)) <= threshold * length
            ok_b = math.dist(point(pred, end_b), point(true, end_b)) <= threshold * length
            total[i] += 1
            correct[i] += int(ok_a and ok_b)
    return correct, total


def reference_pdj(pred, true, visible, fractions):
    detected = [[0] * NUM_JOINTS for _ in fractions]
    total = [0] * NUM_JOINTS
    for n in range(len(true)):
        shoulder, hip = J["left_shoulder"], J["right_hip"]
        if not (visible[n][shoulder] and visible[n][hip]):
            continue
        diameter = math.dist(true[n][shoulder], true[n][hip])
        if not diameter > 0:
            continue
        for j in range(NUM_JOINTS):
            if not visible[n][j]:
                continue
            total[j] += 1
            for f_index, f in enumerate(fractions):
                if math.dist(pred[n][j], true[n][j]) <= f * diameter:
                    detected[f_index][j] += 1
    return detected, total


@contextlib.contextmanager
def no_warnings():
    """Any warning (e.g. numpy's "invalid value" on garbage coordinates) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- skeleton constants -----------------------------------------------------------------------

def test_skeleton_constants():
    assert JOINT_NAMES == ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee",
                           "left_ankle", "right_wrist", "right_elbow", "right_shoulder",
                           "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top")
    assert NUM_JOINTS == 14
    # LSP's 10 parts, each in exactly one group; DeepPose's mean is over the four limb groups.
    assert {name: (tuple(a), tuple(b)) for name, a, b in LIMBS} == {
        name: (tuple(J[j] for j in a), tuple(J[j] for j in b))
        for name, (a, b) in REFERENCE_PARTS.items()}
    members = [m for group in PCP_GROUPS.values() for m in group]
    assert sorted(members) == sorted(REFERENCE_PARTS)
    assert set(PCP_MEAN_GROUPS) == {"upper_arm", "forearm", "upper_leg", "lower_leg"}
    assert {g: sorted(JOINT_NAMES[j] for j in js) for g, js in PDJ_GROUPS.items()} == {
        "elbows": ["left_elbow", "right_elbow"], "wrists": ["left_wrist", "right_wrist"],
        "knees": ["left_knee", "right_knee"], "ankles": ["left_ankle", "right_ankle"],
        "shoulders": ["left_shoulder", "right_shoulder"], "hips": ["left_hip", "right_hip"],
        "head": ["head_top", "neck"]}


# --- PCP by hand ------------------------------------------------------------------------------

def test_pcp_wrist_moved_04_and_06_of_forearm():
    # Forearm 15, so the tolerance is 7.5: the wrist moved by 0.4 x 15 = 6 stays correct, by
    # 0.6 x 15 = 9 it is not; the upper arm (shoulder-elbow) does not involve the wrist.
    true, pred, visible = batch(2)
    pred[0, J["right_wrist"], 0] += 6.0
    pred[1, J["right_wrist"], 1] += 9.0
    correct, valid = limb_correctness(pred, true, visible)
    assert valid.all()
    expected = np.ones((2, len(LIMBS)), bool)
    expected[1, LIMB_INDEX["right_forearm"]] = False
    np.testing.assert_array_equal(correct, expected)

    correct_count, total = pcp_counts(pred, true, visible)
    assert correct_count.dtype == np.int64 and total.dtype == np.int64
    np.testing.assert_array_equal(total, np.full(len(LIMBS), 2))
    summary = pcp_summary(correct_count, total)
    assert summary["right_forearm"] == 0.5
    assert summary["right_upper_arm"] == 1.0
    assert summary["forearm"] == 0.75                      # (0.5 + 1) / 2
    assert summary["mean"] == pytest.approx((1 + 0.75 + 1 + 1) / 4)


def test_pcp_strict_needs_both_endpoints_and_threshold_is_inclusive():
    # The elbow is the end of both arm parts: moved 9 it breaks the forearm (tolerance 7.5) but
    # not the upper arm (tolerance 10); moved exactly 7.5 the forearm is still correct.
    true, pred, visible = batch(3)
    pred[0, J["left_elbow"], 0] += 9.0
    pred[1, J["left_elbow"], 0] += 7.5
    pred[2, J["left_elbow"], 0] += 7.5 + 1e-9
    correct, _ = limb_correctness(pred, true, visible)
    assert correct[:, LIMB_INDEX["left_forearm"]].tolist() == [False, True, False]
    assert correct[:, LIMB_INDEX["left_upper_arm"]].tolist() == [True, True, True]
    # A looser threshold accepts the 9 (tolerance 0.6 x 15 = 9).
    loose, _ = limb_correctness(pred, true, visible, threshold=0.6)
    assert loose[0, LIMB_INDEX["left_forearm"]]


def test_pcp_torso_ends_at_the_hips_midpoint():
    true, pred, visible = batch(3)
    # 0: hips pulled apart by 30 each way: their midpoint is exact, so the torso (tolerance 20) is
    #    correct although each hip is 30 off; the upper legs (tolerance 15) are not.
    pred[0, J["right_hip"], 0] -= 30.0
    pred[0, J["left_hip"], 0] += 30.0
    # 1: both hips shifted 25: the midpoint is 25 > 20 off, the torso is incorrect.
    pred[1, [J["right_hip"], J["left_hip"]], 0] += 25.0
    # 2: left hip not annotated: the torso and the left upper leg are not scored.
    visible[2, J["left_hip"]] = False
    true[2, J["left_hip"]] = np.nan
    correct, valid = limb_correctness(pred, true, visible)
    torso, right_leg, left_leg = (LIMB_INDEX[k] for k in
                                  ("torso", "right_upper_leg", "left_upper_leg"))
    assert correct[:, torso].tolist() == [True, False, False]
    assert valid[:, torso].tolist() == [True, True, False]
    assert correct[0, [right_leg, left_leg]].tolist() == [False, False]
    assert valid[2, [right_leg, left_leg]].tolist() == [True, False]
    correct_count, total = pcp_counts(pred, true, visible)
    assert (correct_count[torso], total[torso]) == (1, 2)
    # The left upper leg: 30 and 25 off at the hip in 0 and 1 (tolerance 15), unscored in 2.
    assert (correct_count[left_leg], total[left_leg]) == (0, 2)


def test_pcp_invisible_joints_are_excluded():
    # A hopeless prediction of a wrist that is not annotated costs nothing.
    true, pred, visible = batch(2)
    visible[1, J["right_wrist"]] = False
    true[1, J["right_wrist"]] = np.nan
    pred[1, J["right_wrist"]] = 1e6
    correct, total = pcp_counts(pred, true, visible)
    forearm = LIMB_INDEX["right_forearm"]
    assert (correct[forearm], total[forearm]) == (1, 1)
    assert pcp_summary(correct, total)["right_forearm"] == 1.0
    assert total.sum() == 2 * len(LIMBS) - 1


def test_pcp_summary_from_counts_skips_nan():
    names = [name for name, _, _ in LIMBS]
    correct = {name: 0 for name in names}
    total = {name: 0 for name in names}
    correct.update(left_forearm=3, left_upper_arm=1, right_upper_arm=2, torso=5, head=0)
    total.update(left_forearm=4, left_upper_arm=4, right_upper_arm=2, torso=5, head=4)
    summary = pcp_summary([correct[k] for k in names], [total[k] for k in names])
    assert math.isnan(summary["right_forearm"])            # total 0 -> NaN
    assert summary["forearm"] == 0.75                       # skips the NaN right forearm
    assert summary["upper_arm"] == 0.625        # (1/4 + 2/2) / 2: limbs weighted equally (not 3/6)
    assert math.isnan(summary["upper_leg"]) and math.isnan(summary["lower_leg"])
    assert summary["mean"] == 0.6875                        # over the non-NaN arm groups only
    assert summary["torso"] == 1.0 and summary["head"] == 0.0   # not in DeepPose's mean
    assert set(summary) == set(names) | set(PCP_GROUPS) | {"mean"}


def test_pcp_summary_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"\(10,\)"):
        pcp_summary(np.zeros(9, int), np.zeros(9, int))
    with pytest.raises(ValueError, match="<="):
        pcp_summary(np.full(10, 2), np.ones(10, int))


# --- PCP against the reference loop -----------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcp_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    pred, true, visible = random_case(rng, 60)
    with no_warnings():
        correct, total = pcp_counts(pred, true, visible)
        summary = pcp_summary(correct, total)
    ref_correct, ref_total = reference_pcp(pred, true, visible)
    np.testing.assert_array_equal(correct, ref_correct)
    np.testing.assert_array_equal(total, ref_total)
    assert 0 < correct.sum() < total.sum()                  # the case mixes both outcomes
    for i, (name, _, _) in enumerate(LIMBS):
        assert summary[name] == pytest.approx(ref_correct[i] / ref_total[i])
    groups = {g: np.mean([ref_correct[LIMB_INDEX[m]] / ref_total[LIMB_INDEX[m]] for m in members])
              for g, members in PCP_GROUPS.items()}
    for g, value in groups.items():
        assert summary[g] == pytest.approx(value)
    assert summary["mean"] == pytest.approx(np.mean([groups[g] for g in PCP_MEAN_GROUPS]))


# --- PDJ --------------------------------------------------------------------------------------

def test_torso_diameter():
    true, _, _ = batch(2)
    true[1] *= 2.0
    np.testing.assert_allclose(torso_diameter(true), [50.0, 100.0])


def test_pdj_hand_case():
    # Torso diameter 50: the right wrist 10 off is detected from f = 0.2, the left elbow 15 off
    # from f = 0.3; every other joint is exact, so detected already at f = 0.
    true, pred, visible = batch(1)
    pred[0, J["right_wrist"], 1] += 10.0
    pred[0, J["left_elbow"], 0] -= 15.0
    fractions = np.array([0.0, 0.1, 0.2, 0.29, 0.3, 0.5])
    detected, total = pdj_counts(pred, true, visible, fractions)
    assert detected.shape == (6, NUM_JOINTS) and detected.dtype == np.int64
    np.testing.assert_array_equal(total, np.ones(NUM_JOINTS))
    np.testing.assert_array_equal(detected[:, J["right_wrist"]], [0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(detected[:, J["left_elbow"]], [0, 0, 0, 0, 1, 1])
    others = [j for j in range(NUM_JOINTS) if j not in (J["right_wrist"], J["left_elbow"])]
    assert (detected[:, others] == 1).all()
    summary = pdj_summary(detected, total, fractions, at=(0.2, 0.3))
    np.testing.assert_array_equal(summary["wrists"], [0.5, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(summary["elbows"], [0.5, 0.5, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(summary["right_wrist"], [0, 0, 1, 1, 1, 1])
    assert summary["wrists@0.2"] == 1.0 and summary["elbows@0.2"] == 0.5
    assert summary["elbows@0.3"] == 1.0
    assert summary["mean@0.2"] == pytest.approx(13 / 14)
    assert summary["knees@0.2"] == 1.0
    with pytest.raises(ValueError, match="0.25"):
        pdj_summary(detected, total, fractions, at=(0.25,))


def test_pdj_scales_with_the_torso_not_the_image():
    # The same 10-pixel error is detected at f = 0.2 for a torso of 50 but not for one of 25.
    true, pred, visible = batch(2)
    true[1] *= 0.5
    pred[1] = true[1]
    pred[:, J["right_knee"], 0] += 10.0
    detected, total = pdj_counts(pred, true, visible, [0.2])
    assert detected[0, J["right_knee"]] == 1 and total[J["right_knee"]] == 2


def test_pdj_needs_a_defined_torso_diameter():
    true, pred, visible = batch(4)
    visible[0, J["left_shoulder"]] = False                  # diameter undefined: example skipped
    visible[1, J["right_hip"]] = False
    true[1, J["right_hip"]] = np.nan
    true[2, J["left_shoulder"]] = true[2, J["right_hip"]]   # diameter 0: skipped
    pred[2] = true[2]
    visible[3, J["left_ankle"]] = False                     # only this joint skipped
    pred[3, J["left_ankle"]] = 1e6
    with no_warnings():
        detected, total = pdj_counts(pred, true, visible, [0.0, 0.1])
    expected_total = np.ones(NUM_JOINTS, int)
    expected_total[J["left_ankle"]] = 0
    np.testing.assert_array_equal(total, expected_total)
    np.testing.assert_array_equal(detected, [expected_total, expected_total])
    summary = pdj_summary(detected, total, [0.0, 0.1], at=(0.1,))
    np.testing.assert_array_equal(summary["ankles"], [1.0, 1.0])   # the NaN left ankle skipped
    assert np.isnan(summary["left_ankle"]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_pdj_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    pred, true, visible = random_case(rng, 50, noise=10.0)
    fractions = np.linspace(0.0, 0.5, 11)
    with no_warnings():
        detected, total = pdj_counts(pred, true, visible, fractions)
        summary = pdj_summary(detected, total, fractions)
    ref_detected, ref_total = reference_pdj(pred, true, visible, fractions)
    np.testing.assert_array_equal(detected, ref_detected)
    np.testing.assert_array_equal(total, ref_total)
    assert 0 < detected[-1].sum() < total.sum() * len(fractions)
    rates = np.array(ref_detected) / np.array(ref_total)
    for g, joints in PDJ_GROUPS.items():
        np.testing.assert_allclose(summary[g], rates[:, list(joints)].mean(axis=1))
        assert summary[f"{g}@0.2"] == pytest.approx(rates[4, list(joints)].mean())
    np.testing.assert_allclose(summary["mean"], rates.mean(axis=1))


def test_pdj_monotone_and_one_for_perfect_predictions():
    rng = np.random.default_rng(3)
    pred, true, visible = random_case(rng, 40, noise=10.0)
    fractions = np.linspace(0.0, 2.0, 41)
    detected, total = pdj_counts(pred, true, visible, fractions)
    assert (np.diff(detected, axis=0) >= 0).all()
    assert (np.diff(detected, axis=0) > 0).any()
    assert (detected[0] < total).any() and (detected[-1] <= total).all()
    huge, total_huge = pdj_counts(pred, true, visible, [1e9])
    np.testing.assert_array_equal(huge[0], total_huge)
    # Perfect predictions: every counted joint detected at every fraction, so every curve is 1.
    perfect, perfect_total = pdj_counts(np.where(visible[..., None], true, 0.0), true, visible)
    assert perfect_total.min() > 0
    summary = pdj_summary(perfect, perfect_total)
    for key in list(PDJ_GROUPS) + ["mean"]:
        np.testing.assert_array_equal(summary[key], np.ones(len(pose.DEFAULT_PDJ_FRACTIONS)))
        assert summary[f"{key}@0.2"] == 1.0


# --- accumulation and bad input -------------------------------------------------------------

def test_counts_add_over_batch_splits():
    rng = np.random.default_rng(4)
    pred, true, visible = random_case(rng, 37)
    whole_pcp = pcp_counts(pred, true, visible)
    whole_pdj = pdj_counts(pred, true, visible)
    bounds = [0, 5, 5, 18, 30, 37]                           # includes an empty batch
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    summed_pcp = [sum(c) for c in zip(*(pcp_counts(pred[s], true[s], visible[s]) for s in parts))]
    summed_pdj = [sum(c) for c in zip(*(pdj_counts(pred[s], true[s], visible[s]) for s in parts))]
    assert whole_pcp[1].sum() > 0 and whole_pdj[0].sum() > 0
    for whole, summed in zip(whole_pcp + whole_pdj, summed_pcp + summed_pdj):
        np.testing.assert_array_equal(whole, summed)
    assert pcp_summary(*summed_pcp) == pytest.approx(pcp_summary(*whole_pcp), nan_ok=True)


def test_all_invisible_gives_zero_totals_and_nan_without_warnings():
    rng = np.random.default_rng(5)
    pred = rng.normal(size=(3, NUM_JOINTS, 2))
    true = np.full((3, NUM_JOINTS, 2), np.nan)
    true[0] = np.inf
    visible = np.zeros((3, NUM_JOINTS), bool)
    with no_warnings():
        correct, total = pcp_counts(pred, true, visible)
        pcp = pcp_summary(correct, total)
        detected, pdj_total = pdj_counts(pred, true, visible)
        pdj = pdj_summary(detected, pdj_total)
        empty = pcp_counts(np.zeros((0, NUM_JOINTS, 2)), np.zeros((0, NUM_JOINTS, 2)),
                           np.zeros((0, NUM_JOINTS), bool))
    assert total.sum() == 0 and correct.sum() == 0 and pdj_total.sum() == 0
    assert detected.sum() == 0 and empty[1].shape == (len(LIMBS),) and empty[1].sum() == 0
    assert all(math.isnan(v) for v in pcp.values())
    assert all(np.isnan(v).all() for v in pdj.values())


GOOD = (np.zeros((2, NUM_JOINTS, 2)), np.zeros((2, NUM_JOINTS, 2)), np.ones((2, NUM_JOINTS), bool))
BAD_SHAPES = {
    "pred joints": (np.zeros((2, 13, 2)), GOOD[1], GOOD[2]),
    "pred coords": (np.zeros((2, NUM_JOINTS, 3)), np.zeros((2, NUM_JOINTS, 3)), GOOD[2]),
    "true batch": (GOOD[0], np.zeros((3, NUM_JOINTS, 2)), GOOD[2]),
    "visible batch": (GOOD[0], GOOD[1], np.ones((3, NUM_JOINTS), bool)),
    "visible rank": (GOOD[0], GOOD[1], np.ones((2, NUM_JOINTS, 1), bool)),
    "unbatched": (GOOD[0][0], GOOD[1][0], GOOD[2][0]),
}


@pytest.mark.parametrize("function", [limb_correctness, pcp_counts, pdj_counts])
@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_shape_mismatch_raises(function, case):
    function(*GOOD)                                          # the good shapes are accepted
    with pytest.raises(ValueError, match=r"\(N, 14, 2\).*\(N, 14\)"):
        function(*BAD_SHAPES[case])


def test_other_bad_input_raises():
    with pytest.raises(ValueError, match=r"\(N, 14, 2\)"):
        torso_diameter(np.zeros((2, 14)))
    with pytest.raises(ValueError, match="visible"):
        pcp_counts(GOOD[0], GOOD[1], np.full((2, NUM_JOINTS), 0.5))
    with pytest.raises(ValueError, match="fractions"):
        pdj_counts(*GOOD, fractions=[[0.1]])
    with pytest.raises(ValueError, match=r"\(51, 14\)"):
        pdj_summary(np.zeros((50, NUM_JOINTS), int), np.zeros(NUM_JOINTS, int))

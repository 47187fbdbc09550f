import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax.data import poses
from segattn_jax.data.poses import (COLOURS, FLIC_BOX_MARGIN, FLIC_TO_LSP, HEIGHT_RANGE, LENGTH_JITTER,
                                    LIMB_LENGTHS, NUM_FLIC_POINTS, flic_to_lsp, render_pose)
from segattn_jax.metrics.pose import JOINT_NAMES, NUM_JOINTS

J = {name: i for i, name in enumerate(JOINT_NAMES)}
SIDES = ("left", "right")
# (limb type, joint a, joint b) without the side prefix.
LIMBS = (("upper_arm", "shoulder", "elbow"), ("forearm", "elbow", "wrist"), ("thigh", "hip", "knee"),
         ("shin", "knee", "ankle"))


def _render(n, image_size, seed=0):
    return [render_pose(np.random.default_rng([seed, i]), image_size) for i in range(n)]


@pytest.fixture(scope="module")
def figures64():
    return _render(250, 64)


def _joint_pixels(joints, s):
    pixels = np.floor(joints).astype(int)
    return pixels, ((pixels >= 0) & (pixels < s)).all(1)


@pytest.mark.parametrize("image_size", [128, 48])
def test_render_pose_invariants(image_size):
    s = image_size
    for ex in _render(60, s, seed=1):
        assert set(ex) == {"image", "joints", "visible", "person_box", "silhouette"}
        assert ex["image"].shape == (s, s, 3) and ex["image"].dtype == np.uint8
        assert ex["joints"].shape == (NUM_JOINTS, 2) and ex["joints"].dtype == np.float32
        assert ex["visible"].shape == (NUM_JOINTS,) and ex["visible"].dtype == bool
        assert ex["person_box"].shape == (4,) and ex["person_box"].dtype == np.float32
        assert ex["silhouette"].shape == (s, s, 1) and ex["silhouette"].dtype == np.uint8
        sil = ex["silhouette"][..., 0]
        assert set(np.unique(sil)) <= {0, 1} and sil.sum() > 0
        # Visible joints lie in the image and on the visible drawing (so not under an occluder);
        # a joint in the image is invisible exactly where an occluder covers its pixel.
        pixels, inside = _joint_pixels(ex["joints"], s)
        assert not ex["visible"][~inside].any()
        np.testing.assert_array_equal(ex["visible"][inside], sil[pixels[inside, 1], pixels[inside, 0]] == 1)
        # The person box is normalized, ordered, holds every joint in the image and the silhouette.
        ymin, xmin, ymax, xmax = ex["person_box"]
        assert 0 <= ymin < ymax <= 1 and 0 <= xmin < xmax <= 1
        x, y = ex["joints"][inside].T / s
        assert (x >= xmin - 1e-6).all() and (x <= xmax + 1e-6).all()
        assert (y >= ymin - 1e-6).all() and (y <= ymax + 1e-6).all()
        rows, cols = np.nonzero(sil)
        assert rows.min() >= np.floor(ymin * s) and rows.max() < np.ceil(ymax * s)
        assert cols.min() >= np.floor(xmin * s) and cols.max() < np.ceil(xmax * s)


def test_visibility_statistics(figures64):
    s = 64
    visible = np.array([ex["visible"] for ex in figures64])
    inside = np.array([_joint_pixels(ex["joints"], s)[1] for ex in figures64])
    occluded = inside & ~visible
    assert 0.8 < visible.mean() < 0.99
    assert 0.2 < occluded.any(1).mean() < 0.8  # occluders hide joints in some figures, not most
    assert 0.05 < (~inside).any(1).mean() < 0.2  # a minority (~10%) partly leaves the frame
    assert visible.any(0).all()  # every joint is visible somewhere


def test_drawing_colours_match_joints(figures64):
    """The figure is drawn in saturated part colours at its joints; left and right limbs differ."""
    s = 64
    saturation_in, saturation_out = [], []
    nearest_own = {side: [] for side in SIDES}
    for ex in figures64:
        image, sil = ex["image"].astype(float), ex["silhouette"][..., 0] == 1
        saturation = image.max(-1) - image.min(-1)
        saturation_in.append(saturation[sil].mean())
        saturation_out.append(saturation[~sil].mean())
        for side in SIDES:
            for _, a, b in LIMBS:
                mid = (ex["joints"][J[f"{side}_{a}"]] + ex["joints"][J[f"{side}_{b}"]]) / 2
                (c, r), ok = np.floor(mid).astype(int), ((mid >= 0) & (mid < s)).all()
                if ok and sil[r, c]:
                    d = {k: np.linalg.norm(image[r, c] - COLOURS[k]) for k in SIDES}
                    nearest_own[side].append(d[side] < d[SIDES[1 - SIDES.index(side)]])
    assert np.mean(saturation_in) > 110 and np.mean(saturation_out) < 60
    for side in SIDES:
        assert len(nearest_own[side]) > 500 and np.mean(nearest_own[side]) > 0.9


def test_limb_lengths_consistent_with_scale(figures64):
    s = 64
    heights, legs_down, wrists_up = [], [], []
    for ex in figures64:
        joints = ex["joints"].astype(np.float64)
        neck = joints[J["neck"]]
        hip_centre = (joints[J["left_hip"]] + joints[J["right_hip"]]) / 2
        torso = np.linalg.norm(neck - hip_centre)
        up = (neck - hip_centre) / torso
        ratio_bounds = (1 - LENGTH_JITTER) / (1 + LENGTH_JITTER), (1 + LENGTH_JITTER) / (1 - LENGTH_JITTER)
        pairs = {kind: [(f"{side}_{a}", f"{side}_{b}") for side in SIDES] for kind, a, b in LIMBS}
        pairs["head"] = [("neck", "head_top")]
        for kind, ends in pairs.items():
            lengths = [np.linalg.norm(joints[J[b]] - joints[J[a]]) for a, b in ends]
            np.testing.assert_allclose(lengths, lengths[0], rtol=1e-4)  # left and right alike
            ratio = lengths[0] / torso / (LIMB_LENGTHS[kind] / LIMB_LENGTHS["torso"])
            assert ratio_bounds[0] - 1e-4 < ratio < ratio_bounds[1] + 1e-4, (kind, ratio)
        lo, hi = (torso / LIMB_LENGTHS["torso"] / (1 + j) for j in (LENGTH_JITTER, -LENGTH_JITTER))
        assert HEIGHT_RANGE[0] * s < hi + 1e-3 and lo - 1e-3 < HEIGHT_RANGE[1] * s
        heights.append(torso / LIMB_LENGTHS["torso"] / s)
        for side in SIDES:
            legs_down.append(np.dot(joints[J[f"{side}_knee"]] - joints[J[f"{side}_hip"]], -up) > 0)
            wrists_up.append(np.dot(joints[J[f"{side}_wrist"]] - neck, up) > 0)
    assert min(heights) < 0.55 and max(heights) > 0.8  # scales span the range
    assert np.mean(legs_down) > 0.9 and 0.1 < np.mean(wrists_up) < 0.6


def test_render_pose_is_deterministic_by_seed():
    a, b = (render_pose(np.random.default_rng([3, 1, 5]), 64) for _ in range(2))
    c = render_pose(np.random.default_rng([3, 1, 6]), 64)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()
    assert a["image"].tobytes() != c["image"].tobytes()
    assert not np.allclose(a["joints"], c["joints"])


@pytest.fixture(scope="module")
def tiny_poses(tmp_path_factory) -> tfds.core.DatasetBuilder:
    config = poses.PosesConfig(name="test48", image_size=48, num_train=12, num_test=6, seed=7)
    builder = poses.Poses(config=config, data_dir=str(tmp_path_factory.mktemp("poses")))
    builder.download_and_prepare()
    return builder


def test_builder_prepares_and_matches_render_pose(tiny_poses):
    info = tiny_poses.info
    assert info.splits["train"].num_examples == 12 and info.splits["test"].num_examples == 6
    examples = list(tfds.as_numpy(tiny_poses.as_dataset(split="test")))
    for ex in examples:
        assert ex["image"].shape == (48, 48, 3) and ex["image"].dtype == np.uint8
        assert ex["joints"].shape == (NUM_JOINTS, 2) and ex["joints"].dtype == np.float32
        assert ex["visible"].shape == (NUM_JOINTS,) and ex["visible"].dtype == bool
        assert ex["person_box"].shape == (4,) and ex["silhouette"].shape == (48, 48, 1)
    # Stored examples are exactly the renderer's output for (seed, split, index).
    split_id = zlib.crc32(b"test")
    expected = {i: render_pose(np.random.default_rng([7, split_id, i]), 48) for i in range(6)}
    by_image = {ex["image"].tobytes(): ex for ex in examples}
    assert set(by_image) == {e["image"].tobytes() for e in expected.values()}
    for e in expected.values():
        got = by_image[e["image"].tobytes()]
        np.testing.assert_array_equal(got["joints"], e["joints"])
        np.testing.assert_array_equal(got["visible"], e["visible"])
        np.testing.assert_array_equal(got["silhouette"], e["silhouette"])
        np.testing.assert_allclose(got["person_box"], e["person_box"], atol=1e-6)


def test_registered_configs():
    assert tfds.builder("poses/tiny", data_dir="/nonexistent").info.features["image"].shape == (48, 48, 3)
    default = tfds.builder("poses", data_dir="/nonexistent").builder_config
    assert (default.image_size, default.num_train, default.num_test) == (128, 4000, 500)
    with pytest.raises(ValueError, match="image_size"):
        poses.PosesConfig(name="bad", image_size=8)


# --- FLIC -----------------------------------------------------------------------------------------

def _flic_example(points: dict[int, tuple[float, float]], length=NUM_FLIC_POINTS):
    x = np.full(length, np.nan)
    y = np.full(length, np.nan)
    for i, (px, py) in points.items():
        x[i], y[i] = px, py
    return {"image": tf.zeros((480, 720, 3), tf.uint8), "xcoords": tf.constant(x, tf.float64),
            "ycoords": tf.constant(y, tf.float64),
            "torsobox": tf.constant([0.1, 0.2, 0.3, 0.4], tf.float32)}


_FLIC_POINTS = {0: (400, 150), 1: (420, np.nan), 2: (450, 300), 3: (300, 160), 4: (280, 250),
                5: (800, 200), 6: (380, 330), 9: (320, 335), 12: (365, 90), 13: (335, 92), 16: (350, 110)}


def test_flic_to_lsp_hand_made_example():
    out = flic_to_lsp(_flic_example(_FLIC_POINTS))
    assert set(out) == {"image", "joints", "visible", "person_box"}
    assert out["image"].shape == (480, 720, 3) and out["image"].dtype == tf.uint8
    assert out["joints"].dtype == tf.float32 and out["visible"].dtype == tf.bool
    assert out["person_box"].dtype == tf.float32
    joints, visible = out["joints"].numpy(), out["visible"].numpy()
    expected = {"right_hip": (320, 335), "left_hip": (380, 330), "right_wrist": (800, 200),
                "right_elbow": (280, 250), "right_shoulder": (300, 160), "left_shoulder": (400, 150),
                "left_wrist": (450, 300), "neck": (350, 155)}
    for name in JOINT_NAMES:
        np.testing.assert_allclose(joints[J[name]], expected.get(name, (0, 0)), err_msg=name)
    # Outside the image (right wrist), unlabelled (left elbow: y is NaN) and absent (legs, head top).
    assert {JOINT_NAMES[i] for i in np.flatnonzero(visible)} == set(expected) - {"right_wrist"}
    # Box around visible joints and face points: x 280..450, y 90..335, grown 20% per side.
    assert FLIC_BOX_MARGIN == 0.2
    np.testing.assert_allclose(out["person_box"].numpy(),
                               [(90 - 49) / 480, (280 - 34) / 720, (335 + 49) / 480, (450 + 34) / 720],
                               rtol=1e-6)


def test_flic_to_lsp_clips_box_pads_short_sequences_and_runs_in_tf_data():
    points = {**_FLIC_POINTS, 2: (715, 470)}  # the left wrist near the bottom-right corner
    ds = tf.data.Dataset.from_tensors(_flic_example(points)).map(flic_to_lsp)
    out = next(iter(ds))
    box = out["person_box"].numpy()
    np.testing.assert_allclose(box[2:], [1.0, 1.0])
    np.testing.assert_allclose(box[:2], [(90 - 0.2 * 380) / 480, (280 - 0.2 * 435) / 720], rtol=1e-6)
    # Sequences shorter than 29 are padded with NaN: only the first points exist.
    short = flic_to_lsp(_flic_example({0: (400, 150), 1: (420, 200), 3: (300, 160)}, length=4))
    assert {JOINT_NAMES[i] for i in np.flatnonzero(short["visible"].numpy())} == {
        "left_shoulder", "left_elbow", "right_shoulder", "neck"}
    # The face points bound the box too; the neck needs both shoulders.
    face = flic_to_lsp(_flic_example({0: (400, 150), 16: (350, 60)}))
    assert {JOINT_NAMES[i] for i in np.flatnonzero(face["visible"].numpy())} == {"left_shoulder"}
    np.testing.assert_allclose(face["person_box"].numpy(), [42 / 480, 340 / 720, 168 / 480, 410 / 720],
                               rtol=1e-6)
    # Nothing labelled: nothing visible, the whole image as person box.
    empty = flic_to_lsp(_flic_example({}))
    assert not empty["visible"].numpy().any()
    np.testing.assert_array_equal(empty["person_box"].numpy(), [0, 0, 1, 1])
    np.testing.assert_array_equal(empty["joints"].numpy(), np.zeros((NUM_JOINTS, 2)))


def test_flic_index_map():
    assert len(FLIC_TO_LSP) == NUM_JOINTS
    assert FLIC_TO_LSP[J["neck"]] == (0, 3)
    named = {JOINT_NAMES[k]: poses.FLIC_POINT_NAMES[m[0]] for k, m in enumerate(FLIC_TO_LSP) if len(m) == 1}
    for name, flic in named.items():  # FLIC's 'lsho' is LSP's left_shoulder, and so on
        side, part = name.split("_")
        assert flic == side[0] + {"shoulder": "sho", "elbow": "elb", "wrist": "wri", "hip": "hip"}[part]
    assert len(named) == 8


def test_flic_to_lsp_on_mock_flic():
    with tfds.testing.mock_data(num_examples=3):
        raw = list(tfds.as_numpy(tfds.load("flic/small", split="train")))
        mapped = list(tfds.as_numpy(tfds.load("flic/small", split="train").map(flic_to_lsp)))
    assert len(raw) == len(mapped) == 3
    for r, m in zip(raw, mapped):
        assert m["image"].shape == (480, 720, 3) and m["joints"].shape == (NUM_JOINTS, 2)
        assert m["visible"].shape == (NUM_JOINTS,) and m["person_box"].shape == (4,)
        # Independent numpy reference (mock coordinates have random lengths: pad with NaN).
        pts = np.full((NUM_FLIC_POINTS, 2), np.nan)
        for d, key in enumerate(("xcoords", "ycoords")):
            v = r[key][:NUM_FLIC_POINTS]
            pts[:len(v), d] = v
        for k, sources in enumerate(FLIC_TO_LSP):
            ref = pts[list(sources)].mean(0) if sources else np.full(2, np.nan)
            ok = np.isfinite(ref).all()
            np.testing.assert_allclose(m["joints"][k], ref if ok else 0, rtol=1e-6)
            inside = ok and 0 <= ref[0] < 720 and 0 <= ref[1] < 480
            assert m["visible"][k] == inside
        face = pts[list(poses.FLIC_BOX_EXTRA_POINTS)]
        face = face[np.isfinite(face).all(1) & (face >= 0).all(1) & (face < [720, 480]).all(1)]
        bounded = np.concatenate([m["joints"][m["visible"]], face])
        if len(bounded):
            lo, hi = bounded.min(0), bounded.max(0)
            lo, hi = np.maximum(lo - 0.2 * (hi - lo), 0), np.minimum(hi + 0.2 * (hi - lo), [720, 480])
            expected_box = [lo[1] / 480, lo[0] / 720, hi[1] / 480, hi[0] / 720]
        else:
            expected_box = [0, 0, 1, 1]
        np.testing.assert_allclose(m["person_box"], expected_box, rtol=1e-5, atol=1e-7)

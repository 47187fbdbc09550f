"""`poses`: an embedded synthetic human-pose dataset (LSP's 14 joints), and the adaptor for TFDS `flic`.

DeepPose (Toshev & Szegedy 2014) regresses joint positions normalized by a person box. Its data, LSP
and FLIC, are photographs; `poses` is a stand-in generated locally from a seed, small enough to train
on CPU in minutes, with FLIC (`flic_to_lsp`) as the real data at paper scale.

Each example is one articulated stick figure with the skeleton of `segattn_jax.metrics.pose`
(JOINT_NAMES, LSP order; "left"/"right" are the person's own): a kinematic tree neck -> head top,
neck -> shoulders -> elbows -> wrists, neck -> hip centre (torso) -> hips -> knees -> ankles, with
random but plausible angles (arms anywhere, legs mostly downward, some bending), random limb
proportions (+-8%), scale (standing height, head top to ankle, 45-90% of the image), position and
in-plane tilt. Limbs are thick segments whose widths are proportional to the scale (torso widest,
then thighs, upper arms, forearms, shins), the head is a disk, the background is `shapes`' textured
one. The person's left limbs are blue, the right ones red (torso green, head yellow; each with a
per-example shade jitter): a synthetic set's substitute for the cues (faces, clothing, context) by
which a real image tells a person's left from right. The figure faces the viewer (its right side
is on the image's left when upright), but arms cross the body and figures tilt, so position alone
does not decide left/right. 0-2 occluders (rectangles or blobs of background-like texture or of a
muted solid colour) are drawn over the person. About 10% of the figures partly leave the frame.

Features (S = image size):
  image        Image (S, S, 3) uint8.
  joints       Tensor (14, 2) float32: (x, y) in pixels, pixel centres at +0.5 (the top-left pixel
               covers [0, 1) x [0, 1)); may lie outside the image.
  visible      Tensor (14,) bool: the joint's pixel is inside the image and not under an occluder
               (as LSP's visibility flags; self-occlusion by the figure's own limbs does not count).
  person_box   BBoxFeature, normalized (ymin, xmin, ymax, xmax): the box around the whole drawn
               figure (all 14 joints expanded by the limbs' half-widths, the head disk), occluded
               parts included, clipped to the image.
  silhouette   Image (S, S, 1) uint8 0/1: the person's pixels that are visible (not under occluders).
Every joint's pixel is drawn as part of the figure, so a joint inside the image is visible exactly
where the silhouette is 1 at its pixel.

FLIC (`flic_to_lsp`, TensorFlow ops for tf.data) maps a TFDS `flic` example to image, joints,
visible and person_box in the same layout (no silhouette); see its docstring.

The renderer, `render_pose`, is pure numpy/scikit-image so tests can check its invariants directly.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import skimage.draw
import tensorflow as tf
import tensorflow_datasets as tfds

from segattn_jax.data.embedded import example_rng
from segattn_jax.data.shapes import background
from segattn_jax.metrics.pose import JOINT_NAMES, NUM_JOINTS

_J = {name: i for i, name in enumerate(JOINT_NAMES)}

# Body proportions as fractions of the standing height H (head top to ankle); each limb type's
# length is jittered by LENGTH_JITTER per example, left and right alike.
LIMB_LENGTHS = {"head": 0.17, "torso": 0.30, "upper_arm": 0.17, "forearm": 0.155, "thigh": 0.245,
                "shin": 0.245}
_SHOULDER_HALF_SPAN = 0.105  # neck to each shoulder, across the body
_SHOULDER_DROP = 0.02  # shoulders sit slightly below the neck
_HIP_HALF_SPAN = 0.065  # hip centre to each hip
LENGTH_JITTER = 0.08
# Full limb widths as fractions of H: torso widest, then thighs, upper arms, forearms, shins.
LIMB_WIDTHS = {"torso": 0.17, "thigh": 0.085, "upper_arm": 0.065, "forearm": 0.052, "shin": 0.045,
               "neck": 0.05}
HEIGHT_RANGE = (0.45, 0.9)  # standing height as a fraction of the image size
LEAVE_FRAME_PROBABILITY = 0.1  # figures placed so that they may partly leave the image
_MIN_HALF_WIDTH = 0.75  # pixels: > 1/sqrt(2), so a segment always covers its end points' pixels

# RGB base colours by part; each example jitters each by up to +-20 per channel.
COLOURS = {"torso": (50, 165, 80), "head": (230, 195, 60), "left": (50, 90, 215),
           "right": (210, 50, 50)}
_PARTS = tuple(COLOURS)  # part index -> name
_PART_ID = {name: i for i, name in enumerate(_PARTS)}


def _direction(up: np.ndarray, left: np.ndarray, angle: float, side: float) -> np.ndarray:
    """Unit vector at `angle` from "down" (-up), rotating outward (towards the given side)."""
    return np.cos(angle) * -up + side * np.sin(angle) * left


def _figure(rng: np.random.Generator, height: float):
    """Joints (14, 2) (x, y) around the hip centre at 0, and draw primitives.

    Primitives are (kind, p0, p1, half_width, part), kind "capsule" (round ends; a disk if p0 == p1)
    or "rect" (flat ends), listed bottom to top.
    """
    lengths = {k: v * height * rng.uniform(1 - LENGTH_JITTER, 1 + LENGTH_JITTER)
               for k, v in LIMB_LENGTHS.items()}
    half = {k: max(_MIN_HALF_WIDTH, v * height / 2) for k, v in LIMB_WIDTHS.items()}
    # In-plane tilt: mostly near upright, sometimes far from it.
    tilt = rng.normal(0, 0.15) if rng.random() < 0.85 else rng.uniform(-1.3, 1.3)
    up = np.array([np.sin(tilt), -np.cos(tilt)])  # image y points down
    left = np.array([np.cos(tilt), np.sin(tilt)])  # the person's left: image right when upright

    joints = np.zeros((NUM_JOINTS, 2))
    neck = lengths["torso"] * up
    joints[_J["neck"]] = neck
    head_angle = rng.normal(0, 0.25)
    joints[_J["head_top"]] = neck + lengths["head"] * (np.cos(head_angle) * up + np.sin(head_angle) * left)
    for side, name in ((1.0, "left"), (-1.0, "right")):
        shoulder = neck + side * _SHOULDER_HALF_SPAN * height * left - _SHOULDER_DROP * height * up
        upper = rng.uniform(-0.6, 3.1)  # arms anywhere: from across the body to straight up
        fore = upper + rng.uniform(-2.5, 2.5)
        elbow = shoulder + lengths["upper_arm"] * _direction(up, left, upper, side)
        wrist = elbow + lengths["forearm"] * _direction(up, left, fore, side)
        hip = side * _HIP_HALF_SPAN * height * left
        thigh = (np.clip(rng.normal(0.12, 0.18), -0.4, 0.9) if rng.random() < 0.85
                 else rng.uniform(-0.4, 1.8))  # legs mostly downward, sometimes kicking
        shin = thigh + (rng.normal(0, 0.15) if rng.random() < 0.6 else rng.uniform(-1.6, 1.6))
        knee = hip + lengths["thigh"] * _direction(up, left, thigh, side)
        ankle = knee + lengths["shin"] * _direction(up, left, shin, side)
        for joint, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip),
                             ("knee", knee), ("ankle", ankle)):
            joints[_J[f"{name}_{joint}"]] = point

    def limb(side, a, b, width):
        return "capsule", joints[_J[f"{side}_{a}"]], joints[_J[f"{side}_{b}"]], half[width], _PART_ID[side]

    def leg(side):
        return [limb(side, "hip", "knee", "thigh"), limb(side, "knee", "ankle", "shin")]

    def arm(side):
        return [("capsule", neck, joints[_J[f"{side}_shoulder"]], half["upper_arm"], _PART_ID[side]),
                limb(side, "shoulder", "elbow", "upper_arm"), limb(side, "elbow", "wrist", "forearm")]

    head_top = joints[_J["head_top"]]
    head_centre = (neck + head_top) / 2
    head_radius = np.linalg.norm(head_top - neck) / 2 + _MIN_HALF_WIDTH  # head top well inside
    legs, arms = ("left", "right"), ("left", "right")
    if rng.random() < 0.5:
        legs = legs[::-1]
    if rng.random() < 0.5:
        arms = arms[::-1]
    primitives = [("rect", neck, np.zeros(2), half["torso"], _PART_ID["torso"]),
                  *leg(legs[0]), *leg(legs[1]),
                  ("capsule", neck, head_centre, half["neck"], _PART_ID["head"]),
                  ("capsule", head_centre, head_centre, head_radius, _PART_ID["head"]),
                  *arm(arms[0]), *arm(arms[1])]
    return joints, primitives


def _extent(kind: str, p0: np.ndarray, p1: np.ndarray, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (x, y) bounding box (lo, hi) of a primitive."""
    if kind == "capsule":
        return np.minimum(p0, p1) - half_width, np.maximum(p0, p1) + half_width
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9) * half_width
    corners = np.stack([p0 + n, p0 - n, p1 + n, p1 - n])
    return corners.min(0), corners.max(0)


def _draw(parts: np.ndarray, kind: str, p0: np.ndarray, p1: np.ndarray, half_width: float,
          value: int) -> None:
    """Sets `parts` to `value` at pixels whose centres lie in the primitive."""
    s = parts.shape[0]
    lo, hi = _extent(kind, p0, p1, half_width)
    x0, y0 = np.maximum(np.floor(lo).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hi).astype(int), s)
    if x0 >= x1 or y0 >= y1:
        return
    px = (np.arange(x0, x1) + 0.5 - p0[0])[None, :]
    py = (np.arange(y0, y1) + 0.5 - p0[1])[:, None]
    dx, dy = p1 - p0
    length2 = dx * dx + dy * dy
    t = (px * dx + py * dy) / length2 if length2 > 1e-12 else np.zeros_like(px * py)
    if kind == "capsule":
        t = np.clip(t, 0, 1)
        inside = (px - t * dx) ** 2 + (py - t * dy) ** 2 <= half_width ** 2
    else:
        inside = (t >= 0) & (t <= 1) & (np.abs(px * dy - py * dx) <= half_width * np.sqrt(length2))
    parts[y0:y1, x0:x1][inside] = value


def _occluder_mask(rng: np.random.Generator, centre: np.ndarray, height: float, s: int) -> np.ndarray:
    """A rotated rectangle or a smooth blob around `centre` (x, y); sizes are fractions of `height`."""
    if rng.random() < 0.5:
        hx, hy = rng.uniform(0.05, 0.16, size=2) * height
        a = rng.uniform(0, np.pi)
        c, sn = np.cos(a), np.sin(a)
        local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        points = centre + local @ np.array([[c, sn], [-sn, c]])
    else:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        radius = rng.uniform(0.06, 0.14) * height * (
            1 + 0.2 * np.cos(2 * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(-1, 1)
            + 0.15 * np.cos(3 * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(-1, 1))
        points = centre + radius[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
    mask = np.zeros((s, s), bool)
    # skimage's pixel (r, c) is centred at (c, r); ours at (c + 0.5, r + 0.5).
    mask[skimage.draw.polygon(points[:, 1] - 0.5, points[:, 0] - 0.5, shape=(s, s))] = True
    return mask


def render_pose(rng: np.random.Generator, image_size: int = 128) -> dict:
    """Renders one stick figure; returns numpy arrays in the `Poses` feature layout (module doc)."""
    s = image_size
    height = rng.uniform(*HEIGHT_RANGE) * s
    joints, primitives = _figure(rng, height)

    # Place the figure: inside the image, or for a minority partly outside it.
    extents = [_extent(kind, p0, p1, hw) for kind, p0, p1, hw, _ in primitives]
    lo = np.min([e[0] for e in extents], 0)
    hi = np.max([e[1] for e in extents], 0)
    size = hi - lo
    low, high = -lo, s - hi
    offset = np.where(low <= high, rng.uniform(np.minimum(low, high), np.maximum(low, high)),
                      (s - lo - hi) / 2)  # larger than the image: centred
    if rng.random() < LEAVE_FRAME_PROBABILITY:  # 10-40% of the figure's extent beyond one edge
        axis = rng.integers(2)
        beyond = rng.uniform(0.1, 0.4) * size[axis]
        offset[axis] = low[axis] - beyond if rng.random() < 0.5 else high[axis] + beyond
    joints = (joints + offset).astype(np.float32)  # visibility is decided on the stored values
    primitives = [(kind, p0 + offset, p1 + offset, hw, part) for kind, p0, p1, hw, part in primitives]
    lo, hi = lo + offset, hi + offset

    parts = np.full((s, s), -1, np.int8)
    for kind, p0, p1, hw, part in primitives:
        _draw(parts, kind, p0, p1, hw, part)
    pixels = np.floor(joints).astype(int)  # (x, y) column and row of each joint's pixel
    inside = ((pixels >= 0) & (pixels < s)).all(1)
    # Every joint ends a segment at least _MIN_HALF_WIDTH thick, so its pixel is already drawn.
    assert (parts[pixels[inside, 1], pixels[inside, 0]] >= 0).all()

    backdrop = background(rng, s)
    image = backdrop.copy()
    shades = np.array([COLOURS[p] for p in _PARTS], np.float32)
    shades += rng.uniform(-20, 20, size=shades.shape)
    texture = rng.normal(0, 8, size=(s, s, 1))
    person = parts >= 0
    image[person] = (shades[parts[person]] + texture[person])

    occluded = np.zeros((s, s), bool)
    for _ in range(rng.choice(3, p=[0.45, 0.35, 0.2])):
        centre = joints[rng.integers(NUM_JOINTS)] + rng.normal(0, 0.08 * height, size=2)
        mask = _occluder_mask(rng, centre, height, s)
        if rng.random() < 0.6:  # background-like: the background turned, transposed and re-tinted
            fill = np.rot90(backdrop, rng.integers(1, 4)).swapaxes(0, 1) + rng.uniform(-30, 30, size=3)
        else:
            fill = rng.uniform(40, 210) + rng.uniform(-20, 20, size=3) + rng.normal(0, 5, size=(s, s, 1))
        image[mask] = fill[mask]
        occluded |= mask
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    visible = inside.copy()
    visible[inside] = ~occluded[pixels[inside, 1], pixels[inside, 0]]
    lo, hi = np.clip(lo, 0, s) / s, np.clip(hi, 0, s) / s
    return {
        "image": image,
        "joints": joints,
        "visible": visible,
        "person_box": np.array([lo[1], lo[0], hi[1], hi[0]], np.float32),
        "silhouette": (person & ~occluded).astype(np.uint8)[..., None],
    }


@dataclasses.dataclass
class PosesConfig(tfds.core.BuilderConfig):
    """Dataset parameters. Give a config a new `name` when changing them: TFDS caches by name."""
    image_size: int = 128
    num_train: int = 4000
    num_test: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.image_size < 24 or min(self.num_train, self.num_test) < 0:
            raise ValueError(f"Need image_size >= 24 and non-negative split sizes; got {self}.")


class Poses(tfds.core.GeneratorBasedBuilder):
    """Synthetic stick figures with LSP's 14 joints, visibility, person box and silhouette."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        PosesConfig(name="default", description="128x128, 4000 train / 500 test figures."),
        PosesConfig(name="tiny", image_size=48, num_train=64, num_test=32,
                    description="48x48, 64 train / 32 test figures, for smoke tests."),
    ]
    # Generated locally from its config: the input pipeline may prepare it on first use.
    generated_locally = True

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 3)),
                "joints": tfds.features.Tensor(shape=(NUM_JOINTS, 2), dtype=np.float32),
                "visible": tfds.features.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
                "person_box": tfds.features.BBoxFeature(),
                "silhouette": tfds.features.Image(shape=(s, s, 1)),
            }),
            supervised_keys=("image", "joints"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test),
        }

    def _generate_examples(self, split: str, num_examples: int):
        cfg = self.builder_config
        for index in range(num_examples):
            yield index, render_pose(example_rng(cfg.seed, split, index), cfg.image_size)


# --- FLIC -----------------------------------------------------------------------------------------

NUM_FLIC_POINTS = 29
# FLIC's first 17 points, 0-based (of 29; only 0-6, 9, 12, 13 and 16 are labelled in FLIC).
FLIC_POINT_NAMES = ("lsho", "lelb", "lwri", "rsho", "relb", "rwri", "lhip", "lkne", "lank", "rhip",
                    "rkne", "rank", "leye", "reye", "lear", "rear", "nose")
# For each LSP joint (JOINT_NAMES order), the FLIC points it is the mean of; () where FLIC has none:
# the legs (FLIC labels the upper body only) and the head top (FLIC labels eyes and nose, no head
# top). The neck is the shoulders' midpoint.
FLIC_TO_LSP = (
    (),  # right_ankle
    (),  # right_knee
    (9,),  # right_hip <- rhip
    (6,),  # left_hip <- lhip
    (),  # left_knee
    (),  # left_ankle
    (5,),  # right_wrist <- rwri
    (4,),  # right_elbow <- relb
    (3,),  # right_shoulder <- rsho
    (0,),  # left_shoulder <- lsho
    (1,),  # left_elbow <- lelb
    (2,),  # left_wrist <- lwri
    (0, 3),  # neck <- mean(lsho, rsho)
    (),  # head_top: none in FLIC
)
# FLIC's face points (leye, reye, nose) also bound the person box, so that it holds the head.
FLIC_BOX_EXTRA_POINTS = (12, 13, 16)
# The person box is the box around the visible joints (and face points) grown by this fraction of
# its width (height) on the left and right (top and bottom), then clipped to the image.
FLIC_BOX_MARGIN = 0.2


def _fixed_length(values: tf.Tensor, length: int) -> tf.Tensor:
    """float32 vector of exactly `length` values: truncated, or padded with NaN (unlabelled)."""
    values = tf.reshape(tf.cast(values, tf.float32), [-1])[:length]
    pad = tf.fill([length - tf.shape(values)[0]], tf.constant(np.nan, tf.float32))
    return tf.ensure_shape(tf.concat([values, pad], 0), [length])


def flic_to_lsp(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Maps a TFDS `flic` example to the `poses` layout (TensorFlow ops; use inside tf.data).

    Returns image (H, W, 3) uint8 (FLIC's, unchanged), joints (14, 2) float32 (x, y) in pixels,
    visible (14,) bool and person_box (4,) float32 normalized (ymin, xmin, ymax, xmax).
    Joints follow FLIC_TO_LSP; a joint is visible where its coordinates are finite and inside the
    image; joints FLIC does not label (legs, head top, NaN points) are (0, 0) and invisible.
    FLIC's coordinates are used as they are (pixels; their sub-pixel origin is undocumented, a
    half-pixel ambiguity at 720 px). Coordinate sequences shorter than 29 are padded with NaN.
    The person box: see FLIC_BOX_MARGIN and FLIC_BOX_EXTRA_POINTS; the whole image where nothing is
    visible. FLIC's `torsobox` is a torso box, not a person box, and is not used.
    """
    image = example["image"]
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    points = tf.stack([_fixed_length(example["xcoords"], NUM_FLIC_POINTS),
                       _fixed_length(example["ycoords"], NUM_FLIC_POINTS)], axis=-1)  # (29, 2)

    def inside(p):
        return ((p[:, 0] >= 0) & (p[:, 0] < width) & (p[:, 1] >= 0) & (p[:, 1] < height))

    first = [m[0] if m else 0 for m in FLIC_TO_LSP]
    last = [m[-1] if m else 0 for m in FLIC_TO_LSP]
    joints = (tf.gather(points, first) + tf.gather(points, last)) / 2
    labelled = tf.reduce_all(tf.math.is_finite(joints), axis=-1) & tf.constant([bool(m) for m in FLIC_TO_LSP])
    joints = tf.where(labelled[:, None], joints, 0.0)
    visible = labelled & inside(joints)

    extra = tf.gather(points, list(FLIC_BOX_EXTRA_POINTS))
    extra_ok = tf.reduce_all(tf.math.is_finite(extra), axis=-1)
    extra = tf.where(extra_ok[:, None], extra, 0.0)
    box_points = tf.concat([joints, extra], 0)
    box_mask = tf.concat([visible, extra_ok & inside(extra)], 0)
    big = tf.constant(np.inf, tf.float32)
    lo = tf.reduce_min(tf.where(box_mask[:, None], box_points, big), axis=0)  # (x, y)
    hi = tf.reduce_max(tf.where(box_mask[:, None], box_points, -big), axis=0)
    margin = FLIC_BOX_MARGIN * (hi - lo)
    size = tf.stack([width, height])
    lo = tf.clip_by_value(lo - margin, 0.0, size) / size
    hi = tf.clip_by_value(hi + margin, 0.0, size) / size
    box = tf.where(tf.reduce_any(box_mask), tf.stack([lo[1], lo[0], hi[1], hi[0]]),
                   tf.constant([0.0, 0.0, 1.0, 1.0]))
    return {"image": image, "joints": joints, "visible": visible, "person_box": box}

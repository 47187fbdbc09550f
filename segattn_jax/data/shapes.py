"""`shapes`: an embedded synthetic scene dataset for every vision task of this codebase.

Each scene has 1-6 coloured shapes on a textured, noisy background, with every label the tasks need:
a semantic mask (segmentation), per-object classes, boxes and visible masks (detection, instance
segmentation), one phrase per object (dense captioning) and a sentence (captioning). It is generated
locally from a seed, so every experiment runs without a download, and is small enough to generate in
seconds. Colour is independent of class, so a model has to use shape, not colour, to classify.

The renderer, `render_scene`, is pure numpy/scikit-image so tests can check its invariants directly.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage
import skimage.draw
import tensorflow_datasets as tfds

from segattn_jax.data import labels
from segattn_jax.data.embedded import example_rng

# Semantic segmentation classes: 0 is background, object class k is k + 1.
CLASS_NAMES, NUM_SEMANTIC_CLASSES = labels.SHAPES_CLASSES, labels.SHAPES_SEMANTIC_CLASSES

# Named colours (RGB) with enough saturation to stand out from the muted background.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "orange": (245, 140, 30),
    "purple": (140, 50, 200),
    "cyan": (40, 205, 215),
    "white": (245, 245, 245),
}
_COLOUR_NAMES = tuple(COLOURS)
_COLOUR_VALUES = np.array([COLOURS[c] for c in _COLOUR_NAMES], np.float32)

# Sizes are the objects' extent in pixels at 64x64; other image sizes scale them proportionally.
_REFERENCE_IMAGE_SIZE = 64
_REFERENCE_OBJECT_SIZE = (6, 40)
# An object hidden by more than this fraction is not drawn at all: slivers would be label noise.
_MIN_VISIBLE_FRACTION = 0.2


def _regular_polygon(num_vertices: int, angle: float) -> np.ndarray:
    t = angle + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.sin(t), np.cos(t)], axis=1)


def _star(angle: float, inner: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(10, angle)
    outer[1::2] *= inner
    return outer


def _cross(angle: float, half_width: float = 0.33) -> np.ndarray:
    a, w = 1.0, half_width
    pts = np.array([[-a, -w], [-w, -w], [-w, -a], [w, -a], [w, -w], [a, -w],
                    [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w]])
    return _rotate(pts, angle)


def _semicircle(angle: float) -> np.ndarray:
    t = np.linspace(0, np.pi, 24)
    pts = np.stack([np.cos(t), np.sin(t)], axis=1)[:, ::-1]  # (y, x), y >= 0 half
    return _rotate(_normalize(pts), angle)


def _heart(angle: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _rotate(_normalize(np.stack([y, x], axis=1)), angle)


def _normalize(points: np.ndarray) -> np.ndarray:
    """Centres a polygon's bounding box at 0 and scales its longer side to 2 (unit extent)."""
    lo, hi = points.min(0), points.max(0)
    return (points - (lo + hi) / 2) / ((hi - lo).max() / 2)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_mask(class_name: str, center: tuple[float, float], size: float, angle: float,
               image_size: int) -> np.ndarray:
    """Boolean (H, W) mask of one shape whose extent is about `size` pixels (never empty)."""
    shape = (image_size, image_size)
    radius = size / 2
    mask = np.zeros(shape, bool)
    if class_name in ("circle", "ring"):
        mask[skimage.draw.disk(center, radius, shape=shape)] = True
        if class_name == "ring":
            mask[skimage.draw.disk(center, 0.55 * radius, shape=shape)] = False
    else:
        unit = {
            "square": lambda a: _regular_polygon(4, a),
            "triangle": lambda a: _regular_polygon(3, a),
            "star": _star,
            "cross": _cross,
            "semicircle": _semicircle,
            "heart": _heart,
        }[class_name](angle)
        pts = np.asarray(center) + radius * unit
        mask[skimage.draw.polygon(pts[:, 0], pts[:, 1], shape=shape)] = True
    if not mask.any():  # sub-pixel shapes still cover their centre pixel
        mask[int(np.clip(center[0], 0, image_size - 1)), int(np.clip(center[1], 0, image_size - 1))] = True
    return mask


def background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Muted, textured background: tinted grey + smooth blotches + stripes + pixel noise."""
    s = image_size
    grey = rng.uniform(60, 170)
    base = grey + rng.uniform(-20, 20, size=3)
    coarse = rng.normal(0, 22, size=(5, 5, 3))
    blotches = scipy.ndimage.zoom(coarse, (s / 5, s / 5, 1), order=1, grid_mode=True, mode="nearest")
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    phi = rng.uniform(0, np.pi)
    freq = rng.uniform(2, 8) / s
    stripes = rng.uniform(0, 14) * np.sin(2 * np.pi * freq * (xx * np.cos(phi) + yy * np.sin(phi)))
    noise = rng.normal(0, 7, size=(s, s, 3))
    return base + blotches[:s, :s] + stripes[..., None] + noise


def _size_word(size: float, lo: float, hi: float) -> str:
    third = (np.log(hi) - np.log(lo)) / 3
    if np.log(size) < np.log(lo) + third:
        return "small"
    if np.log(size) > np.log(hi) - third:
        return "large"
    return ""


def _relation(a: np.ndarray, b: np.ndarray) -> str:
    """Where box centre `a` lies relative to `b` (dominant axis), in image coordinates."""
    dy, dx = a - b
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _location(center: np.ndarray) -> str:
    y, x = center
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "center"
    return "in the center" if (row, col) == ("middle", "center") else f"in the {row} {col}"


def _caption(phrases: list[str], boxes: np.ndarray, areas: np.ndarray) -> str:
    """'a large red star above a small blue circle, a green ring and a white cross'.

    Objects are mentioned largest first; the two largest are related spatially.
    """
    order = np.argsort(-areas, kind="stable")
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    mentions = [f"{'an' if phrases[i][0] in 'aeiou' else 'a'} {phrases[i]}" for i in order]
    if len(order) == 1:
        return f"{mentions[0]} {_location(centers[order[0]])}"
    head = f"{mentions[0]} {_relation(centers[order[0]], centers[order[1]])} {mentions[1]}"
    rest = mentions[2:]
    if not rest:
        return head
    if len(rest) == 1:
        return f"{head} and {rest[0]}"
    return f"{head}, {', '.join(rest[:-1])} and {rest[-1]}"


def _half_plane(rng: np.random.Generator, center: np.ndarray, size: float,
                image_size: int) -> np.ndarray:
    """(H, W) bool: one side of a random line through about `center` (offset <= size / 8)."""
    yy, xx = np.mgrid[:image_size, :image_size].astype(np.float32) + 0.5
    phi = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-size / 8, size / 8)
    return (yy - center[0]) * np.cos(phi) + (xx - center[1]) * np.sin(phi) > offset


def render_scene(rng: np.random.Generator, image_size: int = 64, max_objects: int = 6,
                 min_objects: int = 1, main_object: bool = False, two_tone: bool = False) -> dict:
    """Renders one scene; objects later in the draw order occlude earlier ones.

    `main_object` makes the last-drawn object (never occluded) the scene's main one, as an
    ILSVRC image has: its size from the upper half of the range, at least 1.5x any other's.
    `two_tone` paints each object in two colours, split by a random line near its centre, as
    real objects are made of differently coloured parts: bottom-up grouping, which traces the
    one-colour shapes, then splits them (a phrase names both colours, 'red and blue star').

    Returns a dict of numpy arrays/strings in the `Shapes` feature layout:
      image (H, W, 3) uint8; segmentation_mask (H, W, 1) uint8 (0 background, class + 1);
      objects: label (N,) int64, bbox (N, 4) float32 normalized (ymin, xmin, ymax, xmax) of the
      visible part, mask (N, H, W, 1) uint8 visible pixels (0/1), phrase list[str]; caption str.
    Visible masks are disjoint and their union is exactly `segmentation_mask > 0`.
    """
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"Need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}.")
    s = image_size
    lo, hi = (v * s / _REFERENCE_IMAGE_SIZE for v in _REFERENCE_OBJECT_SIZE)
    lo, hi = max(lo, 4.0), min(max(hi, 5.0), 0.9 * s)

    num = int(rng.integers(min_objects, max_objects + 1))
    labels = rng.integers(0, len(CLASS_NAMES), size=num)
    colours = rng.integers(0, len(_COLOUR_NAMES), size=num)
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), size=num))
    if main_object:
        sizes[-1] = np.exp(rng.uniform(np.log(np.sqrt(lo * hi)), np.log(hi)))
        sizes[:-1] = np.minimum(sizes[:-1], sizes[-1] / 1.5)
    angles = rng.uniform(0, 2 * np.pi, size=num)
    if two_tone:  # a second colour, never the first
        shift = rng.integers(1, len(_COLOUR_NAMES), size=num)
        second_colours = (colours + shift) % len(_COLOUR_NAMES)
    margins = sizes / 2
    centers = rng.uniform(margins[:, None], s - margins[:, None], size=(num, 2))
    full_masks = [shape_mask(CLASS_NAMES[k], tuple(c), z, a, s)
                  for k, c, z, a in zip(labels, centers, sizes, angles)]

    # Decide visibility top-down, so that dropped objects are never drawn and never occlude.
    covered = np.zeros((s, s), bool)
    keep = np.zeros(num, bool)
    for i in reversed(range(num)):
        visible = full_masks[i] & ~covered
        if visible.sum() >= max(1.0, _MIN_VISIBLE_FRACTION * full_masks[i].sum()):
            keep[i] = True
            covered |= full_masks[i]
    kept = np.flatnonzero(keep)

    image = background(rng, s)
    segmentation = np.zeros((s, s), np.uint8)
    for i in kept:  # bottom to top
        shade = _COLOUR_VALUES[colours[i]] + rng.uniform(-20, 20, size=3)
        texture = rng.normal(0, 8, size=(s, s, 1))
        m = full_masks[i]
        image[m] = (shade + texture)[m]
        segmentation[m] = labels[i] + 1
        if two_tone:
            part = m & _half_plane(rng, centers[i], sizes[i], s)
            second_shade = _COLOUR_VALUES[second_colours[i]] + rng.uniform(-20, 20, size=3)
            image[part] = (second_shade + texture)[part]
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    visible_masks, boxes, areas, phrases = [], [], [], []
    covered = np.zeros((s, s), bool)
    for i in kept[::-1]:  # top to bottom, then reversed back to draw order
        visible = full_masks[i] & ~covered
        covered |= full_masks[i]
        rows, cols = np.nonzero(visible)
        visible_masks.append(visible)
        boxes.append([rows.min() / s, cols.min() / s, (rows.max() + 1) / s, (cols.max() + 1) / s])
        areas.append(visible.sum())
        colour = _COLOUR_NAMES[colours[i]]
        if two_tone:
            colour += f" and {_COLOUR_NAMES[second_colours[i]]}"
        words = [_size_word(sizes[i], lo, hi), colour, CLASS_NAMES[labels[i]]]
        phrases.append(" ".join(w for w in words if w))
    visible_masks, boxes, areas, phrases = (visible_masks[::-1], np.array(boxes[::-1], np.float32),
                                            np.array(areas[::-1]), phrases[::-1])
    return {
        "image": image,
        "segmentation_mask": segmentation[..., None],
        "objects": {
            "label": labels[kept].astype(np.int64),
            "bbox": boxes.reshape(-1, 4),
            "mask": np.stack(visible_masks).astype(np.uint8)[..., None],
            "phrase": phrases,
        },
        "caption": _caption(phrases, boxes, areas),
    }


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Scene parameters. Give a config a new `name` when changing them: TFDS caches by name."""
    image_size: int = 64
    num_train: int = 4000
    num_test: int = 500
    max_objects: int = 6
    main_object: bool = False  # render_scene's: one dominant object per scene
    two_tone: bool = False  # render_scene's: objects in two colours
    seed: int = 0

    def __post_init__(self):
        if self.image_size < 16 or self.max_objects < 1 or min(self.num_train, self.num_test) < 0:
            raise ValueError(f"Need image_size >= 16, max_objects >= 1 and non-negative split sizes; "
                             f"got {self}.")


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic shape scenes with semantic/instance masks, boxes, phrases and captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesConfig(name="default", description="64x64, 4000 train / 500 test scenes."),
        ShapesConfig(name="tiny", image_size=32, num_train=64, num_test=32,
                     description="32x32, 64 train / 32 test scenes, for smoke tests."),
        ShapesConfig(name="main_object", max_objects=3, main_object=True,
                     description="64x64, 4000 train / 500 test scenes of 1-3 shapes, one of "
                                 "them dominant (classification + localization)."),
        ShapesConfig(name="two_tone", two_tone=True,
                     description="64x64, 4000 train / 500 test scenes whose objects have two "
                                 "colours (instance segmentation: bottom-up regions split them)."),
    ]
    # Generated locally from its config: the input pipeline may prepare it on first use.
    generated_locally = True
    # Class names per preprocessor (pipeline.label_names): mask value 0 is background.
    LABEL_NAMES = {"segmentation": ("background", *CLASS_NAMES)}

    def _info(self) -> tfds.core.DatasetInfo:
        s = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(s, s, 3)),
                "segmentation_mask": tfds.features.Image(shape=(s, s, 1), use_colormap=True),
                "objects": tfds.features.Sequence({
                    "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                    "bbox": tfds.features.BBoxFeature(),
                    "mask": tfds.features.Image(shape=(s, s, 1)),
                    "phrase": tfds.features.Text(),
                }),
                "caption": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
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
            yield index, render_scene(example_rng(cfg.seed, split, index), cfg.image_size,
                                      cfg.max_objects, main_object=cfg.main_object,
                                      two_tone=cfg.two_tone)

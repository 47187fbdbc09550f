"""`distorted_digits`: the distorted-MNIST protocol of Spatial Transformer Networks.

Jaderberg et al. 2015 (sec. 4.1, appendix A.1) distort MNIST four ways:
  R   rotation, uniform in [-90, 90] degrees;                              28x28 output
  RTS rotation in [-45, 45] degrees, scale in [0.7, 1.2], placed at a uniformly random
      location inside a 42x42 canvas;                                      42x42 output
  P   scale in [0.75, 1.0], then each image corner moved by N(0, 5 px) (a projective warp);
  E   scale in [0.75, 1.0], then 16 thin-plate-spline control points on a regular 4x4 grid
      moved by N(0, 1.5 px) (an elastic warp).                             28x28 output
and 'none' keeps the digits as they are (one copy each: DRAW's embedded stand-in for MNIST).
'cluttered100' is the cluttered translated MNIST of Mnih et al. 2014 that DRAW classifies
(sec. 4.1): the digit at a random place in a 100x100 canvas with 8 random 8x8 pieces of other
digits of the same split; 'cluttered' is its mini version, 60x60 with 4 pieces (about the same
clutter per pixel).
(P and E follow the paper's appendix as recalled; the appendix text was not available to check.
RTS matches an independent reimplementation: rotate, scale, place at a random spot in 42x42.)
Positive angles rotate counter-clockwise as displayed (same as scipy.ndimage.rotate).

Two sources, same distortions:
  'none', 'r', 'rts', 'p', 'e'  embedded: scikit-learn's 8x8 `load_digits` (1797 digits, ships with
                                scikit-learn), upscaled smoothly into MNIST's layout (digit in a
                                20x20 box, centred by centre of mass in 28x28); held-out test digits
                                (stratified), several distorted copies per digit. No download.
  'mnist_r', ... 'mnist_e'      paper scale: TFDS `mnist` (train -> train, test -> test), one
                                distorted copy per digit; MNIST is loaded with `tfds.load`.

The distortions are pure numpy/scipy: `warp` (inverse homography sampling) and `tps_warp` (the
spline math lives in `ops.tps`), driven by `distort_r`, `distort_rts`, `distort_p`, `distort_e`,
each returning (image, parameters).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds

from segattn_jax.ops.images import to_uint8
from segattn_jax.ops.tps import tps_apply, tps_fit

MNIST_SIZE = 28
RTS_CANVAS = 42
CLUTTER = {"cluttered": (60, 4), "cluttered100": (100, 8)}  # canvas side, clutter pieces
DISTORTIONS = ("none", "r", "rts", "p", "e", *CLUTTER)
OUTPUT_SIZE = {"none": MNIST_SIZE, "r": MNIST_SIZE, "rts": RTS_CANVAS, "p": MNIST_SIZE, "e": MNIST_SIZE,
               **{name: side for name, (side, _) in CLUTTER.items()}}
NUM_CLASSES = 10


# ----------------------------------------------------------------------------------------------
# Source digits.

def mnist_layout(digit: np.ndarray, box: int = 20, size: int = MNIST_SIZE) -> np.ndarray:
    """Puts a low-resolution digit into MNIST's layout; returns float32 (size, size) in [0, 1].

    Like MNIST: smooth upscaling, the ink's bounding box scaled so its longer side is `box` pixels
    (aspect kept), then shifted so the centre of mass sits at the image centre.
    """
    x = np.asarray(digit, np.float64)
    x = x / max(x.max(), 1e-8)
    smooth = np.clip(scipy.ndimage.zoom(x, 4, order=3, grid_mode=True, mode="grid-constant"), 0, 1)
    rows, cols = np.nonzero(smooth > 0.05)
    if rows.size == 0:
        raise ValueError("Digit image has no ink.")
    crop = smooth[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    factor = box / max(crop.shape)
    scaled = np.clip(scipy.ndimage.zoom(crop, factor, order=1, grid_mode=True, mode="grid-constant"),
                     0, 1)
    scaled = scaled[:size, :size]
    com = np.array(scipy.ndimage.center_of_mass(scaled))
    offset = np.rint((size - 1) / 2 - com).astype(int)
    offset = np.clip(offset, 0, np.array([size, size]) - scaled.shape)
    out = np.zeros((size, size), np.float32)
    out[offset[0]:offset[0] + scaled.shape[0], offset[1]:offset[1] + scaled.shape[1]] = scaled
    return out


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits in MNIST layout: (N, 28, 28) float32 in [0, 1], (N,) labels."""
    from sklearn.datasets import load_digits  # local: only this source needs scikit-learn

    digits = load_digits()
    images = np.stack([mnist_layout(d) for d in digits.images])
    return images, digits.target.astype(np.int64)


def load_mnist(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST `split` via `tfds.load`: (N, 28, 28) float32 in [0, 1], (N,) int64 labels."""
    try:
        ds = tfds.load("mnist", split=split, data_dir=data_dir, as_supervised=True)
    except Exception as e:  # missing files and failed downloads surface as many different types
        raise ValueError(
            f"MNIST (the source of the 'mnist_*' distorted_digits configs) is not in {data_dir} "
            f"and could not be downloaded ({type(e).__name__}: {e}). On a machine with internet, run\n"
            f"  python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('mnist', data_dir='{data_dir}').download_and_prepare()\"\n"
            f"and copy {data_dir}/mnist to this machine, or use the embedded configs "
            f"'r', 'rts', 'p', 'e' that need no download.") from e
    batches = list(tfds.as_numpy(ds.batch(10_000)))  # not batch_size=-1: needs split metadata
    images = np.concatenate([b[0] for b in batches])[..., 0]
    labels = np.concatenate([b[1] for b in batches])
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Warps. Coordinates are (row, col) with pixel centres at integers; the image centre of an
# n-pixel side is (n - 1) / 2. Every warp samples the source bilinearly at inverse-mapped points.

def _grid(size: int) -> np.ndarray:
    """(size*size, 2) output pixel coordinates, row-major."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([r.ravel(), c.ravel()], axis=1).astype(np.float64)


def _sample(image: np.ndarray, coords: np.ndarray, size: int) -> np.ndarray:
    """Bilinear samples of `image` at (size*size, 2) coords, zero outside."""
    out = scipy.ndimage.map_coordinates(image, coords.T, order=1, mode="constant", cval=0.0)
    return out.reshape(size, size).astype(np.float32)


def warp(image: np.ndarray, inverse: np.ndarray, size: int) -> np.ndarray:
    """Projective warp: output pixel p samples the source at inverse @ [p, 1] (homogeneous)."""
    p = _grid(size)
    q = np.concatenate([p, np.ones((len(p), 1))], axis=1) @ np.asarray(inverse, np.float64).T
    return _sample(image, q[:, :2] / q[:, 2:], size)


def _translation(t) -> np.ndarray:
    return np.array([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1]], np.float64)


def _rotation_scale(degrees: float, scale: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)


def similarity_inverse(degrees: float, scale: float, center_out, center_in) -> np.ndarray:
    """Inverse map of: rotate by `degrees` and scale about `center_in`, moved to `center_out`."""
    forward = _translation(center_out) @ _rotation_scale(degrees, scale) @ _translation(
        -np.asarray(center_in, np.float64))
    return np.linalg.inv(forward)


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with H @ [src_i, 1] ~ [dst_i, 1] for four point pairs (direct linear solve)."""
    a, b = [], []
    for (x, y), (u, v) in zip(np.asarray(src, np.float64), np.asarray(dst, np.float64)):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.append(np.linalg.solve(np.array(a), np.array(b)), 1.0).reshape(3, 3)


def tps_warp(image: np.ndarray, control_out: np.ndarray, control_in: np.ndarray,
             size: int) -> np.ndarray:
    """Elastic warp: the spline through control_out -> control_in gives each output pixel's source."""
    weights, affine = tps_fit(control_out, control_in)
    return _sample(image, tps_apply(control_out, weights, affine, _grid(size)), size)


# ----------------------------------------------------------------------------------------------
# The paper's four random distortions: (rng, 28x28 float image) -> (distorted image, parameters).

def distort_r(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
    angle = rng.uniform(-90, 90)
    c = (MNIST_SIZE - 1) / 2
    return warp(image, similarity_inverse(angle, 1.0, (c, c), (c, c)), MNIST_SIZE), {"angle": angle}


def distort_rts(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
    angle = rng.uniform(-45, 45)
    scale = rng.uniform(0.7, 1.2)
    half = scale * MNIST_SIZE / 2  # half-extent of the scaled 28x28 patch; it stays in the canvas
    center = rng.uniform(half - 0.5, RTS_CANVAS - 0.5 - half, size=2)
    c = (MNIST_SIZE - 1) / 2
    inverse = similarity_inverse(angle, scale, center, (c, c))
    return warp(image, inverse, RTS_CANVAS), {"angle": angle, "scale": scale, "center": center}


def distort_p(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
    scale = rng.uniform(0.75, 1.0)
    n = MNIST_SIZE - 1
    corners = np.array([[0, 0], [0, n], [n, n], [n, 0]], np.float64)
    moved = n / 2 + scale * (corners - n / 2) + rng.normal(0, 5.0, size=(4, 2))
    inverse = homography(moved, corners)
    return warp(image, inverse, MNIST_SIZE), {"scale": scale, "corners": moved}


def distort_e(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
    scale = rng.uniform(0.75, 1.0)
    n = MNIST_SIZE - 1
    g = np.linspace(0, n, 4)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    scaled = n / 2 + scale * (grid - n / 2)
    moved = scaled + rng.normal(0, 1.5, size=grid.shape)
    # Control points map moved (output) -> grid (source): scaling then perturbation, inverted.
    return tps_warp(image, moved, grid, MNIST_SIZE), {"scale": scale, "control_points": moved}


def distort_none(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, dict]:
    del rng
    return image, {}


def distort_cluttered(rng: np.random.Generator, image: np.ndarray, *, canvas: int, pieces: int,
                      pool: np.ndarray | None = None, piece: int = 8) -> tuple[np.ndarray, dict]:
    """The digit at a uniformly random place in a canvas x canvas image, over `pieces` random
    piece x piece patches cut from random digits of `pool` (N, 28, 28) (the split's digits; the
    digit itself when None) at random places; overlaps keep the brighter pixel."""
    pool = image[None] if pool is None else pool
    out = np.zeros((canvas, canvas), np.float32)
    for _ in range(pieces):
        source = pool[rng.integers(len(pool))]
        r, c = rng.integers(0, MNIST_SIZE - piece + 1, size=2)
        y, x = rng.integers(0, canvas - piece + 1, size=2)
        out[y:y + piece, x:x + piece] = np.maximum(out[y:y + piece, x:x + piece],
                                                   source[r:r + piece, c:c + piece])
    top, left = rng.integers(0, canvas - MNIST_SIZE + 1, size=2)
    out[top:top + MNIST_SIZE, left:left + MNIST_SIZE] = np.maximum(
        out[top:top + MNIST_SIZE, left:left + MNIST_SIZE], image)
    return out, {"top_left": (int(top), int(left))}


DISTORT = {"none": distort_none, "r": distort_r, "rts": distort_rts, "p": distort_p, "e": distort_e,
           **{name: functools.partial(distort_cluttered, canvas=side, pieces=pieces)
              for name, (side, pieces) in CLUTTER.items()}}


# ----------------------------------------------------------------------------------------------
# TFDS builder.

@dataclasses.dataclass
class DistortedDigitsConfig(tfds.core.BuilderConfig):
    """Give a config a new `name` when changing its fields: TFDS caches prepared data by name."""
    distortion: str = "r"  # one of DISTORTIONS
    source: str = "sklearn"  # 'sklearn' (embedded) or 'mnist'
    train_copies: int = 8  # distorted copies per train source digit
    test_copies: int = 3  # distorted copies per held-out test digit
    test_fraction: float = 1 / 6  # sklearn only; MNIST keeps its own test split
    seed: int = 0
    num_source_digits: int | None = None  # use only the first N source digits (tests)

    def __post_init__(self):
        if self.distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {DISTORTIONS}, got {self.distortion!r}.")
        if self.source not in ("sklearn", "mnist"):
            raise ValueError(f"source must be 'sklearn' or 'mnist', got {self.source!r}.")


def _configs() -> list[DistortedDigitsConfig]:
    configs = []
    for d in DISTORTIONS:
        size = OUTPUT_SIZE[d]
        copies = {"train_copies": 1, "test_copies": 1} if d == "none" else {}  # copies would be equal
        configs.append(DistortedDigitsConfig(
            name=d, distortion=d, description=f"{d.upper()} on scikit-learn digits, {size}x{size}.",
            **copies))
    for d in DISTORTIONS:
        configs.append(DistortedDigitsConfig(
            name=f"mnist_{d}", distortion=d, source="mnist", train_copies=1, test_copies=1,
            description=f"{d.upper()} on MNIST (needs TFDS mnist), {OUTPUT_SIZE[d]}x{OUTPUT_SIZE[d]}."))
    for d in DISTORTIONS:
        configs.append(DistortedDigitsConfig(
            name=f"tiny_{d}", distortion=d, num_source_digits=360,
            train_copies=1 if d == "none" else 2, test_copies=1,
            description=f"{d.upper()} on the first 360 scikit-learn digits, for fast tests."))
    return configs


class DistortedDigits(tfds.core.GeneratorBasedBuilder):
    """Distorted digits (R, RTS, P, E) for Spatial Transformer Network experiments."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _configs()

    @property
    def generated_locally(self) -> bool:
        """True when preparing needs nothing but this code (the input pipeline may prepare it)."""
        return self.builder_config.source == "sklearn"

    def _info(self) -> tfds.core.DatasetInfo:
        size = OUTPUT_SIZE[self.builder_config.distortion]
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 1)),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                # Index of the source digit (in load_digits order, or in the MNIST split).
                "source_id": np.int64,
            }),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/1506.02025",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # sources are loaded below (sklearn ships its digits; MNIST via tfds.load)
        cfg = self.builder_config
        if cfg.source == "sklearn":
            images, labels = load_sklearn_digits()
            ids = np.arange(len(labels))
            if cfg.num_source_digits is not None:
                ids = ids[:cfg.num_source_digits]
            from sklearn.model_selection import train_test_split

            train_ids, test_ids = train_test_split(
                ids, test_size=cfg.test_fraction, stratify=labels[ids], random_state=cfg.seed)
            sources = {"train": (images, labels, np.sort(train_ids)),
                       "test": (images, labels, np.sort(test_ids))}
        else:
            root = str(self.data_dir_root)
            sources = {}
            for split in ("train", "test"):
                images, labels = load_mnist(split, root)
                ids = np.arange(len(labels))[:cfg.num_source_digits]
                sources[split] = (images, labels, ids)
        copies = {"train": cfg.train_copies, "test": cfg.test_copies}
        return {split: self._generate_examples(split, *sources[split], copies[split])
                for split in ("train", "test")}

    def _generate_examples(self, split, images, labels, ids, copies):
        cfg = self.builder_config
        distort = DISTORT[cfg.distortion]
        if cfg.distortion in CLUTTER:  # clutter is cut from the split's other digits
            distort = functools.partial(distort, pool=images[ids])
        salt = [zlib.crc32(cfg.source.encode()), zlib.crc32(cfg.distortion.encode()),
                zlib.crc32(split.encode())]
        for i in ids:
            for copy in range(copies):
                # Each example's randomness depends only on (seed, config, split, digit, copy).
                rng = np.random.default_rng([cfg.seed, *salt, int(i), copy])
                image, _ = distort(rng, images[i])
                yield f"{i}_{copy}", {"image": to_uint8(image)[..., None], "label": labels[i],
                                      "source_id": int(i)}

"""Online handwriting (Graves 2013, "Generating Sequences With Recurrent Neural Networks", sec. 4):
pen trajectories in the paper's format, one row per pen point: (dx, dy, end_of_stroke), the
offset from the previous point and 1 on the last point of each stroke (where the pen lifts).

The embedded set, `synthetic_handwriting`, is generated locally: short text lines written with
single-stroke Hershey vector fonts (the `hershey-fonts` package; Script Simplex and Cursive, the
joined-up ones, and Futura Light) by simulated writers. Each writer has a slant, a size, a pen
speed (how far the pen moves between two sampled points, so faster writers give fewer points)
and a smooth wobble (low-frequency noise on every stroke); training and test lines come from
different writers, as IAM-OnDB's splits do. The text is drawn from a small English word list.

Characters: `ALPHABET` (the letters, digits, space and common punctuation, as the paper's 57
symbols plus a few); anything else maps to `UNKNOWN` ("#", one symbol of its own), the text
encoding the synthesis model will read (`encode_text`).
"""
from __future__ import annotations

import dataclasses
import functools
import zlib

import numpy as np
import scipy.ndimage
import tensorflow_datasets as tfds

ALPHABET = (" abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            ".,'\"!?;:-()")
UNKNOWN = "#"
SYMBOLS = (UNKNOWN, *ALPHABET)  # id 0: unknown; then the alphabet in order
FONTS = ("scripts", "cursive", "futural")
_WORDS = ("the cat dog house tree car river city garden book teacher child bird table window road "
          "mountain friend king queen door letter horse boat flower big small red old young green "
          "happy quiet dark bright cold warm tall new strange blue sees likes finds follows "
          "watches helps carries builds paints knows calls meets sleeps runs waits sings near "
          "behind under with on and but because while that a some").split()


def encode_text(text: str) -> np.ndarray:
    """Character ids (int32) of `text`: `ALPHABET` symbols from 1, anything else 0 (`UNKNOWN`)."""
    index = {c: i for i, c in enumerate(SYMBOLS)}
    return np.array([index.get(c, 0) for c in text], np.int32)


@dataclasses.dataclass(frozen=True)
class Writer:
    """How one simulated writer writes: font, letter height (units), slant (x shift per unit of
    height), pen speed (path length between sampled points) and wobble (noise amplitude)."""
    font: str
    size: float
    slant: float
    speed: float
    wobble: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> Writer:
        return cls(font=FONTS[rng.integers(len(FONTS))], size=float(rng.uniform(8, 12)),
                   slant=float(rng.uniform(-0.1, 0.45)), speed=float(rng.uniform(0.7, 1.3)),
                   wobble=float(rng.uniform(0.1, 0.35)))


@functools.lru_cache(maxsize=None)
def _font(name: str):
    from HersheyFonts import HersheyFonts  # only the builder needs it

    font = HersheyFonts()
    font.load_default_font(name)
    return font


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    """A polyline's points every `step` units of path length (its ends kept)."""
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    if lengths[-1] < 1e-9:
        return points[:1]
    at = np.r_[np.arange(0.0, lengths[-1], step), lengths[-1]]
    return np.stack([np.interp(at, lengths, points[:, k]) for k in range(2)], axis=1)


def write_line(text: str, writer: Writer, rng: np.random.Generator) -> np.ndarray:
    """`text` as `writer` writes it: (T, 3) float32 rows (dx, dy, end_of_stroke), y up. The first
    row's offset is the first point itself (the line starts at the origin)."""
    font = _font(writer.font)
    font.normalize_rendering(writer.size)
    strokes = []
    for stroke in font.strokes_for_text(text):
        points = np.asarray(stroke, np.float64)
        if len(points) == 0:
            continue
        points[:, 0] += writer.slant * points[:, 1]
        points = _resample(points, writer.speed)
        noise = rng.normal(0.0, writer.wobble, size=points.shape)
        if len(points) > 1:  # smooth: a wobble over a few points, not jitter
            noise = scipy.ndimage.gaussian_filter1d(noise, sigma=2.0, axis=0, mode="nearest") * 2
        strokes.append(points + noise)
    if not strokes:
        raise ValueError(f"Nothing to write for {text!r}: the text has no visible characters.")
    points = np.concatenate(strokes)
    end = np.zeros(len(points), np.float32)
    end[np.cumsum([len(s) for s in strokes]) - 1] = 1.0
    offsets = np.diff(points, axis=0, prepend=np.zeros((1, 2)))
    return np.concatenate([offsets, end[:, None]], axis=1).astype(np.float32)


def random_text(rng: np.random.Generator, max_chars: int) -> str:
    """One to four words of the word list, sometimes capitalized or ending in punctuation, at
    most `max_chars` characters."""
    while True:
        words = [_WORDS[i] for i in rng.integers(len(_WORDS), size=rng.integers(1, 5))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        text = " ".join(words) + (rng.choice([".", ",", "!", "?"]) if rng.random() < 0.3 else "")
        if len(text) <= max_chars:
            return text


@dataclasses.dataclass
class SyntheticHandwritingConfig(tfds.core.BuilderConfig):
    """Give a config a new `name` when changing its fields: TFDS caches prepared data by name."""
    num_train: int = 6000
    num_test: int = 600
    train_writers: int = 40
    test_writers: int = 10
    max_chars: int = 24
    seed: int = 0


class SyntheticHandwriting(tfds.core.GeneratorBasedBuilder):
    """Text lines written by simulated writers as pen trajectories (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticHandwritingConfig(name="default", description="6000/600 lines, 40/10 writers."),
        SyntheticHandwritingConfig(name="tiny", num_train=40, num_test=10, train_writers=4,
                                   test_writers=2, max_chars=10, description="For fast tests."),
    ]
    generated_locally = True

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "strokes": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "text": tfds.features.Text(),
                "writer": np.int64,
            }),
            homepage="https://arxiv.org/abs/1308.0850")

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        writers = [Writer.random(np.random.default_rng([cfg.seed, i]))
                   for i in range(cfg.train_writers + cfg.test_writers)]
        return {"train": self._generate_examples("train", cfg.num_train,
                                                 writers[:cfg.train_writers], 0),
                "test": self._generate_examples("test", cfg.num_test,
                                                writers[cfg.train_writers:], cfg.train_writers)}

    def _generate_examples(self, split: str, count: int, writers: list[Writer], first_id: int):
        cfg = self.builder_config
        for i in range(count):  # each line depends only on (seed, split, index)
            rng = np.random.default_rng([cfg.seed, zlib.crc32(split.encode()), i])
            w = int(rng.integers(len(writers)))
            text = random_text(rng, cfg.max_chars)
            yield i, {"strokes": write_line(text, writers[w], rng), "text": text,
                      "writer": first_id + w}

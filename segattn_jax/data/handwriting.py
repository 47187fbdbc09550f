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
import json

import jax
import numpy as np
import scipy.ndimage
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from segattn_jax.data.embedded import example_rng

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


def decode_text(ids) -> str:
    """The text of character ids (`encode_text`'s inverse; UNKNOWN stays '#')."""
    return "".join(SYMBOLS[int(i)] for i in ids)


def tf_encode_text(text: tf.Tensor) -> tf.Tensor:
    """`encode_text` in TensorFlow, for the input pipeline: a string scalar -> int32 ids."""
    table = np.zeros(128, np.int32)
    for i, c in enumerate(SYMBOLS[1:], start=1):
        table[ord(c)] = i
    codes = tf.strings.unicode_decode(text, "UTF-8", errors="replace")
    ascii_ids = tf.gather(tf.constant(table), tf.clip_by_value(codes, 0, 127))
    return tf.where((codes >= 0) & (codes < 128), ascii_ids, 0)


def line_features() -> dict:
    """The TFDS features of a handwritten line, shared by every handwriting builder."""
    return {"strokes": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
            "text": tfds.features.Text(), "writer": np.int64}


STATISTICS_FILE = "stroke_statistics.json"


@dataclasses.dataclass(frozen=True)
class StrokeStatistics:
    """The training set's offset mean and standard deviation (the networks read offsets
    normalized to mean 0, std 1, as the paper's), and how many training lines are longer than
    max_points (they are truncated)."""
    mean: tuple[float, float]
    std: tuple[float, float]
    lines: int
    truncated: int
    max_points: int = 0  # 0: a file written before it was recorded

    def save(self, directory: epath.Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / STATISTICS_FILE).write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, directory: epath.Path) -> StrokeStatistics:
        path = directory / STATISTICS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: it holds the training set's offset statistics that the "
                "networks' inputs are normalized with, and training writes it. Evaluate the "
                "workdir of a training run (or train first).")
        fields = json.loads(path.read_text())
        return cls(**{**fields, "mean": tuple(fields["mean"]), "std": tuple(fields["std"])})

    @classmethod
    def measure(cls, sources, max_points: int) -> StrokeStatistics:
        """One pass over every (builder, split) in `sources` (strokes only)."""
        total, squares, points, lines, truncated = np.zeros(2), np.zeros(2), 0, 0, 0
        for builder, split in sources:
            dataset = builder.as_dataset(split=split, decoders={"text": tfds.decode.SkipDecoding()})
            for strokes in dataset.map(lambda e: e["strokes"]).as_numpy_iterator():
                offsets = strokes[:, :2].astype(np.float64)
                total += offsets.sum(0)
                squares += (offsets ** 2).sum(0)
                points += len(offsets)
                lines += 1
                truncated += int(len(offsets) > max_points)
        if not points:
            raise ValueError(f"The training data {sources} hold no pen points.")
        mean = total / points
        std = np.sqrt(np.maximum(squares / points - mean ** 2, 1e-12))
        return cls(tuple(map(float, mean)), tuple(map(float, std)), lines, truncated, max_points)


def statistics_for_run(workdir, sources, max_points: int, create: bool) -> StrokeStatistics:
    """The workdir's offset statistics; training measures and saves them first when missing (or
    when they counted truncation at another `max_points`: the same data give the same mean and
    std). Logs how many training lines are truncated to `max_points`."""
    directory = epath.Path(workdir)
    exists = (directory / STATISTICS_FILE).exists()
    statistics = StrokeStatistics.load(directory) if exists or not create else None
    if create and (statistics is None or statistics.max_points != max_points):
        statistics = StrokeStatistics.measure(sources, max_points)
        if jax.process_index() == 0:
            statistics.save(directory)
    if create:
        logging.info("Handwriting: %d of %d training lines are longer than max_points=%d and are "
                     "truncated; offsets normalized with mean %s, std %s.", statistics.truncated,
                     statistics.lines, max_points, statistics.mean, statistics.std)
    return statistics


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
    def random(cls, rng: np.random.Generator, speed_scale: float = 1.0) -> Writer:
        return cls(font=FONTS[rng.integers(len(FONTS))], size=float(rng.uniform(8, 12)),
                   slant=float(rng.uniform(-0.1, 0.45)),
                   speed=float(rng.uniform(0.7, 1.3)) * speed_scale,
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
    speed_scale: float = 1.0  # multiplies every writer's pen speed: 2 = half the points
    seed: int = 0


class SyntheticHandwriting(tfds.core.GeneratorBasedBuilder):
    """Text lines written by simulated writers as pen trajectories (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticHandwritingConfig(name="default", description="6000/600 lines, 40/10 writers."),
        SyntheticHandwritingConfig(name="short", max_chars=16, speed_scale=2.0,
                                   description="Lines of at most 16 characters written twice as "
                                   "fast (about 9 points per character): the mini experiments."),
        SyntheticHandwritingConfig(name="tiny", num_train=40, num_test=10, train_writers=4,
                                   test_writers=2, max_chars=10, description="For fast tests."),
    ]
    generated_locally = True

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(line_features()),
            homepage="https://arxiv.org/abs/1308.0850")

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        cfg = self.builder_config
        writers = [Writer.random(np.random.default_rng([cfg.seed, i]), cfg.speed_scale)
                   for i in range(cfg.train_writers + cfg.test_writers)]
        return {"train": self._generate_examples("train", cfg.num_train,
                                                 writers[:cfg.train_writers], 0),
                "test": self._generate_examples("test", cfg.num_test,
                                                writers[cfg.train_writers:], cfg.train_writers)}

    def _generate_examples(self, split: str, count: int, writers: list[Writer], first_id: int):
        cfg = self.builder_config
        for i in range(count):  # each line depends only on (seed, split, index)
            rng = example_rng(cfg.seed, split, i)
            w = int(rng.integers(len(writers)))
            text = random_text(rng, cfg.max_chars)
            yield i, {"strokes": write_line(text, writers[w], rng), "text": text,
                      "writer": first_id + w}

"""`predict`: run a trained experiment on image files and write overlay PNGs, or (handwriting
synthesis) write given text."""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from PIL import Image, UnidentifiedImageError

from segattn_jax import compilation
from segattn_jax.tasks import pictures as pics


def load_image(path: str | Path) -> np.ndarray:
    """float32 (H, W, C) in [0, 1] (8- or 16-bit files alike); a clear ValueError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file.")
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not an image file that Pillow can read (PNG, JPEG, ...): {e}")
    if array.ndim == 2:
        array = array[..., None]
    scale = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else 1.0
    return array.astype(np.float32) / scale


# ITU-R 601-2 luma, as PIL's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_KINDS = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}


def match_channels(path: str | Path, image: np.ndarray, channels: int) -> np.ndarray:
    """`image` converted to the model's `channels` as image tools do (gray -> RGB by repeating,
    alpha dropped, RGB -> gray by luma), saying so in one log line; ValueError for other counts."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have not in _KINDS or channels not in (1, 3):
        kind = _KINDS.get(channels, f"{channels}-channel")
        mode = "L" if channels == 1 else "RGB"
        raise ValueError(f"{path} has {have} channels but this model takes {channels} "
                         f"({kind}); convert it first, e.g. with PIL's Image.convert('{mode}').")
    color = image[..., :1] if have in (1, 2) else image[..., :3]  # alpha dropped
    if channels == 3:
        converted = np.repeat(color, 3, axis=-1) if color.shape[-1] == 1 else color
    else:
        converted = color if color.shape[-1] == 1 else (color @ _LUMA)[..., None]
    logging.info("%s: %s image converted to %s for this model.", path, _KINDS[have], _KINDS[channels])
    return converted.astype(np.float32)


def predict_files(config: ml_collections.ConfigDict, workdir: str | epath.Path,
                  paths: list[str]) -> list[epath.Path]:
    """Writes WORKDIR/predictions/<name>.png for each image; returns the written paths."""
    from segattn_jax.train.loop import Experiment  # heavy import, only when used

    images = [load_image(p) for p in paths]  # validate the files before any work
    exp = Experiment(config, workdir)
    if "image" not in exp.input_spec:
        raise ValueError(f"The {config.task.name!r} task's model reads {sorted(exp.input_spec)}, "
                         "not images: `predict` draws image files. Use `eval`, whose pictures "
                         "and metrics cover the eval split.")
    _, height, width, channels = exp.input_spec["image"].shape
    images = [match_channels(path, image, channels) for path, image in zip(paths, images)]
    for path, image in zip(paths, images):
        if not exp.task.any_input_size and image.shape[:2] != (height, width):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but this model takes "
                             f"{width}x{height} images; resize it first.")
    variables = exp.restore_variables()
    predict = compilation.jit(exp.task.predict)
    out_dir = epath.Path(workdir) / "predictions"  # epath: gs:// workdirs too
    written = []
    for path, image in zip(paths, images):
        predictions = jax.tree.map(lambda x: np.asarray(x)[0],
                                   predict(variables, exp.task.inputs_for_image(image)))
        target = out_dir / f"{Path(path).stem}.png"
        pics.save_png(target, exp.task.overlay(image, predictions))
        written.append(target)
    return written


def eval_example(exp, index: int) -> dict[str, np.ndarray]:
    """Example `index` of the experiment's eval split, preprocessed."""
    seen = 0
    for batch in exp.eval_batches():
        valid = int(np.sum(batch["valid"]))
        if index < seen + valid:
            return {k: v[index - seen] for k, v in batch.items()}
        seen += valid
    raise ValueError(f"The eval split {exp.config.dataset.eval_split!r} has {seen} examples: "
                     f"--config.task.prime_line={index} must be below that.")


def _slug(text: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "_" for c in text)[:40].strip("_") or "text"


def write_texts(config: ml_collections.ConfigDict, workdir: str | epath.Path,
                texts: list[str]) -> list[epath.Path]:
    """Writes WORKDIR/predictions/text_<i>_<words>.png: each text as the trained synthesis
    network writes it, above its window; returns the written paths. `task.prime_line` >= 0
    primes the network with that line of the eval split (its style continues)."""
    from segattn_jax.train.loop import Experiment  # heavy import, only when used

    exp = Experiment(config, workdir)
    if not hasattr(exp.task, "write"):
        raise ValueError(f"--text is for networks that write text (handwriting synthesis); the "
                         f"{config.task.name!r} task reads images: use --images.")
    prime_line = config.task.get("prime_line", -1)
    prime = eval_example(exp, prime_line) if prime_line >= 0 else None
    written = exp.task.write(exp.restore_variables(), texts, seed=config.seed, prime=prime)
    out_dir = epath.Path(workdir) / "predictions"
    paths = []
    for i, text in enumerate(texts):
        target = out_dir / f"text_{i}_{_slug(text)}.png"
        pics.save_png(target, exp.task.written_picture(written, i))
        paths.append(target)
    return paths

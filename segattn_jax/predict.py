"""`predict`: run a trained experiment on image files and write overlay PNGs."""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from PIL import Image, UnidentifiedImageError

from segattn_jax.tasks import pictures as pics


def load_image(path: str | Path, channels: int) -> np.ndarray:
    """float32 (H, W, channels) in [0, 1]; a clear ValueError for non-images or wrong channels."""
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
    if array.shape[-1] != channels:
        kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
        raise ValueError(f"{path} has {array.shape[-1]} channels but this model takes {channels} "
                         f"({kind}); convert it first, e.g. PIL Image.convert('{'L' if channels == 1 else 'RGB'}').")
    return array.astype(np.float32) / 255.0


def predict_files(config: ml_collections.ConfigDict, workdir: str | Path,
                  paths: list[str]) -> list[Path]:
    """Writes WORKDIR/predictions/<name>.png for each image; returns the written paths."""
    from segattn_jax.train.loop import load_params  # heavy import, only when used

    exp, params = load_params(config, workdir)
    _, height, width, channels = exp.image_shape
    images = [load_image(p, channels) for p in paths]  # validate all before any work
    for path, image in zip(paths, images):
        if not exp.task.any_input_size and image.shape[:2] != (height, width):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but this model takes "
                             f"{width}x{height} images; resize it first.")
    predict = jax.jit(exp.task.predict)
    out_dir = Path(workdir) / "predictions"
    written = []
    for path, image in zip(paths, images):
        predictions = jax.tree.map(lambda x: np.asarray(x)[0], predict(params, image[None]))
        target = out_dir / f"{Path(path).stem}.png"
        pics.save_png(target, exp.task.overlay(image, predictions))
        written.append(target)
    return written

"""`predict`: run a trained experiment on image files and write overlay PNGs."""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
from etils import epath
from PIL import Image, UnidentifiedImageError

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


def check_channels(path: str | Path, image: np.ndarray, channels: int) -> None:
    if image.shape[-1] != channels:
        kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
        mode = "L" if channels == 1 else "RGB"
        raise ValueError(f"{path} has {image.shape[-1]} channels but this model takes {channels} "
                         f"({kind}); convert it first, e.g. with PIL's Image.convert('{mode}').")


def predict_files(config: ml_collections.ConfigDict, workdir: str | epath.Path,
                  paths: list[str]) -> list[epath.Path]:
    """Writes WORKDIR/predictions/<name>.png for each image; returns the written paths."""
    from segattn_jax.train.loop import Experiment  # heavy import, only when used

    images = [load_image(p) for p in paths]  # validate the files before any work
    exp = Experiment(config, workdir)
    _, height, width, channels = exp.image_shape
    for path, image in zip(paths, images):
        check_channels(path, image, channels)
        if not exp.task.any_input_size and image.shape[:2] != (height, width):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but this model takes "
                             f"{width}x{height} images; resize it first.")
    params = exp.restore_params()
    predict = jax.jit(exp.task.predict)
    out_dir = epath.Path(workdir) / "predictions"  # epath: gs:// workdirs too
    written = []
    for path, image in zip(paths, images):
        predictions = jax.tree.map(lambda x: np.asarray(x)[0], predict(params, image[None]))
        target = out_dir / f"{Path(path).stem}.png"
        pics.save_png(target, exp.task.overlay(image, predictions))
        written.append(target)
    return written

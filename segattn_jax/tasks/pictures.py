"""PNG pictures that tasks write during eval and `predict`: colored masks, overlays, grids, words.

Host-side numpy and Pillow only (pictures are made from a few examples after `jax.device_get`).
Masks use the PASCAL VOC colormap, so pictures of VOC-trained models look like the VOC ground truth
PNGs and the same class has the same color in every picture of every task. Small inputs (the
embedded 64x64 scenes) are upscaled by whole factors to `MIN_SIDE` so a prediction can be judged,
and classes are named in legends and captions rather than left to the reader's memory of colors.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from segattn_jax.ops.images import to_uint8

# VOC draws "void" / ignored pixels (label 255) in this color; it is VOC palette entry 255.
VOC_VOID_LABEL = 255
MIN_SIDE = 256  # pictures of smaller inputs are upscaled (nearest, whole factor) to this short side
FONT_SIZE = 16
_LINE_HEIGHT = FONT_SIZE + 6
RIGHT_COLOR, WRONG_COLOR, TEXT_COLOR = (0, 150, 0), (200, 0, 0), (0, 0, 0)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """(num_colors, 3) uint8 PASCAL VOC colormap: the bits of the class index are dealt out in turn
    to red, green and blue, from the most significant bit down. Index 0 is black (background) and
    all indices below 2**24 get distinct colors."""
    if not 1 <= num_colors <= 2**24:
        raise ValueError(f"num_colors must be in [1, 2**24], got {num_colors}.")
    index = np.arange(num_colors, dtype=np.int64)
    palette = np.zeros((num_colors, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def colorize_mask(
    mask: np.ndarray, num_classes: int, ignore_label: int | None = VOC_VOID_LABEL
) -> np.ndarray:
    """(H, W) integer class mask -> (H, W, 3) uint8 VOC colors; `ignore_label` pixels get VOC's void
    color (224, 224, 192)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(
            f"mask must be an (H, W) integer array, got shape {mask.shape} dtype {mask.dtype}.")
    in_range = (mask >= 0) & (mask < num_classes)
    ignored = mask == ignore_label if ignore_label is not None else np.zeros_like(in_range)
    if not np.all(in_range | ignored):
        bad = np.unique(mask[~(in_range | ignored)])[:5]
        raise ValueError(
            f"mask has values {bad.tolist()} outside [0, num_classes={num_classes}) that are not "
            f"ignore_label={ignore_label}; pass the right num_classes or ignore_label."
        )
    palette = voc_palette(max(num_classes, VOC_VOID_LABEL + 1))
    colors = palette[np.where(in_range, mask, 0)]
    if ignore_label is not None:
        colors[ignored] = palette[VOC_VOID_LABEL]
    return colors


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) float [0, 1] / uint8 image -> (H, W, 3) uint8."""
    image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"Expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {image.shape}.")
    return image


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the two leading axes (keeps mask values and edges crisp)."""
    rows = np.arange(height) * image.shape[0] // height
    cols = np.arange(width) * image.shape[1] // width
    return image[rows[:, None], cols[None, :]]


def upscale(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """Repeats pixels by the smallest whole factor that brings the short side to >= `min_side`
    (masks stay crisp and label-exact); images already that large are returned as they are."""
    factor = -(-min_side // max(1, min(image.shape[:2])))
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def class_name(names: Sequence[str], index: int) -> str:
    """`names[index]`, or 'class <index>' where the dataset names fewer classes than the model has."""
    return names[index] if 0 <= index < len(names) else f"class {index}"


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font (no font files needed on a fresh machine or a TPU worker)."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_width(text: str) -> int:
    left, _, right, _ = _font().getbbox(text)
    return right - left


def text_panel(lines: Sequence[tuple[str, tuple[int, int, int]]], height: int,
               width: int | None = None) -> np.ndarray:
    """White (height, width, 3) uint8 panel with one (text, RGB color) per line, top-left aligned;
    `width` defaults to the widest line. Lines that do not fit in `height` are dropped."""
    margin = 6
    width = width or margin * 2 + max([_text_width(text) for text, _ in lines] or [0])
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (text, color) in enumerate(lines):
        top = margin + i * _LINE_HEIGHT
        if top + _LINE_HEIGHT > height:
            break
        draw.text((margin, top), text, fill=tuple(color), font=_font())
    return np.asarray(canvas)


def legend(class_ids: Sequence[int], names: Sequence[str], height: int) -> np.ndarray:
    """White (height, width, 3) panel: a VOC-colored swatch and the name of each class in
    `class_ids` (ignore labels are skipped), in columns when they do not fit in one."""
    margin, swatch = 6, FONT_SIZE
    ids = [int(k) for k in class_ids if int(k) != VOC_VOID_LABEL]
    per_column = max(1, (height - 2 * margin) // _LINE_HEIGHT)
    columns = [ids[i:i + per_column] for i in range(0, len(ids), per_column)] or [[]]
    widths = [swatch + 6 + max([_text_width(class_name(names, k)) for k in column] or [0])
              for column in columns]
    canvas = Image.new("RGB", (margin + sum(w + margin for w in widths), height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette(max(ids + [0]) + 1)
    left = margin
    for column, column_width in zip(columns, widths):
        for row, k in enumerate(column):
            top = margin + row * _LINE_HEIGHT
            draw.rectangle([left, top + 2, left + swatch - 1, top + swatch + 1],
                           fill=tuple(int(c) for c in palette[k]), outline=(128, 128, 128))
            draw.text((left + swatch + 6, top), class_name(names, k), fill=TEXT_COLOR, font=_font())
        left += column_width + margin
    return np.asarray(canvas)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str],
               class_ids: Sequence[int], width: int = 2) -> np.ndarray:
    """`image` (RGB uint8) with each box (x1, y1, x2, y2, in its pixels) outlined in its class's
    VOC color and captioned (class name, score) on a strip of that color above it."""
    canvas = Image.fromarray(to_rgb_uint8(image))
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette(max([int(k) for k in class_ids] + [0]) + 1)
    for box, caption, k in zip(np.asarray(boxes, np.float64).reshape(-1, 4), captions, class_ids):
        color = tuple(int(c) for c in palette[int(k)])
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=color, width=width)
        if caption:
            top = max(0.0, y1 - _LINE_HEIGHT)
            draw.rectangle([x1, top, x1 + _text_width(caption) + 4, top + _LINE_HEIGHT - 2],
                           fill=color)
            luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
            draw.text((x1 + 2, top), caption, fill=(0, 0, 0) if luma > 128 else (255, 255, 255),
                      font=_font())
    return np.asarray(canvas)


def labeled_boxes(image: np.ndarray, boxes: np.ndarray, classes: Sequence[int],
                  names: Sequence[str], scores: Sequence[float] | None = None) -> np.ndarray:
    """`image` upscaled for legibility with object boxes (x1, y1, x2, y2 in its pixels), each
    captioned with its class name (and score); object class k in VOC color k + 1 (0 is black)."""
    image = to_rgb_uint8(image)
    big = upscale(image)
    factor = big.shape[0] / image.shape[0]
    captions = [class_name(names, int(k)) for k in classes]
    if scores is not None:
        captions = [f"{caption} {float(p):.2f}" for caption, p in zip(captions, scores)]
    return draw_boxes(big, np.asarray(boxes) * factor, captions, [int(k) + 1 for k in classes])


SKELETON_COLORS = {"left": (60, 220, 60), "right": (240, 70, 70), "": (70, 150, 255)}


def draw_skeleton(image: np.ndarray, joints: np.ndarray, limbs: Sequence[tuple],
                  visible: np.ndarray | None = None, width: int = 3) -> np.ndarray:
    """`image` upscaled for legibility with a pose: each limb (name, endpoint a, endpoint b; an
    endpoint is a tuple of joint indices whose positions are averaged) a line between its
    endpoints, the person's left limbs green, right red, the others blue; joints (x, y in the
    image's pixels) as dots. With `visible`, limbs touching an invisible joint are left out."""
    image = to_rgb_uint8(image)
    big = upscale(image)
    factor = big.shape[0] / image.shape[0]
    points = np.asarray(joints, np.float64) * factor
    shown = np.ones(len(points), bool) if visible is None else np.asarray(visible, bool)
    canvas = Image.fromarray(big)
    draw = ImageDraw.Draw(canvas)
    for name, a, b in limbs:
        if not shown[list(a) + list(b)].all():
            continue
        side = name.split("_")[0] if name.split("_")[0] in SKELETON_COLORS else ""
        start, end = points[list(a)].mean(0), points[list(b)].mean(0)
        draw.line([tuple(start), tuple(end)], fill=SKELETON_COLORS[side], width=width)
    for (x, y), seen in zip(points, shown):
        if seen:
            draw.ellipse([x - width, y - width, x + width, y + width], fill=(255, 255, 255))
    return np.asarray(canvas)


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """`image` (RGB uint8) with a one-line caption strip above it."""
    image = to_rgb_uint8(image)
    strip = text_panel([(title, TEXT_COLOR)], _LINE_HEIGHT + 6, width=image.shape[1])
    return np.concatenate([strip, image], axis=0)


def image_grid(
    rows: Sequence[Sequence[np.ndarray]], pad: int = 2, pad_value: int = 255,
    titles: Sequence[str] | None = None,
) -> np.ndarray:
    """Tiles images into one (H, W, 3) uint8 picture: a list of rows, each a list of images.

    Gray images become RGB. Within a row, every image is resized (nearest, keeping its aspect
    ratio) to the row's tallest height, so e.g. a 16x16 score map sits next to its 64x64 input;
    shorter rows are padded on the right. `pad` pixels of `pad_value` separate and frame the tiles.
    `titles` caption the first row's tiles (the columns), one per tile.
    """
    if not rows or not all(len(row) for row in rows):
        raise ValueError("image_grid needs a non-empty list of non-empty rows of images.")
    if titles is not None and len(titles) != len(rows[0]):
        raise ValueError(f"{len(titles)} titles for {len(rows[0])} tiles in the first row.")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}.")
    strips = []
    for index, row in enumerate(rows):
        images = [to_rgb_uint8(image) for image in row]
        height = max(image.shape[0] for image in images)
        tiles = []
        for image in images:
            width = max(1, round(image.shape[1] * height / image.shape[0]))
            tiles.append(resize_nearest(image, height, width))
        if index == 0 and titles is not None:  # after resizing, so the captions keep their size
            tiles = [titled(tile, title) for tile, title in zip(tiles, titles)]
        strips.append(_join(tiles, axis=1, pad=pad, pad_value=pad_value))
    width = max(strip.shape[1] for strip in strips)
    strips = [
        np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=pad_value)
        for strip in strips
    ]
    grid = _join(strips, axis=0, pad=pad, pad_value=pad_value)
    return np.pad(grid, ((pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    num_classes: int,
    alpha: float = 0.5,
    background: int | None = 0,
) -> np.ndarray:
    """Blends the mask's VOC colors over the image: (H, W, 3) uint8. Pixels of the `background`
    class (and ignored pixels) keep the image as it is, so only the objects are tinted."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    image = to_rgb_uint8(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"mask {mask.shape} and image {image.shape[:2]} must have the same height and width; "
            "resize the prediction to the image first."
        )
    colors = colorize_mask(mask, num_classes)
    blended = (1.0 - alpha) * image + alpha * colors
    tinted = (mask >= 0) & (mask < num_classes)
    if background is not None:
        tinted &= mask != background
    return np.where(tinted[..., None], np.round(blended), image).astype(np.uint8)


def attention_overlay(image: np.ndarray, attention: np.ndarray, hard: bool = False) -> np.ndarray:
    """Show, Attend and Tell's figure: the image lit where one word's attention (h, w) falls and
    dimmed elsewhere. Soft attention is drawn as its heat map (bilinearly upsampled, scaled to
    its maximum); hard attention as the one location it picks (the map's most likely cell)."""
    import skimage.transform

    image = to_rgb_uint8(image).astype(np.float32)
    attention = np.asarray(attention, np.float32)
    if hard:
        attention = (attention == attention.max()).astype(np.float32)
        light = resize_nearest(attention, *image.shape[:2])
    else:
        light = skimage.transform.resize(attention, image.shape[:2], order=1, mode="edge")
    light = light / max(float(light.max()), 1e-12)
    return np.round(image * (0.2 + 0.8 * light[..., None])).astype(np.uint8)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (pictures are drawn off screen)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def figure_to_rgb(figure) -> np.ndarray:
    """A matplotlib figure as a uint8 RGB array; the figure is closed."""
    figure.canvas.draw()
    picture = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    pyplot().close(figure)
    return picture


def save_png(path: str | os.PathLike, array: np.ndarray) -> str:
    """Writes an (H, W) / (H, W, 1) / (H, W, 3) float [0, 1] or uint8 image as PNG, creating the
    parent directories. Goes through etils.epath (as orbax does), so a gs:// workdir on a TPU pod
    works like a local one. Returns the path."""
    image = to_uint8(array)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(
            f"save_png expects (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}.")
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        Image.fromarray(image).save(file, format="PNG")
    return os.fspath(path)


def save_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], seconds_per_frame: float = 0.15
             ) -> str:
    """Writes uint8 RGB frames (H, W, 3) of one size as a looping GIF (through etils.epath, as
    save_png), the last frame held for a second. Returns the path."""
    if not frames:
        raise ValueError("save_gif needs at least one frame.")
    images = [Image.fromarray(to_rgb_uint8(frame)) for frame in frames]
    durations = [round(1000 * seconds_per_frame)] * (len(images) - 1) + [1000]
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        images[0].save(file, format="GIF", save_all=True, append_images=images[1:],
                       duration=durations, loop=0)
    return os.fspath(path)


def _join(tiles: list[np.ndarray], axis: int, pad: int, pad_value: int) -> np.ndarray:
    """Concatenates same-size-across-`axis` tiles with `pad`-wide separators."""
    if pad == 0:
        return np.concatenate(tiles, axis=axis)
    separator_shape = list(tiles[0].shape)
    separator_shape[axis] = pad
    separator = np.full(separator_shape, pad_value, dtype=np.uint8)
    pieces = [tiles[0]]
    for tile in tiles[1:]:
        pieces += [separator, tile]
    return np.concatenate(pieces, axis=axis)

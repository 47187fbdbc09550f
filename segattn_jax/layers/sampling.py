"""Bilinear reads of a feature map at continuous pixel coordinates: the one sampler behind the
spatial transformer (normalized grids) and RoIAlign (box bins).

Pixel (i, j) has its centre at (y, x) = (i, j); a point between centres mixes the four around it.
Two conventions for points near or past the border, each the one its paper's code uses:
- "zeros": each of the four taps that falls outside reads 0, so values fade to 0 across the
  border (the spatial transformer, torch's grid_sample padding_mode='zeros');
- "clamp": points within one pixel outside the map are clamped onto the border, points farther out
  read 0 (Detectron / torchvision RoIAlign).
Differentiable in the features and in the coordinates; coordinates and weights are float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

OUTSIDE = ("zeros", "clamp")


def bilinear_at(images: jax.Array, y: jax.Array, x: jax.Array, outside: str = "zeros") -> jax.Array:
    """Samples `images` (N, H, W, C) at pixel coordinates y, x (N, ...) -> (N, ..., C)."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    n, height, width, channels = images.shape
    return bilinear_flat(images.reshape(n, height * width, channels), y, x, height, width, 0,
                         outside).astype(images.dtype)


def bilinear_flat(flat: jax.Array, y: jax.Array, x: jax.Array, height, width, offset,
                  outside: str = "zeros") -> jax.Array:
    """`bilinear_at` on maps stored flat: pixel (i, j) of the map a point reads is
    flat[n, offset + i * width + j]. height, width and offset are ints or int arrays that
    broadcast against y, so one gather reads several maps of different sizes laid end to end
    (an FPN's levels: `layers.roi.pyramid_roi_align`). flat (N, P, C), y and x (N, ...) ->
    float32 (N, ..., C)."""
    if y.shape != x.shape or y.shape[:1] != flat.shape[:1]:
        raise ValueError(f"y and x must have one shape (N, ...) with N={flat.shape[0]}, "
                         f"got {y.shape} and {x.shape}.")
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {OUTSIDE}, got {outside!r}.")
    n, _, channels = flat.shape
    y, x = y.astype(jnp.float32), x.astype(jnp.float32)
    if outside == "clamp":
        near = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
        y, x = jnp.clip(y, 0.0, height - 1.0), jnp.clip(x, 0.0, width - 1.0)
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy1, wx1 = y - y0, x - x0
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

    def tap(yi: jax.Array, xi: jax.Array, weight: jax.Array) -> jax.Array:
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        index = offset + jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)
        values = jnp.take_along_axis(flat, index.reshape(n, -1, 1), axis=1)
        values = values.reshape(index.shape + (channels,)).astype(jnp.float32)
        return values * jnp.where(inside, weight, 0.0)[..., None]

    out = (tap(y0, x0, (1.0 - wy1) * (1.0 - wx1)) + tap(y0, x0 + 1, (1.0 - wy1) * wx1)
           + tap(y0 + 1, x0, wy1 * (1.0 - wx1)) + tap(y0 + 1, x0 + 1, wy1 * wx1))
    if outside == "clamp":
        out = jnp.where(near[..., None], out, 0.0)
    return out

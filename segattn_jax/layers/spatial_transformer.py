"""Spatial transformer (Jaderberg et al., 2015): grid generators, a bilinear sampler, the module.

A spatial transformer warps its input with a transformation that a *localisation network*
predicts from the input itself: a grid generator turns the parameters into a sampling grid
(for each output pixel, where to read in the input) and a differentiable sampler reads the input
there (paper §3). Gradients reach both the input and the grid, so the localisation network learns
from the task loss alone.

Coordinate convention (the same as ``torch.nn.functional.affine_grid`` / ``grid_sample`` with
``align_corners=False``):
- a grid has shape (N, h, w, 2) and its last axis is (x, y): x runs along width, y along height;
- coordinates are normalised so that -1 and +1 are the *outer edges* of the image, not the
  centres of the border pixels. Pixel column j of a width-W image has its centre at
  x = (2j + 1) / W - 1, and x maps back to the (continuous) column index (x + 1) * W / 2 - 1/2.
This makes the identity transform resolution-independent (an output of any size samples the same
region) and reproduces the input exactly when output size equals input size.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax.layers.sampling import bilinear_at
from segattn_jax.ops.tps import tps_evaluation_matrix

TRANSFORMS = ("affine", "projective", "tps")
# Homography denominators smaller than this (in magnitude) are clamped, keeping points that map
# to (or behind) the horizon finite; such points land far outside [-1, 1] and sample zeros.
_PROJECTIVE_EPS = 1e-6


# ----------------------------------------------------------------------------------- grids
def _check_hw(output_hw: tuple[int, int]) -> tuple[int, int]:
    if len(output_hw) != 2 or min(int(output_hw[0]), int(output_hw[1])) < 1:
        raise ValueError(f"output_hw must be (height, width) with both >= 1, got {output_hw!r}.")
    return int(output_hw[0]), int(output_hw[1])


def pixel_centers(output_hw: tuple[int, int]) -> np.ndarray:
    """Normalised (x, y) of every pixel centre of an (h, w) image, shape (h, w, 2)."""
    h, w = _check_hw(output_hw)
    xs = (2.0 * np.arange(w) + 1.0) / w - 1.0
    ys = (2.0 * np.arange(h) + 1.0) / h - 1.0
    gx, gy = np.meshgrid(xs, ys)  # (h, w) each, 'xy' indexing: rows follow y.
    return np.stack([gx, gy], axis=-1)


def _homogeneous_centers(output_hw: tuple[int, int]) -> np.ndarray:
    centers = pixel_centers(output_hw)
    return np.concatenate([centers, np.ones(centers.shape[:-1] + (1,))], axis=-1)  # (h, w, 3)


def affine_grid(theta: jax.Array, output_hw: tuple[int, int]) -> jax.Array:
    """Sampling grid of an affine map: source = theta @ (x_t, y_t, 1).

    theta: (N, 2, 3), mapping *output* (target) coordinates to *input* (source) coordinates, as in
    the paper's eq. (1). Identity is [[1, 0, 0], [0, 1, 0]]. Returns (N, h, w, 2).
    """
    theta = jnp.asarray(theta)
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must have shape (N, 2, 3), got {theta.shape}.")
    base = jnp.asarray(_homogeneous_centers(output_hw), dtype=jnp.float32)
    return jnp.einsum("hwk,nik->nhwi", base, theta.astype(jnp.float32))


def projective_grid(homography: jax.Array, output_hw: tuple[int, int]) -> jax.Array:
    """Sampling grid of a projective map: (x', y', w') = H @ (x_t, y_t, 1), source = (x'/w', y'/w').

    homography: (N, 3, 3), output -> input coordinates; identity is the 3x3 identity. Denominators
    with |w'| < 1e-6 are clamped to +-1e-6 so the grid stays finite. Returns (N, h, w, 2).
    """
    homography = jnp.asarray(homography)
    if homography.ndim != 3 or homography.shape[1:] != (3, 3):
        raise ValueError(f"homography must have shape (N, 3, 3), got {homography.shape}.")
    base = jnp.asarray(_homogeneous_centers(output_hw), dtype=jnp.float32)
    projected = jnp.einsum("hwk,nik->nhwi", base, homography.astype(jnp.float32))
    denominator = projected[..., 2:]
    sign = jnp.where(denominator < 0, -1.0, 1.0)
    safe = jnp.where(jnp.abs(denominator) < _PROJECTIVE_EPS, sign * _PROJECTIVE_EPS, denominator)
    return projected[..., :2] / safe


def tps_control_points(grid_size: int = 4) -> np.ndarray:
    """The fixed regular grid of TPS control points in [-1, 1]^2 (corners included), (K, 2).

    Ordered row-major (y outer, x inner); K = grid_size**2. Passing these to `tps_grid` gives the
    identity warp, so they are also the identity parameters of a TPS spatial transformer.
    """
    if grid_size < 2:
        raise ValueError(f"tps grid_size must be >= 2 (fewer points cannot determine the affine "
                         f"part of the spline), got {grid_size}.")
    axis = np.linspace(-1.0, 1.0, grid_size)
    gx, gy = np.meshgrid(axis, axis)
    return np.stack([gx.ravel(), gy.ravel()], axis=-1)


def tps_interpolation_matrix(points: np.ndarray, grid_size: int = 4) -> np.ndarray:
    """Matrix M (P, K) such that the TPS warp of `points` (P, 2) is M @ control_points (K, 2).

    The thin-plate spline (`ops.tps`) through the K fixed regular control points c_k that sends c_k
    to the (movable) points Y_k is linear in Y. It interpolates (f(c_k) = Y_k) and reproduces affine
    maps exactly, so Y = c gives f = identity. Built in numpy at trace time; `tps_grid` applies it.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return tps_evaluation_matrix(tps_control_points(grid_size), points)


def tps_grid(control_points: jax.Array, output_hw: tuple[int, int],
             grid_size: int = 4) -> jax.Array:
    """Sampling grid of a thin-plate-spline warp (paper §3.1, "16-point TPS" for grid_size=4).

    control_points: (N, K, 2), K = grid_size**2: where in the *input* the K fixed regular output
    control points (`tps_control_points`) should read from, (x, y) normalised. The identity is
    `tps_control_points(grid_size)`; offsets from it are the natural thing to regress.
    Returns (N, h, w, 2).
    """
    control_points = jnp.asarray(control_points)
    k = grid_size * grid_size
    if control_points.ndim != 3 or control_points.shape[1:] != (k, 2):
        raise ValueError(f"control_points must have shape (N, {k}, 2) for grid_size={grid_size}, "
                         f"got {control_points.shape}.")
    h, w = _check_hw(output_hw)
    matrix = tps_interpolation_matrix(pixel_centers((h, w)).reshape(-1, 2), grid_size)
    grid = jnp.einsum("pk,nkd->npd", jnp.asarray(matrix, dtype=jnp.float32),
                      control_points.astype(jnp.float32))
    return grid.reshape(control_points.shape[0], h, w, 2)


# --------------------------------------------------------------------------------- sampler
def bilinear_sample(images: jax.Array, grid: jax.Array) -> jax.Array:
    """Bilinearly sample `images` (N, H, W, C) at `grid` (N, h, w, 2) -> (N, h, w, C).

    The paper's eq. (5) kernel; reads outside the image are zeros (each of the four taps that falls
    outside contributes 0, so values fade to 0 across the border, as torch's padding_mode='zeros').
    Differentiable in both the images and the grid (the grid gradient is the paper's eq. (7)).
    Coordinates and weights are computed in float32; the result has the images' dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[:1] != images.shape[:1]:
        raise ValueError(f"grid must be (N, h, w, 2) with N={images.shape[0]} matching images, "
                         f"got shape {grid.shape}.")
    height, width = images.shape[1:3]
    grid = grid.astype(jnp.float32)
    # Continuous pixel coordinates (align_corners=False): -1 -> -0.5, +1 -> size - 0.5.
    x = (grid[..., 0] + 1.0) * (width / 2.0) - 0.5
    y = (grid[..., 1] + 1.0) * (height / 2.0) - 0.5
    return bilinear_at(images, y, x, outside="zeros")


# ---------------------------------------------------------------------------------- module
def identity_params(transform: str, tps_grid_size: int = 4) -> np.ndarray:
    """Flat parameter vector of the identity transform: the regression layer's initial bias."""
    if transform == "affine":
        return np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    if transform == "projective":  # 8 free entries; H[2, 2] is fixed to 1 (scale ambiguity).
        return np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    if transform == "tps":
        return tps_control_points(tps_grid_size).ravel()
    raise ValueError(f"Unknown transform {transform!r}; valid transforms: {', '.join(TRANSFORMS)}.")


def params_to_grid(transform: str, flat_params: jax.Array, output_hw: tuple[int, int],
                   tps_grid_size: int = 4) -> tuple[jax.Array, jax.Array]:
    """Turn regressed flat parameters (N, P) into (structured params, sampling grid)."""
    n = flat_params.shape[0]
    if transform == "affine":
        theta = flat_params.reshape(n, 2, 3)
        return theta, affine_grid(theta, output_hw)
    if transform == "projective":
        homography = jnp.concatenate([flat_params, jnp.ones((n, 1), flat_params.dtype)], axis=1)
        homography = homography.reshape(n, 3, 3)
        return homography, projective_grid(homography, output_hw)
    if transform == "tps":
        points = flat_params.reshape(n, tps_grid_size * tps_grid_size, 2)
        return points, tps_grid(points, output_hw, tps_grid_size)
    raise ValueError(f"Unknown transform {transform!r}; valid transforms: {', '.join(TRANSFORMS)}.")


class SpatialTransformer(nn.Module):
    """Localisation net -> regression to transform parameters -> grid -> bilinear sampling.

    The final regression layer (named 'regression') has zero weights and the identity transform as
    its bias, so at initialisation the module returns its input unchanged and training starts from
    "look at the whole image" (paper Appendix A). Returns (transformed_images, transform_params)
    with params shaped (N, 2, 3) affine, (N, 3, 3) projective, (N, K, 2) TPS control points.

    Attributes:
      localization: any module mapping images to features (N, F) (or (N, ...), flattened here).
        Extra keyword arguments of `__call__` (e.g. train=...) are passed on to it.
      transform: 'affine' | 'projective' | 'tps'.
      output_hw: (h, w) of the output; None keeps the input size.
      tps_grid_size: control grid side for 'tps' (4 -> the paper's 16 points).
      dtype: compute dtype of the regression layer and the output (grid math stays float32).
    """

    localization: nn.Module
    transform: str = "affine"
    output_hw: tuple[int, int] | None = None
    tps_grid_size: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array,
                 **localization_kwargs: Any) -> tuple[jax.Array, jax.Array]:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Unknown transform {self.transform!r}; valid transforms: "
                             f"{', '.join(TRANSFORMS)}.")
        if images.ndim != 4:
            raise ValueError(f"SpatialTransformer expects images (N, H, W, C), got {images.shape}.")
        output_hw = tuple(self.output_hw) if self.output_hw is not None else images.shape[1:3]
        features = self.localization(images, **localization_kwargs)
        features = features.reshape(features.shape[0], -1)
        bias = identity_params(self.transform, self.tps_grid_size)
        flat_params = nn.Dense(
            bias.size, dtype=self.dtype, kernel_init=nn.initializers.zeros,
            bias_init=_constant_init(bias), name="regression")(features)
        params, grid = params_to_grid(self.transform, flat_params.astype(jnp.float32), output_hw,
                                      self.tps_grid_size)
        return bilinear_sample(images.astype(self.dtype), grid), params


def _constant_init(value: np.ndarray) -> Callable[..., jax.Array]:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        del key
        if tuple(shape) != value.shape:
            raise ValueError(f"identity bias has shape {value.shape}, layer asked for {shape}.")
        return jnp.asarray(value, dtype=dtype)
    return init

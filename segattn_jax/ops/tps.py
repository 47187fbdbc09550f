"""Thin-plate splines in numpy: the one home of the TPS math for the data and the layer.

A thin-plate spline through K control points c_k with values v_k (any number of columns) is
  f(p) = sum_k w_k U(|p - c_k|) + a_0 + a_1 p_0 + a_2 p_1,   U(r) = r^2 log r^2, U(0) = 0
(the thin-plate kernel up to a constant factor, which the weights absorb). Its coefficients solve
  L [w; a] = [v; 0],   L = [[U(|c_i - c_j|), P], [P^T, 0]],   P = [1, c],
so f interpolates the values exactly and reproduces affine maps exactly (then w = 0). f is linear in
the values, which is what lets the spatial transformer precompute one matrix for a fixed grid.

Users: `data.distorted_digits` (elastic 'E' distortion, pixel coordinates) and
`layers.spatial_transformer` (TPS grid generator, normalised coordinates; it applies the matrix in
jax). Points are (n, 2) in any consistent 2-D coordinates.
"""
from __future__ import annotations

import numpy as np


def tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """U(|a_i - b_j|) = r^2 log r^2 with U(0) = 0, for points a (n, 2) and b (m, 2): (n, m)."""
    squared = np.sum((np.asarray(a, np.float64)[:, None] - np.asarray(b, np.float64)[None]) ** 2,
                     axis=-1)
    return np.where(squared > 0, squared * np.log(np.maximum(squared, 1e-300)), 0.0)


def _basis(control: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[U(|q - c_k|)_k, 1, q]: (Q, K + 3), the spline's features at each query point."""
    query = np.asarray(query, np.float64)
    return np.concatenate([tps_kernel(query, control), np.ones((len(query), 1)), query], axis=1)


def tps_system(control: np.ndarray) -> np.ndarray:
    """L = [[U(|c_i - c_j|), P], [P^T, 0]] with P = [1, c]: (K + 3, K + 3), symmetric."""
    control = np.asarray(control, np.float64)
    if control.ndim != 2 or control.shape[1] != 2 or len(control) < 3:
        raise ValueError(f"control points must be (K, 2) with K >= 3 (fewer cannot determine the "
                         f"affine part), got shape {control.shape}.")
    k = len(control)
    affine = np.concatenate([np.ones((k, 1)), control], axis=1)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = tps_kernel(control, control)
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    return system


def tps_fit(control: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spline through control (K, 2) -> values (K, D): kernel weights (K, D), affine part (3, D)."""
    values = np.asarray(values, np.float64)
    rhs = np.concatenate([values, np.zeros((3,) + values.shape[1:])])
    solution = np.linalg.solve(tps_system(control), rhs)
    return solution[:len(values)], solution[len(values):]


def tps_apply(control: np.ndarray, weights: np.ndarray, affine: np.ndarray,
              query: np.ndarray) -> np.ndarray:
    """The spline fitted by `tps_fit` at query points (Q, 2): (Q, D)."""
    return _basis(control, query) @ np.concatenate([weights, affine])


def tps_evaluation_matrix(control: np.ndarray, query: np.ndarray) -> np.ndarray:
    """M (Q, K) such that the spline through control -> values, at `query`, is M @ values.

    M = basis(query) @ L^-1[:, :K]; computed as a solve (L is symmetric), so for a fixed control
    grid the whole warp is one matrix product with the values, whatever they are.
    """
    control = np.asarray(control, np.float64)
    solved = np.linalg.solve(tps_system(control), _basis(control, query).T)  # L^-1 basis^T
    return solved[:len(control)].T

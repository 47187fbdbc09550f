"""Thin-plate splines against scipy's RBF interpolator, exact interpolation and affine reproduction,
and agreement of the two users: the distorted-digits data and the spatial transformer layer."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator

from segattn_jax.data.distorted_digits import tps_warp
from segattn_jax.layers.spatial_transformer import bilinear_sample, tps_control_points, tps_grid
from segattn_jax.ops.tps import tps_apply, tps_evaluation_matrix, tps_fit, tps_kernel

RNG = np.random.default_rng(0)


def test_kernel_is_r2_log_r2_and_zero_at_zero():
    a = np.array([[0.0, 0.0]])
    b = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # r^2 = 0, 1, 4, 25
    np.testing.assert_allclose(tps_kernel(a, b), [[0.0, 0.0, 4 * np.log(4), 25 * np.log(25)]])


def test_interpolates_control_points_exactly_and_matches_scipy():
    control = RNG.uniform(-1, 1, size=(16, 2))
    values = RNG.normal(size=(16, 3))
    weights, affine = tps_fit(control, values)
    np.testing.assert_allclose(tps_apply(control, weights, affine, control), values, atol=1e-9)
    query = RNG.uniform(-1.5, 1.5, size=(50, 2))
    # scipy's kernel r^2 log r is half of ours: the same spline, with doubled weights.
    reference = RBFInterpolator(control, values, kernel="thin_plate_spline", degree=1)(query)
    np.testing.assert_allclose(tps_apply(control, weights, affine, query), reference, atol=1e-9)
    np.testing.assert_allclose(tps_evaluation_matrix(control, query) @ values, reference, atol=1e-9)
    np.testing.assert_allclose(tps_evaluation_matrix(control, control), np.eye(16), atol=1e-9)


def test_reproduces_affine_maps_exactly():
    control = RNG.uniform(0, 27, size=(16, 2))
    a, t = np.array([[0.9, -0.3], [0.2, 1.1]]), np.array([2.0, -1.0])
    weights, affine = tps_fit(control, control @ a.T + t)
    np.testing.assert_allclose(weights, 0.0, atol=1e-9)
    query = RNG.uniform(-5, 30, size=(40, 2))
    np.testing.assert_allclose(tps_apply(control, weights, affine, query), query @ a.T + t,
                               atol=1e-9)


def test_too_few_control_points_is_a_clear_error():
    with pytest.raises(ValueError, match="K >= 3"):
        tps_fit(np.zeros((2, 2)), np.zeros((2, 2)))


def test_data_and_layer_agree_on_a_random_warp():
    """distorted_digits.tps_warp (row, col pixel coordinates) and the layer's tps_grid + sampler
    (normalised x, y) warp the same image the same way: the spline is equivariant under the
    similarity between the two coordinate systems of a square image."""
    size = 12
    image = np.zeros((size, size))
    image[2:-2, 2:-2] = RNG.random((size - 4, size - 4))  # zero border: the two samplers treat
    # points past the edge differently (scipy: cval outright; the layer: fades to zero).
    control = tps_control_points(4)  # (x, y) in [-1, 1], at the image's outer edges
    moved = control + RNG.normal(scale=0.15, size=control.shape)

    def to_pixels(xy: np.ndarray) -> np.ndarray:  # normalised (x, y) -> (row, col), align_corners=False
        return ((xy + 1) * size / 2 - 0.5)[:, ::-1]

    data = tps_warp(image, to_pixels(control), to_pixels(moved), size)
    grid = tps_grid(jnp.asarray(moved[None], jnp.float32), (size, size))
    layer = np.asarray(bilinear_sample(jnp.asarray(image[None, :, :, None], jnp.float32), grid))
    np.testing.assert_allclose(layer[0, :, :, 0], data, atol=1e-5)
    assert np.abs(data - image).max() > 0.1  # the warp really moved the image

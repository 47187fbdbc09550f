"""DRAW's Gaussian filterbanks against the paper's equations written out as loops (numpy), the
full-image identity the formulas imply, and reading as the adjoint of writing."""
import numpy as np
import pytest

from segattn_jax.layers.filterbank import (
    filterbank,
    read_glimpse,
    window_from_params,
    write_patch,
)


def _paper_filterbank(raw, n, height, width):
    """The placement and filterbank equations one entry at a time: raw = (g~X, g~Y, log sigma^2, log delta~, log gamma)."""
    gx_, gy_, log_sigma2, log_delta_, _ = raw
    gx, gy = (width + 1) / 2 * (gx_ + 1), (height + 1) / 2 * (gy_ + 1)
    delta = (max(height, width) - 1) / (n - 1) * np.exp(log_delta_)
    sigma2 = np.exp(log_sigma2)
    fx, fy = np.zeros((n, width)), np.zeros((n, height))
    for i in range(1, n + 1):
        mu_x = gx + (i - n / 2 - 0.5) * delta
        mu_y = gy + (i - n / 2 - 0.5) * delta
        for a in range(1, width + 1):
            fx[i - 1, a - 1] = np.exp(-(a - mu_x) ** 2 / (2 * sigma2))
        for b in range(1, height + 1):
            fy[i - 1, b - 1] = np.exp(-(b - mu_y) ** 2 / (2 * sigma2))
    return fx / fx.sum(1, keepdims=True), fy / fy.sum(1, keepdims=True)


def _window(raw, n, height, width):
    return window_from_params(np.asarray(raw, np.float32)[None], n, height, width)


@pytest.mark.parametrize("raw", [(0.0, 0.0, 0.0, 0.0, 0.0), (0.3, -0.5, 0.7, -1.0, 0.2),
                                 (-0.8, 0.4, -0.5, 0.5, -0.3)])
def test_filterbanks_match_the_paper_equations(raw):
    n, height, width = 5, 12, 16
    fx, fy = filterbank(_window(raw, n, height, width), n, height, width)
    want_x, want_y = _paper_filterbank(raw, n, height, width)
    np.testing.assert_allclose(np.asarray(fx[0]), want_x, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fy[0]), want_y, atol=1e-6)


def test_a_sharp_full_size_glimpse_is_the_image_and_writing_it_back_paints_it():
    """g~ = 0, delta~ = 1, N = A: the filter means sit on the pixels, so with a small variance
    reading returns the image and writing a patch paints it unchanged (gamma = 1)."""
    size = 9
    image = np.random.default_rng(0).uniform(size=(1, size, size, 2)).astype(np.float32)
    window = _window((0.0, 0.0, np.log(0.01), 0.0, 0.0), size, size, size)
    fx, fy = filterbank(window, size, size, size)
    np.testing.assert_allclose(np.asarray(read_glimpse(image, fx, fy, window.gamma)), image,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(write_patch(image, fx, fy, window.gamma)), image,
                               atol=1e-6)


def test_reading_is_the_adjoint_of_writing_up_to_gamma():
    """<gamma F_Y x F_X^T, w> = gamma^2 <x, (1/gamma) F_Y^T w F_X>."""
    rng = np.random.default_rng(1)
    n, height, width = 4, 10, 14
    window = _window((0.2, -0.1, 0.3, -0.2, 0.5), n, height, width)
    fx, fy = filterbank(window, n, height, width)
    x = rng.normal(size=(1, height, width, 1)).astype(np.float32)
    w = rng.normal(size=(1, n, n, 1)).astype(np.float32)
    gamma = float(window.gamma[0])
    read = float(np.sum(np.asarray(read_glimpse(x, fx, fy, window.gamma)) * w))
    written = float(np.sum(x * np.asarray(write_patch(w, fx, fy, window.gamma))))
    np.testing.assert_allclose(read, gamma ** 2 * written, rtol=1e-5)


def test_a_window_far_outside_the_image_stays_finite():
    n = 3
    window = _window((40.0, -40.0, np.log(0.01), 0.0, 0.0), n, 8, 8)
    fx, fy = filterbank(window, n, 8, 8)
    assert np.all(np.isfinite(np.asarray(fx))) and np.all(np.isfinite(np.asarray(fy)))

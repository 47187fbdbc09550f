"""Spatial transformer: grids and sampler vs numpy/scipy/torch references, identities, gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from segattn_jax.layers.spatial_transformer import (
    SpatialTransformer, affine_grid, bilinear_sample, identity_params, pixel_centers,
    projective_grid, tps_control_points, tps_grid, tps_interpolation_matrix)

RNG = np.random.default_rng(0)


def numpy_bilinear(images: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Loop reference: 4 taps, zero outside, align_corners=False pixel coordinates."""
    n, height, width, channels = images.shape
    out = np.zeros(grid.shape[:3] + (channels,), np.float64)
    for b in range(n):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                x = (grid[b, i, j, 0] + 1) * width / 2 - 0.5
                y = (grid[b, i, j, 1] + 1) * height / 2 - 0.5
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
                    if 0 <= xi < width and 0 <= yi < height:
                        weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                        out[b, i, j] += weight * images[b, yi, xi]
    return out


def sample(images, grid):
    return np.asarray(bilinear_sample(jnp.asarray(images), jnp.asarray(grid)))


def test_pixel_centers_follow_align_corners_false():
    centers = pixel_centers((2, 4))
    np.testing.assert_allclose(centers[0, :, 0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(centers[:, 0, 1], [-0.5, 0.5])


def test_bilinear_sample_matches_numpy_reference_including_outside():
    images = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    grid = RNG.uniform(-1.4, 1.4, size=(2, 4, 3, 2)).astype(np.float32)  # some taps outside
    np.testing.assert_allclose(sample(images, grid), numpy_bilinear(images, grid), atol=1e-5)


def test_grid_and_sampler_match_torch():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    theta = np.array([[[1.1, 0.2, 0.1], [-0.3, 0.9, -0.2]],
                      [[0.5, 0.8, 0.6], [0.1, -1.3, 0.3]]], np.float32)
    images = RNG.normal(size=(2, 5, 7, 3)).astype(np.float32)
    grid = np.asarray(affine_grid(jnp.asarray(theta), (4, 6)))
    torch_grid = functional.affine_grid(torch.tensor(theta), (2, 3, 4, 6), align_corners=False)
    np.testing.assert_allclose(grid, torch_grid.numpy(), atol=1e-6)
    torch_out = functional.grid_sample(
        torch.tensor(images).permute(0, 3, 1, 2), torch_grid, mode="bilinear",
        padding_mode="zeros", align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(sample(images, grid), torch_out, atol=1e-5)


@pytest.mark.parametrize("grid_fn,params", [
    (affine_grid, np.array([[[1.0, 0, 0], [0, 1.0, 0]]])),
    (projective_grid, np.eye(3)[None]),
    (tps_grid, tps_control_points(4)[None]),
])
def test_identity_parameters_reproduce_the_input(grid_fn, params):
    images = RNG.normal(size=(1, 7, 5, 2)).astype(np.float32)
    grid = grid_fn(jnp.asarray(params, jnp.float32), (7, 5))
    np.testing.assert_allclose(np.asarray(grid[0]), pixel_centers((7, 5)), atol=1e-6)
    np.testing.assert_allclose(sample(images, grid), images, atol=1e-5)


def test_integer_translation_is_an_exact_pixel_shift():
    images = RNG.normal(size=(1, 6, 8, 1)).astype(np.float32)
    shift = 2  # pixels; the grid reads `shift` columns to the right: x_s = x_t + 2 * shift / W.
    theta = np.array([[[1.0, 0, 2 * shift / 8], [0, 1.0, 0]]], np.float32)
    out = sample(images, affine_grid(jnp.asarray(theta), (6, 8)))
    expected = np.zeros_like(images)
    expected[:, :, :-shift] = images[:, :, shift:]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_rotation_matches_scipy_ndimage_rotate():
    size, degrees = 11, 30.0
    image = RNG.random((size, size)).astype(np.float32)
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    theta = np.array([[[c, -s, 0.0], [s, c, 0.0]]], np.float32)  # output -> input, y points down
    out = sample(image[None, :, :, None], affine_grid(jnp.asarray(theta), (size, size)))[0, :, :, 0]
    expected = ndi.rotate(image, degrees, reshape=False, order=1, mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_projective_grid_divides_by_third_coordinate_and_stays_finite():
    homography = np.array([[[1.0, 0.2, 0.1], [0.1, 0.9, 0.0], [0.3, -0.2, 1.0]]], np.float32)
    centers = pixel_centers((3, 4)).reshape(-1, 2)
    projected = np.concatenate([centers, np.ones((12, 1))], 1) @ homography[0].T
    expected = (projected[:, :2] / projected[:, 2:]).reshape(3, 4, 2)
    np.testing.assert_allclose(np.asarray(projective_grid(jnp.asarray(homography), (3, 4)))[0],
                               expected, rtol=1e-5, atol=1e-6)
    # Horizon through the image: the middle column of a width-5 grid has x = 0, denominator 0.
    horizon = np.array([[[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]]], np.float32)
    grid = projective_grid(jnp.asarray(horizon), (5, 5))
    assert np.isfinite(np.asarray(grid)).all()
    assert np.isfinite(sample(RNG.random((1, 5, 5, 1)).astype(np.float32), grid)).all()


def test_projective_with_affine_last_row_equals_affine_grid():
    theta = np.array([[[0.9, 0.2, 0.1], [-0.1, 1.1, 0.3]]], np.float32)
    homography = np.concatenate([theta, [[[0.0, 0.0, 1.0]]]], axis=1)
    np.testing.assert_allclose(np.asarray(projective_grid(jnp.asarray(homography), (5, 6))),
                               np.asarray(affine_grid(jnp.asarray(theta), (5, 6))), atol=1e-6)


def test_tps_reproduces_affine_maps_and_interpolates_control_points():
    control = tps_control_points(4)
    a = np.array([[0.8, 0.3], [-0.2, 1.1]])
    t = np.array([0.1, -0.2])
    moved = control @ a.T + t  # an affine map of the control points -> the TPS *is* that map
    grid = tps_grid(jnp.asarray(moved[None], jnp.float32), (6, 5))
    theta = np.concatenate([a, t[:, None]], axis=1)[None].astype(np.float32)
    expected = affine_grid(jnp.asarray(theta), (6, 5))
    np.testing.assert_allclose(np.asarray(grid), np.asarray(expected), atol=1e-5)
    # Interpolation: a non-affine move of the control points is hit exactly at the control points.
    bent = control + RNG.normal(scale=0.1, size=control.shape)
    np.testing.assert_allclose(tps_interpolation_matrix(control, 4) @ bent, bent, atol=1e-8)


def test_sampler_gradients_match_finite_differences():
    images = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    # Interior points away from integer pixel coordinates, where bilinear is smooth (linear).
    pixels = RNG.uniform(0.2, 0.8, size=(1, 3, 3, 2)) + RNG.integers(0, 4, size=(1, 3, 3, 2))
    grid = ((pixels + 0.5) * 2 / 5 - 1).astype(np.float32)
    weights = RNG.normal(size=(1, 3, 3, 2)).astype(np.float32)

    @jax.jit
    def loss(images_, grid_):
        return jnp.sum(bilinear_sample(images_, grid_) * weights)

    grad_images, grad_grid = jax.grad(loss, argnums=(0, 1))(jnp.asarray(images), jnp.asarray(grid))
    assert np.isfinite(grad_grid).all() and np.abs(grad_grid).min() > 0
    eps = 1e-3
    numeric = np.zeros_like(grid)
    for index in np.ndindex(grid.shape):
        step = np.zeros_like(grid)
        step[index] = eps
        numeric[index] = (loss(images, grid + step) - loss(images, grid - step)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grad_grid), numeric, rtol=2e-2, atol=2e-3)
    # The loss is linear in the images, so <d loss / d images, probe> = loss(probe).
    probe = RNG.normal(size=images.shape).astype(np.float32)
    np.testing.assert_allclose(float(jnp.vdot(grad_images, probe)), float(loss(probe, grid)),
                               rtol=1e-4)


class _FlattenDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))


@pytest.mark.parametrize("transform,params_shape", [
    ("affine", (2, 2, 3)), ("projective", (2, 3, 3)), ("tps", (2, 16, 2))])
def test_module_is_identity_at_init_and_has_finite_gradients(transform, params_shape):
    images = jnp.asarray(RNG.random((2, 8, 8, 1)), jnp.float32)
    module = SpatialTransformer(localization=_FlattenDense(), transform=transform)
    variables = jax.jit(module.init)(jax.random.key(0), images)
    out, params = jax.jit(module.apply)(variables, images)
    np.testing.assert_allclose(np.asarray(out), np.asarray(images), atol=1e-5)
    assert params.shape == params_shape
    np.testing.assert_array_equal(np.asarray(variables["params"]["regression"]["kernel"]), 0.0)
    np.testing.assert_allclose(np.asarray(variables["params"]["regression"]["bias"]),
                               identity_params(transform))
    target = jnp.roll(images, 1, axis=2)

    def loss(variables_, images_):
        return jnp.mean((module.apply(variables_, images_)[0] - target) ** 2)

    grad_vars, grad_images = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, images)
    leaves = jax.tree_util.tree_leaves(grad_vars) + [grad_images]
    assert all(np.isfinite(leaf).all() for leaf in leaves)
    assert np.abs(grad_vars["params"]["regression"]["kernel"]).max() > 0
    assert np.abs(grad_images).max() > 0


def test_module_output_size_and_unknown_transform():
    images = jnp.zeros((1, 8, 8, 3))
    module = SpatialTransformer(localization=_FlattenDense(), output_hw=(4, 6))
    out, _ = jax.jit(module.init_with_output)(jax.random.key(0), images)[0]
    assert out.shape == (1, 4, 6, 3)
    with pytest.raises(ValueError, match="affine, projective, tps"):
        SpatialTransformer(localization=_FlattenDense(), transform="similarity").init(
            jax.random.key(0), images)


def test_module_learns_to_undo_translations():
    """End to end: the grid gradient alone teaches the localisation net to re-centre a blob."""
    optax = pytest.importorskip("optax")
    size = 16
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-((xx - 7.5) ** 2 / 8 + (yy - 7.5) ** 2 / 3))[None, :, :, None].astype(np.float32)
    theta = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]], np.float32), (64, 1, 1))
    theta[:, :, 2] = np.random.default_rng(1).uniform(-0.3, 0.3, size=(64, 2))
    shifted = jax.jit(lambda t: bilinear_sample(jnp.tile(blob, (64, 1, 1, 1)),
                                                affine_grid(t, (size, size))))(theta)
    module = SpatialTransformer(localization=_FlattenDense(), transform="affine")
    variables = jax.jit(module.init)(jax.random.key(0), shifted)
    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(variables_, opt_state_):
        loss, grads = jax.value_and_grad(
            lambda v: jnp.mean((module.apply(v, shifted)[0] - blob) ** 2))(variables_)
        updates, opt_state_ = optimizer.update(grads, opt_state_, variables_)
        return optax.apply_updates(variables_, updates), opt_state_, loss

    opt_state = optimizer.init(variables)
    variables, opt_state, first_loss = step(variables, opt_state)
    for _ in range(60):
        variables, opt_state, loss = step(variables, opt_state)
    assert float(loss) < 0.1 * float(first_loss)

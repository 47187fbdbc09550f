"""The superpixel vote against a direct numpy loop over scikit-image's segments, and the YUV
conversion and local contrast normalization of Farabet et al.'s input against scikit-image and
scipy."""
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from skimage.color import rgb2yuv

from segattn_jax.layers.normalization import local_contrast_norm
from segattn_jax.ops.images import rgb_to_yuv
from segattn_jax.ops.superpixels import felzenszwalb_segments, superpixel_vote


def test_vote_gives_each_segment_the_argmax_of_its_mean_distribution():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 24, 20, 3))
    images[:, :, 10:] *= 0.2  # two halves that the segmentation separates
    segments = np.stack([felzenszwalb_segments(im, 50.0, 0.5, 10) for im in images])
    assert 1 < segments[0].max() < 24 * 20
    probabilities = rng.dirichlet(np.ones(5), size=(2, 24, 20)).astype(np.float32)
    voted = np.asarray(superpixel_vote(jnp.asarray(probabilities), jnp.asarray(segments)))
    for n in range(2):
        for s in np.unique(segments[n]):
            inside = segments[n] == s
            expected = np.argmax(probabilities[n][inside].mean(0))
            assert np.all(voted[n][inside] == expected)
    with pytest.raises(ValueError, match=r"segments must be \(N, H, W\)"):
        superpixel_vote(jnp.asarray(probabilities), jnp.asarray(segments[0]))


def test_rgb_to_yuv_is_scikit_images():
    rgb = np.random.default_rng(1).uniform(size=(4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(rgb_to_yuv(jnp.asarray(rgb)), rgb2yuv(rgb), atol=1e-6)


def test_local_contrast_norm_matches_scipy_gaussian_filtering():
    """scipy's Gaussian filter (zero padding, the same 15-tap window) renormalized at the border
    by the window mass inside the image, centred, divided by the local deviation floored at its
    image mean."""
    x = np.random.default_rng(2).uniform(size=(2, 20, 23, 1)).astype(np.float32)
    x[1, :, :8] = 0.5  # a flat region: the floor keeps it from being amplified
    sigma, size = 15 / 4, 15

    def blur(a):
        return scipy.ndimage.gaussian_filter(a, sigma, mode="constant", truncate=(size // 2) / sigma)

    expected = []
    for image in x[..., 0].astype(np.float64):
        mass = blur(np.ones_like(image))
        centred = image - blur(image) / mass
        deviation = np.sqrt(blur(centred ** 2) / mass)
        expected.append(centred / np.maximum(deviation, deviation.mean()))
    np.testing.assert_allclose(local_contrast_norm(jnp.asarray(x))[..., 0], np.stack(expected),
                               atol=2e-4)

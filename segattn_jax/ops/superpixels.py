"""Superpixels and the vote inside them (Farabet et al. 2013, Sec. 4.1): each superpixel takes
the class of the average of its pixels' predicted class distributions.

The segments come from the input pipeline (scikit-image's Felzenszwalb-Huttenlocher graph
segmentation, on the host, like the R-CNN family's proposals); the vote runs on the device
inside the jitted prediction, as a segment sum.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def felzenszwalb_segments(image: np.ndarray, scale: float, sigma: float,
                          min_size: int) -> np.ndarray:
    """(H, W) int32 segment ids 0..S-1 of an (H, W, 3) image in [0, 1]."""
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(np.asarray(image, np.float64), scale=scale, sigma=sigma,
                        min_size=min_size).astype(np.int32)


def superpixel_vote(probabilities: jax.Array, segments: jax.Array) -> jax.Array:
    """Labels (N, H, W): per image, the argmax of the mean class distribution over each
    segment's pixels, given probabilities (N, H, W, K) and segment ids (N, H, W) in [0, H*W)."""
    n, height, width, classes = probabilities.shape
    if segments.shape != (n, height, width):
        raise ValueError(f"segments must be (N, H, W) = {(n, height, width)}; got "
                         f"{segments.shape}.")

    def one_image(p, s):
        ids = s.reshape(-1)
        totals = jax.ops.segment_sum(p.reshape(-1, classes), ids, num_segments=height * width)
        return jnp.argmax(totals, axis=-1)[ids].reshape(height, width)

    return jax.vmap(one_image)(probabilities.astype(jnp.float32), segments).astype(jnp.int32)

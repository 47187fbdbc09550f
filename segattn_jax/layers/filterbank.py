"""DRAW's selective attention (Gregor et al. 2015): an N x N grid of Gaussian filters.

One linear layer of the decoder state gives five numbers per image, (g~X, g~Y, log sigma^2,
log delta~, log gamma), which place the grid: centre gX = (A + 1)/2 (g~X + 1) (likewise gY with B),
stride delta = (max(A, B) - 1)/(N - 1) delta~, so g~ = 0, delta~ = 1 spans the whole image. Filter
i's mean is mu_X^i = gX + (i - N/2 - 0.5) delta (i = 1..N), and the horizontal filterbank
F_X[i, a] = exp(-(a - mu_X^i)^2 / (2 sigma^2)) / Z_X with each row summing to one (a = pixel
column). Reading is gamma F_Y x F_X^T (an N x N glimpse); writing is (1/gamma) F_Y^T w F_X
(an N x N patch spread over the canvas). Everything is differentiable in the five numbers, so
where to look is learned by backpropagation, with no REINFORCE.

Pixels are numbered a = 1..A, as the formulas imply: with g~ = 0, delta~ = 1 and N = A the
means fall exactly on them (mu^i = i), so a sharp full-size glimpse is the image itself (tested).
Numbering them 0..A-1, as some reimplementations do, shifts every window by one pixel.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Window(NamedTuple):
    """Where one glimpse looks, in pixels: centre (gx, gy), stride delta between filter means,
    the filters' variance sigma2, and the intensity gamma. Each (B,)."""
    gx: jax.Array
    gy: jax.Array
    delta: jax.Array
    sigma2: jax.Array
    gamma: jax.Array


def window_from_params(params: jax.Array, size: int, height: int, width: int) -> Window:
    """The paper's placement: (B, 5) raw outputs (g~X, g~Y, log sigma^2, log delta~, log gamma)
    -> a Window for an N = `size` grid over a height x width image."""
    params = params.astype(jnp.float32)
    gx_, gy_, log_sigma2, log_delta_, log_gamma = jnp.moveaxis(params, -1, 0)
    gx = (width + 1) / 2 * (gx_ + 1)
    gy = (height + 1) / 2 * (gy_ + 1)
    delta = (max(height, width) - 1) / max(size - 1, 1) * jnp.exp(log_delta_)
    return Window(gx, gy, delta, jnp.exp(log_sigma2), jnp.exp(log_gamma))


def filterbank(window: Window, size: int, height: int, width: int
               ) -> tuple[jax.Array, jax.Array]:
    """The row-normalized filterbanks (F_X (B, N, W), F_Y (B, N, H)) of a window.

    The normalization is a softmax over pixels: the same values as exp(.)/Z, computed without
    underflow, so a filter far outside the image weighs its nearest pixels as the equations do
    instead of dividing 0 by 0 in float32.
    """
    offsets = jnp.arange(size, dtype=jnp.float32) - size / 2 + 0.5  # i - N/2 - 0.5, i = 1..N

    def bank(centre, length):
        means = centre[:, None] + offsets[None, :] * window.delta[:, None]  # (B, N)
        pixels = jnp.arange(1, length + 1, dtype=jnp.float32)
        return jax.nn.softmax(-jnp.square(pixels[None, None, :] - means[:, :, None])
                              / (2 * window.sigma2[:, None, None]), axis=-1)

    return bank(window.gx, width), bank(window.gy, height)


def read_glimpse(images: jax.Array, fx: jax.Array, fy: jax.Array, gamma: jax.Array) -> jax.Array:
    """gamma F_Y x F_X^T per channel: images (B, H, W, C) -> glimpses (B, N, N, C)."""
    glimpse = jnp.einsum("bnh,bhwc,bmw->bnmc", fy, images.astype(jnp.float32), fx)
    return gamma[:, None, None, None] * glimpse


def write_patch(patch: jax.Array, fx: jax.Array, fy: jax.Array, gamma: jax.Array) -> jax.Array:
    """(1/gamma) F_Y^T w F_X per channel: patches (B, N, N, C) -> canvas updates (B, H, W, C)."""
    update = jnp.einsum("bnh,bnmc,bmw->bhwc", fy, patch.astype(jnp.float32), fx)
    return update / gamma[:, None, None, None]


def covering_params(size: int, height: int, width: int, write: bool = False) -> jax.Array:
    """Raw window parameters (5,) whose N x N grid covers the image evenly: the filter means at
    the centres of N equal strips (stride L / N, L the longer side) and sigma half that stride.
    For writing, gamma is also set so that a patch value of 1 paints about 1 at its filter's
    centre: a normalized filter spreads its value over ~2 pi sigma^2 pixels, and the written
    patch is divided by gamma.

    The paper does not give its initialization. With the layer's bias at zero the grid spans
    the image corner to corner (delta~ = 1), which for a 2x2 read puts the four filters on the
    corner pixels, where digits have no ink, and a write paints a patch value v as about
    v / (2 pi) per pixel; DRAW's mini row then settled on an empty posterior (KL -> 0, README).
    """
    longer = max(height, width)
    stride = longer / size
    log_sigma2 = 2 * jnp.log(stride / 2)
    log_delta = jnp.log(stride * max(size - 1, 1) / (longer - 1))
    log_gamma = -(jnp.log(2 * jnp.pi) + log_sigma2) if write else 0.0
    return jnp.array([0.0, 0.0, log_sigma2, log_delta, log_gamma], jnp.float32)


class GaussianWindow(nn.Module):
    """The linear layer that places an N x N filter grid from a recurrent state (B, D), returning
    its Window and filterbanks (F_X, F_Y) for a height x width image. Its bias starts at
    `covering_params`.

    Attributes:
      size: N, the grid's side.
      write: a write window (its initial gamma scales patches to the image's values).
      dtype: compute dtype of the linear layer; the window itself is float32.
    """

    size: int
    write: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, state: jax.Array, height: int, width: int
                 ) -> tuple[Window, jax.Array, jax.Array]:
        bias = covering_params(self.size, height, width, self.write)
        params = nn.Dense(5, dtype=self.dtype, bias_init=lambda *_: bias, name="params")(state)
        window = window_from_params(params, self.size, height, width)
        fx, fy = filterbank(window, self.size, height, width)
        return window, fx, fy

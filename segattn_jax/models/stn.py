"""Spatial Transformer Networks on distorted MNIST (Jaderberg et al., NIPS 2015, §4.1, Table 1).

One module, `STNClassifier`, covers every row of the paper's distorted-MNIST table:
- base='fcn': a fully-connected net, two ReLU hidden layers + softmax layer (three weight layers);
- base='cnn': conv 9x9 -> max-pool 2 -> conv 7x7 -> max-pool 2 -> softmax layer (three weight
  layers, two max-pooling layers), ReLU, 'VALID' convolutions;
- transform=None gives the baseline (FCN / CNN); 'affine' | 'projective' | 'tps' inserts one
  spatial transformer acting on the *input*, before the classification network (ST-FCN / ST-CNN).
  ST-FCN uses a fully-connected localisation net (3 x 32 units), ST-CNN a convolutional one
  (max-pool 2, conv 5x5x20, max-pool 2, conv 5x5x20, FC 20). TPS uses 16 control points (4x4).

Paper sizes are defaults. The paper sizes each base net so that all models have about the same
number of parameters (FCN hidden layers 128-256 units, CNN layers 32-64 filters); the defaults take
the upper end. `width` scales every hidden size (classifier and localisation net) for quick CPU
runs. Inputs: (N, 28, 28, 1) for R, P, E; (N, 42, 42, 1) for RTS; values in [0, 1].

The transformed images are sown as ('intermediates', 'transformed') and the transform parameters
as ('intermediates', 'transform_params') for pictures: apply with `mutable=['intermediates']`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segattn_jax.layers.conv import Conv
from segattn_jax.layers.pooling import max_pool
from segattn_jax.layers.spatial_transformer import TRANSFORMS, SpatialTransformer

BASES = ("fcn", "cnn")


def _scaled(sizes: Sequence[int], width: float) -> tuple[int, ...]:
    return tuple(max(1, round(size * width)) for size in sizes)


def _check_spatial(images: jax.Array, minimum: int, what: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{what} expects images (N, H, W, C), got shape {images.shape}.")
    if min(images.shape[1:3]) < minimum:
        raise ValueError(f"{what} needs images of at least {minimum}x{minimum} (its 'VALID' "
                         f"convolutions and poolings shrink them), got {images.shape[1:3]}; use "
                         "base='fcn' or a larger input / spatial-transformer output size.")


class FCNLocalization(nn.Module):
    """ST-FCN localisation net: flatten, then ReLU fully-connected layers (paper: 3 x 32 units)."""

    units: Sequence[int] = (32, 32, 32)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.reshape(images.shape[0], -1).astype(self.dtype)
        for size in self.units:
            x = nn.relu(nn.Dense(size, dtype=self.dtype)(x))
        return x


class CNNLocalization(nn.Module):
    """ST-CNN localisation net: max-pool 2, conv 5x5, max-pool 2, conv 5x5, FC, all ReLU.

    The first pooling halves the input: a coarse view is enough to estimate a pose, and it keeps
    the localisation net cheap next to the classifier.
    """

    filters: Sequence[int] = (20, 20)
    units: int = 20
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        _check_spatial(images, 28, "CNNLocalization")
        x = max_pool(images.astype(self.dtype), 2, 2)
        x = nn.relu(Conv(self.filters[0], (5, 5), padding="VALID", dtype=self.dtype)(x))
        x = max_pool(x, 2, 2)
        x = nn.relu(Conv(self.filters[1], (5, 5), padding="VALID", dtype=self.dtype)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.relu(nn.Dense(self.units, dtype=self.dtype)(x))


class STNClassifier(nn.Module):
    """FCN / CNN digit classifier with an optional spatial transformer on its input.

    Attributes:
      base: 'fcn' or 'cnn' (classification network).
      transform: None (baseline), 'affine', 'projective' or 'tps'.
      num_classes: output logits.
      width: multiplies every hidden size (classifier and localisation net); 1.0 = paper sizes.
      fcn_units: hidden units of the FCN classifier.
      cnn_filters: filters of the two CNN classifier convolutions (9x9 then 7x7).
      loc_fcn_units: ST-FCN localisation layers.
      loc_cnn_filters, loc_cnn_units: ST-CNN localisation convolutions and FC layer.
      transformer_output_hw: (h, w) the transformer samples; None keeps the input size.
      tps_grid_size: TPS control grid side (4 -> 16 points).
      dtype: compute dtype (params stay float32; logits are returned as float32).
    """

    base: str = "cnn"
    transform: str | None = None
    num_classes: int = 10
    width: float = 1.0
    fcn_units: Sequence[int] = (256, 256)
    cnn_filters: Sequence[int] = (64, 64)
    loc_fcn_units: Sequence[int] = (32, 32, 32)
    loc_cnn_filters: Sequence[int] = (20, 20)
    loc_cnn_units: int = 20
    transformer_output_hw: tuple[int, int] | None = None
    tps_grid_size: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        """images (N, H, W, C) in [0, 1] -> logits (N, num_classes).

        `train` is accepted for the uniform task interface; the paper's models use neither dropout
        nor batch norm, so it changes nothing.
        """
        del train
        if self.base not in BASES:
            raise ValueError(f"Unknown base {self.base!r}; valid bases: {', '.join(BASES)}.")
        if self.transform is not None and self.transform not in TRANSFORMS:
            raise ValueError(f"Unknown transform {self.transform!r}; valid transforms: None, "
                             f"{', '.join(TRANSFORMS)}.")
        if images.ndim != 4:
            raise ValueError(f"STNClassifier expects images (N, H, W, C), got {images.shape}.")
        x = images.astype(self.dtype)
        if self.transform is not None:
            x = self._transform(x)
        if self.base == "fcn":
            x = x.reshape(x.shape[0], -1)
            for size in _scaled(self.fcn_units, self.width):
                x = nn.relu(nn.Dense(size, dtype=self.dtype)(x))
        else:
            _check_spatial(x, 24, "The CNN classifier")
            filters = _scaled(self.cnn_filters, self.width)
            for size, kernel in zip(filters, (9, 7)):
                x = Conv(size, (kernel, kernel), padding="VALID", dtype=self.dtype)(x)
                x = nn.relu(max_pool(x, 2, 2))
            x = x.reshape(x.shape[0], -1)
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)

    def _transform(self, x: jax.Array) -> jax.Array:
        # parent=None: the localisation net is adopted by the transformer, so its params live
        # under spatial_transformer/localization next to the regression layer.
        if self.base == "fcn":
            localization = FCNLocalization(_scaled(self.loc_fcn_units, self.width),
                                           dtype=self.dtype, parent=None)
        else:
            localization = CNNLocalization(_scaled(self.loc_cnn_filters, self.width),
                                           _scaled((self.loc_cnn_units,), self.width)[0],
                                           dtype=self.dtype, parent=None)
        transformed, params = SpatialTransformer(
            localization=localization, transform=self.transform,
            output_hw=self.transformer_output_hw, tps_grid_size=self.tps_grid_size,
            dtype=self.dtype, name="spatial_transformer")(x)
        self.sow("intermediates", "transformed", transformed)
        self.sow("intermediates", "transform_params", params)
        return transformed

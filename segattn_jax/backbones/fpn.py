"""Feature Pyramid Network (Lin, Dollár, Girshick, He, Hariharan & Belongie, CVPR 2017) on a
ResNet: the backbone's stage outputs C2..C5 (strides 4..32) merged top-down into P2..P5 of one
width, plus P6 for the RPN's largest anchors.

Each level: a 1x1 lateral conv of C_k plus the 2x nearest-upsampled P_{k+1}, then a 3x3 conv
(against the upsampling's aliasing); P6 subsamples P5 by 2 (the paper's stride-2 "max pooling"
of a 1x1 window). Mask R-CNN (He et al. 2017) uses exactly this pyramid.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.backbones.resnet import KERAS_BN_MOMENTUM, ResNet
from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.upsampling import nearest_upsample

Array = Any
PYRAMID_LEVELS = ("p2", "p3", "p4", "p5", "p6")
LEVEL_STRIDES = (4, 8, 16, 32, 64)


class FPN(nn.Module):
    """The top-down pathway and lateral connections: C2..C5 (fine to coarse) -> P2..P6."""

    features: int = 256
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: Sequence[Array]) -> list[Array]:
        # The paper's convs have no nonlinearity; Detectron's init: unit-variance fan-in.
        init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
        laterals = [Conv(self.features, (1, 1), kernel_init=init, dtype=self.dtype,
                         param_dtype=jnp.float32, name=f"lateral_c{k}")(c)
                    for k, c in enumerate(levels, start=2)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            upsampled = nearest_upsample(merged[0], 2)[:, :lateral.shape[1], :lateral.shape[2]]
            merged.insert(0, lateral + upsampled)
        outputs = [Conv(self.features, (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                        param_dtype=jnp.float32, name=f"output_p{k}")(p)
                   for k, p in enumerate(merged, start=2)]
        return outputs + [outputs[-1][:, ::2, ::2]]


class ResNetFPN(nn.Module):
    """A ResNet or ResNeXt (`backbones.resnet`, without its classifier) and an FPN on its
    conv2..conv5.

    images (N, H, W, 3) -> (P6, {"p2".."p6", and the ResNet's intermediates}); H and W should be
    multiples of 32 so every level halves exactly (the detection preprocess's canvas).
    """

    depth: int = 50
    width: float = 1.0
    fpn_features: int = 256
    stride_in_1x1: bool = True
    frozen_bn: bool = False
    bn_momentum: float = KERAS_BN_MOMENTUM
    dtype: Any = jnp.float32
    groups: int = 1
    width_per_group: int = 64

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> tuple[Array, dict[str, Array]]:
        _, intermediates = ResNet(self.depth, num_classes=0, width=self.width,
                                  stride_in_1x1=self.stride_in_1x1, frozen_bn=self.frozen_bn,
                                  bn_momentum=self.bn_momentum, dtype=self.dtype,
                                  groups=self.groups, width_per_group=self.width_per_group,
                                  name="resnet")(images, train=train)
        pyramid = FPN(scaled_features(self.fpn_features, self.width), self.dtype, name="fpn")(
            [intermediates[f"conv{k}"] for k in range(2, 6)])
        intermediates.update(zip(PYRAMID_LEVELS, pyramid))
        return pyramid[-1], intermediates

"""ResNet-50/101 (He, Zhang, Ren & Sun 2016), bottleneck version, as the released weights lay it
out, and ResNeXt (Xie, Girshick, Dollár, Tu & He 2017): the same net with grouped 3x3 convs.

Layer names follow Keras' `keras.applications` ResNet (`conv3_block2` holding `conv_1..3`/`bn_1..3`,
`conv_0`/`bn_0` for the projection shortcut), the stage outputs conv2..conv5 are the intermediates
that detectors and FPN tap (strides 4, 8, 16, 32). Two layouts of the released weights exist:
the original MSRA/Caffe one (Keras, Detectron) strides the first 1x1 conv of a stage, torchvision's
"v1.5" strides the 3x3; `stride_in_1x1` picks. `frozen_bn` is the detection papers' frozen batch
norm (`layers.normalization.FrozenBatchNorm`). ResNeXt-101 32x8d (`groups=32, width_per_group=8`,
Mask R-CNN's X-101 backbone) widens each bottleneck to groups x width_per_group x (stage width /
64) channels, torchvision's and Detectron's rule, and keeps 4 x the stage width at its output.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax import compilation
from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers.conv import ConvBN
from segattn_jax.layers.pooling import max_pool

Array = Any
# Bottleneck blocks per stage conv2..conv5. 26 (two blocks a stage, no released weights) is the
# slim CPU ResNet of the mini rows.
RESNET_DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck width; the block outputs 4x this
KERAS_BATCH_NORM = dict(use_scale=True, epsilon=1.001e-5)
KERAS_BN_MOMENTUM = 0.99  # Keras' running-average momentum; PyTorch's is 0.9 in these terms


class Bottleneck(nn.Module):
    """1x1 (width) -> 3x3 (width, in `groups`) -> 1x1 (out_features, 4 x width when 0), plus the
    shortcut, then ReLU."""

    width: int
    strides: int = 1
    stride_in_1x1: bool = True
    frozen_bn: bool = False
    bn_momentum: float = KERAS_BN_MOMENTUM
    dtype: Any = jnp.float32
    groups: int = 1
    out_features: int = 0

    def _conv_bn(self, features, kernel, strides, padding, index, activation=True, groups=1):
        return ConvBN(features, (kernel, kernel), strides, padding, activation=activation,
                      frozen_bn=self.frozen_bn, dtype=self.dtype, name=f"conv_bn_{index}",
                      momentum=self.bn_momentum, groups=groups, **KERAS_BATCH_NORM)

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        out_features = self.out_features or 4 * self.width
        shortcut = x
        if x.shape[-1] != out_features or self.strides != 1:
            shortcut = self._conv_bn(out_features, 1, self.strides, "VALID", 0,
                                     activation=False)(x, train=train)
        first, middle = (self.strides, 1) if self.stride_in_1x1 else (1, self.strides)
        y = self._conv_bn(self.width, 1, first, "VALID", 1)(x, train=train)
        y = self._conv_bn(self.width, 3, middle, ((1, 1), (1, 1)), 2, groups=self.groups)(
            y, train=train)
        y = self._conv_bn(out_features, 1, 1, "VALID", 3, activation=False)(y, train=train)
        # The stream: on CPU written once per block (compilation.fusion_boundary_on_cpu).
        return compilation.fusion_boundary_on_cpu(nn.relu(shortcut + y))


class ResNet(nn.Module):
    """ResNet-50/101/152 (bottleneck blocks), Keras/MSRA layer layout.

    Attributes:
      depth: 50, 101 or 152 (or 26, for mini rows).
      num_classes: ImageNet classifier after global average pooling ("predictions"); 0 leaves it
        out and returns the conv5 map.
      width: multiplier on every channel count, for slim CPU variants.
      stride_in_1x1: True for MSRA/Keras/Detectron weights, False for torchvision's.
      frozen_bn: batch norm frozen to the stored statistics (detection fine-tuning).
      bn_momentum: of the running statistics; Keras' 0.99 averages over ~100 steps, too slow
        for a short run from scratch (PyTorch's 0.9).
      last_stage: stop after this stage ("conv4" gives the stride-16 map of Faster R-CNN's C4);
        a call may stop earlier, or start later (`__call__`'s `stages`).
      dtype: compute dtype; parameters stay float32.
      groups / width_per_group: ResNeXt's cardinality and channels per group at the first
        stage (32 / 8 for X-101 32x8d); 1 / 64 is ResNet.
    """

    depth: int = 50
    num_classes: int = 1000
    width: float = 1.0
    stride_in_1x1: bool = True
    frozen_bn: bool = False
    bn_momentum: float = KERAS_BN_MOMENTUM
    last_stage: str = "conv5"
    dtype: Any = jnp.float32
    groups: int = 1
    width_per_group: int = 64

    @nn.compact
    def __call__(self, x: Array, *, train: bool, stages: tuple[str, str] | None = None
                 ) -> tuple[Array, dict[str, Array]]:
        """Images (N, H, W, 3) -> (logits or the last map, {conv1, pool1, conv2..conv5,
        "pre_logits"}).

        `stages` = (first, last), e.g. ("conv1", "conv4") then ("conv5", "conv5"), runs part of
        the network per call, with the same variables: Mask R-CNN's C4 variant runs conv5 on
        each RoI's pooled conv4 features (x is then that stage's input). Default: ("conv1",
        last_stage). The ImageNet head runs only after a call that ends at conv5.
        """
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}; got "
                             f"{self.depth}.")
        names = [f"conv{i}" for i in range(1, 6)]
        if self.last_stage not in names[1:]:
            raise ValueError(f"last_stage must be one of {names[1:]}; got {self.last_stage!r}.")
        first, last = stages or ("conv1", self.last_stage)
        if (first not in names or last not in names[1:]
                or not names.index(first) <= names.index(last) <= names.index(self.last_stage)):
            raise ValueError(f"stages must be (first, last) with conv1 <= first <= last <= "
                             f"last_stage={self.last_stage!r}, last >= conv2; got {stages}.")
        if x.ndim != 4:
            raise ValueError(f"ResNet expects images of shape (N, H, W, C); got {x.shape}.")
        inner = [scaled_features(width * self.width_per_group // 64 * self.groups, self.width)
                 for width in _STAGE_WIDTHS]
        if any(features % self.groups for features in inner):
            raise ValueError(f"groups={self.groups} must divide every bottleneck's width "
                             f"{inner} (width multiplier {self.width}); pick a width that keeps "
                             f"them multiples of it.")
        x = x.astype(self.dtype)
        intermediates = {}
        if first == "conv1":
            x = ConvBN(scaled_features(64, self.width), (7, 7), 2, ((3, 3), (3, 3)),
                       frozen_bn=self.frozen_bn, dtype=self.dtype, name="conv1",
                       momentum=self.bn_momentum, **KERAS_BATCH_NORM)(x, train=train)
            intermediates["conv1"] = x
            x = max_pool(x, 3, 2, padding=((1, 1), (1, 1)))
            intermediates["pool1"] = x
        for stage, (blocks, width, features) in enumerate(
                zip(RESNET_DEPTHS[self.depth], _STAGE_WIDTHS, inner), start=2):
            if stage < names.index(first) + 1:
                continue
            for block in range(1, blocks + 1):
                strides = 2 if block == 1 and stage > 2 else 1
                x = Bottleneck(features, strides, self.stride_in_1x1, self.frozen_bn,
                               self.bn_momentum, self.dtype, self.groups,
                               4 * scaled_features(width, self.width),
                               name=f"conv{stage}_block{block}")(x, train=train)
            intermediates[f"conv{stage}"] = x
            if f"conv{stage}" == last:
                break
        if not self.num_classes or last != "conv5":
            return x, intermediates
        x = jnp.mean(x, axis=(1, 2))
        intermediates["pre_logits"] = x
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                          name="predictions")(x)
        return logits.astype(jnp.float32), intermediates


def resnet50(**kwargs) -> ResNet:
    return ResNet(depth=50, **kwargs)


def resnet101(**kwargs) -> ResNet:
    return ResNet(depth=101, **kwargs)


def resnext101_32x8d(**kwargs) -> ResNet:
    return ResNet(depth=101, groups=32, width_per_group=8, **kwargs)

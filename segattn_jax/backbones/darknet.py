"""YOLO's convolutional network (Redmon et al., CVPR 2016, Figure 3), and the classifier made of
its first layers that the paper pretrains on ImageNet before it adds the detection layers.

The paper: "We pretrain our convolutional layers on the ImageNet 1000-class competition dataset.
For pretraining we use the first 20 convolutional layers from Figure 3 followed by a average-
pooling layer and a fully-connected layer" (88% single-crop top-5 on ILSVRC 2012 val), then "add
four convolutional layers and two fully connected layers with randomly initialized weights".
`yolo_darknet` / `fast_yolo_darknet` are those pretraining networks (as `build_backbone` names,
so `models.classifier.ImageClassifier` trains them); YOLO's `Darknet` has the same variable names,
so `init_from` loads their convolutions into it and leaves the added layers initialized.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.backbones.vgg import scaled_features
from segattn_jax.layers.conv import Conv
from segattn_jax.layers.pooling import max_pool

Array = Any

# (features, kernel, stride) convs and "pool" (2x2/2 max pool). The paper's Figure 3: 24 convs;
# 448 -> 7 through the stride-2 first conv, four pools and one stride-2 conv.
YOLO_LAYERS = (
    (64, 7, 2), "pool",
    (192, 3, 1), "pool",
    (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "pool",
    *((256, 1, 1), (512, 3, 1)) * 4, (512, 1, 1), (1024, 3, 1), "pool",
    *((512, 1, 1), (1024, 3, 1)) * 2, (1024, 3, 1), (1024, 3, 2),
    (1024, 3, 1), (1024, 3, 1),
)
# Fast YOLO: the paper gives "9 convolutional layers instead of 24 and fewer filters"; these
# widths are ours, in the style of Darknet's tiny network (16 doubling per pool up to 1024).
FAST_YOLO_LAYERS = (
    (16, 3, 1), "pool", (32, 3, 1), "pool", (64, 3, 1), "pool", (128, 3, 1), "pool",
    (256, 3, 1), "pool", (512, 3, 1), "pool", (1024, 3, 1), (1024, 3, 1), (256, 3, 1),
)
NETWORKS = {"yolo": YOLO_LAYERS, "fast": FAST_YOLO_LAYERS}
# How many of each network's convs the ImageNet pretraining has: YOLO's paper says 20 of 24.
# Fast YOLO's says only that its training is YOLO's: ours pretrains the 6 convs up to its last
# pool, as YOLO's 20 end before the layers that detection adds at the coarsest resolution.
PRETRAINED_CONVS = {"yolo": 20, "fast": 6}
LEAKY_SLOPE = 0.1


def first_convs(layers: tuple, count: int) -> tuple:
    """`layers` up to and including their `count`-th conv."""
    convs = [i for i, layer in enumerate(layers) if layer != "pool"]
    if not 1 <= count <= len(convs):
        raise ValueError(f"A Darknet of {len(convs)} convs has no first {count}.")
    return layers[:convs[count - 1] + 1]


class Darknet(nn.Module):
    """YOLO's convolutional layers (leaky ReLU 0.1 after each), as a backbone: images ->
    (features (B, h, w, C), {"conv<i>": each conv's output}), or with `num_classes` the
    pretraining classifier's logits (global average pool, one fully connected layer) first.

    `max_stride` caps the total downsampling (64 in the papers' networks: 448 -> 7): the pools
    and stride-2 convs past it are left out (pools) or run at stride 1 (convs), so small inputs
    keep a map of several cells (128 -> 4x4 at 32). He-normal initialization: with the
    default (LeCun) one, 24 layers without batch norm shrink the signal ~2^12-fold.
    """

    layers: tuple = YOLO_LAYERS
    width: float = 1.0
    max_stride: int = 64
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> tuple[Array, dict[str, Array]]:
        del train  # no batch norm or dropout: training and test run alike
        x = x.astype(self.dtype)
        index, total_stride, intermediates = 0, 1, {}
        for layer in self.layers:
            if layer == "pool":
                if total_stride * 2 <= self.max_stride:
                    x = max_pool(x, 2, 2)
                    total_stride *= 2
                continue
            index += 1
            features, kernel, stride = layer
            if total_stride * stride > self.max_stride:
                stride = 1
            total_stride *= stride
            x = Conv(scaled_features(features, self.width), (kernel, kernel), strides=stride,
                     padding=kernel // 2, kernel_init=nn.initializers.he_normal(),
                     dtype=self.dtype, param_dtype=jnp.float32, name=f"conv{index}")(x)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
            intermediates[f"conv{index}"] = x
        if not self.num_classes:
            return x, intermediates
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                          name="fc")(jnp.mean(x, axis=(1, 2)))
        return logits.astype(jnp.float32), intermediates


def yolo_darknet(**kwargs) -> Darknet:
    """YOLO's ImageNet pretraining network: the first 20 of its 24 convs."""
    return Darknet(first_convs(YOLO_LAYERS, PRETRAINED_CONVS["yolo"]), **kwargs)


def fast_yolo_darknet(**kwargs) -> Darknet:
    """Fast YOLO's: its first 6 convs (`PRETRAINED_CONVS`)."""
    return Darknet(first_convs(FAST_YOLO_LAYERS, PRETRAINED_CONVS["fast"]), **kwargs)

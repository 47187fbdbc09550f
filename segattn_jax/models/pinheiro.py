"""The recurrent convolutional network of Pinheiro & Collobert, "Recurrent Convolutional Neural
Networks for Scene Labeling", ICML 2014.

One network f labels the centre pixel of a patch from the patch's RGB values and the class scores
that the previous instance gave its pixels. It is applied `instances` times with the same
weights: instance 1 sees the image and zero scores, instance t the image and instance t-1's
scores, so each instance adds f's context to what the last one saw and can correct its errors
(f, f∘f, f∘f∘f in the paper). Training puts the loss on every instance's output.

f is the paper's network: 8x8 convolutions, 2x2 max pooling and tanh, twice, then a linear
classifier (the widths are this codebase's choice); it is the patch classifier of
models/patch_classifier.py with `hidden=0`. Its pools leave label planes downscaled 4 times; the
paper merges the planes of the shifted inputs back into full resolution, which is what the
convolutionalized patch classifier computes in one pass (pools at stride 1, later layers
dilated: shift-and-stitch, the test of which is the patch classifier's). So every instance gets,
and gives, a score for every pixel.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.models.patch_classifier import PatchClassifier

Array = Any


class RecurrentConvNet(nn.Module):
    """Images (N, H, W, 3) -> every instance's logits, (instances, N, H, W, K); the last is the
    network's answer.

    Attributes:
      num_classes: K.
      instances: how many times f is applied (1, 2, 3: the paper's rows).
      features, fc6_kernel, conv_kernel, pool_window, activation, hidden, dropout_rate: f, as
        PatchClassifier's (the paper's f: 8x8 convolutions, 2x2 pools, tanh and a linear
        classifier, hidden=0).
      feed_probabilities: feed the next instance the previous scores' softmax (True), the
        paper's label predictions, rather than the raw scores.
      dtype: compute dtype; parameters stay float32 and logits are returned in float32.
    """

    num_classes: int
    instances: int = 3
    features: tuple[tuple[int, ...], ...] = ((25,), (50,))
    fc6_kernel: int = 1
    conv_kernel: int = 8
    pool_window: int = 2
    activation: str = "tanh"
    hidden: int = 0
    dropout_rate: float = 0.0
    feed_probabilities: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, *, train: bool) -> Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"RecurrentConvNet expects RGB images (N, H, W, 3); got shape "
                             f"{images.shape}.")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1; got {self.instances}.")
        f = PatchClassifier(self.num_classes, features=tuple(map(tuple, self.features)),
                            fc6_kernel=self.fc6_kernel, conv_kernel=self.conv_kernel,
                            pool_window=self.pool_window, activation=self.activation,
                            hidden=self.hidden, dropout_rate=self.dropout_rate,
                            dtype=self.dtype, name="f")
        images = images.astype(jnp.float32)
        planes = jnp.zeros(images.shape[:3] + (self.num_classes,), jnp.float32)
        outputs = []
        for _ in range(self.instances):
            logits = f(jnp.concatenate([images, planes], axis=-1), train=train)
            outputs.append(logits)
            planes = nn.softmax(logits) if self.feed_probabilities else logits
        return jnp.stack(outputs)

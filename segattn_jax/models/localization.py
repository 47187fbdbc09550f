"""Classification + localization: one network with a class head and a box-regression head.

The lectures' "localization as regression", as VGG's ILSVRC localization net does it (Simonyan &
Zisserman, ICLR 2015, sec. 4.5 and Table 8): VGG16's own fc8 classifier beside a box layer on fc7
that regresses the box as (centre x, centre y, width, height) in units of the image's size, with
a Euclidean loss. The box layer is either single-class regression (SCR: one box shared by every
class, `class_specific=False`) or per-class regression (PCR: one box per class, the box of the
predicted class is the answer). The multitask loss lives in tasks/localization.py.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.backbones import build_backbone
from segattn_jax.backbones.vgg import VGG16

VGG_STRIDE = 32  # pool5's stride: fc6's kernel covers the whole pool5 map (7 at 224)


class ClassLocNet(nn.Module):
    """Images (N, S, S, C) -> {"logits" (N, K), "boxes" (N, K or 1, 4)}.

    Boxes are (centre x, centre y, width, height) as fractions of the image's width and height.

    Attributes:
      num_classes: K.
      class_specific: PCR (a box per class) when true, SCR (one box) when false.
      backbone: 'vgg16' (the paper's: the heads on fc7) or another of
        `segattn_jax.backbones.BACKBONES` (the heads on its last map, averaged over positions).
      input_size: S, a multiple of 32: fc6 is VGG's fully connected layer over the S/32 x S/32
        pool5 map (7x7 at 224), so the net ends in one fc7 vector per image.
      width: VGG16's channel multiplier (fc6/fc7 included), < 1 for slim CPU runs.
      dropout_rate: after fc6 and fc7.
      dtype: compute dtype; parameters stay float32.
    """

    num_classes: int = 1000
    class_specific: bool = False
    backbone: str = "vgg16"
    input_size: int = 224
    width: float = 1.0
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, *, train: bool) -> dict[str, Any]:
        if self.input_size % VGG_STRIDE or images.shape[1:3] != (self.input_size,) * 2:
            raise ValueError(
                f"ClassLocNet takes {self.input_size}x{self.input_size} images (a multiple of "
                f"{VGG_STRIDE}); got {images.shape[1:3]}: set dataset.preprocess.size to "
                "model.input_size, both a multiple of 32.")
        if self.backbone == "vgg16":
            # VGG16's own fc8 classifier, so converted ImageNet weights load into it.
            logits, layers = VGG16(width=self.width, first_padding=1,
                                   fc6_kernel=self.input_size // VGG_STRIDE,
                                   dropout_rate=self.dropout_rate, num_classes=self.num_classes,
                                   dtype=self.dtype, name="backbone")(images, train=train)
            features = layers["fc7"].reshape(images.shape[0], -1)
        else:  # the backbone's last map, averaged over positions, and a new classifier
            last, _ = build_backbone(self.backbone, num_classes=0, width=self.width,
                                     dtype=self.dtype, name="backbone")(images, train=train)
            features = jnp.mean(last.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
            logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc8")(features)
        num_boxes = self.num_classes if self.class_specific else 1
        # Zero weights and a centred half-size box as bias: training starts from the mean
        # answer, not from random boxes whose errors would swamp the class loss.
        boxes = nn.Dense(4 * num_boxes, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                         bias_init=nn.initializers.constant(0.5), name="box")(features)
        return {"logits": logits.astype(jnp.float32),
                "boxes": boxes.astype(jnp.float32).reshape(-1, num_boxes, 4)}

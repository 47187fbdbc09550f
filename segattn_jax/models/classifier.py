"""ImageNet-style classification with any registered backbone and its own classifier head.

The Inception paper's table (Szegedy et al. 2016) compares backbones as classifiers; this model
is that comparison's unit: `backbone` picks the net (`segattn_jax.backbones.BACKBONES`), whose
variables sit under "backbone", so `init_from` loads converted ImageNet weights straight into it.
In training an Inception net's auxiliary classifier output is returned beside the logits
({"logits", "aux_logits"}), and the classification task adds its loss (`task.aux_loss_weight`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segattn_jax.backbones import build_backbone


class ImageClassifier(nn.Module):
    """Attributes:
      backbone: a name in `segattn_jax.backbones.BACKBONES`.
      num_classes: classes of the head (1001 for TF-Slim's ImageNet checkpoints: 0 = background).
      width: channel multiplier of the backbone, for slim CPU variants.
      aux_logits: keep an Inception net's auxiliary classifier (needs 299x299 inputs).
      repeats: an Inception net's number of blocks of each kind (A, B, C or block35/17/8);
        empty for the paper's. Fewer only make small test nets.
      bn_momentum: an Inception net's batch-norm decay (0 keeps TF-Slim's 0.9997).
      dtype: compute dtype; parameters stay float32.
    """

    backbone: str = "inception_v4"
    num_classes: int = 1001
    width: float = 1.0
    aux_logits: bool = True
    repeats: tuple[int, ...] = ()
    bn_momentum: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, *, train: bool):
        kwargs = {}
        if self.backbone.startswith("inception"):
            kwargs["aux"] = self.aux_logits
            if self.repeats:
                kwargs["repeats"] = tuple(self.repeats)
            if self.bn_momentum:
                kwargs["bn_momentum"] = self.bn_momentum
        net = build_backbone(self.backbone, num_classes=self.num_classes, width=self.width,
                             dtype=self.dtype, name="backbone", **kwargs)
        logits, intermediates = net(images, train=train)
        if train and "AuxLogits" in intermediates:
            return {"logits": logits, "aux_logits": intermediates["AuxLogits"]}
        return logits

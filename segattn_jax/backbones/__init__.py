"""Feature extractors, each returning (output, intermediates), picked by name from a config.

`build_backbone("resnet50", num_classes=0, width=0.25)` gives any of them; every backbone takes
`width` (a channel multiplier for slim CPU variants), `dtype` (the compute dtype) and
`num_classes` (its ImageNet classifier head, 0 for none).
"""
from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn

# name -> "module:factory"; imported lazily so a config only pays for the backbone it uses.
BACKBONES = {
    "vgg16": "segattn_jax.backbones.vgg:VGG16",
    "resnet50": "segattn_jax.backbones.resnet:resnet50",
    "resnet101": "segattn_jax.backbones.resnet:resnet101",
    "resnext101_32x8d": "segattn_jax.backbones.resnet:resnext101_32x8d",
    "inception_v4": "segattn_jax.backbones.inception:inception_v4",
    "inception_resnet_v2": "segattn_jax.backbones.inception:inception_resnet_v2",
    "yolo_darknet": "segattn_jax.backbones.darknet:yolo_darknet",
    "fast_yolo_darknet": "segattn_jax.backbones.darknet:fast_yolo_darknet",
}


def build_backbone(backbone: str, **kwargs: Any) -> nn.Module:
    """The backbone registered as `backbone`, built with `kwargs` (its module's fields, `name`
    included)."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone {backbone!r}; valid: {sorted(BACKBONES)}.")
    module_name, factory = BACKBONES[backbone].split(":")
    return getattr(importlib.import_module(module_name), factory)(**kwargs)

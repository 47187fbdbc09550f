"""One file per paper. `build_model(config.model)` maps an experiment's model config to a module."""
from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

# name -> "module:Class"; imported lazily so a config only pays for the model it uses.
MODELS = {
    "fcn": "segattn_jax.models.fcn:FCN",
    "patch_classifier": "segattn_jax.models.patch_classifier:PatchClassifier",
    "farabet": "segattn_jax.models.farabet:MultiscaleConvNet",
    "pinheiro": "segattn_jax.models.pinheiro:RecurrentConvNet",
    "deconvnet": "segattn_jax.models.deconvnet:DeconvNet",
    "edeconvnet": "segattn_jax.models.deconvnet:EDeconvNet",
    "stn": "segattn_jax.models.stn:STNClassifier",
    "classifier": "segattn_jax.models.classifier:ImageClassifier",
    "classloc": "segattn_jax.models.localization:ClassLocNet",
    "deeppose": "segattn_jax.models.deeppose:DeepPose",
    "rcnn": "segattn_jax.models.rcnn:RCNN",
    "fast_rcnn": "segattn_jax.models.fast_rcnn:FastRCNN",
    "faster_rcnn": "segattn_jax.models.faster_rcnn:FasterRCNN",
    "mask_rcnn": "segattn_jax.models.mask_rcnn:MaskRCNN",
    "mnc": "segattn_jax.models.mnc:MNC",
    "sds": "segattn_jax.models.sds:SDS",
    "yolo": "segattn_jax.models.yolo:YOLO",
    "ssd": "segattn_jax.models.ssd:SSD",
    "show_attend_tell": "segattn_jax.models.show_attend_tell:ShowAttendTell",
    "densecap": "segattn_jax.models.densecap:DenseCap",
    "draw": "segattn_jax.models.draw:DRAW",
    "draw_classifier": "segattn_jax.models.draw:DrawClassifier",
    "rnnsearch": "segattn_jax.models.rnnsearch:RNNSearch",
    "handwriting": "segattn_jax.models.handwriting:HandwritingNet",
}


def compute_dtype(name: str) -> jnp.dtype:
    """A model's compute dtype from its config: a dtype name, or 'auto' = bfloat16 on GPU/TPU
    (their matrix units' native type) and float32 on CPU. Parameters stay float32 either way."""
    if name == "auto":
        return jnp.dtype(jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32)
    return jnp.dtype(name)


def build_model(config: ml_collections.ConfigDict, **derived) -> nn.Module:
    """`config.name` picks the class; every other field is a constructor argument, as are
    `derived` ones that the task computes from the data (a captioning vocabulary's size)."""
    if config.name not in MODELS:
        raise ValueError(f"Unknown model.name {config.name!r}; valid: {sorted(MODELS)}.")
    module_name, class_name = MODELS[config.name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    kwargs = {**{k: v for k, v in config.items() if k != "name"}, **derived}
    if "dtype" in kwargs:
        kwargs["dtype"] = compute_dtype(kwargs["dtype"])
    fields = sorted(f for f in cls.__dataclass_fields__ if f not in ("parent", "name"))
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(f"model.name={config.name!r} ({class_name}) has no field(s) {unknown}; "
                         f"valid: {fields}.")
    return cls(**kwargs)

"""Tasks wire models to losses, metrics, predictions and pictures; `build_task` picks one.

A task's module is imported when a config names it, so a task whose data needs TensorFlow
(captioning, translation, handwriting) does not make every other task import it: a segmentation or
detection train step runs where only JAX is installed (a GPU box without TensorFlow).
"""
from __future__ import annotations

import importlib

import ml_collections

from segattn_jax.tasks.base import Task

# task.name -> "module:class" under segattn_jax.tasks
TASKS: dict[str, str] = {
    "segmentation": "segmentation:SegmentationTask",
    "patch_segmentation": "segmentation:PatchClassifierTask",
    "recurrent_segmentation": "segmentation:RecurrentSegmentationTask",
    "proposal_segmentation": "segmentation:ProposalSegmentationTask",
    "classification": "classification:ClassificationTask",
    "detection": "detection:DetectionTask",
    "instance_segmentation": "instance_segmentation:InstanceSegmentationTask",
    "localization": "localization:LocalizationTask",
    "pose": "pose:PoseTask",
    "captioning": "captioning:CaptioningTask",
    "dense_captioning": "dense_captioning:DenseCaptioningTask",
    "generation": "generation:GenerationTask",
    "translation": "translation:TranslationTask",
    "handwriting": "handwriting:HandwritingTask",
}


def task_class(name: str) -> type[Task]:
    """The Task subclass registered as `name`, its module imported on first use."""
    if name not in TASKS:
        raise ValueError(f"Unknown task.name {name!r}; valid: {sorted(TASKS)}.")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(f"segattn_jax.tasks.{module}"), cls)


def build_task(config: ml_collections.ConfigDict) -> Task:
    return task_class(config.task.name)(config)

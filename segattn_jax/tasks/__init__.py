"""Tasks wire models to losses, metrics, predictions and pictures; `build_task` picks one."""
from __future__ import annotations

import ml_collections

from segattn_jax.tasks.base import Task
from segattn_jax.tasks.captioning import CaptioningTask
from segattn_jax.tasks.classification import ClassificationTask
from segattn_jax.tasks.dense_captioning import DenseCaptioningTask
from segattn_jax.tasks.detection import DetectionTask
from segattn_jax.tasks.generation import GenerationTask
from segattn_jax.tasks.handwriting import HandwritingTask
from segattn_jax.tasks.instance_segmentation import InstanceSegmentationTask
from segattn_jax.tasks.localization import LocalizationTask
from segattn_jax.tasks.pose import PoseTask
from segattn_jax.tasks.segmentation import (PatchClassifierTask, ProposalSegmentationTask,
                                            RecurrentSegmentationTask, SegmentationTask)
from segattn_jax.tasks.translation import TranslationTask

TASKS: dict[str, type[Task]] = {
    "segmentation": SegmentationTask,
    "patch_segmentation": PatchClassifierTask,
    "recurrent_segmentation": RecurrentSegmentationTask,
    "proposal_segmentation": ProposalSegmentationTask,
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "instance_segmentation": InstanceSegmentationTask,
    "localization": LocalizationTask,
    "pose": PoseTask,
    "captioning": CaptioningTask,
    "dense_captioning": DenseCaptioningTask,
    "generation": GenerationTask,
    "translation": TranslationTask,
    "handwriting": HandwritingTask,
}


def build_task(config: ml_collections.ConfigDict) -> Task:
    if config.task.name not in TASKS:
        raise ValueError(f"Unknown task.name {config.task.name!r}; valid: {sorted(TASKS)}.")
    return TASKS[config.task.name](config)

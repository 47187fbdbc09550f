"""A task = model + loss + eval statistics + predictions + pictures, for one kind of problem.

The train loop (train/loop.py) only talks to this interface, so nothing paper-specific lives there.
Traced methods (`loss`, `predict`, `statistics`) run inside `jax.jit` on global sharded batches;
host methods (`summarize`, `pictures`) get numpy.
"""
from __future__ import annotations

import abc
import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from segattn_jax.models import build_model

Batch = dict[str, Any]


class Task(abc.ABC):
    """Subclasses set `preprocess` (a name in data.preprocess.PREPROCESSORS) and implement the rest."""

    preprocess: str
    any_input_size = False  # True for fully convolutional models (predict accepts any H x W)

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.model: nn.Module = build_model(config.model)

    @functools.cached_property
    def class_names(self) -> tuple[str, ...]:
        """The dataset's names for this task's labels (pictures name classes with them)."""
        from segattn_jax.data import pipeline  # TensorFlow: only when pictures are drawn

        return pipeline.label_names(self.config.dataset.name, self.preprocess,
                                    self.config.dataset.data_dir)

    def init_params(self, rng: jax.Array, images: jax.Array) -> Any:
        return self.model.init({"params": rng}, images, train=False)["params"]

    @abc.abstractmethod
    def loss(self, params: Any, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training loss (scalar) and per-step scalar metrics to log."""

    @abc.abstractmethod
    def predict(self, params: Any, images: jax.Array) -> dict[str, jax.Array]:
        """Per-example outputs used for eval statistics, pictures and the `predict` command."""

    @abc.abstractmethod
    def statistics(self, batch: Batch, predictions: dict[str, jax.Array]) -> Any:
        """Sufficient statistics of one batch (respecting batch['valid']); summed over the eval set."""

    @abc.abstractmethod
    def summarize(self, statistics: Any) -> dict[str, float]:
        """Final metrics (in percent, as papers report them) from statistics summed over the eval set."""

    @abc.abstractmethod
    def pictures(self, batch: dict[str, np.ndarray], predictions: dict[str, np.ndarray]) -> np.ndarray:
        """One uint8 RGB grid, a row per example: input | ground truth | prediction ..."""

    @abc.abstractmethod
    def overlay(self, image: np.ndarray, predictions: dict[str, np.ndarray]) -> np.ndarray:
        """A uint8 RGB picture of one prediction on its image (the `predict` command's output)."""

"""A task = model + loss + eval statistics + predictions + pictures, for one kind of problem.

The train loop (train/loop.py) only talks to this interface, so nothing paper-specific lives there.
Traced methods (`loss`, `predict`, `statistics`) run inside `jax.jit` on global sharded batches;
host methods (`summarize`, `pictures`) get numpy.
"""
from __future__ import annotations

import abc
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from segattn_jax.models import build_model

Batch = dict[str, Any]


def _to_64bit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64)


class Task(abc.ABC):
    """Subclasses set `preprocess` (a name in data.preprocess.PREPROCESSORS) and implement the rest."""

    preprocess: str
    any_input_size = False  # True for fully convolutional models (predict accepts any H x W)
    # Batch keys `predict` reads; every other key is a target (labels, boxes, ...).
    input_keys: tuple[str, ...] = ("image",)

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.model: nn.Module = build_model(config.model)

    @functools.cached_property
    def class_names(self) -> tuple[str, ...]:
        """The dataset's names for this task's labels (pictures name classes with them)."""
        from segattn_jax.data import pipeline  # TensorFlow: only when pictures are drawn

        return pipeline.label_names(self.config.dataset.name, self.preprocess,
                                    self.config.dataset.data_dir)

    def prepare(self, workdir, training: bool) -> dict[str, Any]:
        """Run-level state the task derives before anything runs (a caption vocabulary, saved in
        the workdir by training and read back by eval/predict), returned as extra options for
        its preprocessor. Called once by the Experiment; none by default."""
        return {}

    def training_filter(self) -> Callable[[dict[str, Any]], Any] | None:
        """A predicate on raw dataset examples (TensorFlow) that training keeps, or None to train
        on every example (the default). Evaluation always sees the whole split."""
        return None

    def inputs(self, batch: Batch) -> Batch:
        """The part of a batch that `predict` reads."""
        return {key: batch[key] for key in self.input_keys}

    def inputs_for_image(self, image: np.ndarray) -> Batch:
        """`predict`'s inputs for one image file (H, W, C), as a batch of one."""
        return {"image": image[None]}

    def init_variables(self, rng: jax.Array, inputs: Batch) -> dict[str, Any]:
        """The model's variables ({"params": ..., and "batch_stats" where it has batch norm}) for
        inputs shaped like `inputs` (a batch of one)."""
        return dict(self.model.init({"params": rng}, inputs["image"], train=False))

    def apply_train(self, variables: dict[str, Any], *args, **kwargs) -> tuple[Any, dict[str, Any]]:
        """`model.apply(variables, *args, **kwargs)` in training mode, and the updated non-param
        collections (batch norm's running statistics; {} for models without any)."""
        mutable = [name for name in variables if name != "params"]
        if not mutable:
            return self.model.apply(variables, *args, **kwargs), {}
        return self.model.apply(variables, *args, mutable=mutable, **kwargs)

    @abc.abstractmethod
    def loss(self, variables: dict[str, Any], batch: Batch, rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
        """Training loss (scalar), per-step scalar metrics to log, and the updated model state
        (the second output of `apply_train`)."""

    @abc.abstractmethod
    def predict(self, variables: dict[str, Any], inputs: Batch) -> dict[str, jax.Array]:
        """Per-example outputs used for eval statistics, pictures and the `predict` command."""

    @abc.abstractmethod
    def statistics(self, batch: Batch, predictions: dict[str, jax.Array]) -> Any:
        """Sufficient statistics of one batch (respecting batch['valid']), combined over the eval set
        by `accumulate`."""

    def accumulate(self, total: Any, statistics: Any) -> Any:
        """Adds one batch's statistics (numpy, from the device) to the running `total` (None at
        first). Sums in 64 bits by default, so counts over a large eval set cannot overflow."""
        statistics = jax.tree.map(_to_64bit, statistics)
        return statistics if total is None else jax.tree.map(np.add, total, statistics)

    @abc.abstractmethod
    def summarize(self, statistics: Any) -> dict[str, float]:
        """Final metrics (in percent, as papers report them) from the accumulated statistics."""

    @abc.abstractmethod
    def pictures(self, batch: dict[str, np.ndarray], predictions: dict[str, np.ndarray]) -> np.ndarray:
        """One uint8 RGB grid, a row per example: input | ground truth | prediction ..."""

    def animation(self, batch: dict[str, np.ndarray], predictions: dict[str, np.ndarray]
                  ) -> list[np.ndarray] | None:
        """uint8 RGB frames of a GIF saved beside the pictures (a process unfolding over steps,
        as DRAW's drawing); None for tasks without one."""
        return None

    @abc.abstractmethod
    def overlay(self, image: np.ndarray, predictions: dict[str, np.ndarray]) -> np.ndarray:
        """A uint8 RGB picture of one prediction on its image (the `predict` command's output)."""

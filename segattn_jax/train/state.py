"""The train state: everything a checkpoint must hold to resume bit-exactly.

The RNG is not stored: each step's key is `fold_in(key(config.seed), step)`, so it is a pure function
of the config and the step, and the data stream is resumed by step (data/pipeline.py).
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: optax.OptState


def create_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=tx.init(params))

"""The train state: everything a checkpoint must hold to resume bit-exactly.

`params` are what the optimizer trains; `model_state` holds the model's other variable
collections (batch norm's running statistics, "batch_stats"), updated by the forward pass, and is
empty for models without any.

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
    model_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        """What `model.apply` takes: {"params": ..., "batch_stats": ...}."""
        return {"params": self.params, **self.model_state}


def create_train_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    """Step 0 from a model's initial variables (`Task.init_variables`)."""
    params = variables["params"]
    model_state = {name: value for name, value in variables.items() if name != "params"}
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                      opt_state=tx.init(params), model_state=model_state)

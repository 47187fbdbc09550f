"""The train state: everything a checkpoint must hold to resume bit-exactly.

`params` are what the optimizer trains; `model_state` holds the model's other variable
collections (batch norm's running statistics, "batch_stats"), updated by the forward pass, and is
empty for models without any.

The RNG is not stored: each step's key is `fold_in(key(config.seed), step)`, so it is a pure function
of the config and the step, and the data stream is resumed by step (data/pipeline.py).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import optax

from segattn_jax import compilation

if TYPE_CHECKING:
    from segattn_jax.tasks import Task


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


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init, train) keys; built inside jit so every process derives the same keys."""
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    return init_rng, train_rng


def train_step(task: Task, tx: optax.GradientTransformation, seed: int, state: TrainState,
               batch) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step; the loss, gradient norm and the task's metrics for logging. Pure JAX (no
    input pipeline, no TensorFlow), so benchmarks and notebooks take the loop's own step."""
    _, train_rng = seed_keys(seed)
    rng = jax.random.fold_in(train_rng, state.step)

    def objective(params):
        loss, metrics, model_state = task.loss({**state.variables, "params": params}, batch, rng)
        return loss, (metrics, model_state)

    (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    grads = compilation.materialized_on_cpu(grads)  # the norms below stay out of the convs
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          opt_state=opt_state, model_state=model_state)
    return state, {"loss": loss, "grad_norm": optax.global_norm(grads), **metrics}


def run_once(fn: Callable[..., Any], *args: Any, out_shardings: Any = None) -> Any:
    """`fn(*args)` jitted for a single call, such as a model's initialization.

    On CPU it is compiled without XLA's backend optimizations: they would take most of a short
    run's time on a deep net's random initializers (Inception-ResNet-v2 at one block of each
    kind: 24 s -> 7 s), and eager `Module.init` is slower still where the forward pass has loops
    (SSD's mini init with its NMS: 44 s eager, 16 s jitted, 4 s here). The values are the same up
    to float rounding (1e-7).
    """
    options = compilation.compiler_options(xla_backend_optimization_level=0)
    compiled = jax.jit(fn, out_shardings=out_shardings).lower(*args).compile(
        compiler_options=options)
    return compiled(*args)


def initial_variables(task: Any, rng: jax.Array, inputs: dict[str, Any]) -> dict[str, Any]:
    """`task.init_variables(rng, inputs)` compiled as `run_once` does: what notebooks and tests
    call instead of the eager init."""
    return run_once(task.init_variables, rng, inputs)

"""optax optimizers and learning-rate schedules built from `config.optimizer`."""
from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adadelta")
SCHEDULES = ("constant", "cosine", "step", "exponential")


def make_schedule(config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    lr, warmup = config.learning_rate, config.get("warmup_steps", 0)
    if config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(1, num_steps - warmup))
    elif config.schedule == "step":
        # Multiply by `decay_factor` at each fraction of training in `decay_at` (e.g. (0.5, 0.75)).
        boundaries = {int(f * num_steps) - warmup: config.decay_factor for f in config.decay_at}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "exponential":
        # Multiply by `decay_factor` every `decay_every` steps (Inception: 0.94 every 2 epochs).
        main = optax.exponential_decay(lr, transition_steps=config.decay_every,
                                       decay_rate=config.decay_factor, staircase=True)
    else:
        raise ValueError(f"Unknown optimizer.schedule {config.schedule!r}; valid: {SCHEDULES}.")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def make_optimizer(config: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Clip, then (for sgd/adam) add L2 weight decay to the gradient, as Caffe and the papers do,
    then the optimizer; adamw decouples the decay itself."""
    schedule = make_schedule(config, num_steps)
    if config.name == "sgd":
        opt = optax.sgd(schedule, momentum=config.get("momentum") or None)
    elif config.name == "adam":
        opt = optax.adam(schedule)
    elif config.name == "adamw":
        opt = optax.adamw(schedule, weight_decay=config.weight_decay)
    elif config.name == "rmsprop":
        # TensorFlow's RMSProp by default, as the Inception papers trained: epsilon inside the
        # square root, mean square starting at 1, momentum on the scaled step. Centered (the
        # running mean of the gradient subtracted, starting at 0): Graves 2013's eq. 38-41.
        opt = optax.rmsprop(schedule, decay=config.get("rmsprop_decay", 0.9),
                            eps=config.get("rmsprop_epsilon", 1.0),
                            initial_scale=config.get("rmsprop_initial_scale", 1.0),
                            eps_in_sqrt=True, centered=config.get("rmsprop_centered", False),
                            momentum=config.get("momentum") or None)
    elif config.name == "adadelta":  # Bahdanau et al. 2015: rho 0.95, epsilon 1e-6, rate 1
        opt = optax.adadelta(schedule, rho=config.get("adadelta_rho", 0.95),
                             eps=config.get("adadelta_epsilon", 1e-6))
    else:
        raise ValueError(f"Unknown optimizer.name {config.name!r}; valid: {OPTIMIZERS}.")
    chain = []
    if config.get("grad_clip_norm"):
        chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.get("weight_decay") and config.name != "adamw":
        skip = config.get("weight_decay_skip")  # Caffe's decay_mult 0, e.g. "bias$"
        mask = None if not skip else (lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: re.search(skip, parameter_path(path)) is None, params))
        chain.append(optax.add_decayed_weights(config.weight_decay, mask=mask))
    multipliers = tuple(config.get("lr_multipliers") or ())
    if not multipliers:
        return optax.chain(*chain, opt)
    return with_lr_multipliers(optax.chain(*chain, opt), multipliers)


def parameter_path(path: tuple) -> str:
    """'backbone/conv1_1/kernel': the '/'-joined names of a parameter's key path."""
    return "/".join(str(getattr(key, "key", getattr(key, "idx", key))) for key in path)


def with_lr_multipliers(tx: optax.GradientTransformation,
                        multipliers: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Caffe's per-layer `lr_mult`: `multipliers` is ((regex, factor), ...); a parameter takes the
    factor of the first regex found (`re.search`) in its path ('backbone/conv1_1/kernel'), else 1.
    Factor 0 freezes it the way the detection papers freeze VGG16's conv1-conv2: no gradient, no
    optimizer state, and left out of the gradient clipping's norm. The others' updates (after the
    optimizer: Adam's step, not its gradient) are scaled by their factor."""
    multipliers = tuple((str(pattern), float(factor)) for pattern, factor in multipliers)
    for pattern, factor in multipliers:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"optimizer.lr_multipliers: {pattern!r} is not a regex ({error}).")
        if factor < 0:
            raise ValueError(f"optimizer.lr_multipliers: {pattern!r} has factor {factor}; "
                             "use 0 to freeze or a positive factor.")

    def factor_of(path: tuple) -> float:
        name = parameter_path(path)
        return next((f for pattern, f in multipliers if re.search(pattern, name)), 1.0)

    def labels(params):
        names = [parameter_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
        unused = [p for p, _ in multipliers if not any(re.search(p, name) for name in names)]
        if unused:
            raise ValueError(
                f"optimizer.lr_multipliers: {unused} match no parameter (they are searched in "
                f"paths such as {names[:3]}); fix the regex or drop it.")
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if factor_of(path) == 0 else "trained", params)

    def scale(path: tuple, update: jax.Array) -> jax.Array:
        factor = factor_of(path)
        return update if factor == 1 else update * jnp.asarray(factor, update.dtype)

    def scale_updates(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(scale, updates), state

    scaled = optax.GradientTransformation(lambda params: optax.EmptyState(), scale_updates)
    return optax.multi_transform(
        {"trained": optax.chain(tx, scaled), "frozen": optax.set_to_zero()}, labels)

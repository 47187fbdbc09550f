"""optax optimizers and learning-rate schedules built from `config.optimizer`."""
from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
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
        # TensorFlow's RMSProp, as the Inception papers trained: epsilon inside the square root,
        # mean square starting at 1, momentum on the scaled step.
        opt = optax.rmsprop(schedule, decay=config.get("rmsprop_decay", 0.9),
                            eps=config.get("rmsprop_epsilon", 1.0), initial_scale=1.0,
                            eps_in_sqrt=True, momentum=config.get("momentum") or None)
    else:
        raise ValueError(f"Unknown optimizer.name {config.name!r}; valid: {OPTIMIZERS}.")
    chain = []
    if config.get("grad_clip_norm"):
        chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.get("weight_decay") and config.name != "adamw":
        chain.append(optax.add_decayed_weights(config.weight_decay))
    return optax.chain(*chain, opt)

"""FCN-8s train-step throughput, peak memory and achieved FLOP/s vs the machine's matmul FLOP/s.

Full-width VGG16 FCN-8s, 224x224, batch 2, 21 classes (PASCAL VOC), SGD with momentum: the
paper's setting, on whatever devices JAX sees. Uses the codebase's own train step (train/loop.py).
"""
from __future__ import annotations

import functools
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax.train.config import load_experiment
from segattn_jax.tasks import build_task
from segattn_jax.train.loop import train_step
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fcn.py"


def _best_time(fn, repeats: int) -> float:
    """Best wall time of `fn()` (which must block) over `repeats` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """This machine's measured fp32 matmul GFLOP/s (the practical peak for dense compute)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.dot)
    seconds = _best_time(lambda: matmul(a, b).block_until_ready(), repeats)
    return 2 * n**3 / seconds / 1e9


def run(batch_size: int = 2, image_size: int = 224, num_classes: int = 21, repeats: int = 5) -> dict:
    config = load_experiment(EXPERIMENT).get_config("FCN-8s,mini").unlock()
    # The paper's net: full-width VGG16, pad 100, 7x7 fc6 (the mini row slims all three).
    config.model.width, config.model.num_classes = 1.0, num_classes
    config.model.first_padding, config.model.fc6_kernel = 100, 7
    config.optimizer.name, config.optimizer.learning_rate = "sgd", 1e-4
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    images = jax.random.uniform(jax.random.key(0), (batch_size, image_size, image_size, 3))
    labels = jax.random.randint(jax.random.key(1), (batch_size, image_size, image_size), 0,
                                num_classes)
    batch = {"image": images, "label": labels}
    state = jax.jit(lambda: create_train_state(task.init_params(jax.random.key(2), images[:1]), tx))()
    step = jax.jit(functools.partial(train_step, task, tx, 0))
    compiled = step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost["flops"])
    memory = compiled.memory_analysis()

    def one_step():
        nonlocal state
        state, metrics = compiled(state, batch)
        metrics["loss"].block_until_ready()

    seconds = _best_time(one_step, repeats)
    peak = matmul_gflops()
    achieved = flops / seconds / 1e9
    params = sum(x.size for x in jax.tree.leaves(state.params))
    return {
        "params_millions": params / 1e6,
        "step_seconds": seconds,
        "images_per_second": batch_size / seconds,
        "step_gflop": flops / 1e9,
        "achieved_gflops": achieved,
        "matmul_gflops": peak,
        "fraction_of_matmul": achieved / peak,
        "xla_temp_mib": memory.temp_size_in_bytes / 2**20 if memory else float("nan"),
        "xla_args_mib": memory.argument_size_in_bytes / 2**20 if memory else float("nan"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def format_result(r: dict) -> str:
    return "\n".join([
        "| FCN-8s train step (VGG16 full width, 224x224, batch 2, 21 classes) | value |",
        "|---|---|",
        f"| parameters | {r['params_millions']:.1f} M |",
        f"| step time | {r['step_seconds'] * 1e3:.0f} ms |",
        f"| throughput | {r['images_per_second']:.2f} images/s |",
        f"| XLA cost analysis | {r['step_gflop']:.1f} GFLOP/step |",
        f"| achieved | {r['achieved_gflops']:.1f} GFLOP/s |",
        f"| fp32 matmul on this machine | {r['matmul_gflops']:.1f} GFLOP/s |",
        f"| fraction of matmul (floor 0.40) | {r['fraction_of_matmul']:.2f} |",
        f"| XLA temp / argument buffers | {r['xla_temp_mib']:.0f} / {r['xla_args_mib']:.0f} MiB |",
        f"| peak process RSS | {r['peak_rss_mib']:.0f} MiB |",
    ])


if __name__ == "__main__":
    print(format_result(run()))

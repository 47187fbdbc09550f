"""FCN-8s train step: ours (JAX) vs the same network in PyTorch, side by side, at two sizes.

- paper: full-width VGG16 FCN-8s (pad 100, 7x7 fc6), 224x224, batch 2, 21 classes (PASCAL VOC);
- mini: the `experiments/fcn.py:FCN-8s,mini` network (width 1/8, pad 60, 5x5 fc6), 64x64,
  batch 8, 9 classes.

Both sides run one SGD-momentum step on the same random batch, on the same device (the GPU where
JAX runs on one, in bfloat16 there); the JAX side is the codebase's own train step
(train/state.py), with the state donated as the loop does. Steps are timed in interleaved
rounds so both see the same machine load (`report.timed_rounds`: at least `repeats` rounds and
3 s of steps a side, ~30 rounds at the mini size), each size in a new process
(`report.in_fresh_process`: the paper size's allocations would otherwise change how the mini
size's are served). Reported: best step time, images/s,
XLA's FLOP count, achieved FLOP/s as a fraction of this machine's measured matmul FLOP/s,
peak memory, and torch_over_ours (>= 1.0: ours is at least as fast; of the best times, and
of the median times); then our inference forward alone (the task's `predict`, label maps, best
time), which XLA compiles apart from the step. PyTorch is optional.
"""
from __future__ import annotations

import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import torch_fcn
from report import (COMPARISON_SECONDS, best_of, best_seconds, config_train_step, import_torch,
                    in_fresh_process, machine, markdown_table, matmul_gflops, median_ratio,
                    segmentation_batch, timed_rounds, torch_device)
from segattn_jax import compilation
from segattn_jax.tasks import build_task
from segattn_jax.train.config import load_experiment
from segattn_jax.train.state import initial_variables

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fcn.py"
# name -> (batch, image size, classes, model overrides of the mini config)
SIZES = {
    "paper": (2, 224, 21, dict(width=1.0, first_padding=100, fc6_kernel=7)),
    "mini": (8, 64, 9, {}),
}


def _config(size: str):
    batch, image_size, num_classes, model = SIZES[size]
    config = load_experiment(EXPERIMENT).get_config("FCN-8s,mini").unlock()
    config.model.update(num_classes=num_classes, **model)
    config.optimizer.update(name="sgd", learning_rate=1e-4, momentum=0.9, schedule="constant",
                            warmup_steps=0, grad_clip_norm=0.0)
    return config, batch, image_size


def jax_step(size: str) -> tuple:
    """(blocking step fn, info) for our train step, compiled, with donated state."""
    config, batch_size, image_size = _config(size)
    batch = segmentation_batch(batch_size, image_size, image_size, config.model.num_classes)
    return config_train_step(config, batch, jax.random.key(2))


def jax_predict(size: str):
    """Our inference forward (the task's `predict`) on the step's batch, compiled: blocking fn."""
    config, batch_size, image_size = _config(size)
    task = build_task(config)
    inputs = task.inputs(jax.tree.map(jnp.asarray, segmentation_batch(
        batch_size, image_size, image_size, config.model.num_classes)))
    variables = initial_variables(task, jax.random.key(2), inputs)
    predict = compilation.jit(task.predict)
    return lambda: jax.block_until_ready(predict(variables, inputs))


def torch_step(size: str):
    """The same step in PyTorch (blocking fn), or None without torch."""
    torch = import_torch()
    if torch is None:
        return None
    config, batch_size, image_size = _config(size)
    m = config.model
    device = torch_device(torch)
    model = torch_fcn.build(torch, num_classes=m.num_classes, width=m.width,
                            first_padding=m.first_padding, fc6_kernel=m.fc6_kernel).to(device)
    step = torch_fcn.train_step_fn(torch, model)
    batch = segmentation_batch(batch_size, image_size, image_size, m.num_classes)
    images = torch.tensor(batch["image"].transpose(0, 3, 1, 2).copy(), device=device)
    labels = torch.tensor(batch["label"].astype(np.int64), device=device)
    return lambda: step(images, labels).item()


def measure(size: str, repeats: int, peak_gflops: float) -> dict:
    """One size's row: ours and torch's step time, throughput, FLOP/s as a fraction of the
    matmul peak, memory."""
    batch_size = SIZES[size][0]
    ours, info = jax_step(size)
    steps = {"ours": ours}
    reference = torch_step(size)
    if reference is not None:
        steps["torch"] = reference
    times = timed_rounds(steps, repeats, min_total_s=COMPARISON_SECONDS)
    seconds = best_of(times)
    achieved = info["gflop"] / seconds["ours"] if info["gflop"] else None
    row = {
        "size": size, "batch": batch_size, "params_M": info["params_millions"],
        "ours_ms": 1e3 * seconds["ours"], "ours_images_per_s": batch_size / seconds["ours"],
        "torch_ms": None, "torch_images_per_s": None, "torch_over_ours": None,
        "torch_over_ours_median": None, "GFLOP_per_step": info["gflop"],
        "xla_temp_MiB": info["xla_temp_mib"], "ours_GFLOP_per_s": achieved,
        "fraction_of_matmul": achieved / peak_gflops if achieved else None,
        "matmul_GFLOP_per_s": peak_gflops,
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if "torch" in seconds:
        row.update(torch_ms=1e3 * seconds["torch"],
                   torch_images_per_s=batch_size / seconds["torch"],
                   torch_over_ours=seconds["torch"] / seconds["ours"],
                   torch_over_ours_median=median_ratio(times))
    row["ours_predict_ms"] = 1e3 * best_seconds({"predict": jax_predict(size)}, repeats)["predict"]
    return row


def run(sizes=tuple(SIZES), repeats: int = 3) -> list[dict]:
    """One row per size (`measure`), each measured in a process of its own
    (`report.in_fresh_process`) against the matmul peak measured here."""
    peak = matmul_gflops()
    return [in_fresh_process(measure, size, repeats, peak) for size in sizes]


def main() -> None:
    print(machine())
    print("FCN-8s train step, ours vs PyTorch (paper: VGG16 224x224 batch 2 21 classes; "
          "mini: experiments/fcn.py:FCN-8s,mini network, 64x64 batch 8):")
    print(markdown_table(run()))


if __name__ == "__main__":
    main()

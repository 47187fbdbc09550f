"""What every benchmark shares: interleaved best-of-N timing (more rounds for short steps), a fresh
process per measurement, the measured matmul peak, the codebase's own train step compiled for a
batch, the optional PyTorch reference, the machine a table was measured on, and markdown
tables."""
from __future__ import annotations

import functools
import importlib.metadata
import math
import multiprocessing
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segattn_jax import compilation
from segattn_jax.layers import conv
from segattn_jax.tasks import build_task
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import create_train_state, train_step

# Seconds of timed calls each side of a comparison with PyTorch gets at least (`timed_rounds`).
COMPARISON_SECONDS = 3.0


def timed_rounds(steps: dict[str, Callable[[], object]], repeats: int,
                 budget_s: float = math.inf, min_total_s: float = 0.0) -> dict[str, list[float]]:
    """Wall times of each blocking step, timed in interleaved rounds so all see the same machine
    load.

    Each step is called once untimed first (compilation, caches). At least `repeats` rounds run,
    and more until every step's timed calls add up to `min_total_s` (so a 0.1 s step gets tens of
    samples where a 10 s one gets `repeats`: one busy moment on a shared machine then cannot decide
    a comparison); a step drops out of the rounds once its timed calls add up to `budget_s` (so a
    very slow reference cannot take minutes).
    """
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}

    def within_budget(name: str) -> bool:
        return sum(times[name]) < budget_s

    def wants_more(name: str, rounds: int) -> bool:
        return within_budget(name) and (rounds < repeats or sum(times[name]) < min_total_s)

    rounds = 0
    while any(wants_more(name, rounds) for name in steps):
        for name, step in steps.items():
            if within_budget(name):
                begin = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - begin)
        rounds += 1
    return times


def best_of(times: dict[str, list[float]]) -> dict[str, float]:
    """Each step's best time of its `timed_rounds` samples."""
    return {name: min(values) for name, values in times.items()}


def best_seconds(steps: dict[str, Callable[[], object]], repeats: int,
                 budget_s: float = math.inf) -> dict[str, float]:
    """Best wall time of each blocking step over `repeats` interleaved rounds (`timed_rounds`)."""
    return best_of(timed_rounds(steps, repeats, budget_s))


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` run in a new Python process (spawned: it inherits nothing of this one), its
    result returned and its prints flushed.

    Why: glibc's malloc adapts to a process's history. Freeing an mmap'd block raises its mmap
    threshold (up to 32 MiB), so after FCN-8s's paper-size step PyTorch's mini-size tensors came
    from the heap without page faults (87-90 ms a step, 0 faults), where in a fresh process they
    fault 17k pages a step (101-114 ms), as they do in a training run of the mini model. In its
    own process each measurement starts where a training run would.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_call_and_flush, fn, *args).result()


def _call_and_flush(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def import_torch():
    """torch using every CPU this process may run on, or None: a reference, never a dependency."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch


def torch_device(torch) -> str:
    """Where the PyTorch reference runs: the GPU when JAX runs on one (and torch sees it), so
    both sides of a comparison share the device; else the CPU."""
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def machine() -> str:
    """The CPU model, threads and library versions a table was measured on. Ratios against
    PyTorch or Keras move with the CPU model (their libraries' kernels differ per vector unit),
    so every table names it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU model"
    versions = ", ".join(f"{package} {_installed_version(*distributions)}"
                         for package, distributions in (
                             ("jax", ["jax"]), ("flax", ["flax"]), ("torch", ["torch"]),
                             ("tensorflow", ["tensorflow", "tensorflow-cpu"])))
    return (f"{jax.devices()[0].platform} devices: {jax.device_count()}; CPU: {cpu}, "
            f"{len(os.sched_getaffinity(0))} threads; {versions}")


def _installed_version(*distributions: str) -> str:
    """The version of the first of `distributions` installed (TensorFlow ships under two)."""
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def markdown_table(rows: list[dict], digits: int = 2) -> str:
    """Rows as a markdown table: every column any row has; None as '-', floats with `digits`
    decimals ('diff' columns in scientific notation)."""
    columns = list(dict.fromkeys(column for row in rows for column in row))

    def cell(column: str, value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1e}" if "diff" in column else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def matmul_gflops(repeats: int = 10) -> float:
    """This machine's measured matmul GFLOP/s in the models' compute dtype (the practical peak
    for dense compute): float32 at 2048 on CPU, bfloat16 at 8192 on a GPU or TPU (its matrix
    units' type, what `model.dtype = "auto"` computes in)."""
    on_cpu = jax.default_backend() == "cpu"
    n, dtype = (2048, jnp.float32) if on_cpu else (8192, jnp.bfloat16)
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.dot)
    seconds = best_seconds({"matmul": lambda: matmul(a, b).block_until_ready()}, repeats)["matmul"]
    return 2 * n**3 / seconds / 1e9


def xla_gflop(compiled) -> float | None:
    """XLA's FLOP count of one call of a lowered or compiled function, in GFLOP (the body of a
    while loop counts once); None where XLA gives no cost before compiling (jax 0.11's GPU
    installs: take the count from a CPU run of the same step)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / 1e9 if cost else None


def train_step_gflop(step: Callable, state, batch: dict[str, Any]) -> float | None:
    """XLA's FLOP count of `step(state, batch)`, the network's: traced with layers/conv.py's
    2x2-block passes off, whose blocked kernels multiply zeros too (16/9 of a 3x3 layer's
    multiply-adds). Counted as lowered for CPU on every backend: on a GPU, convolutions lower to
    cuDNN calls that XLA's cost analysis does not count."""
    block_outputs = conv.SPACE_TO_DEPTH_MAX_FEATURES
    conv.SPACE_TO_DEPTH_MAX_FEATURES = 0
    try:  # a new function: jit's trace cache would hand back the blocked trace of `step`
        traced = jax.jit(lambda state, batch: step(state, batch)).trace(state, batch)
        return xla_gflop(traced.lower(lowering_platforms=("cpu",)))
    finally:
        conv.SPACE_TO_DEPTH_MAX_FEATURES = block_outputs


def segmentation_batch(batch: int, height: int, width: int, classes: int
                       ) -> dict[str, np.ndarray]:
    """A fixed random segmentation batch: images in [0, 1) and labels of `classes` classes."""
    rng = np.random.default_rng(0)
    return {"image": rng.uniform(size=(batch, height, width, 3)).astype(np.float32),
            "label": rng.integers(0, classes, (batch, height, width)).astype(np.int32)}


def compiled_train_step(task, tx, state, batch: dict[str, Any]
                        ) -> tuple[Callable[[], None], dict[str, float | None]]:
    """The codebase's own train step (train/state.py) compiled for `batch`, with the state donated
    as the loop donates it: (blocking step, {gflop: XLA's FLOP count, xla_temp_mib})."""
    step = functools.partial(train_step, task, tx, 0)
    compiled = compilation.jit(step, donate_argnums=0).lower(state, batch).compile()
    memory = compiled.memory_analysis()
    holder = [state]

    def one_step():
        holder[0], metrics = compiled(holder[0], batch)
        metrics["loss"].block_until_ready()

    return one_step, {"gflop": train_step_gflop(step, state, batch),
                      "xla_temp_mib": memory.temp_size_in_bytes / 2**20 if memory else None,
                      "params_millions": sum(x.size for x in jax.tree.leaves(state.params)) / 1e6}


def config_train_step(config, batch: dict[str, Any], key: jax.Array | None = None
                      ) -> tuple[Callable[[], None], dict[str, float | None]]:
    """`compiled_train_step` for the task and optimizer `config` builds, on `batch` (numpy or jax
    arrays), from variables initialized with `key` (default `key(0)`) on the batch's first
    example of the task's inputs."""
    task = build_task(config)
    tx = make_optimizer(config.optimizer, config.train.num_steps)
    batch = jax.tree.map(jnp.asarray, batch)
    key = jax.random.key(0) if key is None else key
    state = jax.jit(lambda: create_train_state(task.init_variables(
        key, jax.tree.map(lambda x: x[:1], task.inputs(batch))), tx))()
    return compiled_train_step(task, tx, state, batch)


def timed_row(row: str, ours: Callable[[], None], info: dict, torch_step, *, batch: int,
              peak_gflops: float, repeats: int, unit: str = "images",
              gflop: float | None = None) -> dict:
    """One row of a train-step table: our step beside PyTorch's (`torch_step` None when torch is
    missing or has no such model), timed together: `unit`s/s, the GFLOP (XLA's count, or a hand
    count where XLA's misses the loops of a recurrence) as a fraction of the matmul peak, XLA's
    temporary memory, the ratio and the process's peak memory."""
    gflop = info["gflop"] if gflop is None else gflop
    steps = {"ours": ours, **({"torch": torch_step} if torch_step else {})}
    times = timed_rounds(steps, repeats, min_total_s=COMPARISON_SECONDS)
    seconds = best_of(times)
    theirs = batch / seconds["torch"] if torch_step else None
    return {"row": row, f"{unit}_per_s": batch / seconds["ours"], "GFLOP": gflop,
            "fraction_of_matmul": gflop / seconds["ours"] / peak_gflops if gflop else None,
            "xla_temp_MiB": info["xla_temp_mib"], f"torch_{unit}_per_s": theirs,
            "ratio_vs_torch": batch / seconds["ours"] / theirs if torch_step else None,
            "ratio_vs_torch_median": median_ratio(times) if torch_step else None,
            "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def median_ratio(times: dict[str, list[float]]) -> float:
    """PyTorch's median step time over ours (`timed_rounds` of "ours" and "torch"): beside the
    best-of ratio, what a typical step shows on a shared machine."""
    return statistics.median(times["torch"]) / statistics.median(times["ours"])


def step_breakdown(seconds: dict[str, float], parts: Sequence[str], info: dict, *, batch: int,
                   peak_gflops: float) -> list[dict]:
    """Rows for a train step (`seconds["step"]`) and its `parts`, each timed alone at the
    step's sizes: the step's ms, images/s, GFLOP and fraction of the matmul peak and XLA's
    temporary memory, then each part's ms and share of the step."""
    step, gflop = seconds["step"], info["gflop"]
    rows = [{"part": "train step", "ms": 1e3 * step, "share_of_step": 1.0,
             "images_per_s": batch / step, "GFLOP": gflop,
             "fraction_of_matmul": gflop / step / peak_gflops if gflop else None,
             "xla_temp_MiB": info["xla_temp_mib"]}]
    return rows + [{"part": name, "ms": 1e3 * seconds[name], "share_of_step": seconds[name] / step}
                   for name in parts]


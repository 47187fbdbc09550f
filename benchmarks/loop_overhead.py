"""Train-loop overhead: the `make train` step inside `train_and_evaluate` vs the same step alone.

Run: `.venv/bin/python benchmarks/loop_overhead.py [steps]` (about 3 minutes on 2 CPU cores at the
default 400 steps; prepares the embedded `shapes` data on first use).

- alone: the loop's own jitted train step (`Experiment.train_step`, state donated) on one fixed
  batch, `steps` times back to back, blocking only at the end;
- in loop: `train_and_evaluate` for `steps` steps with the experiment's input pipeline, metric
  logging, progress bar and checkpointing; its `ms_per_step` is the loop's wall time per step
  between log points, without evaluation, pictures and checkpoint saves, and without the first
  log interval (compilation).
overhead = in_loop / alone - 1: what the input pipeline and the loop's host work cost.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import jax

from report import machine, markdown_table
from segattn_jax.data import pipeline
from segattn_jax.train import loop
from segattn_jax.train import mesh as mesh_lib
from segattn_jax.train.config import load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fcn.py"
ROW = "FCN-8s,mini"  # what `make train` runs


def _config(steps: int):
    config = load_experiment(EXPERIMENT).get_config(ROW).unlock()
    config.train.update(num_steps=steps, log_every=25, eval_every=0, checkpoint_every=steps)
    return config


def step_alone_ms(steps: int, workdir: str) -> float:
    config = _config(steps)
    exp = loop.Experiment(config, workdir)
    state = exp.new_state()
    batch = mesh_lib.to_global(next(pipeline.train_iterator(
        config.dataset.name, config.dataset.train_split, preprocess=exp.preprocess,
        global_batch_size=config.train.batch_size, seed=0, data_dir=config.dataset.data_dir)),
        exp.mesh)
    for _ in range(5):  # compile and warm up
        state, metrics = exp.train_step(state, batch)
    jax.block_until_ready(metrics)
    began = time.perf_counter()
    for _ in range(steps):
        state, metrics = exp.train_step(state, batch)
    jax.block_until_ready(metrics)
    return 1e3 * (time.perf_counter() - began) / steps


def step_in_loop_ms(steps: int, workdir: str) -> float:
    return loop.train_and_evaluate(_config(steps), workdir)["ms_per_step"]


def run(steps: int = 400) -> list[dict]:
    with tempfile.TemporaryDirectory() as alone_dir, tempfile.TemporaryDirectory() as loop_dir:
        alone = step_alone_ms(steps, alone_dir)
        in_loop = step_in_loop_ms(steps, loop_dir)
    return [{"experiment": f"fcn.py:{ROW}", "steps": steps, "alone_ms_per_step": alone,
             "in_loop_ms_per_step": in_loop, "overhead_percent": 100 * (in_loop / alone - 1)}]


def main() -> None:
    print(machine())
    print(markdown_table(run(*(int(a) for a in sys.argv[1:]))))


if __name__ == "__main__":
    main()

"""`table`: run (or collect) every cell of an experiment's paper table; print paper vs measured.

An experiment file provides `table_runs(arg) -> [config arg, ...]` and configs that name their
table cell (`row`, optional `column`), the metrics to show and the paper's numbers. A cell whose
run starts from other runs of the table (a second training stage, an ensemble of trained runs)
names them in `init_from_runs` (their config args; they come earlier in `table_runs`): the table
sets `init_from` to their directories, after the command line's `init_from` if any (ImageNet
weights, which such a cell may also start from: Faster R-CNN's step 2). A run of another
experiment file beside this one, named '<experiment>:<config arg>' (the mini rows' ImageNet
stand-in, train/config.MINI_PRETRAINED_VGG16), is trained first into the same workdir, once for
all the cells that start from it.

`seeds=N` trains every cell N times (config.seed, +1, ...; run k > 0 in '<run dir>_seed<k>', so
a finished one-seed table is seed 0; a chained cell's run k starts from its parents' run k) and
shows each metric's mean over the seeds with their range: the mini tables' differences are often
no larger than the run-to-run spread.
"""
from __future__ import annotations

import json
import re
from typing import Any

import ml_collections
from etils import epath

from segattn_jax.train.config import (init_from_dirs, load_experiment, steps_to_train,
                                      unknown_key)
from segattn_jax.train.loop import EVAL_HISTORY_FILE, METRICS_FILE, train_and_evaluate


def run_dir(workdir: epath.Path, run_arg: str, seed_offset: int = 0) -> epath.Path:
    """The directory of a table run; `seed_offset` k > 0: its run with config.seed + k."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_arg)
    return workdir / (f"{name}_seed{seed_offset}" if seed_offset else name)


def run_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A finished run's eval metrics, plus `train_hours`: the wall time of the training session
    that finished it (the papers' training time; a resumed run's counts its last session)."""
    return {**result["eval"], "train_hours": result["train_seconds"] / 3600}


def finished_metrics(directory: epath.Path, num_steps: int) -> dict[str, float] | None:
    """The metrics (`run_metrics`) of a run in `directory` that finished all `num_steps`, else
    None."""
    path = directory / METRICS_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return run_metrics(result) if result.get("step") == num_steps else None


def cell_metrics(config: ml_collections.ConfigDict, measured: dict[str, float] | None
                 ) -> dict[str, float] | None:
    """The metrics a cell shows: a run's, or for a cell that reads one part of a shared run
    (`table_metric_prefix`, e.g. 'stage1/' of a cascade's run) those under the prefix,
    without it."""
    prefix = config.get("table_metric_prefix", "")
    if not prefix or measured is None:
        return measured
    return {k[len(prefix):]: v for k, v in measured.items() if k.startswith(prefix)}


def _format(value: float | None) -> str:
    """One decimal (metrics in %), or 3 significant digits below 1 (seconds per image)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _format_measured(measured: dict[str, float] | None, metric: str,
                     per_seed: list[dict[str, float]] | None) -> str:
    """A cell's measured `metric`: the value, or over several seeds 'mean (min-max)'."""
    value = measured.get(metric) if measured else None
    if value is None or not per_seed or len(per_seed) < 2:
        return _format(value)
    values = [run[metric] for run in per_seed]
    return f"{_format(value)} ({_format(min(values))}-{_format(max(values))})"


def mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Each metric that every seed's run reports, averaged."""
    keys = [key for key in per_seed[0] if all(key in run for run in per_seed)]
    return {key: sum(run[key] for run in per_seed) / len(per_seed) for key in keys}


def format_table(cells: list[tuple[ml_collections.ConfigDict, dict[str, float] | None]],
                 per_seed: list[list[dict[str, float]] | None] | None = None) -> str:
    """Markdown: a grid per metric when cells have columns, else one row per cell. `per_seed`:
    each cell's runs' metrics when it was trained with several seeds (ranges are shown)."""
    metrics = list(cells[0][0].table_metrics)
    per_seed = per_seed or [None] * len(cells)
    lines = []
    if any(c.column for c, _ in cells):
        rows = list(dict.fromkeys(c.row for c, _ in cells))
        columns = list(dict.fromkeys(c.column for c, _ in cells))
        by_cell = {(c.row, c.column): (c, m, runs) for (c, m), runs in zip(cells, per_seed)}
        for metric in metrics:
            lines += [f"\n{metric} (paper / measured)\n",
                      "| model | " + " | ".join(columns) + " |",
                      "|---" * (len(columns) + 1) + "|"]
            for row in rows:
                entries = []
                for column in columns:
                    config, measured, runs = by_cell.get((row, column), (None, None, None))
                    paper = config.paper.get(metric) if config else None
                    entries.append(f"{_format(paper)} / "
                                   f"{_format_measured(measured, metric, runs)}")
                lines.append(f"| {row} | " + " | ".join(entries) + " |")
    else:
        lines += ["| model | " + " | ".join(f"{m} (paper) | {m} (measured)" for m in metrics) + " |",
                  "|---" * (2 * len(metrics) + 1) + "|"]
        for (config, measured), runs in zip(cells, per_seed):
            entries = [f"{_format(config.paper.get(m))} | "
                       f"{_format_measured(measured, m, runs)}" for m in metrics]
            lines.append(f"| {config.row} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def eval_history(directory: epath.Path) -> list[dict[str, float]]:
    """Every evaluation of the run in `directory`, by step (the last of repeated steps)."""
    path = directory / EVAL_HISTORY_FILE
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    return [by_step[step] for step in sorted(by_step)]


def plot_curves(runs: list[tuple[ml_collections.ConfigDict, epath.Path]], metric: str,
                path: epath.Path) -> epath.Path | None:
    """`metric` vs training step, one line per run that evaluated more than once, as a PNG
    (the papers' training curves); None when no run has a curve."""
    curves = [(config, [(e["step"], e[key]) for e in eval_history(directory) if key in e])
              for config, directory in runs
              for key in [config.get("table_metric_prefix", "") + metric]]
    curves = [(config, points) for config, points in curves if len(points) > 1]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for config, points in curves:
        steps, values = zip(*points)
        axes.plot(steps, values, marker="o", markersize=3,
                  label=" ".join(filter(None, (config.row, config.column))))
    axes.set_xlabel("training step")
    axes.set_ylabel(f"{metric} (eval)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with path.open("wb") as f:
        figure.savefig(f, format="png")
    plt.close(figure)
    return path


def _train_other_experiment(experiments: epath.Path, run: str, workdir: epath.Path,
                            overrides: dict[str, Any] | None) -> bool:
    """Trains run '<experiment>:<config arg>' of experiments/<experiment>.py into the table's
    workdir unless it finished there; the table's overrides apply where its config has the
    field (a test's shorter schedule). False if SIGTERM stopped it (its checkpoint saved)."""
    name, arg = run.split(":", 1)
    config = load_experiment(experiments / f"{name}.py").get_config(arg)
    if overrides:
        config.update_from_flattened_dict({key: value for key, value in overrides.items()
                                           if unknown_key(config, key) is None})
    return _train_unless_finished(config, run_dir(workdir, run)) is not None


def _train_unless_finished(config: ml_collections.ConfigDict, directory: epath.Path
                           ) -> dict[str, float] | None:
    """The metrics (`run_metrics`) of the run in `directory`: a finished run's, else those of
    training it (resuming a partial one); None if SIGTERM stopped it (its checkpoint saved)."""
    measured = finished_metrics(directory, steps_to_train(config))
    if measured is None:
        result = train_and_evaluate(config, directory)
        measured = None if result is None else run_metrics(result)
    return measured


def _seeded(config: ml_collections.ConfigDict, seed_offset: int, workdir: epath.Path
            ) -> ml_collections.ConfigDict:
    """The cell's config for its run `seed_offset`: config.seed + offset, and `init_from` = the
    command line's (ImageNet weights), then the runs the cell starts from: another experiment's
    (shared by every seed), this table's (their run of the same seed)."""
    seeded = config.copy_and_resolve_references()
    seeded.seed = config.seed + seed_offset
    if config.get("init_from_runs"):
        seeded.init_from = ",".join([*init_from_dirs(config), *(
            str(run_dir(workdir, run, 0 if ":" in run else seed_offset))
            for run in config.init_from_runs)])
    return seeded


def run_table(path: str, arg: str, workdir: str | epath.Path, *, overrides: dict[str, Any] | None = None,
              collect_only: bool = False, seeds: int = 1) -> str:
    """Trains every unfinished cell (resuming any partial run), `seeds` runs each, unless
    `collect_only`; draws the first table metric's training curves (seed 0's runs) to
    WORKDIR/curves.png when the runs evaluated along the way."""
    if seeds < 1:
        raise ValueError(f"seeds is the number of runs per table cell: at least 1; got {seeds}.")
    module, workdir = load_experiment(path), epath.Path(workdir)
    cells, per_seed, runs = [], [], []
    for run_arg in module.table_runs(arg):
        config = module.get_config(run_arg)
        if overrides:
            config.update_from_flattened_dict(overrides)
        for run in config.get("init_from_runs") or ():  # starts from (or ensembles) other runs
            if (":" in run and not collect_only and not _train_other_experiment(
                    epath.Path(path).parent, run, workdir, overrides)):
                return (format_table(cells, per_seed)
                        + f"\n\nStopped by SIGTERM in {run}; rerun to continue.")
        seeded_configs = [_seeded(config, offset, workdir) for offset in range(seeds)]
        cell_runs = []
        for seed_offset, seeded in enumerate(seeded_configs):
            directory = run_dir(workdir, config.get("table_run") or run_arg, seed_offset)
            if collect_only:
                measured = finished_metrics(directory, steps_to_train(seeded))
                if measured is None:  # an unfinished seed: the cell shows no measurement
                    cell_runs = []
                    break
            else:
                measured = _train_unless_finished(seeded, directory)
                if measured is None:  # SIGTERM: the run saved a checkpoint; stop here
                    cells.append((seeded, None))
                    per_seed.append(None)
                    return (format_table(cells, per_seed)
                            + "\n\nStopped by SIGTERM; rerun to continue.")
            cell_runs.append(cell_metrics(config, measured))
            if seed_offset == 0:
                runs.append((seeded, directory))
        cells.append((seeded_configs[0], mean_over_seeds(cell_runs) if cell_runs else None))
        per_seed.append(cell_runs or None)
    table = format_table(cells, per_seed)
    curves = plot_curves(runs, cells[0][0].table_metrics[0], workdir / "curves.png")
    # An experiment's own figures of the table (e.g. BLEU by sentence length) from its cells.
    figures = module.table_figures(cells, workdir) if hasattr(module, "table_figures") else []
    return table + (f"\n\ncurves: {curves}" if curves else "") + "".join(
        f"\nfigure: {path}" for path in figures)

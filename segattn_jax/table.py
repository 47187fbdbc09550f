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


def run_dir(workdir: epath.Path, run_arg: str) -> epath.Path:
    return workdir / re.sub(r"[^A-Za-z0-9_.-]+", "_", run_arg)


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


def format_table(cells: list[tuple[ml_collections.ConfigDict, dict[str, float] | None]]) -> str:
    """Markdown: a grid per metric when cells have columns, else one row per cell."""
    metrics = list(cells[0][0].table_metrics)
    lines = []
    if any(c.column for c, _ in cells):
        rows = list(dict.fromkeys(c.row for c, _ in cells))
        columns = list(dict.fromkeys(c.column for c, _ in cells))
        by_cell = {(c.row, c.column): (c, m) for c, m in cells}
        for metric in metrics:
            lines += [f"\n{metric} (paper / measured)\n",
                      "| model | " + " | ".join(columns) + " |",
                      "|---" * (len(columns) + 1) + "|"]
            for row in rows:
                entries = []
                for column in columns:
                    config, measured = by_cell.get((row, column), (None, None))
                    paper = config.paper.get(metric) if config else None
                    entries.append(f"{_format(paper)} / "
                                   f"{_format(measured.get(metric) if measured else None)}")
                lines.append(f"| {row} | " + " | ".join(entries) + " |")
    else:
        lines += ["| model | " + " | ".join(f"{m} (paper) | {m} (measured)" for m in metrics) + " |",
                  "|---" * (2 * len(metrics) + 1) + "|"]
        for config, measured in cells:
            entries = [f"{_format(config.paper.get(m))} | "
                       f"{_format(measured.get(m) if measured else None)}" for m in metrics]
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


def run_table(path: str, arg: str, workdir: str | epath.Path, *, overrides: dict[str, Any] | None = None,
              collect_only: bool = False) -> str:
    """Trains every unfinished cell (resuming any partial run) unless `collect_only`; draws the
    first table metric's training curves to WORKDIR/curves.png when the runs evaluated along the
    way."""
    module, workdir = load_experiment(path), epath.Path(workdir)
    cells, runs = [], []
    for run_arg in module.table_runs(arg):
        config = module.get_config(run_arg)
        if overrides:
            config.update_from_flattened_dict(overrides)
        if config.get("init_from_runs"):  # starts from (or ensembles) other runs
            for run in config.init_from_runs:
                if (":" in run and not collect_only and not _train_other_experiment(
                        epath.Path(path).parent, run, workdir, overrides)):
                    return (format_table(cells)
                            + f"\n\nStopped by SIGTERM in {run}; rerun to continue.")
            # After any init_from of the command line (ImageNet weights), which load first.
            config.init_from = ",".join([*init_from_dirs(config), *(
                str(run_dir(workdir, run)) for run in config.init_from_runs)])
        directory = run_dir(workdir, config.get("table_run") or run_arg)
        if collect_only:
            measured = finished_metrics(directory, steps_to_train(config))
        else:
            measured = _train_unless_finished(config, directory)
            if measured is None:  # SIGTERM: the cell saved a checkpoint; stop here
                cells.append((config, None))
                return format_table(cells) + "\n\nStopped by SIGTERM; rerun to continue."
        cells.append((config, cell_metrics(config, measured)))
        runs.append((config, directory))
    table = format_table(cells)
    curves = plot_curves(runs, cells[0][0].table_metrics[0], workdir / "curves.png")
    # An experiment's own figures of the table (e.g. BLEU by sentence length) from its cells.
    figures = module.table_figures(cells, workdir) if hasattr(module, "table_figures") else []
    return table + (f"\n\ncurves: {curves}" if curves else "") + "".join(
        f"\nfigure: {path}" for path in figures)

"""What every benchmark shares: interleaved best-of-N timing, the optional PyTorch reference, and
markdown tables."""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable


def best_seconds(steps: dict[str, Callable[[], object]], repeats: int,
                 budget_s: float = math.inf) -> dict[str, float]:
    """Best wall time of each blocking step, timed in interleaved rounds so all see the same
    machine load.

    Each step is called once untimed first (compilation, caches); a step drops out of the rounds
    once its timed calls add up to `budget_s` (so a very slow reference cannot take minutes).
    """
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if sum(times[name]) < budget_s:
                begin = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - begin)
    return {name: min(values) for name, values in times.items()}


def import_torch():
    """torch using every CPU this process may run on, or None: a reference, never a dependency."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return torch


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

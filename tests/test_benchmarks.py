"""The benchmarks' shared path still runs: the mini FCN-8s train step compiles through
benchmarks/report.compiled_train_step and takes a step, and the machine line names what a table
was measured on (smoke tests; `make bench` measures)."""
import os
import sys

import jax
import numpy as np

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import fcn_train_step  # noqa: E402
import report  # noqa: E402


def test_mini_fcn_train_step_compiles_and_steps():
    step, info = fcn_train_step.jax_step("mini")
    step()
    assert info["gflop"] > 0 and np.isfinite(info["params_millions"])


def test_machine_line_names_cpu_threads_and_versions():
    """Every table prints the machine it was measured on: ratios against PyTorch move with it."""
    line = report.machine()
    assert f"{len(os.sched_getaffinity(0))} threads" in line
    assert f"jax {jax.__version__}" in line and "CPU: " in line

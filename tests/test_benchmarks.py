"""The benchmarks' shared path still runs: the mini FCN-8s train step compiles through
benchmarks/report.compiled_train_step and takes a step (a smoke test; `make bench` measures)."""
import sys

import numpy as np

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import fcn_train_step  # noqa: E402


def test_mini_fcn_train_step_compiles_and_steps():
    step, info = fcn_train_step.jax_step("mini")
    step()
    assert info["gflop"] > 0 and np.isfinite(info["params_millions"])

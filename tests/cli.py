"""Runs `python -m segattn_jax.main` in a subprocess, as a user would (1 CPU device by default)."""
import os
import subprocess
import sys

from tests.conftest import ROOT, TEST_XLA_FLAGS


# The test run's on-disk XLA cache (conftest.py) is kept: a CLI test's train, eval and predict
# subprocesses compile the same programs. Other JAX_ settings of the caller's shell are dropped,
# and XLA compiles as in the tests' own process, on one device.
_KEPT = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k in _KEPT}
    env.update(XLA_FLAGS=TEST_XLA_FLAGS, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def start(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segattn_jax.main", *args], cwd=ROOT,
                            env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run(args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segattn_jax.main", *args], cwd=ROOT,
                          env=cli_env(**env), capture_output=True, text=True, timeout=timeout)

"""TPU pod launch scripts: syntax, usage, and copy + run against a fake one-worker `gcloud`.

The fake gcloud runs `ssh --command` lines with bash in a scratch home directory and `scp` as cp,
so the real quoting of the remote command lines is exercised without a TPU or a network.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU_POD = REPO / "launch" / "tpu_pod.sh"
BOOTSTRAP = REPO / "launch" / "bootstrap.sh"

FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
echo "gcloud $*" >> "$FAKE_HOME/gcloud_calls"
case "$4" in  # gcloud compute tpus tpu-vm SUBCOMMAND ...
  scp) cp "$5" "$FAKE_HOME/${6#*:}" ;;
  ssh)
    for arg in "$@"; do [[ "$arg" == --command=* ]] && command="${arg#--command=}"; done
    cd "$FAKE_HOME" && HOME="$FAKE_HOME" bash -c "$command" ;;
esac
"""

# Stands in for the venv's python: records what bootstrap.sh ran it with.
FAKE_PYTHON = r"""#!/usr/bin/env bash
{ printf 'arg=%s\n' "$@"; echo "SEGATTN_DISTRIBUTED=${SEGATTN_DISTRIBUTED:-}"; echo "cwd=$PWD"; } > "$FAKE_HOME/python_ran"
"""


def run_script(args, env=None, **kwargs):
    return subprocess.run(["bash", *map(str, args)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.parametrize("script", [TPU_POD, BOOTSTRAP], ids=lambda p: p.name)
def test_syntax(script):
    result = run_script(["-n", script])
    assert result.returncode == 0, result.stderr


def test_no_arguments_prints_usage_and_fails():
    result = run_script([TPU_POD])
    assert result.returncode != 0
    assert "Usage: launch/tpu_pod.sh SUBCOMMAND" in result.stderr
    assert run_script([BOOTSTRAP]).returncode != 0


def test_missing_variables_are_named():
    env = {"TPU_NAME": "", "ZONE": "", "DRY_RUN": "1"}
    result = run_script([TPU_POD, "create"], env=env)
    assert result.returncode != 0 and "TPU_NAME is not set" in result.stderr
    env.update(TPU_NAME="t", ZONE="z", CONFIG="c.py", WORKDIR="/local/dir")
    result = run_script([TPU_POD, "run"], env=env)
    assert result.returncode != 0 and "gs://" in result.stderr


def test_dry_run_targets_all_workers():
    env = {"TPU_NAME": "t", "ZONE": "z", "DRY_RUN": "1", "SPOT": "1"}
    created = run_script([TPU_POD, "create"], env=env).stdout
    assert "tpu-vm create t --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot" in created
    installed = run_script([TPU_POD, "install"], env=env).stdout
    assert "--worker=all" in installed and "bootstrap.sh\\ install" in installed


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs tar")
def test_copy_then_run_on_a_fake_worker(tmp_path):
    home, bin_dir, venv, repo = (tmp_path / name for name in ("home", "bin", "venv", "repo"))
    for directory in (home, bin_dir, venv / "bin", repo / ".venv"):
        directory.mkdir(parents=True)
    # A small stand-in repo, so the test does not tar the real one while others edit it.
    shutil.copytree(REPO / "launch", repo / "launch")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    tpu_pod = repo / "launch" / "tpu_pod.sh"
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (venv / "bin" / "python").write_text(FAKE_PYTHON)
    for executable in (bin_dir / "gcloud", venv / "bin" / "python"):
        executable.chmod(0o755)
    stamp = venv / ".installed-tpu"  # a venv installed after pyproject.toml changed: no pip
    stamp.touch()
    os.utime(stamp, (time.time() + 3600,) * 2)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_HOME": str(home), "SEGATTN_VENV": str(venv),
           "TPU_NAME": "t", "ZONE": "z", "CONFIG": "experiments/stn.py:ST-CNN-Aff,RTS", "WORKDIR": "gs://b/runs/x"}

    copied = run_script([tpu_pod, "copy"], env=env)
    assert copied.returncode == 0, copied.stderr
    assert (home / "segattn_jax" / "launch" / "bootstrap.sh").exists()
    assert not (home / "segattn_jax" / ".venv").exists() and not (home / "segattn_jax.tar.gz").exists()

    ran = run_script([tpu_pod, "run", "--config.name=a b"], env=env)
    assert ran.returncode == 0, ran.stderr
    record = (home / "python_ran").read_text().splitlines()
    assert record == [
        "arg=-m", "arg=segattn_jax.main", "arg=train", "arg=--config", "arg=experiments/stn.py:ST-CNN-Aff,RTS",
        "arg=--workdir", "arg=gs://b/runs/x", "arg=--config.name=a b",
        "SEGATTN_DISTRIBUTED=1", f"cwd={home / 'segattn_jax'}",
    ]
    calls = (home / "gcloud_calls").read_text()
    assert calls.count("--worker=all") == 3 and "tpu-vm scp" in calls

    (home / "python_ran").unlink()
    detached = run_script([tpu_pod, "run"], env={**env, "DETACH": "1", "MAIN_COMMAND": "eval"})
    assert detached.returncode == 0, detached.stderr
    for _ in range(600):  # up to 30 s on a loaded machine
        if "cwd=" in ((home / "python_ran").exists() and (home / "python_ran").read_text() or ""):
            break
        time.sleep(0.05)
    assert "arg=eval" in (home / "python_ran").read_text()
    assert (home / "segattn_jax.pid").read_text().strip().isdigit()
    assert (home / "segattn_jax.log").exists()

"""Checkpoints: SIGKILL + restart ends with the same metrics as an uninterrupted run; SIGTERM saves."""
import json
import signal
import time

import pytest

from tests import cli
from tests.conftest import cli_overrides, without_timing

pytestmark = pytest.mark.slow
NUM_STEPS = 60


def _args(workdir, data_dir, **overrides):
    return ["train", "--config", "experiments/fcn.py:FCN-8s,mini", "--workdir", str(workdir),
            *cli_overrides("fcn", data_dir, **{"train.num_steps": NUM_STEPS, **overrides})]


def _wait_for_checkpoint(process, directory, step: int, timeout: float = 240):
    deadline = time.time() + timeout
    while not (directory / "checkpoints" / str(step)).is_dir():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"no checkpoint {step} after {timeout}s"
        time.sleep(0.02)


def test_sigkill_and_restart_matches_uninterrupted_run(tfds_dir, tmp_path):
    straight = cli.run(_args(tmp_path / "straight", tfds_dir))
    assert straight.returncode == 0, straight.stderr
    assert "mean_iou" in straight.stdout and "checkpoints:" in straight.stdout
    expected = without_timing(json.loads((tmp_path / "straight" / "metrics.json").read_text())["eval"])

    workdir = tmp_path / "killed"
    process = cli.start(_args(workdir, tfds_dir))
    _wait_for_checkpoint(process, workdir, 10)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (workdir / "metrics.json").exists(), "killed too late: the run had finished"

    resumed = cli.run(_args(workdir, tfds_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "Restored checkpoint at step" in resumed.stderr
    assert without_timing(json.loads((workdir / "metrics.json").read_text())["eval"]) == expected


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tfds_dir, tmp_path):
    process = cli.start(_args(tmp_path, tfds_dir, **{"train.checkpoint_every": 5}))
    _wait_for_checkpoint(process, tmp_path, 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "SIGTERM: saved a checkpoint at step" in stderr
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert 5 <= steps[-1] < NUM_STEPS
    assert not (tmp_path / "metrics.json").exists()

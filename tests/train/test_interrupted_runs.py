"""Interrupted runs, against one uninterrupted run: SIGKILL + restart ends with the same metrics;
SIGTERM saves a checkpoint and exits cleanly. Damaged checkpoints: the newest unreadable one is
reported and skipped, the run resumes from the previous one and ends as an uninterrupted run
does; with none intact it stops (or, when allowed, starts over) without deleting anything.
`eval` skips the same way.

The command line runs where a signal must reach a process or what it prints is checked; the
other runs stay in this process (a CLI process spends ~15 s here importing and loading programs).
"""
import json
import logging
import shutil
import signal
import time

import pytest

from segattn_jax.train import loop
from segattn_jax.train.errors import NoIntactCheckpointError
from tests import cli
from tests.conftest import cli_overrides, experiment_config, without_timing

pytestmark = pytest.mark.slow
NUM_STEPS, EVERY, KEPT = 24, 4, 3  # checkpoints every 4 steps; the last 3 are kept (16, 20, 24)
RUN = {"train.num_steps": NUM_STEPS, "train.checkpoint_every": EVERY}


def _args(command, workdir, data_dir, **overrides):
    return [command, "--config", "experiments/fcn.py:FCN-8s,mini", "--workdir", str(workdir),
            *cli_overrides("fcn", data_dir, **{**RUN, **overrides})]


def _truncate_arrays(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no array files under {step_dir}"
    for path in files:
        path.write_bytes(path.read_bytes()[:10])


def _delete_metadata(step_dir):
    (step_dir / "default" / "_METADATA").unlink()


def _config(data_dir, **overrides):
    """The config `_args` gives the CLI."""
    return experiment_config("fcn", "FCN-8s,mini", data_dir, **{**RUN, **overrides})


def _train_in_process(workdir, data_dir, caplog, **overrides) -> str:
    """The CLI's `train` with the same config, in this process; returns what it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        loop.train_and_evaluate(_config(data_dir, **overrides), workdir)
    return caplog.text


def _final_metrics(workdir) -> dict:
    return without_timing(json.loads((workdir / "metrics.json").read_text())["eval"])


@pytest.fixture(scope="module")
def finished_run(tfds_dir, tmp_path_factory):
    """An uninterrupted run: its workdir (to copy) and final metrics."""
    workdir = tmp_path_factory.mktemp("straight")
    loop.train_and_evaluate(_config(tfds_dir), workdir)
    return workdir, _final_metrics(workdir)


def _copy_without_metrics(finished_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir)
    (workdir / "metrics.json").unlink()
    return workdir


def _wait_for_checkpoint(process, directory, step: int, timeout: float = 240):
    deadline = time.time() + timeout
    while not (directory / "checkpoints" / str(step)).is_dir():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"no checkpoint {step} after {timeout}s"
        time.sleep(0.02)


def test_sigkill_and_restart_matches_uninterrupted_run(finished_run, tfds_dir, tmp_path, caplog):
    process = cli.start(_args("train", tmp_path, tfds_dir))
    _wait_for_checkpoint(process, tmp_path, EVERY)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "metrics.json").exists(), "killed too late: the run had finished"

    assert "Restored checkpoint at step" in _train_in_process(tmp_path, tfds_dir, caplog)
    assert _final_metrics(tmp_path) == finished_run[1]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tfds_dir, tmp_path):
    process = cli.start(_args("train", tmp_path, tfds_dir, **{"train.checkpoint_every": 5}))
    _wait_for_checkpoint(process, tmp_path, 5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "SIGTERM: saved a checkpoint at step" in stderr
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert 5 <= steps[-1] < NUM_STEPS
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("damage, on_the_command_line", [(_truncate_arrays, True),
                                                         (_delete_metadata, False)])
def test_unreadable_newest_checkpoint_resumes_from_previous(damage, on_the_command_line,
                                                            finished_run, tfds_dir, tmp_path,
                                                            caplog):
    """Truncated arrays (what a full disk leaves) through the CLI, whose output must hold no
    traceback; missing metadata in this process."""
    workdir = _copy_without_metrics(finished_run, tmp_path)
    damage(workdir / "checkpoints" / str(NUM_STEPS))
    if on_the_command_line:
        resumed = cli.run(_args("train", workdir, tfds_dir))
        assert resumed.returncode == 0, resumed.stderr
        log = resumed.stderr
        assert "Traceback" not in log and "Event loop is closed" not in log
    else:
        log = _train_in_process(workdir, tfds_dir, caplog)
    assert log.count("cannot be restored") == 1
    assert f"Checkpoint at step {NUM_STEPS} in" in log
    assert f"Restored checkpoint at step {NUM_STEPS - EVERY}" in log
    assert _final_metrics(workdir) == finished_run[1]
    # The damaged checkpoint is kept aside, and a fresh one took its step.
    assert (workdir / "checkpoints_unreadable" / str(NUM_STEPS)).is_dir()
    assert (workdir / "checkpoints" / str(NUM_STEPS) / "default" / "_METADATA").is_file()


def test_eval_skips_an_unreadable_newest_checkpoint(finished_run, tfds_dir, tmp_path, caplog):
    workdir = _copy_without_metrics(finished_run, tmp_path)
    _truncate_arrays(workdir / "checkpoints" / str(NUM_STEPS))
    with caplog.at_level(logging.INFO):
        result = loop.evaluate(_config(tfds_dir), workdir)
    assert f"Restored checkpoint at step {NUM_STEPS - EVERY}" in caplog.text
    assert "mean_iou" in result
    assert not (workdir / "checkpoints_unreadable").exists()  # eval changes nothing


def test_all_unreadable_stops_unless_allowed_to_start_over(finished_run, tfds_dir, tmp_path,
                                                          caplog):
    workdir = _copy_without_metrics(finished_run, tmp_path)
    kept = [NUM_STEPS - EVERY * i for i in reversed(range(KEPT))]
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == kept
    for step in kept:
        _truncate_arrays(workdir / "checkpoints" / str(step))
    before = sorted(p.name for p in (workdir / "checkpoints").iterdir())

    stopped = cli.run(_args("train", workdir, tfds_dir))
    assert stopped.returncode != 0
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No checkpoint in") and f"step {kept[0]}:" in last, stopped.stderr
    assert "--config.train.restart_if_no_intact_checkpoint=true" in last
    assert "Traceback" not in stopped.stderr
    with pytest.raises(NoIntactCheckpointError, match=f"step {kept[0]}:.*Restore them from a copy"):
        loop.evaluate(_config(tfds_dir), workdir)  # eval: the same error
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before

    # Allowed: it starts over from step 0 (a short run: the uninterrupted tests cover the rest)
    # and keeps the unreadable checkpoints aside.
    restarted = _train_in_process(workdir, tfds_dir, caplog, **{
        "train.restart_if_no_intact_checkpoint": True, "train.num_steps": EVERY})
    assert "starting from scratch" in restarted
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [str(EVERY)]
    assert sorted(int(p.name) for p in (workdir / "checkpoints_unreadable").iterdir()) == kept

"""A real 2-process run on this machine: jax.distributed with the coordinator on 127.0.0.1."""
import json
import socket

import pytest

from segattn_jax.data import pipeline

from tests import cli
from tests.conftest import cli_overrides

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_run(tfds_dir, tmp_path):
    pipeline.load_builder("shapes/tiny", data_dir=tfds_dir)  # generate once, not twice at once
    port = _free_port()
    args = ["train", "--config", "experiments/fcn.py:FCN-8s,mini", "--workdir", str(tmp_path),
            *cli_overrides("fcn", tfds_dir, **{"train.num_steps": 4, "mesh.data": -1})]
    processes = [cli.start(args, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                           JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    assert "process 0 of 2" in outputs[0][1] and "process 1 of 2" in outputs[1][1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["step"] == 4
    assert (tmp_path / "checkpoints" / "4").is_dir()

"""Two nodes without SLURM: two train.py processes with trainer.num_nodes=2, devices=1, NODE_RANK 0
and 1 and MASTER_ADDR=127.0.0.1, as one starts them by hand on two machines. Lightning's plain
environment takes them for two nodes; the test NLL equals a one-process evaluation of the same
checkpoint (slow: two smoke runs and an evaluation on the whole test split)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, requires_data
from test_cli import assert_ok, run

pytestmark = [pytest.mark.slow, requires_data]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_process_test_nll(run_dir: Path, out: Path) -> float:
    """The test NLL that `eval.py` measures in one process, on the whole test split, of the best checkpoint
    of the run in `run_dir` (its record written to `out`): the reference of a multi-process run's figure."""
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    result = run(
        "eval.py",
        f"ckpt_path={best}",
        "trainer=cpu",
        "logger=csv",
        "fid.num_samples=4",
        f"hydra.run.dir={out}",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert_ok(result)
    return json.loads((out / "record.json").read_text())["test_nll"]


def test_two_nodes_over_loopback_test_exactly_like_one_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HYDRA_FULL_ERROR"))}
    env |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "trainer=multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        "debug=smoke",
        "trainer.limit_test_batches=null",
        "logger=csv",
        "fid.num_samples=4",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    nodes = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=env | {"NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=900)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert "nodes=2" in outputs[0], "the run must see two nodes, not two devices of one"
    two_nodes = json.loads((tmp_path / "run" / "record.json").read_text())
    one = one_process_test_nll(tmp_path / "run", tmp_path / "single")
    assert one == pytest.approx(two_nodes["test_nll"], abs=1e-3)  # the whole split, float32 sums

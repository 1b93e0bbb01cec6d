"""SLURM for real: sweeps and a DDP job through sbatch and srun, a failing job, and preemption, on
the one-machine cluster of `tools/slurm/start.sh` (slow tests; each job is a `debug=smoke` run).

    tools/slurm/start.sh && export SLURM_CONF=/tmp/pixel-slurm/slurm.conf
    python -m pytest -m slow tests/test_slurm.py

Skipped, with the reason, when sbatch is not installed or no cluster answers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import requires_data
from test_cli import assert_ok, run
from test_multinode import one_process_test_nll


def cluster_missing() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not installed: tools/slurm/start.sh installs SLURM and starts a one-machine cluster"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        states = ""
    if not {"idle", "mixed", "allocated"} & set(states.split()):
        return "no SLURM cluster answers: start one with tools/slurm/start.sh and export SLURM_CONF as it prints"
    return None


pytestmark = [
    pytest.mark.slow,
    requires_data,
    pytest.mark.skipif(cluster_missing() is not None, reason=str(cluster_missing())),
]

#: A SLURM job of one CPU per task that fits the one-machine cluster; metrics as CSV.
CPU_JOB = (
    "trainer.accelerator=cpu",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=20",
    "logger=csv",
)


def slurm_jobs(sweep: Path) -> dict[str, Path]:
    """The SLURM job id of each job of a sweep that has started, and its folder of logs: submitit submits
    a sweep's jobs with one sbatch, as the tasks of a job array (ids <array id>_<index>), and keeps each
    job's logs in .submitit/<id>/ (<id>_<srun task>_log.out); a sweep of one job is a plain job."""
    return {path.parent.name: path.parent for path in sorted((sweep / ".submitit").glob("*/*_log.out"))}


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "record.json").read_text())


def test_a_sweep_reaches_every_job_through_sbatch(tmp_path):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "debug=smoke",
        "optimizer.lr=1e-3,3e-3",
        *CPU_JOB,
        f"hydra.sweep.dir={tmp_path}",
        timeout=1200,
    )
    assert_ok(result)
    (script,) = (tmp_path / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --array=0-1" in script.read_text(), "the sweep's two jobs are one sbatch job array"
    assert sorted(slurm_jobs(tmp_path)) == [f"{script.parent.name}_0", f"{script.parent.name}_1"]
    for job in ("0", "1"):
        assert record(tmp_path / job)["status"] == "finished"
    assert (tmp_path / "comparison.md").is_file()


def test_a_sweep_with_a_failing_job_exits_1_and_names_it(tmp_path):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "debug=smoke",
        "optimizer.lr=1e-3,-1",
        *CPU_JOB,
        f"hydra.sweep.dir={tmp_path}",
        timeout=1200,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 job(s) failed" in result.stderr and str(tmp_path / "1") in result.stderr
    assert "optimizer.lr must be a number above 0" in (tmp_path / "1" / "failure.txt").read_text()
    assert record(tmp_path / "0")["status"] == "finished" and record(tmp_path / "1")["status"] == "failed"


def test_a_ddp_job_of_two_tasks_takes_its_ranks_from_slurm_and_tests_exactly(tmp_path):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "trainer=multinode",
        "trainer.num_nodes=1",
        "trainer.devices=2",
        "debug=smoke",
        "trainer.limit_test_batches=null",  # the whole test split on both sides of the comparison
        *CPU_JOB,
        f"hydra.sweep.dir={tmp_path}",
        timeout=1200,
    )
    assert_ok(result)
    ((job_id, folder),) = slurm_jobs(tmp_path).items()
    logs = {task: (folder / f"{job_id}_{task}_log.err").read_text() for task in (0, 1)}
    # Lightning's SLURMEnvironment: each srun task is one process, its rank SLURM_PROCID
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    ddp = record(tmp_path / "0")
    assert ddp["status"] == "finished"
    # each process measures its own share of the 10,000 images, without padded repeats
    assert one_process_test_nll(tmp_path / "0", tmp_path / "single") == pytest.approx(ddp["test_nll"], abs=1e-4)


def wait_for(condition, what: str, timeout: float, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {process.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_preempted_job_saves_requeues_and_resumes_without_repeating_a_step(tmp_path):
    """USR1 (what SLURM sends before preemption with --signal=USR1@..., and what the test sends with
    scancel) makes Lightning's SLURMEnvironment save hpc_ckpt_1.ckpt and requeue the job; the requeued
    job resumes from it: the run ends at its step budget, and this session's steps are the rest."""
    steps = 300  # long enough that the signal arrives mid-training on a slow CPU
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        "python",
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "debug=smoke",
        f"trainer.limit_train_batches={steps}",
        "trainer.max_epochs=1",
        "callbacks.step_checkpoint.every_n_train_steps=5",
        *CPU_JOB,
        f"hydra.sweep.dir={tmp_path}",
    ]
    log = tmp_path / "sweep.log"  # a file, not a pipe: the launcher's polling fills a pipe nobody reads yet
    sweep = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[1], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        job_id = wait_for(lambda: next(iter(slurm_jobs(tmp_path)), None), "the job to start", 300, sweep)
        wait_for(lambda: (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file(), "a first checkpoint", 600, sweep)
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        sweep.wait(timeout=1200)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGINT)
            sweep.wait(timeout=60)
    assert sweep.returncode == 0, log.read_text()[-4000:]
    assert list((tmp_path / "0").glob("hpc_ckpt_*.ckpt")), "the preempted job saved no hpc checkpoint"
    resumed = record(tmp_path / "0")
    assert resumed["status"] == "finished" and resumed["steps"] == steps
    assert 0 < resumed["session_steps"] < steps, "the requeued job went on from the saved step, not from 0"
    err = "".join(path.read_text() for path in slurm_jobs(tmp_path)[job_id].glob("*_log.err"))
    assert re.search(r"Requeued SLURM job", err) or "requeu" in err.lower()

"""An interrupted run is recorded: SIGTERM (a scheduler's preemption, a container stop) and SIGINT
(Ctrl+C) end a real training process with exit 143 and 130, a record.json whose status is
"interrupted", a failure.txt that names the signal and the checkpoint to resume from, and a
last.ckpt that resumes the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import REPO, requires_data
from test_cli import assert_ok, run
from test_configs import compose_train

from pixel_lightning.cli import run_job

ENV = {"WANDB_MODE": "offline", "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1"}
#: A short fit: 2 epochs of 4 batches, last.ckpt every 2 steps, no test, grid or sample-quality step.
SHORT = (
    "debug=smoke",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "test=false",
    "~callbacks.sample_grid",
    "fid.num_samples=0",
    "callbacks.step_checkpoint.every_n_train_steps=2",
    "logger=csv",
)


def strict_json(path: Path) -> dict:
    """The JSON object of `path`, refusing NaN and Infinity (which Python's json writes by default)."""

    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_interrupted(out: Path, result, signum: signal.Signals, resumable: bool) -> None:
    assert result.returncode == 128 + signum, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    failure = (out / "failure.txt").read_text()
    assert f"Interrupted by {signum.name}" in failure and failure in result.stderr.replace("error: ", "", 1) + "\n"
    record = strict_json(out / "record.json")
    assert record["status"] == "interrupted" and f"Interrupted by {signum.name}" in record["error"]
    assert record["model"] == "pixelcnn" and record["dataset"] == "binarized_mnist"
    last = out / "checkpoints" / "last.ckpt"
    assert (f"ckpt_path={last.absolute()}" in failure) == resumable


def interrupted_in_process(tmp_path: Path, interrupt, capsys) -> tuple[int, dict, str]:
    """(exit status, record, failure.txt) of run_job on a task that calls `interrupt()` and then
    carries on with a handler of every Exception: the interruption must get through it."""
    cfg = compose_train(["logger=csv"], tmp_path)
    carried_on = []

    def task(cfg):
        try:
            interrupt()
            carried_on.append(True)
        except Exception:  # a job's own error handling must not take an interruption for a failure
            carried_on.append(True)

    with pytest.raises(SystemExit) as stopped:
        run_job(task, cfg)
    assert not carried_on
    failure = (tmp_path / "failure.txt").read_text()
    assert capsys.readouterr().err == f"error: {failure}"
    return stopped.value.code, strict_json(tmp_path / "record.json"), failure


def test_sigint_in_a_job_exits_130_and_records_the_interruption(tmp_path, capsys):
    # Python's own Ctrl+C handler, as in a terminal: a test runner started in the background (`cmd &`)
    # inherits SIGINT ignored, which a job rightly keeps ignoring (cli.interruptible)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, record, failure = interrupted_in_process(tmp_path, lambda: signal.raise_signal(signal.SIGINT), capsys)
        restored = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and failure.startswith("Interrupted by SIGINT (Ctrl+C)")
    assert record["status"] == "interrupted" and record["error"] == failure.strip()
    assert record["model"] == "pixelcnn" and record["task"] == "train"
    assert "It left no checkpoint to resume from" in failure
    assert restored is signal.default_int_handler  # restored after the job


def test_sigterm_in_a_job_exits_143_and_names_the_checkpoint_that_resumes_it(tmp_path, capsys):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    # the handler is called directly: SIGTERM's default would end the test process itself
    code, record, failure = interrupted_in_process(
        tmp_path, lambda: signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None), capsys
    )
    assert code == 143 and record["status"] == "interrupted"
    assert failure.startswith("Interrupted by SIGTERM (a scheduler's preemption, a container stop or a kill)")
    assert f"ckpt_path={last}" in failure
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_installed_before_the_job_keeps_it(tmp_path):
    """submitit's job runner bypasses SIGTERM (its own signal requeues the job): the job leaves it so."""
    cfg = compose_train(["logger=csv"], tmp_path)
    bypassed = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: bypassed.append(signum))
    try:
        assert run_job(lambda cfg: signal.raise_signal(signal.SIGTERM) or "done", cfg) == "done"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert bypassed == [signal.SIGTERM] and not (tmp_path / "failure.txt").exists()


@requires_data
@pytest.mark.slow
def test_a_sigterm_mid_training_is_recorded_and_its_last_checkpoint_resumes(tmp_path):
    out = tmp_path / "interrupted"
    result = run(
        "train.py",
        *SHORT,
        f"hydra.run.dir={out}",
        "+callbacks.probe._target_=probes.FitProbe",
        f"+callbacks.probe.path={tmp_path / 'probe.pt'}",
        "+callbacks.probe.kill_at_step=3",
        "+callbacks.probe.kill_signal=SIGTERM",
        env=ENV,
    )
    assert_interrupted(out, result, signal.SIGTERM, resumable=True)
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the step checkpoint before the signal

    resumed = tmp_path / "resumed"
    assert_ok(run("train.py", *SHORT, f"hydra.run.dir={resumed}", f"ckpt_path={last}", env=ENV))
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert strict_json(resumed / "record.json")["status"] == "finished"


@requires_data
@pytest.mark.slow
def test_a_sigint_sent_from_outside_while_training_exits_130_and_is_recorded(tmp_path):
    """Ctrl+C at whatever point of a long run the signal finds it (a batch, validation, a checkpoint)."""
    out, probe = tmp_path / "run", tmp_path / "probe.pt"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *SHORT,
        "trainer.max_epochs=1000",
        f"hydra.run.dir={out}",
        "+callbacks.probe._target_=probes.FitProbe",
        f"+callbacks.probe.path={probe}",
    ]
    env = {**os.environ, **ENV}
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        deadline = time.monotonic() + 300
        while not probe.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the probe writes its file as training starts
        time.sleep(1.0)  # some steps into training
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert_interrupted(
        out,
        subprocess.CompletedProcess(command, process.returncode, stdout, stderr),
        signal.SIGINT,
        resumable=(out / "checkpoints" / "last.ckpt").is_file(),
    )

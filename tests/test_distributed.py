"""DDP over gloo on the CPU: exact metrics on 1 and 2 processes, rank-zero outputs, per-rank
seeds, and `train.py trainer=ddp_cpu` end to end (one folder, one W&B run, outputs written once).
The subprocesses report from every process its world size and image counts (probes.RankImages),
so a run that silently falls back to one process fails."""

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from ddp_eval import CASES, evaluate, images
from probes import rank_reports
from support import REPO, requires_data, tiny_model, wandb_logged
from test_checkpoint import model_checkpoint
from test_cli import assert_ok, run

from pixel_lightning.callbacks import RankSeed, SampleGrid, sample_grid
from pixel_lightning.checkpoint import load_model
from pixel_lightning.plugins import AtomicCheckpointIO


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ddp") / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(tiny_model()), path)
    return path


@pytest.fixture(scope="module")
def two_process_results(checkpoint, tmp_path_factory):
    """tests/ddp_eval.py on 2 processes (one subprocess; Lightning starts the second): its results,
    and each process's report of its world size and image counts (probes.RankImages)."""
    out = tmp_path_factory.mktemp("ddp") / "results.json"
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_eval.py"), str(checkpoint), "2", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(out.read_text()), rank_reports(out)


def shards(count: int, world_size: int) -> list[int]:
    """Images per rank of `count` split without padding (rank r takes r, r + N, ...)."""
    return [len(range(rank, count, world_size)) for rank in range(world_size)]


def test_val_and_test_nll_are_exact_on_one_and_two_processes(checkpoint, two_process_results, tmp_path):
    """Splits of 7, 5 and 32 images with eval batches that do not divide them: each metric is the
    mean of -log_prob over exactly the split's images (no padded repeats), on 1 process and on 2,
    and the 2-process run really ran 2 processes that shared out the images (a fallback to one
    process, or shards that repeat or drop images, fails)."""
    model = load_model(checkpoint)
    one_process = evaluate(str(checkpoint), devices=1, report=str(tmp_path / "one"))
    two_processes, reports = two_process_results
    for case, (stage, count, _) in CASES.items():
        with torch.no_grad():
            nll = -model.log_prob(images(count)).double().mean().item()
        for results in (one_process, two_processes):
            assert results[case][f"{stage}/nll"] == pytest.approx(nll, abs=1e-5), case
            assert results[case][f"{stage}/bpd"] == pytest.approx(nll / (16 * math.log(2)), abs=1e-6), case
        assert two_processes[case][f"{stage}/nll"] == pytest.approx(one_process[case][f"{stage}/nll"], abs=1e-5)
    for world_size, ranks in ((1, rank_reports(tmp_path / "one")), (2, reports)):
        assert [(r["rank"], r["world_size"]) for r in ranks] == [(rank, world_size) for rank in range(world_size)]
        for stage in ("val", "test"):
            per_rank = [
                sum(shards(count, world_size)[rank] for s, count, _ in CASES.values() if s == stage)
                for rank in range(world_size)
            ]  # val: 7 images; test: 5 + 32
            assert [r["images"][stage] for r in ranks] == per_rank, stage


class StubTrainer:
    def __init__(self, is_global_zero: bool, world_size: int = 2, global_rank: int = 0):
        self.is_global_zero, self.world_size, self.global_rank = is_global_zero, world_size, global_rank
        self.current_epoch, self.global_step = 0, 7
        self.logged = []
        self.loggers = [self]


@pytest.mark.parametrize("is_global_zero", [True, False])
def test_sample_grid_samples_writes_and_logs_only_on_rank_zero(is_global_zero, tmp_path, monkeypatch):
    model = tiny_model()
    calls = []
    monkeypatch.setattr(model, "sample", lambda *args, **kwargs: calls.append(args) or torch.zeros(1, 1, 4, 4))
    trainer = StubTrainer(is_global_zero)
    # what the grid hands to the loggers (loggers.log_image sends it to each one that keeps images)
    monkeypatch.setattr(sample_grid, "log_image", lambda loggers, key, *_, **__: trainer.logged.append(key))
    grid = SampleGrid(str(tmp_path / "samples"), num_samples=1)
    grid.on_train_epoch_end(trainer, model)
    grid.on_train_end(trainer, model)
    written = sorted(p.name for p in tmp_path.rglob("*.png"))
    if is_global_zero:
        assert len(calls) == 1 and written == ["epoch_000.png"] and len(trainer.logged) == 1
    else:
        assert calls == [] and written == [] and trainer.logged == []


def test_sample_grid_samples_through_the_cached_path(tmp_path, monkeypatch):
    # One cached sampler for the grid, called once per sub-pixel; the naive path would build none.
    model = tiny_model(3, 4, height=2, width=3)
    make_sampler, calls = model.net.cached_sampler, []

    def counted(*size):
        sampler = make_sampler(*size)
        calls.append(size)
        return lambda *args, **kwargs: calls.append(args[1:]) or sampler(*args, **kwargs)

    monkeypatch.setattr(model.net, "cached_sampler", counted)
    SampleGrid(str(tmp_path), num_samples=2).on_train_epoch_end(StubTrainer(True), model)
    assert calls[0] == (2, 2, 3) and len(calls) == 1 + 3 * 2 * 3  # (batch, H, W), then C per position
    assert (tmp_path / "epoch_000.png").is_file()


def test_rank_seed_gives_each_process_its_own_stream():
    draws = []
    for rank in (0, 1, 0):
        RankSeed(seed=5).setup(StubTrainer(rank == 0, world_size=2, global_rank=rank), None, "fit")
        draws.append(torch.rand(3))
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    # The stream of rank r is that of seed + r, in python, numpy and torch.
    RankSeed(seed=5).setup(StubTrainer(False, world_size=4, global_rank=3), None, "fit")
    seeded = (random.random(), np.random.rand(), torch.rand(1).item(), torch.initial_seed())
    random.seed(8)
    np.random.seed(8)
    torch.manual_seed(8)
    assert seeded == (random.random(), np.random.rand(), torch.rand(1).item(), 8)
    torch.manual_seed(9)
    expected = torch.rand(3)
    torch.manual_seed(9)
    RankSeed(seed=5).setup(StubTrainer(True, world_size=1), None, "fit")  # one process: the plain seed stays
    assert torch.equal(torch.rand(3), expected)


@pytest.fixture(scope="module")
def ddp_smoke_run(tmp_path_factory):
    """`python train.py debug=smoke trainer=ddp_cpu` with the default run folder under a fresh log dir."""
    logs = tmp_path_factory.mktemp("ddp_logs")
    result = run(
        "train.py",
        "debug=smoke",
        "trainer=ddp_cpu",
        "callbacks.sample_grid.num_samples=1",
        f"paths.log_dir={logs}",
        "+callbacks.rank_images._target_=probes.RankImages",
        f"+callbacks.rank_images.path={logs.parent / 'ranks'}",
        env={"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")},
    )
    assert_ok(result)
    return logs, result


@requires_data
def test_ddp_smoke_run_has_one_folder_one_wandb_run_and_writes_outputs_once(ddp_smoke_run):
    logs, result = ddp_smoke_run
    (out,) = list((logs / "train" / "runs").iterdir())  # the worker process made no folder of its own
    assert sorted(p.name for p in out.glob("*.log")) == ["train.log"]  # no log file from rank 1
    # the sample grid and the grid of the samples the run record scored, each written once
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_000.png", "scored.png"]
    (wandb_run,) = list((out / "wandb").glob("offline-run-*"))
    assert len(list((wandb_run / "files" / "media" / "images").glob("samples_*.png"))) == 1
    logged = wandb_logged(wandb_run)
    assert logged["exited"] and {"val/nll", "test/nll"} <= logged["history"]
    assert result.stdout.count("Test NLL:") == 1
    setup = (out / "train.log").read_text()
    assert "accelerator=cpu devices=2 nodes=1 strategy=DDP precision=32-true batch=16 per device, 32 global" in setup
    assert (out / "checkpoints" / "last.ckpt").is_file()
    # Two processes really ran, each on its own shard (debug=smoke: 5 train batches of 16, 2 val and 2 test
    # batches per process) with its own seed, seed + rank.
    reports = rank_reports(logs.parent / "ranks")
    assert [(r["rank"], r["world_size"], r["seed"]) for r in reports] == [(0, 2, 1234), (1, 2, 1235)]
    assert [r["images"] for r in reports] == [{"train": 80, "val": 32, "test": 32}] * 2
    record = json.loads((out / "record.json").read_text())  # both processes' 160 images of the 50,000
    assert record["epochs"] == pytest.approx(160 / 50_000) and record["steps"] == 5


def test_a_multirun_with_ddp_is_refused_at_start_and_runs_nothing(tmp_path):
    """Lightning's DDP would re-run the command line, i.e. the whole sweep, in its workers."""
    result = run(
        "train.py",
        "-m",
        "debug=smoke",
        "trainer=ddp_cpu",
        "logger=csv",
        "optimizer.lr=0.001,0.002",
        f"hydra.sweep.dir={tmp_path}",
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for job in ("0", "1"):
        message = (tmp_path / job / "failure.txt").read_text()
        assert "cannot run inside a multirun" in message and "hydra/launcher=slurm" in message
        assert not (tmp_path / job / "checkpoints").exists()


def test_progress_is_rich_on_a_terminal_and_plain_lines_otherwise(monkeypatch):
    from pytorch_lightning.callbacks import RichProgressBar

    from pixel_lightning.callbacks import PlainProgress, progress_bar

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress_bar(5), PlainProgress) and progress_bar(5).every_n_seconds == 5


@pytest.mark.parametrize("conditional", [False, True])
def test_every_image_counter_counts_the_images_of_every_process(conditional, tmp_path):
    """The progress line, the run record and the learning curve count a step's images alike: of
    (B, C, H, W) or (images, labels) batches, times the processes."""
    from types import SimpleNamespace

    from pixel_lightning.callbacks import LearningCurve, PlainProgress, RunRecord

    trainer = SimpleNamespace(world_size=2, global_step=0, log_every_n_steps=0)
    images = torch.zeros(4, 1, 2, 2)
    batch = [images, torch.zeros(4, dtype=torch.long)] if conditional else images
    progress, record, curve = PlainProgress(), RunRecord(str(tmp_path)), LearningCurve(every_seconds=None)
    progress.disable()
    progress.on_train_start(trainer, None)
    record.on_train_batch_start(trainer, None, batch, 0)
    for callback in (progress, record, curve):
        callback.on_train_batch_end(trainer, None, None, batch, 0)
    assert progress._images == record.batch_images == curve.images_seen == 8

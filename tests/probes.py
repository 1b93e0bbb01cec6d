"""Callbacks that subprocess tests add to train.py (`+callbacks.probe._target_=probes.FitProbe`,
with tests/ on PYTHONPATH) to observe a real run from the inside."""

from __future__ import annotations

import copy
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch


class FitProbe(pl.Callback):
    """Saves to `path`: the weights, optimizer state and global step at fit start, and the number
    of training batches this process ran. With `kill_at_step`, the process sends itself
    `kill_signal` (SIGKILL: a crash mid-epoch; SIGTERM, SIGINT: an interruption) once that step is
    done (before the step's checkpoint). With `keep_state_at_step`, also the weights and optimizer
    state once that step is done."""

    def __init__(
        self,
        path: str,
        kill_at_step: int | None = None,
        keep_state_at_step: int | None = None,
        kill_signal: str = "SIGKILL",
    ) -> None:
        self.path, self.kill_at_step, self.keep_state_at_step = path, kill_at_step, keep_state_at_step
        self.kill_signal = signal.Signals[kill_signal]
        self.report: dict = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report = {"start_step": trainer.global_step, "batches": 0} | state(trainer, pl_module)
        torch.save(self.report, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.report["batches"] += 1
        if trainer.global_step == self.keep_state_at_step:
            self.report["state_at_step"] = state(trainer, pl_module)
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), self.kill_signal)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(self.report, self.path)


class CrashAtStep(pl.Callback):
    """Raises RuntimeError("crash") once `step` optimizer steps are done, before that step's
    checkpoint (checkpoint callbacks run last): a crash mid-run, for in-process tests."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def state(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
    """Copies of the weights and the optimizer state (their tensors change in place)."""
    return {
        "state_dict": copy.deepcopy(pl_module.state_dict()),
        "optimizer": copy.deepcopy(trainer.optimizers[0].state_dict()),
    }


class RankImages(pl.Callback):
    """Writes `<path>.rank<r>.json` from every process r when a stage ends: the size of the process
    group it really joined, its rank, `torch.initial_seed()` at the start of training (after the
    run's seeding), and how many images it took per stage (`train`, `val` without the sanity check,
    `test`; counted over the trainer's life). A process that never ran writes no file."""

    def __init__(self, path: str) -> None:
        self.path, self.images, self.seed = path, Counter(), None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.world_size = torch.distributed.get_world_size() if distributed else 1

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seed = torch.initial_seed()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images["train"] += len(batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.images["val"] += len(batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.images["test"] += len(batch)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        report = {"world_size": self.world_size, "rank": trainer.global_rank, "seed": self.seed, "images": self.images}
        Path(f"{self.path}.rank{trainer.global_rank}.json").write_text(json.dumps(report))


def rank_reports(path: str | os.PathLike) -> list[dict]:
    """The reports of RankImages(path), one per process that wrote one, by rank."""
    reports = [json.loads(f.read_text()) for f in Path(path).parent.glob(f"{Path(path).name}.rank*.json")]
    return sorted(reports, key=lambda report: report["rank"])

"""Callbacks that subprocess tests add to train.py (`+callbacks.probe._target_=probes.FitProbe`,
with tests/ on PYTHONPATH) to observe a real run from the inside."""

from __future__ import annotations

import copy
import os
import signal

import pytorch_lightning as pl
import torch


class FitProbe(pl.Callback):
    """Saves to `path`: the optimizer state and global step at fit start, and the number of
    training batches this process ran. With `kill_at_step`, the process SIGKILLs itself once
    that step is done (before the step's checkpoint), i.e. a crash mid-epoch."""

    def __init__(self, path: str, kill_at_step: int | None = None) -> None:
        self.path, self.kill_at_step = path, kill_at_step
        self.report: dict = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())  # its tensors change in place
        self.report = {"optimizer": optimizer, "start_step": trainer.global_step, "batches": 0}
        torch.save(self.report, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.report["batches"] += 1
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

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

"""Training progress: Rich's live bar on a terminal, plain lines where output goes to a file.

Under SLURM, nohup or CI, Rich's bar shows nothing until the run ends; plain lines at a steady
pace show a living run in the log instead.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar

from pixel_lightning.callbacks.images_seen import trained_images
from pixel_lightning.logging_steps import is_logging_step, latest_logged


def progress_bar(every_n_seconds: float = 30.0) -> ProgressBar:
    """Rich's bar when stdout is a terminal, else PlainProgress (the `progress_bar` callback)."""
    return RichProgressBar() if sys.stdout.isatty() else PlainProgress(every_n_seconds)


class PlainProgress(ProgressBar):
    """Prints one line per `every_n_seconds` of training (at the first logging step after them,
    and at each epoch's first and last batch), and one per validation, from rank zero:

        epoch 2/3 step 1200/2346 loss 0.1234 412.5 images/s ETA 0:03:12
        epoch 2/3 validation: val/nll 95.1234 val/bpd 0.1750

    The loss is the latest logged `train/loss` (the mean over each `trainer.log_every_n_steps` window;
    "?" before the first);
    images/s counts all processes; ETA extrapolates this run's pace over the remaining steps.
    """

    def __init__(self, every_n_seconds: float = 30.0) -> None:
        super().__init__()
        self.every_n_seconds = every_n_seconds
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    @property
    def is_enabled(self) -> bool:
        return self.enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_print = time.monotonic()
        self._start_step, self._images = trainer.global_step, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._images += trained_images(batch, trainer)
        now = time.monotonic()
        edge = batch_idx == 0 or batch_idx + 1 == self.total_train_batches
        # Between the edges, lines wait for a logging step: the loss they show is a host read, which
        # shares that step's wait for the device instead of adding one.
        logged = not trainer.log_every_n_steps or is_logging_step(trainer)  # no logging: nothing to read
        due = now - self._last_print >= self.every_n_seconds and logged
        if not self.enabled or not (due or edge):
            return
        self._last_print = now
        elapsed = max(now - self._start, 1e-9)
        steps, total = trainer.global_step - self._start_step, trainer.estimated_stepping_batches
        eta = elapsed / steps * (total - trainer.global_step) if steps and math.isfinite(total) else math.nan
        loss = latest_logged(trainer, "train/loss")  # as of the latest logging step; none before the first
        shown = "?" if loss is None else f"{float(loss):.4f}"
        print(
            f"{self._epoch(trainer)} step {trainer.global_step}/{total} loss {shown} "
            f"{self._images / elapsed:.1f} images/s ETA {format_seconds(eta)}",
            flush=True,
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if self.enabled and not trainer.sanity_checking and metrics:
            values = " ".join(f"{name} {float(value):.4f}" for name, value in sorted(metrics.items()))
            print(f"{self._epoch(trainer)} validation: {values}", flush=True)

    @staticmethod
    def _epoch(trainer: pl.Trainer) -> str:
        return f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"


def format_seconds(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "?"

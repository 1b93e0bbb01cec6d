"""Stopping a diverging run: the first loss that is not a finite number ends training with a
message, and a checkpoint whose weights are not finite is never written (so neither the best
checkpoint nor last.ckpt can be a NaN model). Works for any LightningModule: this project's modules
keep their logged values in a StepWindow (logging_steps.py), which the guard checks; for any other,
the guard keeps one itself, of whatever `training_step` returns (a tensor, or a dict such as a GAN's
{"loss_g": ..., "loss_d": ...})."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from pixel_lightning.errors import NonFiniteError
from pixel_lightning.logging_steps import LogsStepWindow, StepWindow, fixes, is_logging_step, kept_checkpoints


def named_tensors(outputs: Any, name: str = "loss") -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors in a training_step output, named by their keys ("loss", "loss_d", "out.aux")."""
    if isinstance(outputs, torch.Tensor):
        yield name, outputs
    elif isinstance(outputs, Mapping):
        for key, value in outputs.items():
            yield from named_tensors(value, str(key) if name == "loss" else f"{name}.{key}")


class DivergenceGuard(pl.Callback):
    """Raise NonFiniteError at the first non-finite loss, naming the step, the loss and the fixes,
    and refuse to save a checkpoint whose weights are not finite (the earlier ones stay).

    Without a host read per step: the losses wait on the device in a StepWindow, read once per
    logging window (the module's own, read when it logs them; or the guard's), before every
    checkpoint save and at the end of training. A bad step found there is reported as the step
    where the loss went bad, not where it was seen.
    """

    def __init__(self) -> None:
        self._window = StepWindow()  # the scalar losses of a module that keeps no window

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._window = StepWindow()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(pl_module, LogsStepWindow):  # the module reads its window at the logging steps
            return
        losses = {
            name: value for name, value in named_tensors(outputs) if value.is_floating_point() and value.numel() == 1
        }
        self._window.add(trainer, batch_idx, **losses)
        if is_logging_step(trainer):
            self._window.read(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise NonFiniteError naming the first step since the last read whose loss was not finite;
        the module's window keeps its values for its next logging step."""
        window = pl_module.step_window if isinstance(pl_module, LogsStepWindow) else self._window
        window.read(trainer, pl_module, keep=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)  # a loss that went bad since the last check names its step
        broken = [
            key
            for key, value in checkpoint.get("state_dict", {}).items()
            if value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if broken:
            more = f" and {len(broken) - 1} other tensors" if len(broken) > 1 else ""
            raise NonFiniteError(
                f"Training diverged by step {trainer.global_step} (epoch {trainer.current_epoch}): the weights "
                f"({broken[0]}{more}) are no longer finite numbers, so no checkpoint of them was saved. "
                f"{kept_checkpoints(trainer)} {fixes(trainer, pl_module)}"
            )

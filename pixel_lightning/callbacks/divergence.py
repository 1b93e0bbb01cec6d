"""Stopping a diverging run: the first loss that is not a finite number ends training with a
message, and a checkpoint whose weights are not finite is never written (so neither the best
checkpoint nor last.ckpt can be a NaN model). Works for any LightningModule: it reads whatever
`training_step` returns (a tensor, or a dict such as a GAN's {"loss_g": ..., "loss_d": ...})."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from pixel_lightning.errors import NonFiniteError
from pixel_lightning.logging_steps import is_logging_step


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

    Without a host read per step: each step only records, on the device, whether its losses are
    finite. The flags are read once per logging window (the steps Lightning logs at, which read
    the device anyway), before every checkpoint save and at the end of training; a bad step found
    there is reported as the step where the loss went bad, not where it was seen.
    """

    def __init__(self) -> None:
        self._pending: list[PendingStep] = []  # the steps since the last check

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        losses = [(name, value) for name, value in named_tensors(outputs) if value.is_floating_point()]
        if losses:
            finite = [torch.isfinite(value).all() for _, value in losses]  # 0-d flags on the device
            # only scalars are kept for the message: a window of larger outputs would hold their memory
            shown = [(name, value.detach() if value.numel() == 1 else None) for name, value in losses]
            self._pending.append(PendingStep(trainer.global_step, trainer.current_epoch, batch_idx, shown, finite))
        if is_logging_step(trainer):
            self.check(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Raise NonFiniteError naming the first step since the last check whose loss was not finite."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        if torch.stack([flag for step in pending for flag in step.finite]).all():  # the one host read of the window
            return
        # Diverged: reads are cheap now. Name the first bad step and its first bad loss.
        bad = next(step for step in pending if not all(step.finite))
        name, value = next(loss for loss, ok in zip(bad.losses, bad.finite) if not ok)
        shown = "not finite" if value is None else f"{value.item()}"
        seen = f" (found at step {trainer.global_step})" if trainer.global_step != bad.global_step else ""
        raise NonFiniteError(
            f"Training diverged at step {bad.global_step} (epoch {bad.epoch}, batch {bad.batch_idx}): the training "
            f"step returned {name} = {shown}{seen}. {kept_checkpoints(trainer)} " + fixes(trainer, pl_module)
        )

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


@dataclass
class PendingStep:
    """A training step not yet checked: where it was, its losses and their finite flags (on the device)."""

    global_step: int  # after the step's optimizer update, as trainer.global_step counts it
    epoch: int
    batch_idx: int
    losses: list[tuple[str, torch.Tensor | None]]  # a scalar loss, or None for a larger output
    finite: list[torch.Tensor]  # 0-d bool, one per loss


def kept_checkpoints(trainer: pl.Trainer) -> str:
    """Where the last good checkpoint is. ModelCheckpoint names a file before writing it, so only
    files on disk count."""
    callback = trainer.checkpoint_callback
    paths = [callback.last_model_path, callback.best_model_path] if callback else []
    kept = next((path for path in paths if path and Path(path).is_file()), None)
    if kept is None:
        return "No checkpoint had been saved yet."
    return f"The checkpoints saved before are kept and finite (the latest is {kept})."


def fixes(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    """The usual cures, with values one step more cautious than this run's."""
    lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
    lower = (
        f"a lower learning rate (optimizer.lr={lr / 10:g}, a tenth of this run's)"
        if lr
        else "a lower learning rate (optimizer.lr)"
    )
    if not pl_module.automatic_optimization:
        return f"Train again with {lower}, or clip the gradients in the module's training_step."
    clip = trainer.gradient_clip_val
    tighter = f"trainer.gradient_clip_val={clip / 2:g}" if clip else "trainer.gradient_clip_val=1.0"
    return f"Train again with {lower} or with clipped gradients ({tighter})."

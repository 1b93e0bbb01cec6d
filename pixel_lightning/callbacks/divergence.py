"""Stopping a diverging run: the first loss that is not a finite number ends training with a
message, and a checkpoint whose weights are not finite is never written (so neither the best
checkpoint nor last.ckpt can be a NaN model). Works for any LightningModule: it reads whatever
`training_step` returns (a tensor, or a dict such as a GAN's {"loss_g": ..., "loss_d": ...})."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from pixel_lightning.errors import NonFiniteError


def named_tensors(outputs: Any, name: str = "loss") -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors in a training_step output, named by their keys ("loss", "loss_d", "out.aux")."""
    if isinstance(outputs, torch.Tensor):
        yield name, outputs
    elif isinstance(outputs, Mapping):
        for key, value in outputs.items():
            yield from named_tensors(value, str(key) if name == "loss" else f"{name}.{key}")


class DivergenceGuard(pl.Callback):
    """Raise NonFiniteError at the first non-finite loss, naming the step, the loss and the fixes,
    and refuse to save a checkpoint whose weights are not finite (the earlier ones stay)."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for name, value in named_tensors(outputs):
            if value.is_floating_point() and not torch.isfinite(value).all():
                shown = f"{value.item()}" if value.numel() == 1 else "not finite"
                raise NonFiniteError(
                    f"Training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                    f"{batch_idx}): the training step returned {name} = {shown}. {kept_checkpoints(trainer)} "
                    + fixes(trainer, pl_module)
                )

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
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

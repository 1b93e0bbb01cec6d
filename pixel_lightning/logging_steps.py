"""When a training step's values reach the host.

Reading a device tensor on the host (`.item()`, `float()`, a tensor in an `if`) waits for every
kernel queued before it: on a GPU, one such read per step serialises the device with Python. So
the training hot path reads nothing per step. A StepWindow keeps what the steps log on the device
and reads it at Lightning's logging steps in one transfer, which also says whether every step's
values were finite numbers (the divergence check). What it logs are CPU tensors, so Lightning's
loggers and the progress line read nothing more from the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from pixel_lightning.errors import NonFiniteError


def is_logging_step(trainer: pl.Trainer | None) -> bool:
    """Whether Lightning hands this training step's logged values to the loggers: every
    `trainer.log_every_n_steps`-th step, the step before a requested stop, and every step of a
    fast_dev_run. True without a trainer (a module used on its own)."""
    if trainer is None:
        return True
    return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs


def latest_logged(trainer: pl.Trainer, name: str) -> torch.Tensor | None:
    """The latest value logged in training as `name`, this step's included (trainer.callback_metrics
    has it only after the step's callbacks have run), or None."""
    if trainer._results is None:
        return trainer.callback_metrics.get(name)
    return trainer._logger_connector.metrics["callback"].get(name, trainer.callback_metrics.get(name))


@dataclass(frozen=True)
class StepPosition:
    """Where a training step was: its number (1-based, counting batches trained in this fit, as
    `trainer.global_step` counts them after the update with one optimizer), its epoch and batch."""

    step: int
    epoch: int
    batch: int

    @staticmethod
    def of(trainer: pl.Trainer | None, batch_idx: int) -> StepPosition:
        if trainer is None:
            return StepPosition(batch_idx + 1, 0, batch_idx)
        return StepPosition(trainer.fit_loop.epoch_loop._batches_that_stepped + 1, trainer.current_epoch, batch_idx)


@dataclass
class RunningValue:
    """One logged value over a window, on the device. Its sum is finite exactly until the first
    step whose value is not (NaN and infinities stay non-finite under addition), so counting the
    steps with a finite sum gives that step's index, with no read."""

    sum: torch.Tensor  # 0-d float
    finite: torch.Tensor  # 0-d bool: the sum is still finite
    leading: torch.Tensor  # 0-d long: steps before the first non-finite value
    first_bad: torch.Tensor  # the first non-finite value (while the sum is finite: the latest value)
    positions: list[StepPosition] = field(default_factory=list)  # on the host

    @staticmethod
    def start(value: torch.Tensor) -> RunningValue:
        return RunningValue(
            torch.zeros_like(value),
            torch.ones_like(value, dtype=torch.bool),
            torch.zeros_like(value, dtype=torch.long),
            value,
        )

    def add(self, value: torch.Tensor, position: StepPosition) -> None:
        self.first_bad = torch.where(self.finite, value, self.first_bad)
        self.sum = self.sum + value
        self.finite = torch.isfinite(self.sum)
        self.leading = self.leading + self.finite
        self.positions.append(position)


class StepWindow:
    """The values training steps log (losses, a GAN's D(x)), kept on the device from one logging
    step to the next and read on the host in one transfer: their means over the window, or
    NonFiniteError naming the first step where one was not a finite number. Its memory on the
    device does not grow with the window."""

    def __init__(self) -> None:
        self.values: dict[str, RunningValue] = {}

    def add(self, trainer: pl.Trainer | None, batch_idx: int, **values: torch.Tensor) -> None:
        position = StepPosition.of(trainer, batch_idx)
        for name, value in values.items():
            value = value.detach().float()
            self.values.setdefault(name, RunningValue.start(value)).add(value, position)

    def read(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule, keep: bool = False) -> dict[str, float]:
        """The mean of each value over the window, from one host read, and empty the window (unless
        `keep`); raise NonFiniteError naming the first step since the last read whose value was
        not finite, and the latest step as where it was found."""
        if not self.values:
            return {}
        names = list(self.values)
        totals = torch.stack([self.values[name].sum for name in names]).tolist()  # the window's one host read
        if not all(map(math.isfinite, totals)):
            raise self.divergence(trainer, pl_module)
        means = {name: total / len(self.values[name].positions) for name, total in zip(names, totals, strict=True)}
        if not keep:
            self.values = {}
        return means

    def log(self, pl_module: pl.LightningModule, prefix: str = "train") -> None:
        """Log the window's means as `prefix/<name>` and empty it. CPU tensors: Lightning reads them
        for the loggers without waiting for the device."""
        means = self.read(pl_module._trainer, pl_module)
        pl_module.log_dict({f"{prefix}/{name}": torch.tensor(mean) for name, mean in means.items()})

    def divergence(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> NonFiniteError:
        """The error naming the first non-finite value of the window. Reads freely: it has diverged."""
        bad = [
            (value.positions[int(value.leading)], name, value.first_bad.item())
            for name, value in self.values.items()
            if not value.finite
        ]
        where, name, shown = min(bad, key=lambda found: found[0].step)
        latest = max(value.positions[-1].step for value in self.values.values())
        seen = f" (found at step {latest})" if latest != where.step else ""
        return NonFiniteError(
            f"Training diverged at step {where.step} (epoch {where.epoch}, batch {where.batch}): the training step "
            f"returned {name} = {shown}{seen}. {kept_checkpoints(trainer)} {fixes(trainer, pl_module)}"
        )


class LogsStepWindow:
    """A LightningModule mixin: `self.log_step(batch_idx, loss=...)` in `training_step` adds the
    step's values to `self.step_window` and logs their window means as `train/<name>` at the
    logging steps, the only host read of training (DivergenceGuard checks the same window before
    every checkpoint save and at the end of training)."""

    @property
    def step_window(self) -> StepWindow:
        return self.__dict__.setdefault("_step_window", StepWindow())

    def on_train_start(self) -> None:
        self.__dict__["_step_window"] = StepWindow()  # nothing left over from an earlier fit

    def log_step(self, batch_idx: int, **values: torch.Tensor) -> None:
        self.step_window.add(self._trainer, batch_idx, **values)
        if is_logging_step(self._trainer):
            self.step_window.log(self)


def kept_checkpoints(trainer: pl.Trainer | None) -> str:
    """Where the last good checkpoint is. ModelCheckpoint names a file before writing it, so only
    files on disk count."""
    callback = trainer.checkpoint_callback if trainer else None
    paths = [callback.last_model_path, callback.best_model_path] if callback else []
    kept = next((path for path in paths if path and Path(path).is_file()), None)
    if kept is None:
        return "No checkpoint had been saved yet."
    return f"The checkpoints saved before are kept and finite (the latest is {kept})."


def fixes(trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> str:
    """The usual cures, with values one step more cautious than this run's."""
    setting = getattr(pl_module, "lr_setting", "optimizer.lr")
    lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer and trainer.optimizers else None
    lower = (
        f"a lower learning rate ({setting}={lr / 10:g}, a tenth of this run's)"
        if lr
        else f"a lower learning rate ({setting})"
    )
    if not pl_module.automatic_optimization:
        return f"Train again with {lower}, or clip the gradients in the module's training_step."
    clip = trainer.gradient_clip_val if trainer else None
    tighter = f"trainer.gradient_clip_val={clip / 2:g}" if clip else "trainer.gradient_clip_val=1.0"
    return f"Train again with {lower} or with clipped gradients ({tighter})."

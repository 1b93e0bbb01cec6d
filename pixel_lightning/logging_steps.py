"""When a training step's logged values reach the host.

Reading a device tensor on the host (`.item()`, `float()`, a tensor in an `if`) waits for every
kernel queued before it: on a GPU, one such read per step serialises the device with Python. So
the training hot path reads nothing per step; what must be read (logged metrics, the divergence
check, progress lines) is read at Lightning's logging steps, which share one wait.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def is_logging_step(trainer: pl.Trainer | None) -> bool:
    """Whether Lightning hands this training step's logged values to the loggers: every
    `trainer.log_every_n_steps`-th step, the step before a requested stop, and every step of a
    fast_dev_run. True without a trainer (a module used on its own)."""
    if trainer is None:
        return True
    return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs


def latest_logged(trainer: pl.Trainer, name: str) -> torch.Tensor | None:
    """The latest value logged in training as `name`, this step's included (trainer.callback_metrics
    has it only after the step's callbacks have run), or None. Reading it on the host is a read."""
    if trainer._results is None:
        return trainer.callback_metrics.get(name)
    return trainer._logger_connector.metrics["callback"].get(name, trainer.callback_metrics.get(name))

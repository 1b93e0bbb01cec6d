"""How many images a training step trained on: what the progress line, the run record and the
learning curve count."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


def trained_images(batch: Any, trainer: pl.Trainer) -> int:
    """The images of a training batch, (B, C, H, W) or (images, labels) for a class-conditional
    model, times the processes: under DDP every process trains on its own shard of equal batches,
    so every rank counts the same, the run's total."""
    images = batch if isinstance(batch, torch.Tensor) else batch[0]
    return len(images) * trainer.world_size

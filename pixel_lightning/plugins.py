"""Lightning plugins of the trainer config (`trainer.plugins`)."""

from __future__ import annotations

import os
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from pixel_lightning.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside the target, fsyncs it and renames it
    into place, so a crash or a full disk mid-write never leaves a truncated checkpoint (the
    previous one stays intact)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        with atomic_write(path, "the checkpoint") as f:
            torch.save(checkpoint, f)

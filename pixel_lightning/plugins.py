"""Lightning plugins of the trainer config (`trainer.plugins`)."""

from __future__ import annotations

import os
from typing import Any

import fsspec
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from pixel_lightning.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each local checkpoint to a temporary file beside the target, fsyncs it and renames
    it into place, so a crash or a full disk mid-write never leaves a truncated checkpoint (the
    previous one stays intact). A remote path (an fsspec URL such as s3://bucket/run/last.ckpt)
    stays remote: Lightning's own save serialises the whole checkpoint first and writes it in one
    upload, which object stores make visible only once complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if fsspec.utils.get_protocol(str(path)) != "file":
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_write(path, "the checkpoint") as f:
            torch.save(checkpoint, f)

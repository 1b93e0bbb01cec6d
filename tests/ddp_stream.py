"""Test and train one checkpoint on streamed chunks through the real Trainer path, recording the
ids of the images each process saw (decoded from the pixels, see `id_images`).

Run in-process with devices=1, or as a script for devices=2 (Lightning starts the second process
by re-running this command line):

    python tests/ddp_stream.py <chunks> <model.ckpt> <devices> <out folder>

Each process writes <out>/rank<r>.json: {"test_ids", "train_ids", "test_nll", "litdata"} (litdata's
version: the script starts in a clean interpreter, so it also shows what the install imports).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import litdata
import numpy as np
import pytorch_lightning as pl
import torch
import torchmetrics  # noqa: F401  (imported first here, in a clean interpreter: see test_the_streaming_engine_...)
from pytorch_lightning.strategies import DDPStrategy

from pixel_lightning.checkpoint import load_model
from pixel_lightning.data.streaming import StreamingImageDataModule

SHAPE = (1, 4, 4)
SPLITS = {"train": 36, "val": 7, "test": 11}  # train: 2 processes x 6 batches of 3; test: uneven shards
TRAIN_BATCH, EVAL_BATCH = 3, 4


def id_images(ids: np.ndarray) -> np.ndarray:
    """Binary 4x4 images whose pixels are the bits of their id in raster order: (N, 1, 4, 4) uint8."""
    bits = (ids[:, None] >> np.arange(16)) & 1
    return bits.reshape(-1, *SHAPE).astype(np.uint8)


def image_ids(images: torch.Tensor) -> list[int]:
    """The ids of a batch of id_images (B, 1, 4, 4)."""
    return (images.reshape(len(images), 16).long() << torch.arange(16)).sum(1).tolist()


class SeenIds(pl.Callback):
    """The ids of every training and test batch this process handled, in order."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {"train": [], "test": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen["train"] += image_ids(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen["test"] += image_ids(batch)


def trainer(devices: int, callbacks: list, **kwargs) -> pl.Trainer:
    strategy = DDPStrategy(broadcast_buffers=False) if devices > 1 else "auto"
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


def datamodule(chunks: str) -> StreamingImageDataModule:
    return StreamingImageDataModule(chunks, batch_size=TRAIN_BATCH, eval_batch_size=EVAL_BATCH, levels=2)


def run(chunks: str, checkpoint: str, devices: int) -> dict:
    """Test the checkpoint, then train it for one epoch; what this process saw and the test NLL."""
    model, seen = load_model(checkpoint), SeenIds()
    (result,) = trainer(devices, [seen], enable_checkpointing=False).test(model, datamodule(chunks), verbose=False)
    trainer(devices, [seen], enable_checkpointing=False, max_epochs=1, limit_val_batches=0).fit(
        model, datamodule(chunks)
    )
    return {"test_ids": seen.seen["test"], "train_ids": seen.seen["train"], "test_nll": result["test/nll"]}


if __name__ == "__main__":
    chunks, checkpoint, devices, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    results = run(chunks, checkpoint, devices)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    (out / f"rank{rank}.json").write_text(json.dumps(results | {"litdata": litdata.__version__}))

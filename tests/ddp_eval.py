"""Evaluate one checkpoint through the real Trainer path on 1 or 2 CPU processes (DDP, gloo).

Run in-process with devices=1, or as a script for devices=2 (Lightning starts the second process
by re-running this command line):

    python tests/ddp_eval.py <model.ckpt> <devices> <results.json>

Every process also writes its world size and image counts next to the results (probes.RankImages).

Each case validates or tests on its own split of random binary 4x4 images with an eval batch
that does not divide the split, so shards and batches are uneven.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytorch_lightning as pl
import torch
from probes import RankImages
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only

from pixel_lightning.checkpoint import load_model
from pixel_lightning.data.datamodule import ImageDataModule, ImageDataset

SHAPE = (1, 4, 4)
CASES = {"val_7": ("val", 7, 4), "test_5": ("test", 5, 4), "test_32": ("test", 32, 5)}  # stage, images, batch


def images(count: int) -> torch.Tensor:
    """The same random binary images (count, 1, 4, 4) in every process."""
    return torch.randint(0, 2, (count, *SHAPE), generator=torch.Generator().manual_seed(count), dtype=torch.uint8)


class RandomImages(ImageDataModule):
    """`count` fixed random images as the val and test split."""

    name, folder, shape = "random images", ".", SHAPE

    def __init__(self, count: int, eval_batch_size: int) -> None:
        super().__init__(
            ".",
            batch_size=eval_batch_size,
            num_workers=0,
            pin_memory=False,
            download=False,
            eval_batch_size=eval_batch_size,
            channels=1,
            height=4,
            width=4,
            levels=2,
            produced_levels=2,
            levels_because="binary images",
        )
        self.count = count

    def prepare_data(self) -> None:
        pass

    def load(self):
        split = ImageDataset(np.asarray(images(self.count)))
        return split, split, split


def evaluate(checkpoint: str, devices: int, report: str) -> dict[str, dict[str, float]]:
    """{case: {"val/nll" or "test/nll": ..., ".../bpd": ...}} from Trainer.validate / Trainer.test;
    each process writes `<report>.rank<r>.json` (probes.RankImages)."""
    model = load_model(checkpoint)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=DDPStrategy(broadcast_buffers=False) if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[RankImages(report)],
    )
    results = {}
    for case, (stage, count, batch) in CASES.items():
        run = trainer.validate if stage == "val" else trainer.test
        (results[case],) = run(model, datamodule=RandomImages(count, batch), verbose=False)
    return results


if __name__ == "__main__":
    checkpoint, devices, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    results = evaluate(checkpoint, devices, out)
    if rank_zero_only.rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)

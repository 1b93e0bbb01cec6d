"""Per-process random streams under DDP."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


class RankSeed(pl.Callback):
    """Once the processes exist, seeds each with `seed + global rank`.

    Lightning seeds every DDP process alike (from PL_GLOBAL_SEED, at process-group setup), so
    random draws made during training, e.g. MNIST's dynamic binarization in a loader without
    workers, would repeat on every rank. This re-seeds python, numpy and torch per rank but leaves
    PL_GLOBAL_SEED alone: the DistributedSampler's shuffle keeps its shared seed, so the ranks'
    shards of the training set stay disjoint. A single process keeps the plain `seed`.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.seed is None or trainer.world_size == 1:
            return
        seed = self.seed + trainer.global_rank
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

"""Keeps the W&B run id in every checkpoint, so that resuming continues the same W&B run."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

#: The checkpoint key holding the id; read by the training pipeline when it resumes.
WANDB_RUN_ID = "wandb_run_id"


class WandbRunId(pl.Callback):
    """Writes the id of the job's W&B run into each checkpoint (nothing without a W&B logger).
    `train.py ckpt_path=<that checkpoint>` then logs into the same run, at the restored steps."""

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[WANDB_RUN_ID] = logger.version

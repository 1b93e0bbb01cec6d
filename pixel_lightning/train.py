"""The training pipeline behind `train.py`: build everything from the config, fit, test."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from pixel_lightning.callbacks.run_record import RECORD_NAME, quality_line, read_record
from pixel_lightning.checkpoint import read_checkpoint
from pixel_lightning.errors import UserError

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger` (null -> [])."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


# Settings whose wrong type would otherwise surface as an assertion deep inside Lightning.
INTEGER_SETTINGS = ("seed", "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "trainer.num_nodes",
                    "trainer.check_val_every_n_epoch", "trainer.log_every_n_steps", "trainer.accumulate_grad_batches",
                    "trainer.num_sanity_val_steps")
NUMBER_SETTINGS = ("trainer.gradient_clip_val", "trainer.val_check_interval", "trainer.limit_train_batches",
                   "trainer.limit_val_batches", "trainer.limit_test_batches")


def check_settings(cfg: DictConfig) -> None:
    """Reject mistyped values of common settings with a message instead of a traceback."""
    for key in INTEGER_SETTINGS + NUMBER_SETTINGS:
        value = OmegaConf.select(cfg, key)
        allowed = (int,) if key in INTEGER_SETTINGS else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, allowed)):
            kind = "an integer" if key in INTEGER_SETTINGS else "a number"
            raise UserError(f"{key} must be {kind} (or null), got {value!r}. Fix the override, e.g. {key}=10.")


def make_trainer(cfg: DictConfig) -> tuple[pl.Trainer, list[Any]]:
    """The configured trainer with the `callbacks` and `logger` groups; returns it and the loggers."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False), loggers


def finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run of this job, so multirun jobs each get their own complete run."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; returns the final metrics as floats."""
    check_settings(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)  # fail early, with a clear message, on a bad resume file

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer, loggers = make_trainer(cfg)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
            report_test(metrics, best)
            if (record := Path(cfg.paths.output_dir) / RECORD_NAME).is_file():
                print(quality_line(read_record(record)), flush=True)
    finally:
        finish_wandb(loggers)
    return metrics


def report_test(metrics: dict[str, float], checkpoint: str, kind: str = "best checkpoint") -> None:
    nll, bpd = metrics.get("test/nll", math.nan), metrics.get("test/bpd", math.nan)
    source = f" ({kind} {checkpoint})" if checkpoint else ""
    print(f"Test NLL: {nll:.2f} nats/image, {bpd:.4f} bits/dim{source}", flush=True)

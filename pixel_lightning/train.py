"""The training pipeline behind `train.py`: build everything from the config, fit, test."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.model_helpers import is_overridden

from pixel_lightning.callbacks.run_record import RECORD_NAME, quality_line, read_record
from pixel_lightning.checkpoint import check_fits, read_checkpoint
from pixel_lightning.settings import check_setting

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger` (null -> [])."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


# Settings whose wrong type would otherwise surface as an assertion deep inside Lightning or torch.
INTEGER_SETTINGS = ("seed", "trainer.max_epochs", "trainer.min_epochs", "trainer.max_steps", "trainer.num_nodes",
                    "trainer.check_val_every_n_epoch", "trainer.log_every_n_steps", "trainer.accumulate_grad_batches",
                    "trainer.num_sanity_val_steps")
NUMBER_SETTINGS = ("trainer.gradient_clip_val", "trainer.val_check_interval", "trainer.limit_train_batches",
                   "trainer.limit_val_batches", "trainer.limit_test_batches")
BOOLEAN_SETTINGS = ("test", "trust_checkpoint")


def check_settings(cfg: DictConfig) -> None:
    """Reject mistyped values of common settings with a message instead of a traceback."""
    for key in INTEGER_SETTINGS:
        check_setting(cfg, key, "integer", 10, nullable=True)
    for key in NUMBER_SETTINGS:
        check_setting(cfg, key, "number", 10, nullable=True)
    if "optimizer" in cfg:  # eval.py's config has no optimizer and no `test`
        check_setting(cfg, "optimizer.lr", "number", 0.001, above=0)
    for key in BOOLEAN_SETTINGS:
        if key in cfg:
            check_setting(cfg, key, "boolean", "true")


def make_trainer(cfg: DictConfig) -> tuple[pl.Trainer, list[Any]]:
    """The configured trainer with the `callbacks` and `logger` groups; returns it and the loggers."""
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False), loggers


def finish_wandb(loggers: list[Any], failed: bool = False) -> None:
    """Close the W&B run of this job, so multirun jobs each get their own complete run. A failed
    job exits its run with code 1, so the dashboard (and `wandb sync`) shows it as failed."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish(exit_code=1 if failed else 0)


def check_resume(cfg: DictConfig) -> None:
    """Fail before training, with a clear message, on a resume file that is unreadable, unsafe, or
    was trained with another model or data than `cfg`."""
    checkpoint = read_checkpoint(cfg.ckpt_path, trust=cfg.trust_checkpoint)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    compared = {key: value for key, value in model_cfg.items() if not key.startswith("_")}
    check_fits(
        checkpoint.get("hyper_parameters") or {}, compared, cfg.ckpt_path,
        fix="Resume with the settings of the run that wrote it (its .hydra/config.yaml lists them), "
        "or leave out ckpt_path to start a fresh run.",
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; returns the final metrics as floats."""
    check_settings(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        check_resume(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer, loggers = make_trainer(cfg)
    weights_only = not cfg.trust_checkpoint
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=weights_only)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if cfg.get("test") and not is_overridden("test_step", model):  # no likelihood (the DCGAN)
            print(f"Test NLL: none ({type(model).__name__} has no likelihood)", flush=True)
        elif cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=weights_only)
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
            if trainer.is_global_zero:  # one line per run, not one per DDP process
                report_test(metrics, best)
        record = Path(cfg.paths.output_dir) / RECORD_NAME
        if trainer.is_global_zero and record.is_file() and read_record(record)["status"] == "finished":
            print(quality_line(read_record(record)), flush=True)
    except BaseException:
        finish_wandb(loggers, failed=True)
        raise
    finish_wandb(loggers)
    return metrics


def report_test(metrics: dict[str, float], checkpoint: str, kind: str = "best checkpoint") -> None:
    nll, bpd = metrics.get("test/nll", math.nan), metrics.get("test/bpd", math.nan)
    source = f" ({kind} {checkpoint})" if checkpoint else ""
    print(f"Test NLL: {nll:.2f} nats/image, {bpd:.4f} bits/dim{source}", flush=True)

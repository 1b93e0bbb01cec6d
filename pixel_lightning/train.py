"""The training pipeline behind `train.py`: build everything from the config, fit, test."""

from __future__ import annotations

import logging
import math
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from pixel_lightning.callbacks.wandb_run_id import WANDB_RUN_ID
from pixel_lightning.checkpoint import check_resumable, read_checkpoint
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


def prepare_resume(cfg: DictConfig) -> None:
    """Before anything starts: fail with a clear message on a file that cannot resume a fit, and
    point the W&B logger at the checkpoint's run, so the resumed job continues that run."""
    checkpoint = read_checkpoint(cfg.ckpt_path)
    check_resumable(checkpoint, cfg.ckpt_path)
    continue_wandb_run(cfg, checkpoint.get(WANDB_RUN_ID))


def continue_wandb_run(cfg: DictConfig, run_id: str | None) -> None:
    """Set the W&B logger of `cfg` (if any) to resume the run `run_id` (its metrics continue at the
    restored trainer/global_step)."""
    for entry in (cfg.get("logger") or {}).values():
        if run_id and entry and str(entry.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(entry):
                entry.id, entry.resume = run_id, "allow"


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
        prepare_resume(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    refuse_relaunch_in_multirun(trainer)
    log_setup(trainer, datamodule.batch_size)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if cfg.get("test"):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
            if trainer.is_global_zero:
                report_test(metrics, best)
    finally:
        finish_wandb(loggers)
    return metrics


def refuse_relaunch_in_multirun(trainer: pl.Trainer) -> None:
    """Lightning's DDP starts its other processes by re-running the command line. In a Hydra
    multirun that command is the whole sweep (or, under a submitit launcher, submitit's own job
    runner), so the workers would run other jobs or wait forever: refuse before anything starts.
    Under SLURM the processes already exist (Lightning reads the ranks) and nothing is re-run."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher) or launcher.cluster_environment.creates_processes_externally:
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise UserError(
            f"trainer.devices={trainer.num_devices} with {type(trainer.strategy).__name__} cannot run "
            "inside a multirun (-m): Lightning starts its worker processes by re-running the command line, which "
            "would re-run the whole sweep. Run each configuration as its own command without -m, sweep with "
            "trainer.devices=1 (several jobs at once with hydra/launcher=submitit_local), or on a cluster use "
            "hydra/launcher=slurm, where SLURM starts one process per device."
        )


def log_setup(trainer: pl.Trainer, batch_size: int) -> None:
    """One line with what Lightning resolved from the trainer config (rank zero only)."""
    if not trainer.is_global_zero:
        return
    processes = trainer.num_devices * trainer.num_nodes
    accelerator = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy")
    log.info(
        "Setup: accelerator=%s devices=%d nodes=%d strategy=%s precision=%s batch=%d per device, %d global "
        "(x %d processes x %d accumulated)", accelerator, trainer.num_devices, trainer.num_nodes, strategy,
        trainer.precision, batch_size, batch_size * processes * trainer.accumulate_grad_batches, processes,
        trainer.accumulate_grad_batches,
    )


def optimized_value(cfg: DictConfig, metrics: dict[str, float] | None) -> float | None:
    """What the job returns to a sweeper: metrics[cfg.optimized_metric]. None when no metric is
    named or the job failed (metrics None), which the Optuna sweeper records as a failed trial."""
    name = cfg.get("optimized_metric")
    if not name or metrics is None:
        return None
    if name not in metrics:
        log.error("optimized_metric=%s was not logged; the job logged: %s", name, ", ".join(sorted(metrics)))
        return None
    return metrics[name]


def report_test(metrics: dict[str, float], checkpoint: str) -> None:
    nll, bpd = metrics.get("test/nll", math.nan), metrics.get("test/bpd", math.nan)
    source = f" (best checkpoint {checkpoint})" if checkpoint else ""
    print(f"Test NLL: {nll:.2f} nats/image, {bpd:.4f} bits/dim{source}", flush=True)

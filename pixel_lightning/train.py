"""The training pipeline behind `train.py`: build everything from the config, fit, test."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities.model_helpers import is_overridden

from pixel_lightning.callbacks.wandb_run_id import WANDB_RUN_ID
from pixel_lightning.checkpoint import (
    check_fits,
    check_resumable,
    model_from_checkpoint,
    read_checkpoint,
    saved_data,
)
from pixel_lightning.errors import UserError
from pixel_lightning.jobs import (
    PrintTestLine,
    check_settings,
    drop_log_file_on_worker_ranks,
    finish_wandb,
    make_trainer,
    report_no_likelihood,
)
from pixel_lightning.records import RECORD_NAME, quality_line, read_record

log = logging.getLogger(__name__)


def prepare_resume(cfg: DictConfig) -> None:
    """Before anything starts: refuse a file that cannot resume this fit (check_resume, then the
    trainer state, then weights that do not fit its own settings), and point the W&B logger at the
    checkpoint's run so the job continues it."""
    checkpoint = check_resume(cfg)
    check_resumable(checkpoint, cfg.ckpt_path)  # weights-only, or written by another program
    model_from_checkpoint(checkpoint, cfg.ckpt_path, trust=cfg.trust_checkpoint)  # its weights fit its settings
    continue_wandb_run(cfg, checkpoint.get(WANDB_RUN_ID))


def continue_wandb_run(cfg: DictConfig, run_id: str | None) -> None:
    """Set the W&B logger of `cfg` (if any) to resume the run `run_id` (its metrics continue at the
    restored trainer/global_step). The id comes from a file and names W&B's run folder: anything but
    a plain id is ignored, with a warning (the job then starts a new W&B run)."""
    if run_id is not None and not (isinstance(run_id, str) and re.fullmatch(r"[\w.-]{1,128}", run_id)):
        log.warning("The resume checkpoint's W&B run id %.80r is not a plain id; a new W&B run is started", run_id)
        run_id = None
    for entry in (cfg.get("logger") or {}).values():
        if run_id and entry and str(entry.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(entry):
                entry.id, entry.resume = run_id, "allow"


def check_resume(cfg: DictConfig) -> dict[str, Any]:
    """Fail before training, with a clear message, on a resume file that is unreadable, unsafe, or
    was trained with another model or data than `cfg`; return it."""
    checkpoint = read_checkpoint(cfg.ckpt_path, trust=cfg.trust_checkpoint)
    if checkpoint.get("hyper_parameters") is not None:  # ours: another model or data is the clearest message
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        # model.compile is a speed switch, not part of what a checkpoint holds
        compared = {key: value for key, value in model_cfg.items() if not key.startswith("_") and key != "compile"}
        hparams, data = checkpoint["hyper_parameters"], saved_data(checkpoint)
        if data is not None:  # older DCGAN checkpoints name their data module in the run record only
            hparams = {**hparams, "data": data}
        check_fits(
            hparams,
            compared,
            cfg.ckpt_path,
            fix="Resume with the settings of the run that wrote it (its .hydra/config.yaml lists them), "
            "or leave out ckpt_path to start a fresh run.",
        )
    return checkpoint


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and test) the configured model; returns the final metrics as floats."""
    drop_log_file_on_worker_ranks()
    check_settings(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        prepare_resume(cfg)

    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer, loggers = make_trainer(cfg, first=[PrintTestLine("best checkpoint")])
    refuse_relaunch_in_multirun(trainer)
    log_setup(trainer, datamodule.batch_size)
    weights_only = not cfg.trust_checkpoint
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=weights_only)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if cfg.get("test") and not is_overridden("test_step", model):  # no likelihood (the DCGAN)
            report_no_likelihood(model)
        elif cfg.get("test"):
            evaluate_best(trainer, model, datamodule, weights_only)
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
        record_path = Path(cfg.paths.output_dir) / RECORD_NAME
        record = read_record(record_path) if trainer.is_global_zero and record_path.is_file() else None
        if record is not None and record["status"] == "finished":
            print(quality_line(record), flush=True)
            # sample quality for a sweeper (optimized_metric=record/kid): the one score of a model without a likelihood
            metrics.update({f"record/{name}": record[name] for name in ("kid", "fid") if record[name] is not None})
    except BaseException:
        finish_wandb(loggers, failed=True)
        raise
    finish_wandb(loggers)
    return metrics


def evaluate_best(trainer: pl.Trainer, model: pl.LightningModule, datamodule, weights_only: bool) -> None:
    """Test the best checkpoint on the weights that validation measured and chose. With weight
    averaging (callbacks.ema) those are the averaged weights, the checkpoint's `state_dict`; but
    Lightning's WeightAveraging, on loading a checkpoint, puts the raw weights it keeps beside them
    (`current_model_state`) back into the model, so the test would measure other weights than
    validation chose and than eval.py or an export reads. It leaves the trainer first."""
    trainer.callbacks = [callback for callback in trainer.callbacks if not isinstance(callback, WeightAveraging)]
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=weights_only)


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
        "(x %d processes x %d accumulated)",
        accelerator,
        trainer.num_devices,
        trainer.num_nodes,
        strategy,
        trainer.precision,
        batch_size,
        batch_size * processes * trainer.accumulate_grad_batches,
        processes,
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

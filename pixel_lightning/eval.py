"""The evaluation pipeline behind `eval.py`: the test NLL, sampling time and FID of a checkpoint,
written as a run record (`<run>/record.json`) like a training run's."""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.model_helpers import is_overridden

from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.checkpoint import model_from_checkpoint, read_checkpoint
from pixel_lightning.errors import CheckpointError
from pixel_lightning.jobs import (
    check_settings,
    drop_log_file_on_worker_ranks,
    finish_wandb,
    make_trainer,
    report_no_likelihood,
    report_test,
)
from pixel_lightning.records import RECORD_NAME, quality_line, read_record
from pixel_lightning.safe_config import check_buildable

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on the whole test split of its dataset; returns its run record."""
    drop_log_file_on_worker_ranks()
    check_settings(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    checkpoint = read_checkpoint(cfg.ckpt_path, cfg.trust_checkpoint)
    names = checkpoint.get("run_record") or {}
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path, trust=cfg.trust_checkpoint)
    # the checkpoint's data, read from this machine's data folder, with the overrides of eval.yaml's `data`
    data = model.hparams.data if "_target_" in model.hparams.data else names.get("data")
    if not data:
        raise CheckpointError(
            f"Checkpoint '{cfg.ckpt_path}' does not say which dataset it was trained on (it predates the run "
            "record). Evaluate a checkpoint written by this version of train.py."
        )
    if not cfg.trust_checkpoint:
        check_buildable(data, f"Checkpoint '{cfg.ckpt_path}'", "run_record.data")
    overrides = {key: value for key, value in cfg.data.items() if value is not None}
    datamodule = hydra.utils.instantiate(dict(data, data_dir=cfg.paths.data_dir) | overrides)

    record_cfg = cfg.callbacks.run_record
    record_cfg.model_name = record_cfg.model_name or names.get("model") or type(model).__name__
    record_cfg.dataset = record_cfg.dataset or names.get("dataset") or type(datamodule).__name__
    trainer, loggers = make_trainer(cfg)
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if is_overridden("test_step", model):
            trainer.test(model, datamodule=datamodule)
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
            report_test(metrics, cfg.ckpt_path, kind="checkpoint", condition=model.condition)
        else:  # no likelihood (the DCGAN): sampling time and FID only
            report_no_likelihood(model)
            datamodule.setup("test")
            record = next(callback for callback in trainer.callbacks if isinstance(callback, RunRecord))
            record.finish(trainer, model, datamodule)
    except BaseException:
        finish_wandb(loggers, failed=True)
        raise
    finish_wandb(loggers)
    record = read_record(f"{record_cfg.output_dir}/{RECORD_NAME}")
    print(quality_line(record), flush=True)
    return record

"""The evaluation pipeline behind `eval.py`: the test NLL, sampling time and FID of a checkpoint,
written as a run record (`<run>/record.json`) like a training run's."""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.model_helpers import is_overridden

from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.checkpoint import check_fits, data_config, model_from_checkpoint
from pixel_lightning.jobs import (
    PrintTestLine,
    check_settings,
    drop_log_file_on_worker_ranks,
    finish_wandb,
    make_trainer,
    report_no_likelihood,
)
from pixel_lightning.pretrained import lifts_checks, model_source, read_model_source
from pixel_lightning.records import RECORD_NAME, quality_line, read_record

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint on the whole test split of its dataset; returns its run record."""
    drop_log_file_on_worker_ranks()
    check_settings(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    source = model_source(cfg.ckpt_path, cfg.pretrained)
    checkpoint = read_model_source(source, cfg.trust_checkpoint)
    trust = lifts_checks(checkpoint, cfg.trust_checkpoint)
    names = checkpoint.get("run_record") or {}
    model = model_from_checkpoint(checkpoint, source, trust=trust)
    # the checkpoint's data, read from this machine's data folder, with the overrides of eval.yaml's `data`
    data = data_config(checkpoint, source, trust)
    overrides = {key: value for key, value in cfg.data.items() if value is not None}
    evaluated = dict(data, data_dir=cfg.paths.data_dir) | overrides
    check_fits(
        {"data": data},
        {"data": evaluated},
        source,
        fix="Evaluate it on the data it was trained on: leave out the data overrides that change the dataset, the "
        "image shape or the levels (batch sizes and num_workers may change).",
    )
    datamodule = hydra.utils.instantiate(evaluated)

    record_cfg = cfg.callbacks.run_record
    record_cfg.model_name = record_cfg.model_name or names.get("model") or type(model).__name__
    record_cfg.dataset = record_cfg.dataset or names.get("dataset") or type(datamodule).__name__
    trainer, loggers = make_trainer(cfg, first=[PrintTestLine("checkpoint", source)])
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if is_overridden("test_step", model):
            trainer.test(model, datamodule=datamodule)
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

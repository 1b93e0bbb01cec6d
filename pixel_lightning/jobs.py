"""What the train and eval pipelines share: the settings check, the trainer with its callbacks and
loggers, closing the W&B run, and the lines that report a test."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import hydra
import pytorch_lightning as pl
from lightning_fabric.utilities.seed import max_seed_value, min_seed_value
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from pixel_lightning.callbacks.restored_paths import RestoredPathGuard
from pixel_lightning.loggers import instantiate_loggers
from pixel_lightning.settings import check_setting


def drop_log_file_on_worker_ranks() -> None:
    """DDP worker processes (rank > 0, re-started by Lightning as Hydra jobs of the same folder)
    write no log file: the folder's files come from rank zero only."""
    if rank_zero_only.rank == 0:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger` (null -> [])."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


# Settings whose wrong type would otherwise surface as an assertion deep inside Lightning or torch.
INTEGER_SETTINGS = (
    "trainer.max_epochs",
    "trainer.min_epochs",
    "trainer.max_steps",
    "trainer.num_nodes",
    "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps",
    "trainer.accumulate_grad_batches",
    "trainer.num_sanity_val_steps",
)
NUMBER_SETTINGS = (
    "trainer.gradient_clip_val",
    "trainer.val_check_interval",
    "trainer.limit_train_batches",
    "trainer.limit_val_batches",
    "trainer.limit_test_batches",
)
BOOLEAN_SETTINGS = ("test", "trust_checkpoint")


def check_settings(cfg: DictConfig) -> None:
    """Reject mistyped values of common settings with a message instead of a traceback."""
    # seed_everything's range: numpy's seeds are unsigned 32-bit integers
    check_setting(cfg, "seed", "integer", 0, at_least=min_seed_value, at_most=max_seed_value, nullable=True)
    for key in INTEGER_SETTINGS:
        check_setting(cfg, key, "integer", 10, nullable=True)
    for key in NUMBER_SETTINGS:
        check_setting(cfg, key, "number", 10, nullable=True)
    if "optimizer" in cfg:  # eval.py's config has no optimizer and no `test`
        check_setting(cfg, "optimizer.lr", "number", 0.001, above=0)
    if cfg.get("fid"):  # the sample-quality step comes after the whole training or test
        check_setting(cfg, "fid.temperature", "number", 1.0, above=0)
    for key in BOOLEAN_SETTINGS:
        if key in cfg:
            check_setting(cfg, key, "boolean", "true")


def make_trainer(cfg: DictConfig, first: Sequence[pl.Callback] = ()) -> tuple[pl.Trainer, list[Any]]:
    """The configured trainer with the callbacks `first`, then the `callbacks` and `logger` groups;
    returns it and the loggers. RestoredPathGuard is always there: a resume checkpoint's paths never
    reach ModelCheckpoint unchecked."""
    callbacks = [*first, *instantiate_group(cfg.get("callbacks")), RestoredPathGuard()]
    loggers = instantiate_loggers(cfg.get("logger"))
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False), loggers


def finish_wandb(loggers: list[Any], failed: bool = False) -> None:
    """Close the W&B run of this job, so multirun jobs each get their own complete run. A failed
    job exits its run with code 1, so the dashboard (and `wandb sync`) shows it as failed."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish(exit_code=1 if failed else 0)


def report_no_likelihood(model: pl.LightningModule) -> None:
    """The `Test NLL` line of a model that has no likelihood (the DCGAN): no number, never a made-up one."""
    print(f"Test NLL: none ({type(model).__name__} has no likelihood)", flush=True)


class PrintTestLine(pl.Callback):
    """Prints the `Test NLL` line (rank zero) as the test ends: before the run record, later in the
    callbacks, scores the samples, which may take minutes or fail and must never lose the line.
    The tested file is `checkpoint`, or the one trainer.test loaded (none: the weights in memory)."""

    def __init__(self, kind: str, checkpoint: str | None = None) -> None:
        self.kind, self.checkpoint = kind, checkpoint

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # one line per run, not one per DDP process
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
            report_test(
                metrics,
                self.checkpoint or trainer.ckpt_path or "",
                self.kind,
                condition=getattr(pl_module, "condition", None),
            )


def report_test(
    metrics: dict[str, float], checkpoint: str, kind: str = "best checkpoint", condition: str | None = None
) -> None:
    """The `Test NLL` line; a class-conditional model's (`condition`) is -log p(x | y), and says so."""
    nll, bpd = metrics.get("test/nll", math.nan), metrics.get("test/bpd", math.nan)
    source = f" ({kind} {checkpoint})" if checkpoint else " (final weights: no best checkpoint in the run's folder)"
    given = ", conditional: -log p(x | y)" if condition == "class" else ""
    print(f"Test NLL: {nll:.2f} nats/image, {bpd:.4f} bits/dim{given}{source}", flush=True)

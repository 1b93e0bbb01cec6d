"""The LightningModule shared by every architecture: an AutoregressiveDistribution (likelihood
and sampling, distribution.py) trained by maximum likelihood, with its NLL metrics. Class-conditional
(`condition="class"`), its batches are (images, labels) and its NLL is -log p(x | y)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from pixel_lightning.logging_steps import LogsStepWindow
from pixel_lightning.metrics import NegativeLogLikelihood
from pixel_lightning.models.distribution import AutoregressiveDistribution
from pixel_lightning.models.outputs import output_spec


def _plain(config: Any) -> Any:
    """A resolved plain-python copy of a config, safe for checkpoints loaded with weights_only."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config) if isinstance(config, Mapping) else config


class AutoregressiveImageModel(LogsStepWindow, AutoregressiveDistribution, pl.LightningModule):
    """Trains `net` (see AutoregressiveDistribution) on the NLL of its images.

    Args:
        net: hydra config of the architecture (instantiated here, so checkpoints rebuild it).
        optimizer: hydra config of a torch optimizer, without `params`.
        data: the data config; only channels, height, width and levels are read.
        scheduler: optional hydra config of an LR scheduler, stepped once per epoch.
        compile: run the net through torch.compile (in place: checkpoints keep their keys and
            load uncompiled). A speed switch only, so not saved with the hyper-parameters.
        condition: None, or "class": learn p(x | y) from (image, label) batches.
        output: the output distribution (models/outputs/), saved in full; None (and checkpoints
            without it) is categorical.
    """

    def __init__(
        self,
        net: Mapping,
        optimizer: Mapping,
        data: Mapping,
        scheduler: Mapping | None = None,
        compile: bool = False,
        condition: str | None = None,
        output: str | Mapping | None = None,
    ):
        net, data, output = _plain(net), _plain(data), output_spec(_plain(output))
        super().__init__(net, data, condition, output)  # AutoregressiveDistribution first, then the LightningModule
        hparams = {
            "net": net,
            "optimizer": _plain(optimizer),
            "scheduler": _plain(scheduler),
            "data": data,
            "condition": condition,
            "output": output,
        }
        self.save_hyperparameters(hparams)
        if compile:
            self.net.compile()
        self.train_nll = NegativeLogLikelihood(self.dims)
        self.val_nll = NegativeLogLikelihood(self.dims)
        self.test_nll = NegativeLogLikelihood(self.dims)

    # ---- training ---------------------------------------------------------------------------
    def _step(self, batch: torch.Tensor | list[torch.Tensor], metric: NegativeLogLikelihood) -> torch.Tensor:
        images, label = batch if self.condition else (batch, None)  # (B, C, H, W), (B,)
        nll = -self.log_prob(images, label)  # (B,) nats
        metric.update(nll)
        return nll.mean() / self.dims  # nats per dimension: a loss scale independent of image size

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_nll)
        self.log_step(batch_idx, loss=loss)  # train/loss: its mean over each logging window
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._step(batch, self.val_nll)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._step(batch, self.test_nll)

    def _log_epoch(self, stage: str, metric: NegativeLogLikelihood) -> None:
        if metric.update_count == 0:  # e.g. a sanity check that ran no batch
            return
        values = metric.compute()  # already all-reduced across processes
        self.log_dict({f"{stage}/{name}": value for name, value in values.items()}, prog_bar=stage != "train")
        metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train", self.train_nll)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_nll)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_nll)

    def configure_optimizers(self):
        optimizer = hydra.utils.instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = hydra.utils.instantiate(self.hparams.scheduler, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

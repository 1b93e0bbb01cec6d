"""The LightningModule shared by every architecture: likelihood, metrics and sampling.

An autoregressive image model factorises p(x) = prod_i p(x_i | x_<i) over dimensions in raster
order, then R, G, B within a pixel (PixelRNN paper, section 2). The wrapped `net` computes all
conditionals in one pass; this module turns its logits into log-likelihoods (Bernoulli for
binary data, a K-way softmax per channel otherwise), trains on them, and samples pixel by pixel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from pixel_lightning.errors import NonFiniteError
from pixel_lightning.metrics import NegativeLogLikelihood


def check_drawable(logits: torch.Tensor) -> None:
    """Refuse to sample from logits that are NaN or infinite (a diverged or damaged model) with a
    message, instead of an internal error from torch.bernoulli or torch.multinomial."""
    if not torch.isfinite(logits).all():
        raise NonFiniteError(
            "The model's outputs are not finite numbers (NaN or infinite logits), so it cannot be sampled: "
            "its weights are broken, usually by a training run that diverged. Sample from an earlier checkpoint "
            "of that run, or train again with a lower optimizer.lr or a smaller trainer.gradient_clip_val."
        )


def _plain(config: Any) -> Any:
    """A resolved plain-python copy of a config, safe for checkpoints loaded with weights_only."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config) if isinstance(config, Mapping) else config


class AutoregressiveImageModel(pl.LightningModule):
    """Wraps `net`: float images (B, C, H, W) -> logits (B, C, H, W) if K == 2 else (B, K, C, H, W).

    Args:
        net: hydra config of the architecture (instantiated here, so checkpoints rebuild it).
        optimizer: hydra config of a torch optimizer, without `params`.
        data: the data config; only channels, height, width and levels are read.
        scheduler: optional hydra config of an LR scheduler, stepped once per epoch.
        compile: run the net through torch.compile (in place: checkpoints keep their keys and
            load uncompiled). A speed switch only, so not saved with the hyper-parameters.
    """

    def __init__(
        self, net: Mapping, optimizer: Mapping, data: Mapping, scheduler: Mapping | None = None, compile: bool = False
    ):
        super().__init__()
        data = _plain(data)
        self.save_hyperparameters(
            {
                "net": _plain(net),
                "optimizer": _plain(optimizer),
                "scheduler": _plain(scheduler),
                "data": data,
            }
        )
        self.net = hydra.utils.instantiate(self.hparams.net)
        if compile:
            self.net.compile()
        self.image_shape = (int(data["channels"]), int(data["height"]), int(data["width"]))
        self.levels = int(data["levels"])
        self.dims = math.prod(self.image_shape)
        self.train_nll = NegativeLogLikelihood(self.dims)
        self.val_nll = NegativeLogLikelihood(self.dims)
        self.test_nll = NegativeLogLikelihood(self.dims)

    # ---- likelihood -------------------------------------------------------------------------
    def to_input(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels in [0, K-1] -> floats in [-1, 1], the network's input scale."""
        return levels.to(self.dtype) * (2.0 / (self.levels - 1)) - 1.0

    def logits(self, levels: torch.Tensor) -> torch.Tensor:
        logits = self.net(self.to_input(levels))
        expected = levels.shape if self.levels == 2 else (levels.shape[0], self.levels, *levels.shape[1:])
        if logits.shape != expected:
            raise ValueError(f"net returned logits {tuple(logits.shape)}, expected {tuple(expected)}")
        return logits

    def log_prob(self, levels: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats for integer images (B, C, H, W) -> (B,)."""
        logits = self.logits(levels)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # >= float32 likelihoods under bf16
        if self.levels == 2:
            nll = F.binary_cross_entropy_with_logits(logits, levels.to(logits.dtype), reduction="none")
        else:
            nll = F.cross_entropy(logits, levels.long(), reduction="none")  # (B, C, H, W)
        return -nll.flatten(1).sum(1)

    # ---- sampling ---------------------------------------------------------------------------
    @torch.no_grad()
    def complete(
        self,
        levels: torch.Tensor,
        observed_rows: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str = "cached",
    ) -> torch.Tensor:
        """Keep the first `observed_rows` rows of `levels` (B, C, H, W) and sample the rest.

        One draw per dimension, in raster order and R, G, B within a pixel. `method="naive"` runs
        the whole net for every draw, on rows <= r only (exact because the nets are causal,
        tested). `method="cached"` (the default) asks the net for `cached_sampler(batch, height,
        width)`, which computes one position at a time from what earlier positions left in its
        caches (models/layers.py, CachedSampler); a net without one (or returning None) is
        sampled naively. Both paths make the same draws in the same order, so for the same
        weights, generator and inputs they return the same levels (tested in float64).
        """
        if method not in ("cached", "naive"):
            raise ValueError(f"method must be 'cached' or 'naive', got {method!r}")
        was_training = self.training
        self.eval()
        try:
            x = levels.clone().long().to(self.device)
            batch, channels, height, width = x.shape
            make_sampler = getattr(self.net, "cached_sampler", None) if method == "cached" else None
            sampler = make_sampler(batch, height, width) if make_sampler is not None else None
            if sampler is None:
                for row in range(observed_rows, height):
                    for col in range(width):
                        for ch in range(channels):
                            logits = self.logits(x[:, :, : row + 1])[..., row, col]  # (B, C) or (B, K, C)
                            x[:, ch, row, col] = self._draw(logits, ch, temperature, generator)
                return x
            inputs = self.to_input(x)  # (B, C, H, W): the net's input, updated draw by draw
            for row in range(height):
                for col in range(width):
                    if row < observed_rows:
                        sampler(inputs, row, col)  # fills the caches of the observed pixel
                        continue
                    for ch in range(channels):
                        x[:, ch, row, col] = self._draw(sampler(inputs, row, col), ch, temperature, generator)
                        inputs[:, ch, row, col] = self.to_input(x[:, ch, row, col])
            return x
        finally:
            self.train(was_training)

    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str = "cached",
    ) -> torch.Tensor:
        """Draw `num_samples` images (n, C, H, W) of integer levels (`method`: see `complete`)."""
        blank = torch.zeros(num_samples, *self.image_shape, dtype=torch.long, device=self.device)
        return self.complete(blank, 0, temperature, generator, method)

    def _draw(self, logits: torch.Tensor, ch: int, temperature: float, generator) -> torch.Tensor:
        """Levels (B,) of channel `ch` from one position's logits, (B, C) or (B, K, C): every draw
        of both sampling paths passes here."""
        if self.levels == 2:
            scaled = logits[:, ch] / temperature  # (B,)
            check_drawable(scaled)
            return torch.bernoulli(torch.sigmoid(scaled), generator=generator).long()
        scaled = logits[:, :, ch] / temperature  # (B, K)
        check_drawable(scaled)
        return torch.multinomial(torch.softmax(scaled, dim=1), 1, generator=generator).squeeze(1)

    # ---- training ---------------------------------------------------------------------------
    def _step(self, batch: torch.Tensor, metric: NegativeLogLikelihood) -> torch.Tensor:
        nll = -self.log_prob(batch)  # (B,) nats
        metric.update(nll)
        return nll.mean() / self.dims  # nats per dimension: a loss scale independent of image size

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_nll)
        self.log("train/loss", loss, prog_bar=True)
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

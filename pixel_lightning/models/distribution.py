"""An autoregressive distribution over images: likelihood and sampling, without training.

An autoregressive image model factorises p(x) = prod_i p(x_i | x_<i) over dimensions in raster
order, then R, G, B within a pixel (PixelRNN paper, section 2). The wrapped `net` computes all
conditionals in one pass; this module turns its logits into log-likelihoods (Bernoulli for
binary data, a K-way softmax per channel otherwise) and samples pixel by pixel. The
LightningModule that trains it (autoregressive.py) is this module plus the training loop; sample.py
rebuilds this module alone from a checkpoint, so sampling does not load the training stack.

With `condition="class"` the net is built class-conditional (models/conditioning.py) and every
method takes the images' labels, `label` (B,) long: the likelihood is then log p(x | y).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import hydra
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.errors import NonFiniteError
from pixel_lightning.settings import check_condition


def check_drawable(logits: torch.Tensor) -> None:
    """Refuse to sample from logits that are NaN or infinite (a diverged or damaged model) with a
    message, instead of an internal error from torch.bernoulli or torch.multinomial."""
    if not torch.isfinite(logits).all():
        raise NonFiniteError(
            "The model's outputs are not finite numbers (NaN or infinite logits), so it cannot be sampled: "
            "its weights are broken, usually by a training run that diverged. Sample from an earlier checkpoint "
            "of that run, or train again with a lower optimizer.lr or a smaller trainer.gradient_clip_val."
        )


class AutoregressiveDistribution(nn.Module):
    """p(x) of `net`: float images (B, C, H, W) -> logits (B, C, H, W) if K == 2 else (B, K, C, H, W).

    Args:
        net: hydra config of the architecture (instantiated here, so checkpoints rebuild it).
        data: the data config; only channels, height, width and levels are read, and `classes`
            when conditional.
        condition: None, or "class" for p(x | y): the net gets `classes=data["classes"]`.
    """

    def __init__(self, net: Mapping, data: Mapping, condition: str | None = None):
        super().__init__()
        check_condition(condition)
        self.condition = condition
        self.classes = int(data["classes"]) if condition == "class" else 0
        self.net = hydra.utils.instantiate(net, **({"classes": self.classes} if self.classes else {}))
        self.image_shape = (int(data["channels"]), int(data["height"]), int(data["width"]))
        self.levels = int(data["levels"])
        self.dims = math.prod(self.image_shape)

    def _weight(self) -> torch.Tensor:
        """A parameter of the net: the dtype and device its inputs must have."""
        return next(self.net.parameters())

    # ---- likelihood -------------------------------------------------------------------------
    def to_input(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels in [0, K-1] -> floats in [-1, 1], the network's input scale."""
        return levels.to(self._weight().dtype) * (2.0 / (self.levels - 1)) - 1.0

    def net_logits(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """The net on inputs x (B, C, H', W'), with the label only when there is one (an
        unconditional net need not take it)."""
        return self.net(x) if label is None else self.net(x, label=label)

    def logits(self, levels: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net_logits(self.to_input(levels), label)
        expected = levels.shape if self.levels == 2 else (levels.shape[0], self.levels, *levels.shape[1:])
        if logits.shape != expected:
            raise ValueError(f"net returned logits {tuple(logits.shape)}, expected {tuple(expected)}")
        return logits

    def log_prob(self, levels: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (or log p(x | y)) in nats for integer images (B, C, H, W) -> (B,)."""
        logits = self.logits(levels, label)
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
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Keep the first `observed_rows` rows of `levels` (B, C, H, W) and sample the rest
        (given `label` (B,), the images' classes, when the net is conditional).

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
            x = levels.clone().long().to(self._weight().device)
            label = None if label is None else label.long().to(x.device)
            batch, channels, height, width = x.shape
            make_sampler = getattr(self.net, "cached_sampler", None) if method == "cached" else None
            labelled = {} if label is None else {"label": label}
            sampler = make_sampler(batch, height, width, **labelled) if make_sampler is not None else None
            if sampler is None:
                for row in range(observed_rows, height):
                    for col in range(width):
                        for ch in range(channels):
                            logits = self.logits(x[:, :, : row + 1], label)[..., row, col]  # (B, C) or (B, K, C)
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
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw `num_samples` images (n, C, H, W) of integer levels (`method`: see `complete`),
        of the classes `label` (n,) when the net is conditional."""
        blank = torch.zeros(num_samples, *self.image_shape, dtype=torch.long, device=self._weight().device)
        return self.complete(blank, 0, temperature, generator, method, label)

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

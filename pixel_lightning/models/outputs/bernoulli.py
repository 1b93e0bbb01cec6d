"""The Bernoulli output of binary data (PixelRNN paper, section 2.1: a sigmoid per channel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixel_lightning.models.outputs.check import check_drawable, check_temperature


class Bernoulli:
    """One logit per channel: params (B, C, ...) for levels (B, C, ...)."""

    per_pixel = False  # one parameter group per channel, each in its channel's feature group
    params_per_channel = 1

    def params_shape(self, levels_shape: torch.Size) -> tuple[int, ...]:
        return tuple(levels_shape)

    def layout(self, params: torch.Tensor, channels: int) -> torch.Tensor:
        """The net's last maps (B, C*1, ...) channel-major -> params (B, C, ...)."""
        return params

    def log_prob(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """log p of each level, (B, C, ...) -> (B, C, ...)."""
        return -F.binary_cross_entropy_with_logits(params, levels.to(params.dtype), reduction="none")

    def sample(self, params: torch.Tensor, ch: int, pixel: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """Levels (B,) of channel `ch` from one position's params (B, C)."""
        logits = params[:, ch]  # (B,)
        check_drawable(logits)
        check_temperature(temperature, logits.dtype)
        # a small temperature may overflow the logit to +-inf: sigmoid takes it to probability 1 or 0
        return torch.bernoulli(torch.sigmoid(logits / temperature), generator=generator).long()

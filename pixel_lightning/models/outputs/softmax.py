"""The K-way softmax output per channel (PixelRNN paper, section 2.2: discrete 256-way pixel values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixel_lightning.models.outputs.check import check_drawable


class Softmax:
    """K logits per channel: params (B, K, C, ...) for levels (B, C, ...)."""

    per_pixel = False

    def __init__(self, levels: int):
        self.params_per_channel = levels

    def params_shape(self, levels_shape: torch.Size) -> tuple[int, ...]:
        return (levels_shape[0], self.params_per_channel, *levels_shape[1:])

    def layout(self, params: torch.Tensor, channels: int) -> torch.Tensor:
        """The net's last maps (B, C*K, ...) channel-major -> params (B, K, C, ...)."""
        return params.unflatten(1, (channels, self.params_per_channel)).transpose(1, 2)

    def log_prob(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """log p of each level, (B, K, C, ...) and (B, C, ...) -> (B, C, ...)."""
        return -F.cross_entropy(params, levels.long(), reduction="none")

    def sample(self, params: torch.Tensor, ch: int, pixel: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """Levels (B,) of channel `ch` from one position's params (B, K, C)."""
        scaled = params[:, :, ch] / temperature  # (B, K)
        check_drawable(scaled)
        return torch.multinomial(torch.softmax(scaled, dim=1), 1, generator=generator).squeeze(1)

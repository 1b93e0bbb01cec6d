"""The K-way softmax output per channel (PixelRNN paper, section 2.2: discrete 256-way pixel values)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixel_lightning.models.outputs.check import check_drawable, check_temperature


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
        logits = params[:, :, ch]  # (B, K)
        check_drawable(logits)
        check_temperature(temperature, logits.dtype)
        scaled = (logits - logits.amax(1, keepdim=True)) / temperature  # <= 0: finite or -inf, never inf - inf
        # Inverting the CDF at one uniform per image: torch.multinomial draws K exponentials per image,
        # which made the draws of 256 levels a third of cached sampling's time at 64 images.
        cdf = torch.softmax(scaled, dim=1).cumsum(dim=1)  # (B, K)
        u = torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1)  # the first level whose CDF exceeds u

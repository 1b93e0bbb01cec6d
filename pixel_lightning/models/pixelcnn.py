"""PixelCNN, as specified in *Pixel Recurrent Neural Networks* (van den Oord et al., 2016).

Section 3.4 and Table 1: a 7x7 mask-A convolution, then `layers` residual blocks (Figure 5:
1x1 conv 2h->h, ReLU, 3x3 mask-B conv, ReLU, 1x1 conv h->2h, plus the block's input), then the
output stack (2 x ReLU + 1x1 mask-B conv) and a Bernoulli or K-way softmax head. The paper
uses 15 blocks. Every convolution is masked so that RGB channel groups stay causal.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.layers import MaskedConv2d, OutputStack, check_sizes


class ResidualBlock(nn.Module):
    """Figure 5 (left): the PixelCNN residual block on 2h feature maps."""

    def __init__(self, hidden: int, data_channels: int):
        super().__init__()
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, data_channels, "B")
        self.conv = MaskedConv2d(hidden, hidden, 3, data_channels, "B")
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, data_channels, "B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2h, H, W)
        h = F.relu(self.reduce(x))  # (B, h, H, W)
        h = F.relu(self.conv(h))  # (B, h, H, W)
        return x + self.expand(h)  # (B, 2h, H, W)


class PixelCNN(nn.Module):
    """x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W)."""

    def __init__(self, channels: int, levels: int, hidden: int = 16, layers: int = 5, output_hidden: int = 32):
        super().__init__()
        check_sizes(channels, levels, hidden, layers)
        self.input_conv = MaskedConv2d(channels, 2 * hidden, 7, channels, "A")
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, channels) for _ in range(layers)))
        self.output = OutputStack(2 * hidden, output_hidden, channels, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        h = self.input_conv(x)  # (B, 2h, H, W)
        h = self.blocks(h)  # (B, 2h, H, W)
        return self.output(h)

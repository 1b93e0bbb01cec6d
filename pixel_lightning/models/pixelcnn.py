"""PixelCNN, as specified in *Pixel Recurrent Neural Networks* (van den Oord et al., 2016).

Section 3.5 and Table 1: a 7x7 mask-A convolution, then `layers` residual blocks (Figure 5:
1x1 conv 2h->h, ReLU, 3x3 mask-B conv, ReLU, 1x1 conv h->2h, plus the block's input), then the
output stack (ReLU + 1x1 mask-B convs) and a Bernoulli or K-way softmax head. The paper uses 15
blocks and no skip connections for PixelCNN; `skip=True` adds those of the PixelRNN models
(section 3.3). Every convolution is masked (section 3.4) so that RGB channel groups stay causal.
Class-conditional (`classes` > 0, models/conditioning.py): the label's bias is added to each
block's 3x3 conv pre-activation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.layers import MaskedConv2d, ResidualNet


class ResidualBlock(nn.Module):
    """Figure 5 (left): the PixelCNN residual block on 2h feature maps."""

    def __init__(self, hidden: int, data_channels: int):
        super().__init__()
        self.label_features = hidden  # a conditional net's label bias: on the 3x3 conv's pre-activation
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, data_channels, "B")
        self.conv = MaskedConv2d(hidden, hidden, 3, data_channels, "B")
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, data_channels, "B")

    def forward(self, x: torch.Tensor, label_bias: torch.Tensor | None = None) -> torch.Tensor:  # (B, 2h, H, W)
        h = F.relu(self.reduce(x))  # (B, h, H, W)
        h = self.conv(h)  # (B, h, H, W)
        if label_bias is not None:  # (B, h)
            h = h + label_bias[:, :, None, None]
        return x + self.expand(F.relu(h))  # (B, 2h, H, W)

    def cached_step(self, batch: int, height: int, width: int) -> ResidualBlockAtPosition:
        return ResidualBlockAtPosition(self, batch, height, width)


class ResidualBlockAtPosition:
    """The block at one position (r, c) per call, for cached sampling: the 3x3 conv keeps its
    input of earlier positions; the 1x1 convs need nothing but the position itself."""

    def __init__(self, block: ResidualBlock, batch: int, height: int, width: int):
        convs = (block.reduce, block.conv, block.expand)
        self.reduce, self.conv, self.expand = (ConvAtPosition(m, batch, height, width) for m in convs)

    def __call__(self, x: torch.Tensor, r: int, c: int, label_bias: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.reduce(x, r, c))  # (B, h): x (B, 2h) at (r, c)
        h = self.conv(h, r, c)  # (B, h)
        if label_bias is not None:  # (B, h)
            h = h + label_bias
        return x + self.expand(F.relu(h), r, c)  # (B, 2h)


class PixelCNN(ResidualNet):
    """x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W)."""

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 5,
        output_hidden: int = 32,
        output_layers: int = 1,
        skip: bool = False,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        def make_block(_: int) -> ResidualBlock:
            return ResidualBlock(hidden, channels)

        super().__init__(
            channels, levels, hidden, layers, make_block, output_hidden, output_layers, skip, classes, output
        )

"""PixelCNN++, as in *PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture Likelihood
and Other Modifications* (Salimans, Karpathy, Chen & Kingma, 2017); the reference code is openai/pixel-cnn.

- Section 2.1-2.2: the discretized logistic mixture output, models/outputs/logistic_mixture.py. The
  net is causal pixel by pixel (no channel masks): every parameter of pixel (r, c) comes from the
  pixels before it, and the mixture links a pixel's channels.
- Section 2.3, Figure 2: two streams instead of masks, "up" (every pixel above) by down-shifted
  convolutions and "up-left" (above, and left on the same row) by down-right-shifted ones, which
  together have no blind spot.
- Section 2.4: three resolutions (H, H/2, H/4), halved by strided convolutions and doubled by
  transposed ones, with short-cut connections from each block of the first (up) pass to its mirror
  in the second (down) pass, as in a U-net.
- Section 2.5: dropout in every residual block, whose non-linearity is concat_elu and whose output
  is gated (a * sigmoid(b), as in the reference code's gated_resnet).
- Class-conditional (`classes` > 0): a learned embedding of the label is added to the gate
  pre-activations (a, b) of every block of both streams, the reference code's conditioning `h` and
  the Conditional PixelCNN paper's section 2.3 (models/conditioning.py).

Not here: the reference code's weight normalisation (with its data-dependent initialisation) and
its Polyak averaging of the weights. Cached sampling is Fast PixelCNN++ (Ramachandran et al., 2017),
fast_pixelcnn_pp.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.conditioning import LabelBiases, label_biases
from pixel_lightning.models.outputs import build_output


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of x and of -x, side by side: (B, F, H, W) -> (B, 2F, H, W)."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Every row moved one down, a zero row on top: row r then holds only rows < r."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Every column moved one right, a zero column on the left."""
    return F.pad(x, (1, 0))[..., :-1]


class DownShiftedConv2d(nn.Conv2d):
    """A (kh, kw) kernel whose last row is the output's row: padded kh-1 rows on top and
    centred horizontally, it reads rows r-kh+1..r, so an "up" map stays above its pixel."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 3), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        kh, kw = kernel
        self.padding_lrtb = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))


class DownRightShiftedConv2d(nn.Conv2d):
    """A (kh, kw) kernel whose bottom-right tap is the output's position: rows r-kh+1..r,
    columns c-kw+1..c, so an "up-left" map stays before its pixel in raster order."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int] = (2, 2), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride=stride)
        kh, kw = kernel
        self.padding_lrtb = (kw - 1, 0, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))


class ShiftedUpsample(nn.ConvTranspose2d):
    """Doubles the resolution with a stride-2 transposed (kh, kw) conv, cropped like the shifted
    convs (the reference code's down_(right_)shifted_deconv2d): low-res row i reaches rows 2i and
    2i+1 only; `centred` columns as DownShiftedConv2d, else as DownRightShiftedConv2d."""

    def __init__(self, channels: int, kernel: tuple[int, int], centred: bool):
        super().__init__(channels, channels, kernel, stride=2, output_padding=1)
        self.left = (kernel[1] - 1) // 2 if centred else 0

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # (B, F, h, w) -> like's (H, W)
        height, width = like.shape[-2:]  # odd sizes: 2h may exceed H by one
        return super().forward(x)[:, :, :height, self.left : self.left + width]


class GatedResNet(nn.Module):
    """The reference code's gated_resnet: x + a * sigmoid(b), (a, b) from two shifted convs over
    concat_elu, the first also fed the `skips` (short-cut inputs, each F maps) by a 1x1 conv; a
    conditional net's `label_bias` (B, 2F) is added to (a, b), the same at every position."""

    def __init__(self, filters: int, conv: type[nn.Conv2d], skips: int, dropout: float):
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.skip = nn.Conv2d(2 * skips * filters, filters, 1) if skips else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)
        self.label_features = 2 * filters  # a conditional net's label bias: [a F, b F]

    def forward(self, x: torch.Tensor, *skips: torch.Tensor, label_bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(concat_elu(x))  # (B, F, H, W)
        if self.skip is not None:
            h = h + self.skip(concat_elu(torch.cat(skips, dim=1)))
        ab = self.conv_out(self.dropout(concat_elu(h)))  # (B, 2F, H, W)
        if label_bias is not None:
            ab = ab + label_bias[:, :, None, None]
        a, b = ab.chunk(2, dim=1)  # (B, F, H, W) each
        return x + a * torch.sigmoid(b)


class PixelCNNpp(nn.Module):
    """x (B, C, H, W) float in [-1, 1], label (B,) long if conditional -> the (B, P, H, W) parameters
    of a per-pixel output (the logistic mixture; for one channel also the categorical output,
    (B, 1, H, W) or (B, K, 1, H, W)).

    Args:
        filters: feature maps of both streams (160 in the paper).
        blocks: gated ResNet blocks per resolution of the up pass (5 in the paper; the down pass
            has blocks, blocks + 1, blocks + 1, as in the reference code).
        dropout: drop probability inside each block (0.5 in the paper for CIFAR-10).
        classes: > 0 for a class-conditional net.
        output: the output distribution setting (models/outputs/); None is categorical.
    """

    def __init__(
        self, channels: int, levels: int, filters: int = 32, blocks: int = 2, dropout: float = 0.0,
        classes: int = 0, output: Mapping | None = None,
    ):  # fmt: skip
        super().__init__()
        if filters < 1 or blocks < 0 or not 0 <= dropout < 1:
            raise ValueError(f"need filters >= 1, blocks >= 0, 0 <= dropout < 1; got {filters}, {blocks}, {dropout}")
        self.channels = channels
        self.distribution = build_output(output, channels, levels)
        if not self.distribution.per_pixel and channels > 1:
            raise ValueError(
                f"PixelCNN++ predicts a whole pixel from the pixels before it, so its {channels} channels need one "
                "joint distribution: use model.output=logistic_mixture (its default) for data of >= 32 levels."
            )

        def stage(count: int, conv: type[nn.Conv2d], skips: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResNet(filters, conv, skips, dropout) for _ in range(count))

        up, left = DownShiftedConv2d, DownRightShiftedConv2d
        self.u_input = up(channels + 1, filters, (2, 3))  # + a channel of ones: image or padding
        self.ul_input_above = up(channels + 1, filters, (1, 3))
        self.ul_input_left = left(channels + 1, filters, (2, 1))
        self.up_u = nn.ModuleList(stage(blocks, up, 0) for _ in range(3))
        self.up_ul = nn.ModuleList(stage(blocks, left, 1) for _ in range(3))  # skip: the u stream
        self.halve_u = nn.ModuleList(up(filters, filters, (2, 3), stride=2) for _ in range(2))
        self.halve_ul = nn.ModuleList(left(filters, filters, (2, 2), stride=2) for _ in range(2))
        self.down_u = nn.ModuleList(stage(n, up, 1) for n in (blocks, blocks + 1, blocks + 1))
        self.down_ul = nn.ModuleList(stage(n, left, 2) for n in (blocks, blocks + 1, blocks + 1))
        self.double_u = nn.ModuleList(ShiftedUpsample(filters, (2, 3), centred=True) for _ in range(2))
        self.double_ul = nn.ModuleList(ShiftedUpsample(filters, (2, 2), centred=False) for _ in range(2))
        stages = (*self.up_u, *self.up_ul, *self.down_u, *self.down_ul)
        self.block_count = sum(len(stage) for stage in stages)
        widths = [block.label_features for stage in stages for block in stage]  # all 2F: forward takes them in turn
        self.label_biases = LabelBiases(classes, widths) if classes else None  # None: no state_dict keys
        per_pixel = self.distribution.per_pixel
        outputs = self.distribution.params_per_pixel if per_pixel else self.distribution.params_per_channel
        self.head = nn.Conv2d(filters, outputs, 1)  # one channel when not per pixel

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W)
        biases = iter(label_biases(self.label_biases, label, self.block_count))  # one per block, in call order
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (B, C+1, H, W)
        u = down_shift(self.u_input(x))  # (B, F, H, W): rows above
        ul = down_shift(self.ul_input_above(x)) + right_shift(self.ul_input_left(x))  # above and left
        us, uls = [u], [ul]  # every map of the up pass, for the down pass's short-cuts
        for level in range(3):
            for u_block, ul_block in zip(self.up_u[level], self.up_ul[level]):
                u = u_block(u, **next(biases))
                ul = ul_block(ul, u, **next(biases))
                us.append(u)
                uls.append(ul)
            if level < 2:  # (B, F, H, W) -> (B, F, ceil(H/2), ceil(W/2))
                u, ul = self.halve_u[level](u), self.halve_ul[level](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for level in range(3):
            if level > 0:  # back up one resolution, to that of the next short-cut
                u = self.double_u[level - 1](u, us[-1])
                ul = self.double_ul[level - 1](ul, uls[-1])
            for u_block, ul_block in zip(self.down_u[level], self.down_ul[level]):
                u = u_block(u, us.pop(), **next(biases))
                ul = ul_block(ul, u, uls.pop(), **next(biases))
        return self.distribution.layout(self.head(F.elu(ul)), self.channels)  # (B, P, H, W)

    def cached_sampler(self, batch: int, height: int, width: int, label: torch.Tensor | None = None):
        """The net at one pixel per call from per-layer caches (Fast PixelCNN++, fast_pixelcnn_pp.py)."""
        from pixel_lightning.models.fast_pixelcnn_pp import FastPixelCNNpp  # it builds on this module's layers

        return FastPixelCNNpp(self, batch, height, width, label)

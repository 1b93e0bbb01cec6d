"""Fast PixelCNN++: PixelCNN++ (pixelcnn_pp.py) sampled one pixel at a time from per-layer caches.

*Fast Generation for Convolutional Autoregressive Models* (Ramachandran et al., 2017): every layer
keeps a cache of its inputs, and each position of each layer is computed once, when its inputs are
final; the strided layers' caches are updated at their own rates. For PixelCNN++:

- The "up" stream u reads only the rows above its position, at every resolution and in both passes,
  so it is computed a whole row at a time, when the row above is final: at the start of image row r,
  row r of every full-resolution u map, row r/2 of the half-resolution ones when 2 divides r, row r/4
  of the quarter-resolution ones when 4 does.
- The "up-left" stream ul reads the pixels before its position, so it is computed one position at a
  time: position (i, j) of resolution 1/2^l right before pixel (2^l i, 2^l j) is drawn. The strided
  conv that makes it reads rows 2i-1..2i, columns 2j-1..2j of the finer map, all final by then; a
  transposed conv's output (y, x) reads the coarser position (y//2, x//2), computed earlier; the
  short-cuts of the down pass read the up pass at the same position, computed in the same call.

Per pixel, only the full-resolution ul blocks and the head run, on one position each (and on one
pixel in 4, or 16, the coarser ones); per image row, the u stream on one row. The naive path instead
runs the whole net on every row so far, for every pixel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.conditioning import label_biases
from pixel_lightning.models.pixelcnn_pp import concat_elu

if TYPE_CHECKING:
    from pixel_lightning.models.pixelcnn_pp import DownShiftedConv2d, GatedResNet, PixelCNNpp

LEVELS = 3  # resolutions: H, H/2, H/4 (pixelcnn_pp.py)


class ConvOnRows:
    """A DownShiftedConv2d (any stride) evaluated one output row at a time: its input rows are kept,
    zero-padded as the conv pads them, (B, in, H+top, W+left+right), as they become final."""

    def __init__(self, conv: DownShiftedConv2d, batch: int, height: int, width: int):
        left, right, top, _ = conv.padding_lrtb
        self.conv, self.top, self.left = conv, top, left
        self.inputs = conv.weight.new_zeros(batch, conv.in_channels, height + top, width + left + right)

    def write(self, x: torch.Tensor, r: int) -> None:
        """Store input row r, (B, in, W)."""
        self.inputs[:, :, r + self.top, self.left : self.left + x.shape[-1]] = x

    def row(self, i: int) -> torch.Tensor:
        """Output row i, (B, out, W'), from the kh input rows ending at row s*i (stored)."""
        conv, s = self.conv, self.conv.stride[0]
        window = self.inputs[:, :, s * i : s * i + conv.kernel_size[0]]
        return F.conv2d(window, conv.weight, conv.bias, stride=conv.stride)[:, :, 0]


def gate(x: torch.Tensor, ab: torch.Tensor, label_bias: torch.Tensor | None) -> torch.Tensor:
    """GatedResNet's output x + a * sigmoid(b) from its second conv's (a, b); x (B, F, ...)."""
    if label_bias is not None:  # (B, 2F)
        ab = ab + label_bias.view(*label_bias.shape, *[1] * (ab.dim() - 2))
    a, b = ab.chunk(2, dim=1)
    return x + a * torch.sigmoid(b)


def rows_first(x: torch.Tensor) -> torch.Tensor:
    """A row (B, F, W) as (W, B, F), contiguous: position j's (B, F) is one block."""
    return x.permute(2, 0, 1).contiguous()


class BlockOnRows:
    """A GatedResNet of the u stream, one row at a time (`skip`: its short-cut row, if any)."""

    def __init__(self, block: GatedResNet, batch: int, height: int, width: int):
        self.block = block
        self.conv_in, self.conv_out = (ConvOnRows(c, batch, height, width) for c in (block.conv_in, block.conv_out))

    def __call__(self, x: torch.Tensor, i: int, skip: torch.Tensor | None, label_bias: torch.Tensor | None):
        self.conv_in.write(concat_elu(x), i)  # x (B, F, W): row i
        h = self.conv_in.row(i)  # (B, F, W)
        if skip is not None:
            h = h + F.conv2d(concat_elu(skip)[:, :, None], self.block.skip.weight, self.block.skip.bias)[:, :, 0]
        self.conv_out.write(concat_elu(h), i)
        return gate(x, self.conv_out.row(i), label_bias)  # (B, F, W)


class BlockAtPosition:
    """A GatedResNet of the ul stream, one position at a time. Its short-cut conv reads u (rows
    final a row ahead) and, in the down pass, the up pass's ul at the same position: the u part
    (with the bias) is computed for the whole row by `start_row`, the ul part per position."""

    def __init__(self, block: GatedResNet, batch: int, height: int, width: int):
        filters = block.conv_in.out_channels
        self.conv_in, self.conv_out = (
            ConvAtPosition(c, batch, height, width, anchor=(c.kernel_size[0] - 1, c.kernel_size[1] - 1))
            for c in (block.conv_in, block.conv_out)
        )
        weight = block.skip.weight[:, :, 0, 0]  # (F, 2*skips*F): concat_elu of [u, ul] is [u, ul, -u, -ul]
        self.skip_bias = block.skip.bias
        parts = weight.split(filters, dim=1)
        skips = len(parts) // 2
        self.u_weight = torch.cat([parts[0], parts[skips]], dim=1).T.contiguous()  # (2F, F)
        self.ul_weight = torch.cat([parts[1], parts[skips + 1]], dim=1).T.contiguous() if skips == 2 else None

    def start_row(self, u: torch.Tensor) -> None:
        """The short-cut's u part of a row, u (B, F, W) -> (W, B, F)."""
        elu = rows_first(concat_elu(u))  # (W, B, 2F)
        self.u_part = torch.addmm(self.skip_bias, elu.flatten(0, 1), self.u_weight).view(*elu.shape[:2], -1)

    def __call__(self, x: torch.Tensor, i: int, j: int, ul: torch.Tensor | None, label_bias: torch.Tensor | None):
        h = self.conv_in(concat_elu(x), i, j) + self.u_part[j]  # x (B, F) at (i, j) -> (B, F)
        if ul is not None:  # (B, F): the up pass's ul at (i, j)
            h = h.addmm(concat_elu(ul), self.ul_weight)
        return gate(x, self.conv_out(concat_elu(h), i, j), label_bias)  # (B, F)


class FastPixelCNNpp:
    """The net's output at one pixel per call, `__call__(x, r, c)` with x (B, C, H, W) final before
    (r, c), in raster order -> (B, P) (or the categorical (B, K, 1), Bernoulli (B, 1)). The pixel's own
    channels are never read: calls again at (r, c) (one per channel) return the same parameters.
    Build it in eval mode (dropout off), under no_grad, for one sampling run."""

    def __init__(self, net: PixelCNNpp, batch: int, height: int, width: int, label: torch.Tensor | None):
        self.net, self.row, self.position = net, -1, None
        sizes = [(height, width)]
        for _ in range(LEVELS - 1):  # the strided convs round up
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        self.sizes = sizes
        biases = iter(bias.get("label_bias") for bias in label_biases(net.label_biases, label, net.block_count))
        # per level and block: the (u, ul) blocks' label biases, taken in forward's call order
        self.up_biases = [[(next(biases), next(biases)) for _ in stage] for stage in net.up_u]
        self.down_biases = [[(next(biases), next(biases)) for _ in stage] for stage in net.down_u][::-1]

        def each(blocks: nn.ModuleList, level: int, kind: type) -> list:
            return [kind(block, batch, *sizes[level]) for block in blocks]

        # down pass stage d runs at level LEVELS-1-d (the coarsest first): index both passes by level
        down_u, down_ul = net.down_u[::-1], net.down_ul[::-1]
        self.double_u, self.double_ul = net.double_u[::-1], net.double_ul[::-1]  # level l's comes from level l+1
        self.up_u = [each(net.up_u[level], level, BlockOnRows) for level in range(LEVELS)]
        self.up_ul = [each(net.up_ul[level], level, BlockAtPosition) for level in range(LEVELS)]
        self.down_u = [each(down_u[level], level, BlockOnRows) for level in range(LEVELS)]
        self.down_ul = [each(down_ul[level], level, BlockAtPosition) for level in range(LEVELS)]
        self.halve_u = [ConvOnRows(net.halve_u[level], batch, *sizes[level]) for level in range(LEVELS - 1)]
        self.halve_ul = [ConvAtPosition(net.halve_ul[level], batch, *sizes[level], anchor=(1, 1))
                         for level in range(LEVELS - 1)]  # fmt: skip
        self.u_input = ConvOnRows(net.u_input, batch, height, width)
        self.ul_input_above = ConvOnRows(net.ul_input_above, batch, height, width)
        self.ul_input_left = ConvAtPosition(net.ul_input_left, batch, height, width, anchor=(1, 0))
        self.u_down = [None] * LEVELS  # per level: the down pass's last u row
        weight = net.head.weight
        self.ul_down = [weight.new_zeros(w, batch, weight.shape[1]) for _, w in sizes]  # ... its ul row, (W, B, F)
        self.ones = weight.new_ones(batch, 1, width)  # the input's channel of ones, (B, 1, W)
        self.head_weight = weight[:, :, 0, 0].T.contiguous()  # (F, P)

    def levels(self, r: int, c: int = 0) -> list[int]:
        """The levels with a position at image position (r, c): 2^l divides both."""
        return [level for level in range(LEVELS) if r % 2**level == 0 and c % 2**level == 0]

    def start_row(self, x: torch.Tensor, r: int) -> None:
        """The u stream's rows that image row r makes final (x's rows < r are), in forward's order."""
        net, self.row = self.net, r
        if r == 0:  # the down-shift's zero row
            u = self.ones.new_zeros(len(self.ones), net.u_input.out_channels, self.sizes[0][1])
            self.ul_above = rows_first(torch.zeros_like(u))
        else:
            above = torch.cat([x[:, :, r - 1], self.ones], dim=1)  # (B, C+1, W)
            self.u_input.write(above, r - 1)
            self.ul_input_above.write(above, r - 1)
            u, self.ul_above = self.u_input.row(r - 1), rows_first(self.ul_input_above.row(r - 1))
        levels, ups = self.levels(r), []  # ups[l]: level l's up-pass u rows, for the down pass's short-cuts
        for level in levels:
            i = r >> level
            if level > 0:
                u = self.halve_u[level - 1].row(i)
            ups.append([u])
            for u_block, ul_block, (bias, _) in zip(self.up_u[level], self.up_ul[level], self.up_biases[level]):
                u = u_block(u, i, None, bias)
                ul_block.start_row(u)
                ups[-1].append(u)
            if level < LEVELS - 1:
                self.halve_u[level].write(u, i)
        for level in reversed(levels):
            i, skips = r >> level, ups[level][::-1]
            if level == LEVELS - 1:
                u, skips = skips[0], skips[1:]
            else:  # the transposed conv's rows 2i' and 2i'+1 come from the coarser row i' = i // 2
                up = self.double_u[level]
                u = nn.ConvTranspose2d.forward(up, self.u_down[level + 1][:, :, None])  # (B, F, 3, 2w+2)
                u = u[:, :, i % 2, up.left : up.left + self.sizes[level][1]]
            blocks = zip(self.down_u[level], self.down_ul[level], skips, self.down_biases[level])
            for u_block, ul_block, skip, (bias, _) in blocks:
                u = u_block(u, i, skip, bias)
                ul_block.start_row(u)
            self.u_down[level] = u

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        if (r, c) == self.position:  # another channel of the same pixel
            return self.params
        if r != self.row:
            self.start_row(x, r)
        ul = self.ul_above[c]  # (B, F): the down-shifted row above
        if c > 0:  # the right-shifted (2, 1) conv at the pixel to the left
            left = torch.cat([x[:, :, r, c - 1], self.ones[:, :, 0]], dim=1)  # (B, C+1)
            ul = ul + self.ul_input_left(left, r, c - 1)
        levels, ups = self.levels(r, c), []
        for level in levels:
            i, j = r >> level, c >> level
            if level > 0:  # its strided conv's inputs, up to the finer level's (2i, 2j), are written
                ul = self.halve_ul[level - 1].at(i, j)
            ups.append([ul])
            for block, (_, bias) in zip(self.up_ul[level], self.up_biases[level]):
                ul = block(ul, i, j, None, bias)
                ups[-1].append(ul)
            if level < LEVELS - 1:
                self.halve_ul[level].write(ul, i, j)
        for level in reversed(levels):
            i, j, skips = r >> level, c >> level, ups[level][::-1]
            if level == LEVELS - 1:
                ul, skips = skips[0], skips[1:]
            else:  # a 2x2 stride-2 transposed conv: output (i, j) is tap (i%2, j%2) of input (i//2, j//2)
                up = self.double_ul[level]
                ul = torch.addmm(up.bias, self.ul_down[level + 1][j // 2], up.weight[:, :, i % 2, j % 2])
            for block, skip, (_, bias) in zip(self.down_ul[level], skips, self.down_biases[level]):
                ul = block(ul, i, j, skip, bias)
            if level > 0:
                self.ul_down[level][j] = ul
        params = torch.addmm(self.net.head.bias, F.elu(ul), self.head_weight)  # (B, P)
        self.position, self.params = (r, c), self.net.distribution.layout(params, self.net.channels)
        return self.params

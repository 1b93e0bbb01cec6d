"""Cached sampling: a net evaluated one position at a time, reusing what earlier positions computed.

Every layer of these nets is causal, so its activations at a position never change once the
position's inputs are final (PixelRNN paper, section 3.4, and *Fast Generation for
Convolutional Autoregressive Models*, Ramachandran et al., 2017). Sampling then costs one
position's work per draw instead of a whole forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pixel_lightning.models.conditioning import label_biases

if TYPE_CHECKING:
    from pixel_lightning.models.layers import MaskedConv2d, ResidualNet


class ConvAtPosition:
    """A MaskedConv2d evaluated at one position at a time, for cached sampling.

    `__call__(x, r, c)` stores the input vector of position (r, c) and returns the conv's output
    there. Under the causal mask only the kernel rows down to the centre are live, and of the
    centre row only the taps left of and at the centre. Calls come in raster order, so when row r
    starts the rows above it are final: the kernel rows above the centre, and the bias, are then
    applied to the whole row r in one matrix product. Per position only the centre row's taps
    remain, one matrix product over the row's last cx+1 inputs. The inputs are kept channels-last
    and zero-padded, (B, H+cy, W+kw-1, in), so that those cx+1 inputs are one contiguous run of
    each image's row: a view, not a copy. Positions not yet written hold zeros that meet zero
    weights. Calling again at the same position overwrites it (one call per channel group of a
    pixel). Weights are read once: build it in eval mode, under no_grad, for one sampling run.
    """

    def __init__(self, conv: MaskedConv2d, batch: int, height: int, width: int):
        kh, kw = conv.kernel_size
        self.cy, self.cx, self.batch, self.width = kh // 2, kw // 2, batch, width
        weight = conv.masked_weight()  # (out, in, kh, kw)
        self.bias = conv.bias if conv.bias is not None else weight.new_zeros(conv.out_channels)
        # Taps as contiguous (taps, out) matrices, the rows ordered like the channels-last inputs,
        # (y, x, in): torch.addmm then runs without a transpose or a copy per call.
        self.pointwise = kh == kw == 1
        if self.pointwise:
            self.weight = weight[:, :, 0, 0].T.contiguous()  # (in, out)
            return
        self.above_weight = weight[:, :, : self.cy].permute(2, 3, 1, 0).flatten(0, 2).contiguous()  # (cy*kw*in, out)
        self.centre_weight = weight[:, :, self.cy, : self.cx + 1].permute(2, 1, 0).flatten(0, 1).contiguous()
        self.inputs = weight.new_zeros(batch, height + self.cy, width + kw - 1, conv.in_channels)
        self.row = -1

    def write(self, x: torch.Tensor, r: int, c: int) -> None:
        """Store the input (B, in) of position (r, c) without computing anything."""
        self.inputs[:, r + self.cy, c + self.cx] = x

    def start_row(self, r: int) -> None:
        """Row r's output from the rows above it, and views of row r's inputs, indexed by column."""
        cy, cx, batch, width = self.cy, self.cx, self.batch, self.width
        row = self.inputs[:, r + cy]  # (B, W+kw-1, in)
        self.slots = row[:, cx : cx + width].transpose(0, 1)  # (W, B, in): slots[c] is (r, c)
        self.windows = row.unfold(1, cx + 1, 1)[:, :width].transpose(2, 3).flatten(2).transpose(0, 1)
        # (W, B, (cx+1)*in): windows[c] is (r, c-cx) .. (r, c), a view
        if cy:  # (W, B, out): position c's block contiguous
            above = self.inputs[:, r : r + cy].unfold(2, 2 * cx + 1, 1).transpose(3, 4)  # (B, cy, W, kw, in)
            above = above.permute(2, 0, 1, 3, 4).reshape(width * batch, -1)  # (W*B, cy*kw*in)
            self.above = torch.addmm(self.bias, above, self.above_weight).view(width, batch, -1)
        else:  # one kernel row: nothing above
            self.above = self.bias.expand(width, batch, -1)
        self.row = r

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:  # (B, in) at (r, c)
        if self.pointwise:
            return torch.addmm(self.bias, x, self.weight)  # (B, out)
        if r != self.row:  # row r starts: the rows above are final
            self.start_row(r)
        self.slots[c] = x
        return torch.addmm(self.above[c], self.windows[c], self.centre_weight)  # (B, out)


class CachedSampler:
    """A ResidualNet computing the logits of one position at a time, reusing earlier positions.

    Every layer is causal, so its activations at a position never change once the position's
    inputs are final. Calls come in raster order, once per channel group of each position; a
    call at (r, c) computes each layer at (r, c) only, from the caches of the positions before
    (the input conv's, which is given the previous pixel again: its last channel is drawn after
    its last call; the layers' own: `layer_steps[i](h, r, c, **net.layer_inputs(i, x))`, with
    the label's `label_bias` if the net is conditional), and overwrites what an earlier call at
    (r, c) left. The mask-A input conv hides a pixel's
    last channel from the whole pixel, so after the last group's call the position is final.
    """

    def __init__(
        self, net: ResidualNet, layer_steps: list, batch: int, height: int, width: int, label: torch.Tensor | None
    ):
        self.net, self.layer_steps = net, layer_steps
        self.label_biases = label_biases(net.label_biases, label, len(layer_steps))  # once: the label is fixed
        self.input_conv = ConvAtPosition(net.input_conv, batch, height, width)
        self.skips = None if net.skips is None else [ConvAtPosition(s, batch, height, width) for s in net.skips]
        convs = [*net.output.hidden, net.output.logits]
        self.output = [ConvAtPosition(conv, batch, height, width) for conv in convs]

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        """x (B, C, H, W) the net's input, final before (r, c) -> logits at (r, c), (B, C) or (B, K, C)."""
        if c > 0 or r > 0:  # the previous pixel's last channel was drawn after its last call
            before = (r, c - 1) if c > 0 else (r - 1, x.shape[3] - 1)
            self.input_conv.write(x[:, :, before[0], before[1]], *before)
        h = self.input_conv(x[:, :, r, c], r, c)  # (B, 2h)
        skipped = torch.zeros_like(h) if self.skips is not None else None
        for i, step in enumerate(self.layer_steps):
            h = step(h, r, c, **self.net.layer_inputs(i, x), **self.label_biases[i])  # (B, 2h)
            if skipped is not None:
                skipped = skipped + self.skips[i](h, r, c)
        h = h if skipped is None else h + skipped
        for conv in self.output:
            h = conv(F.relu(h), r, c)
        return self.net.output.layout(h)  # (B, C), (B, K, C) or (B, P)

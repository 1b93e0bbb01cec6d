"""Cached sampling: a net evaluated one position at a time, reusing what earlier positions computed.

Every layer of these nets is causal, so its activations at a position never change once the
position's inputs are final (PixelRNN paper, section 3.4, and *Fast Generation for
Convolutional Autoregressive Models*, Ramachandran et al., 2017). Sampling then costs one
position's work per draw instead of a whole forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.conditioning import label_biases

if TYPE_CHECKING:
    from pixel_lightning.models.layers import ResidualNet


class ConvAtPosition:
    """A causal conv evaluated at one output position at a time, for cached sampling.

    The conv's output at (i, j) reads its input around the anchor position (s*i, s*j) (s its stride,
    1 but for PixelCNN++'s strided convs): the kernel rows above the `anchor` tap (all kw columns) and,
    of the anchor's row, the taps left of and at it. `anchor` (cy, cx) is the centre for a
    MaskedConv2d (the default: taps below or right of it are masked to zero and skipped), the
    bottom-right tap for PixelCNN++'s down-right-shifted convs. Calls come in raster order, so when
    output row i starts the input rows above its anchor row are final: those kernel rows, and the
    bias, are then applied to the whole row i in one matrix product. Per position only the anchor
    row's taps remain, one matrix product over its last cx+1 inputs. The inputs are kept
    channels-last and zero-padded, (B, H+cy, W+kw-1, in), so that those cx+1 inputs are one
    contiguous run of each image's row: a view, not a copy. Positions not yet written hold zeros
    that meet zero weights.

    `__call__(x, r, c)` (stride 1) stores the input vector of position (r, c) and returns the output
    there; calling again at the same position overwrites it (one call per channel group of a pixel).
    A strided conv's inputs are stored by `write` as they come, and `at(i, j)` computes an output.
    Weights are read once: build it in eval mode, under no_grad, for one sampling run.
    """

    def __init__(self, conv: nn.Conv2d, batch: int, height: int, width: int, anchor: tuple[int, int] | None = None):
        kh, kw = conv.kernel_size
        self.cy, self.cx = anchor if anchor is not None else (kh // 2, kw // 2)
        self.kw, self.stride, self.batch = kw, conv.stride[1], batch
        self.width = (width - 1) // self.stride + 1  # of the output
        weight = conv.masked_weight() if hasattr(conv, "masked_weight") else conv.weight  # (out, in, kh, kw)
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

    def start_row(self, i: int) -> None:
        """Output row i's part from the input rows above its anchor row, and views of the anchor
        row's inputs, indexed by output column."""
        cy, cx, kw, s, batch, width = self.cy, self.cx, self.kw, self.stride, self.batch, self.width
        row = self.inputs[:, s * i + cy]  # (B, W+kw-1, in): input row s*i
        self.slots = row[:, cx : cx + width].transpose(0, 1)  # (W, B, in): slots[c] is (i, c), for stride 1
        self.windows = row.unfold(1, cx + 1, s)[:, :width].transpose(2, 3).flatten(2).transpose(0, 1)
        # (W', B, (cx+1)*in): windows[j] is (s*i, s*j-cx) .. (s*i, s*j), a view
        if cy:  # (W', B, out): position j's block contiguous
            above = self.inputs[:, s * i : s * i + cy].unfold(2, kw, s).transpose(3, 4)  # (B, cy, W', kw, in)
            above = above.permute(2, 0, 1, 3, 4).reshape(width * batch, -1)  # (W'*B, cy*kw*in)
            self.above = torch.addmm(self.bias, above, self.above_weight).view(width, batch, -1)
        else:  # one kernel row: nothing above
            self.above = self.bias.expand(width, batch, -1)
        # Each as a tuple of per-column views: a position then indexes a Python tuple, not a tensor (an op each)
        self.slots, self.windows, self.above = (t.unbind(0) for t in (self.slots, self.windows, self.above))
        self.row = i

    def at(self, i: int, j: int) -> torch.Tensor:  # (B, out): the output at (i, j), its inputs written
        if i != self.row:  # row i starts: the input rows above its anchor row are final
            self.start_row(i)
        return torch.addmm(self.above[j], self.windows[j], self.centre_weight)

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:  # (B, in) at (r, c)
        if self.pointwise:
            return torch.addmm(self.bias, x, self.weight)  # (B, out)
        if r != self.row:  # row r starts: the rows above are final
            self.start_row(r)
        self.slots[c].copy_(x)
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

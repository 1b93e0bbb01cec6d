"""Diagonal BiLSTM, as specified in *Pixel Recurrent Neural Networks* (van den Oord et al., 2016).

Section 3.2: the feature map is skewed (row r shifted right by r) so that each diagonal of the
image becomes a column, and an LSTM scans the columns left to right. Its state-to-state part is a
2 x 1 conv over the previous column that reads rows r-1 and r, i.e. the pixel above and the pixel
to the left; its input-to-state part is a 1x1 mask-B conv. So the state at (r, c) covers every
pixel above-left of it. A second LSTM scans the mirrored image (above-right); its output is shifted
down by one row, so that it covers only earlier rows, and added: together they cover the whole
past (Figure 4, right). Layers are residual (Figure 5), with skip connections to the output
(section 3.3), and framed by Table 1's 7x7 mask-A input conv and output stack.

Deviation from the paper. Figure 4 claims the whole past, but with the mask-A input conv the last
channel of the last pixel of row r-1 is in no feature of row r-1 (the mask hides a pixel's own
last channel, and nothing lies right of it), so it is out of reach for pixels of row r more than
3 columns from the right edge. We close that gap by giving the right-to-left direction of the
first layer one extra input-to-state term, an unmasked 1x1 conv of the raw image x
(`image_to_state`): it carries x[r-1, W-1, :] leftwards along row r-1, and the down-shift makes
it legal, since that direction may see every channel of every pixel of its own row. Deeper
layers inherit the full field from the first, so they do without it. `close_blind_spot=False`
drops the term and runs the paper's architecture exactly as written.

Computation. The skewed map's column d is the diagonal r + c = d, so we keep only the pixels of
each diagonal, in scan order (`scan_order`), and never compute states outside the image: the one
such state that image positions read, left of column 0, is (h0, c0). The two directions are
independent and step together, one batched matmul and one cell per diagonal: H + W - 1 steps
per layer on the diagonal's pixels, not 2 (H + W - 1) steps on all H rows of a skewed map.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.lstm import LSTM, PixelRNN


def scan_order(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(2, H*W): the raster index of each pixel in scan order, diagonal d = r + c after diagonal,
    rows ascending within one; row 1 is the order of the mirrored image (the right-to-left scan)."""
    rows, cols = torch.arange(height, device=device)[:, None], torch.arange(width, device=device)
    # Diagonal-major, then row: the keys of the two directions, unique per pixel.
    keys = torch.stack([(rows + cols) * height + rows, (rows + width - 1 - cols) * height + rows])  # (2, H, W)
    return keys.flatten(1).argsort(dim=1)


def cat(pieces: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.cat, without the copy (and its backward) of a lone piece."""
    return torch.cat(pieces, dim) if len(pieces) > 1 else pieces[0]


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H, W): row r gets row r-1, row 0 zeros."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class DiagonalLSTM(LSTM):
    """The parameters of one direction of a Diagonal BiLSTM layer, which scans both at once.

    The state at (r, c) depends on inputs at pixels (r' <= r, c' <= c), reading the same pixel
    through the mask-B conv. With `image_channels` > 0 it also reads the raw image (B,
    image_channels, H, W) through an unmasked 1x1 conv, so it sees every channel of the same
    pixel: only for a direction whose output is shifted down a row (see the module docstring).
    """

    def __init__(self, in_features: int, hidden: int, data_channels: int, image_channels: int = 0):
        super().__init__(in_features, hidden, data_channels, 1, 2, state_padding=1)
        self.image_to_state = nn.Conv2d(image_channels, 4 * hidden, 1, bias=False) if image_channels else None

    def input_gates(self, x: torch.Tensor, image: torch.Tensor | None, order: torch.Tensor) -> torch.Tensor:
        """The 1x1 input-to-state convs at the pixels `order` (N,) of raster maps x (in, H*W, B) and
        image (C, H*W, B) -> (4h, N, B)."""
        conv = self.input_to_state
        gates = torch.addmm(conv.bias[:, None], conv.masked_weight()[:, :, 0, 0], x.index_select(1, order).flatten(1))
        if self.image_to_state is not None:
            gates = gates.addmm(self.image_to_state.weight[:, :, 0, 0], image.index_select(1, order).flatten(1))
        return gates.view(-1, len(order), x.shape[2])


class DiagonalBiLSTMLayer(nn.Module):
    """(B, in, H, W) -> (B, h, H, W): left-to-right scan plus the down-shifted right-to-left scan.

    With `image_channels` > 0 the right-to-left scan also reads the raw image passed to `forward`.
    """

    def __init__(self, in_features: int, hidden: int, data_channels: int, image_channels: int = 0):
        super().__init__()
        self.left_to_right = DiagonalLSTM(in_features, hidden, data_channels)
        self.right_to_left = DiagonalLSTM(in_features, hidden, data_channels, image_channels)
        self.label_features = 2 * self.left_to_right.label_features  # both directions' gates

    def forward(
        self, x: torch.Tensor, image: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, in, H, W)
        # left (h, B, H, W): pixels above-left, and this one; right: above-right, including the
        # future of row r, hence the shift.
        left, right = self.scan(x, image, label_bias)
        return (left + shift_down(right)).transpose(0, 1)  # (B, h, H, W)

    def scan(
        self, x: torch.Tensor, image: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, in, H, W), image (B, C, H, W), label_bias (B, 2*4h) of a conditional net (both
        directions' gates) -> the states (2, h, B, H, W) of the left-to-right and (unmirrored)
        right-to-left scans, both diagonal by diagonal (module docstring)."""
        lstms = self.left_to_right, self.right_to_left
        batch, _, height, width = x.shape
        order = scan_order(height, width, x.device)  # (2, N)
        # Batch innermost: picking a pixel copies one run of B values, and a diagonal's rows and the
        # batch flatten into one matmul dimension without a copy.
        x = x.permute(1, 2, 3, 0).flatten(1, 2)  # (in, H*W, B): raster order
        image = None if image is None else image.permute(1, 2, 3, 0).flatten(1, 2)
        # Mirroring is harmless to the 1x1 input convs: the right-to-left scan reads its pixels in mirrored order.
        gates_in = torch.stack([lstm.input_gates(x, image, o) for lstm, o in zip(lstms, order)])  # (2, 4h, N, B)
        if label_bias is not None:
            gates_in = gates_in + label_bias.view(batch, 2, -1).permute(1, 2, 0)[:, :, None]  # (2, 4h, 1, B)
        weight = torch.stack([lstm.state_to_state.weight.transpose(1, 2).flatten(1) for lstm in lstms])  # (2, 4h, 2*h)
        h0 = torch.stack([lstm.h0 for lstm in lstms])[..., None].expand(-1, -1, 1, batch)  # (2, h, 1, B)
        c0 = torch.stack([lstm.c0 for lstm in lstms])[..., None].expand(-1, -1, 1, batch)
        no_row = torch.zeros_like(h0)  # the state above row 0: the conv's zero padding
        h = c = h0[:, :, :0]  # (2, h, rows, B): the previous diagonal's states, rows lo_prev .. hi_prev
        lo_prev, hi_prev, states = 0, -1, []
        lengths = [min(d, height - 1) - max(0, d - width + 1) + 1 for d in range(height + width - 1)]
        for d, gates_d in enumerate(gates_in.split(lengths, dim=2)):  # (2, 4h, rows lo .. hi, B)
            lo, hi = max(0, d - width + 1), min(d, height - 1)
            # Row r reads rows r-1 (above) and r (beside) of the previous diagonal: rows lo-1 .. hi,
            # where row -1 is zero padding and a new bottom row d, the left edge, gets (h0, c0).
            grows = hi > hi_prev
            ext = cat([no_row] * (lo == 0) + [h] + [h0] * grows, dim=2)  # (2, h, hi-lo+2, B)
            # The 2x1 conv as one matmul over each row's states above and beside: (2, 2*h, rows*B).
            window = torch.cat([ext[:, :, :-1], ext[:, :, 1:]], dim=1).flatten(2)
            gates = torch.baddbmm(gates_d.flatten(2), weight, window).view_as(gates_d)  # (2, 4h, hi-lo+1, B)
            c_beside = cat([c[:, :, lo - lo_prev :]] + [c0] * grows, dim=2)  # (2, h, hi-lo+1, B)
            h, c = self.left_to_right.cell(gates, c_beside)
            states.append(h)
            lo_prev, hi_prev = lo, hi
        states = torch.cat(states, dim=2)  # (2, h, N, B): scan order
        raster = torch.stack([s.index_select(1, o.argsort()) for s, o in zip(states, order)])  # (2, h, N, B)
        return raster.unflatten(2, (height, width)).permute(0, 1, 4, 2, 3)

    def cached_step(self, batch: int, height: int, width: int) -> DiagonalBiLSTMAtPosition:
        return DiagonalBiLSTMAtPosition(self, batch, height, width)


class DiagonalBiLSTMAtPosition:
    """The layer at one position (r, c) per call, for cached sampling.

    The left-to-right scan steps along with the pixels: the state at (r, c) needs the state above,
    (r-1, c), and the one to the left, (r, c-1). The right-to-left scan of row r-1 runs once, when
    row r starts, since the output at row r reads only its row r-1 (the down-shift).
    """

    def __init__(self, layer: DiagonalBiLSTMLayer, batch: int, height: int, width: int):
        self.left, self.right, self.row = layer.left_to_right, layer.right_to_left, -1
        self.input_to_state = ConvAtPosition(self.left.input_to_state, batch, height, width)
        self.inputs = self.left.h0.new_zeros(batch, self.left.input_to_state.in_channels, width)  # row r's inputs
        hidden = self.left.hidden
        # Row r's left-to-right states at columns -1 .. W-1, column -1 being the initial state.
        self.h = self.left.h0.new_zeros(batch, hidden, width + 1)
        self.c = self.left.h0.new_zeros(batch, hidden, width + 1)
        self.h_right = self.left.h0.new_zeros(batch, hidden, width)  # row r-1's right-to-left states

    def __call__(
        self, x: torch.Tensor, r: int, c: int, image: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x (B, in) at (r, c) -> (B, h); image (B, C, H, W): the raw image, final before (r, c);
        # label_bias (B, 2*4h): the left-to-right then the right-to-left direction's
        left = self.left
        above, to_left = left.state_to_state.weight.unbind(2)  # (4h, h) each: taps (r-1, c), (r, c-1)
        left_bias, right_bias = (None, None) if label_bias is None else label_bias.chunk(2, dim=1)
        if r != self.row:  # row r starts: row r-1 is final
            if r > 0:
                self.h_right = self.scan_right(self.inputs, None if image is None else image[:, :, r - 1], right_bias)
            self.above_gates = torch.einsum("oi,biw->bow", above, self.h[:, :, 1:])  # (B, 4h, W); zeros at row 0
            if left_bias is not None:
                self.above_gates = self.above_gates + left_bias[:, :, None]
            self.h, self.c = self.h.clone(), self.c.clone()
            self.h[:, :, 0], self.c[:, :, 0] = left.h0[:, 0], left.c0[:, 0]
            self.row = r
        self.inputs[:, :, c] = x
        gates = self.input_to_state(x, r, c) + self.above_gates[:, :, c] + F.linear(self.h[:, :, c], to_left)
        h, self.c[:, :, c + 1] = left.cell(gates, self.c[:, :, c])
        self.h[:, :, c + 1] = h
        return h + self.h_right[:, :, c]  # (B, h)

    def scan_right(
        self, inputs: torch.Tensor, image: torch.Tensor | None, label_bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Right-to-left states of the finished row r-1: inputs (B, in, W), image row (B, C, W),
        label_bias (B, 4h) -> (B, h, W)."""
        right = self.right
        above, to_left = right.state_to_state.weight.unbind(2)  # mirrored: (r-1, c) and (r, c+1)
        conv = right.input_to_state
        gates = torch.einsum("oi,biw->bow", conv.masked_weight()[:, :, 0, 0], inputs) + conv.bias[:, None]
        if right.image_to_state is not None:
            gates = gates + torch.einsum("oi,biw->bow", right.image_to_state.weight[:, :, 0, 0], image)
        gates = gates + torch.einsum("oi,biw->bow", above, self.h_right)  # (B, 4h, W); h_right: row r-2
        if label_bias is not None:
            gates = gates + label_bias[:, :, None]
        batch, width = inputs.shape[0], inputs.shape[2]
        h, c = right.h0[:, 0].expand(batch, -1), right.c0[:, 0].expand(batch, -1)
        states = []
        for col in reversed(range(width)):
            h, c = right.cell(gates[:, :, col] + F.linear(h, to_left), c)
            states.append(h)
        return torch.stack(states[::-1], dim=2)  # (B, h, W)


class DiagonalBiLSTM(PixelRNN):
    """x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W).

    With `close_blind_spot` (the default) the first layer's right-to-left scan reads the raw
    image x (module docstring); `close_blind_spot=False` is the paper's architecture as written.
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 2,
        output_hidden: int = 32,
        output_layers: int = 1,
        skip: bool = True,
        close_blind_spot: bool = True,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        self.close_blind_spot = close_blind_spot

        def make_lstm(i: int) -> DiagonalBiLSTMLayer:
            return DiagonalBiLSTMLayer(2 * hidden, hidden, channels, channels if i == 0 and close_blind_spot else 0)

        super().__init__(
            channels, levels, hidden, layers, output_hidden, make_lstm, output_layers, skip, classes, output
        )

    def layer_inputs(self, index: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": x} if index == 0 and self.close_blind_spot else {}

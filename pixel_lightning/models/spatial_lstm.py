"""Spatial LSTM (Theis & Bethge, 2015, *Generative Image Modeling Using Spatial LSTMs*), the naive
two-dimensional LSTM that *Pixel Recurrent Neural Networks* (van den Oord et al., 2016, section 3)
was designed to replace.

The state at pixel (i, j) reads the states at (i-1, j), above, and (i, j-1), to the left, and the
features at (i, j):

    [o, f_above, f_left, i, g] = sigma(K_ss [h(i-1, j); h(i, j-1)] + K_is x(i, j))
    c(i, j) = f_above * c(i-1, j) + f_left * c(i, j-1) + i * g
    h(i, j) = o * tanh(c(i, j))

with one forget gate per predecessor, as in Theis & Bethge's equations, and otherwise the gates,
the learned initial state and the RGB channel groups of the PixelRNN LSTMs (lstm.py; the output is
o * tanh(c) as there, where Theis & Bethge write tanh(o * c)). K_is is a 1x1 mask-B conv of the
features at (i, j), as in the Diagonal BiLSTM. Every state waits for the one above and the one
to the left, so the scan runs one pixel at a time in raster order, batched over images only:
that sequential cost is the point of this baseline, and it is deliberately not parallelised along
diagonals (which is what the Diagonal BiLSTM's skewing does).

Layers are residual (Figure 5) with skip connections to the output (section 3.3), framed by
Table 1's 7x7 mask-A input conv and output stack, as the PixelRNN models.

Receptive field. The state at (r, c) covers every pixel (r' <= r, c' <= c) through the scan, and
each of those pixels' input-conv features reach 3 columns right of it in the 3 rows above it. So
the conditional of (r, c) depends on every pixel of the rows above up to column c + 3, on the
pixels left of it in its own row, and (RGB) on the earlier channels of its own pixel, whatever the
number of layers; the rest of the rows above (columns > c + 3) is out of reach. That blind spot
above-right is the one the Diagonal BiLSTM's second direction removes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from pixel_lightning.models.lstm import LSTM, PixelRNN


class SpatialLSTMLayer(LSTM):
    """(B, in, H, W) feature maps -> hidden states (B, h, H, W), one LSTM step per pixel."""

    def __init__(self, in_features: int, hidden: int, data_channels: int):
        # state_to_state is a 1D kernel of 2 taps over [h above, h left].
        super().__init__(in_features, hidden, data_channels, 1, 2, forget_gates=2)

    def forward(self, x: torch.Tensor, label_bias: torch.Tensor | None = None) -> torch.Tensor:  # (B, in, H, W)
        batch, _, _, width = x.shape
        gates_in = self.input_to_state(x).permute(2, 3, 0, 1)  # (H, W, B, 5h)
        if label_bias is not None:  # (B, 5h)
            gates_in = gates_in + label_bias
        # The two taps as one matrix on [h above | h left]: one matmul per pixel.
        state_weight = self.state_to_state.weight.transpose(1, 2).flatten(1)  # (5h, 2h)
        h0, c0 = self.h0[:, 0].expand(batch, -1), self.c0[:, 0].expand(batch, -1)  # (B, h)
        # The learned initial state stands in for the missing neighbours at the top and left edges.
        h_above, c_above = [h0] * width, [c0] * width  # row -1
        rows = []
        for gates_row in gates_in.unbind(0):  # (W, B, 5h)
            h, c = h0, c0  # column -1
            h_row, c_row = [], []
            for col, gates in enumerate(gates_row.unbind(0)):  # (B, 5h)
                recurrent = F.linear(torch.cat([h_above[col], h], dim=1), state_weight)  # (B, 5h)
                h, c = self.cell(gates + recurrent, c_above[col], c)  # (B, h)
                h_row.append(h)
                c_row.append(c)
            rows.append(torch.stack(h_row, dim=2))  # (B, h, W)
            h_above, c_above = h_row, c_row
        return torch.stack(rows, dim=2)  # (B, h, H, W)


class SpatialLSTM(PixelRNN):
    """x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W)."""

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 2,
        output_hidden: int = 32,
        output_layers: int = 1,
        skip: bool = True,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        def make_lstm(_: int) -> SpatialLSTMLayer:
            return SpatialLSTMLayer(2 * hidden, hidden, channels)

        super().__init__(
            channels, levels, hidden, layers, output_hidden, make_lstm, output_layers, skip, classes, output
        )

"""Row LSTM, as specified in *Pixel Recurrent Neural Networks* (van den Oord et al., 2016).

Section 3.1: the image is processed one row at a time, top to bottom. The input-to-state part is a
1 x k mask-B conv along the row, computed for the whole image at once; the state-to-state part is
an unmasked 1 x k conv of the previous row's hidden state, so row i sees row i-1 and, through it,
a triangle of rows above (Figure 4, centre). Layers are residual (Figure 5) and framed by Table 1's
7x7 mask-A input conv and output stack, with skip connections to the output (section 3.3);
the paper uses k = 3 and up to 12 layers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.lstm import LSTM, PixelRNN


class RowLSTMLayer(LSTM):
    """(B, in, H, W) feature maps -> hidden states (B, h, H, W), one LSTM step per row."""

    def __init__(self, in_features: int, hidden: int, data_channels: int, kernel: int = 3):
        super().__init__(in_features, hidden, data_channels, (1, kernel), kernel, state_padding=kernel // 2)

    def forward(self, x: torch.Tensor, label_bias: torch.Tensor | None = None) -> torch.Tensor:  # (B, in, H, W)
        batch, _, _, width = x.shape
        gates_in = self.input_to_state(x)  # (B, 4h, H, W)
        if label_bias is not None:  # (B, 4h)
            gates_in = gates_in + label_bias[:, :, None, None]
        h = self.h0.expand(batch, -1, width)  # (B, h, W): the state of row -1
        c = self.c0.expand(batch, -1, width)
        rows = []
        for gates_row in gates_in.unbind(dim=2):  # (B, 4h, W)
            h, c = self.cell(gates_row + self.state_to_state(h), c)  # 'same'-padded along the row
            rows.append(h)
        return torch.stack(rows, dim=2)  # (B, h, H, W)

    def cached_step(self, batch: int, height: int, width: int) -> RowLSTMAtPosition:
        return RowLSTMAtPosition(self, batch, height, width)


class RowLSTMAtPosition:
    """The layer at one position (r, c) per call, for cached sampling: the state-to-state conv of
    row r-1 runs once, when row r starts; the input-to-state conv and the cell run per position."""

    def __init__(self, lstm: RowLSTMLayer, batch: int, height: int, width: int):
        self.lstm, self.row = lstm, -1
        self.input_to_state = ConvAtPosition(lstm.input_to_state, batch, height, width)
        self.h = lstm.h0.expand(batch, -1, width).clone()  # (B, h, W): row r's states, so far
        self.c = lstm.c0.expand(batch, -1, width).clone()

    def __call__(self, x: torch.Tensor, r: int, c: int, label_bias: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, in) at (r, c), label_bias (B, 4h) -> (B, h)
        if r != self.row:  # row r starts: row r-1 is final
            self.state_gates = self.lstm.state_to_state(self.h)  # (B, 4h, W)
            if label_bias is not None:
                self.state_gates = self.state_gates + label_bias[:, :, None]
            self.c_above, self.row = self.c, r
            self.h, self.c = torch.empty_like(self.h), torch.empty_like(self.c)
        gates = self.input_to_state(x, r, c) + self.state_gates[:, :, c]  # (B, 4h)
        h, self.c[:, :, c] = self.lstm.cell(gates, self.c_above[:, :, c])
        self.h[:, :, c] = h
        return h


class RowLSTM(PixelRNN):
    """x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W)."""

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 2,
        output_hidden: int = 32,
        kernel: int = 3,
        output_layers: int = 1,
        skip: bool = True,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        def make_lstm(_: int) -> RowLSTMLayer:
            return RowLSTMLayer(2 * hidden, hidden, channels, kernel)

        super().__init__(
            channels, levels, hidden, layers, output_hidden, make_lstm, output_layers, skip, classes, output
        )

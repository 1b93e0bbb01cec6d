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
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.lstm import LSTM, PixelRNN


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W+H-1), row r shifted right by r, zeros elsewhere."""
    batch, channels, height, width = x.shape
    # Rows of length W+H laid end to end and re-cut at length W+H-1 drift right by one per row.
    x = F.pad(x, (0, height)).flatten(2)  # (B, C, H*(W+H))
    return x[..., : height * (width + height - 1)].view(batch, channels, height, width + height - 1)


def unskew(x: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of `skew`: (B, C, H, W+H-1) -> (B, C, H, W)."""
    batch, channels, height, _ = x.shape
    x = F.pad(x.flatten(2), (0, height))  # (B, C, H*(W+H))
    return x.view(batch, channels, height, width + height)[..., :width]


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): row r gets row r-1, row 0 zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class DiagonalLSTM(LSTM):
    """One direction: (B, in, H, W) -> hidden states (B, h, H, W); the state at (r, c) depends on
    inputs at pixels (r' <= r, c' <= c), reading the same pixel through the mask-B conv.

    With `image_channels` > 0 it also reads the raw image (B, image_channels, H, W) through an
    unmasked 1x1 conv, so it sees every channel of the same pixel: only for a direction whose
    output is shifted down a row (see the module docstring).
    """

    def __init__(self, in_features: int, hidden: int, data_channels: int, image_channels: int = 0):
        super().__init__(in_features, hidden, data_channels, 1, 2)
        self.image_to_state = nn.Conv2d(image_channels, 4 * hidden, 1, bias=False) if image_channels else None

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:  # (B, in, H, W)
        batch, _, height, width = x.shape
        # A 1x1 conv commutes with skewing, and is cheaper on the unskewed map.
        gates_in = self.input_to_state(x)  # (B, 4h, H, W)
        if self.image_to_state is not None:
            gates_in = gates_in + self.image_to_state(image)
        gates_in = skew(gates_in)  # (B, 4h, H, D), D = W+H-1 diagonals
        # Skewed positions outside the image hold the initial state, so that the pixels of
        # column 0 see (h0, c0) on their left.
        inside = skew(x.new_ones(1, 1, height, width)).bool()[0, 0]  # (H, D)
        h0, c0 = self.h0.expand(batch, -1, height), self.c0.expand(batch, -1, height)
        h, c = h0, c0  # (B, h, H): states of the previous diagonal, row by row
        columns = []
        for gates_col, inside_col in zip(gates_in.unbind(dim=3), inside.unbind(dim=1)):  # (B, 4h, H), (H,)
            # Zero row on top: the 2x1 kernel at row r reads h[r-1] (above) and h[r] (left).
            h, c = self.cell(gates_col + self.state_to_state(F.pad(h, (1, 0))), c)
            h, c = torch.where(inside_col, h, h0), torch.where(inside_col, c, c0)
            columns.append(h)
        return unskew(torch.stack(columns, dim=3), width)  # (B, h, H, W)


class DiagonalBiLSTMLayer(nn.Module):
    """(B, in, H, W) -> (B, h, H, W): left-to-right scan plus the down-shifted right-to-left scan.

    With `image_channels` > 0 the right-to-left scan also reads the raw image passed to `forward`.
    """

    def __init__(self, in_features: int, hidden: int, data_channels: int, image_channels: int = 0):
        super().__init__()
        self.left_to_right = DiagonalLSTM(in_features, hidden, data_channels)
        self.right_to_left = DiagonalLSTM(in_features, hidden, data_channels, image_channels)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:  # (B, in, H, W)
        left = self.left_to_right(x)  # (B, h, H, W): pixels above-left, and this one
        # Mirroring is harmless to the 1x1 input convs; the mirrored state at (r, c) covers pixels
        # (r' <= r, c' >= c), including the future of row r, hence the shift.
        right = self.right_to_left(x.flip(3), None if image is None else image.flip(3)).flip(3)  # (B, h, H, W)
        return left + shift_down(right)


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
    ):
        self.close_blind_spot = close_blind_spot

        def make_lstm(i: int) -> DiagonalBiLSTMLayer:
            return DiagonalBiLSTMLayer(2 * hidden, hidden, channels, channels if i == 0 and close_blind_spot else 0)

        super().__init__(channels, levels, hidden, layers, output_hidden, make_lstm, output_layers, skip)

    def layer_inputs(self, index: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image": x} if index == 0 and self.close_blind_spot else {}

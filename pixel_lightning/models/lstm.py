"""What the Row LSTM and the Diagonal BiLSTM share (*Pixel Recurrent Neural Networks*, section 3).

Both compute, at every position of a scan (a row, or a diagonal of the image),

    [o, f, i, g] = sigma(K_ss (*) h_prev + K_is (*) x)     (sigmoid for o, f, i; tanh for g)
    c = f * c_prev + i * g
    h = o * tanh(c)

with a masked input-to-state conv K_is computed for the whole image up front (section 3.1) and
a state-to-state conv K_ss that only reads states of strictly earlier pixels. Each layer maps 2h
feature maps to h and sits in a residual block (Figure 5, right), with a learnable skip connection
to the output (section 3.3); the net is framed by Table 1's 7x7 mask-A input conv and output
stack, as in PixelCNN. The Spatial LSTM (spatial_lstm.py), the baseline these two replace, uses
the same parts with a cell of two predecessors, scanned one pixel at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn as nn

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.layers import MaskedConv2d, ResidualNet, causal_mask


class LSTM(nn.Module):
    """The parameters and cell update of one LSTM scan; subclasses define the scan order.

    Gate maps are laid out [o, f, i, g], h maps each; with `forget_gates` = n > 1 (a cell with n
    predecessors, as the Spatial LSTM's) [o, f_1 .. f_n, i, g]. For RGB (section 3.4) each gate
    keeps the channel-group layout of the h hidden maps: hidden unit u of group G reads, at its
    own pixel, only input groups <= G. A MaskedConv2d to 4h maps would instead group the 4h maps
    as one block (all of o in group R, all of g in group B), so it gets the h-map mask once per gate.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        data_channels: int,
        input_kernel: int | tuple[int, int],
        state_kernel: int,
        forget_gates: int = 1,
        state_padding: int = 0,
    ):
        super().__init__()
        self.hidden = hidden
        gates = 3 + forget_gates
        self.label_features = gates * hidden  # a conditional net's label bias: on the input-to-state gates
        self.input_to_state = MaskedConv2d(in_features, gates * hidden, input_kernel, data_channels, "B")
        gate_mask = causal_mask(hidden, in_features, self.input_to_state.kernel_size, data_channels, "B")
        self.input_to_state.set_mask(gate_mask.repeat(gates, 1, 1, 1))  # (gates*h, in, kh, kw)
        # Unmasked: it reads only states of earlier pixels, which may depend on any group.
        # Zero padding (`state_padding` each side) inside the conv: no separate pad per scan step.
        self.state_to_state = nn.Conv1d(hidden, gates * hidden, state_kernel, padding=state_padding, bias=False)
        # Learned initial state, broadcast along the scan so that any image size works.
        self.h0 = nn.Parameter(torch.zeros(hidden, 1))
        self.c0 = nn.Parameter(torch.zeros(hidden, 1))

    def cell(self, gates: torch.Tensor, *c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gates (B, (3+n)h, L) laid out [o, f_1..f_n, i, g], the n previous cells (B, h, L), one per
        forget gate -> new hidden and cell states (B, h, L)."""
        # unbind, not slices: its backward is one stack, where slices' fill zeros and copy per gate.
        o, *forget, i, g = gates.unflatten(1, (-1, self.hidden)).unbind(1)
        o, i, g = torch.sigmoid(o), torch.sigmoid(i), torch.tanh(g)
        # i * g starts the sum: a plain sum() would first add 0, one more op forward and backward.
        c = sum((torch.sigmoid(f) * c for f, c in zip(forget, c_prev, strict=True)), i * g)
        return o * torch.tanh(c), c


class ResidualLSTM(nn.Module):
    """Figure 5 (right): an LSTM layer 2h -> h maps, a 1x1 mask-B conv h -> 2h, plus the input."""

    def __init__(self, lstm: nn.Module, hidden: int, data_channels: int):
        super().__init__()
        self.lstm = lstm
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, data_channels, "B")
        self.label_features = lstm.label_features

    def forward(self, x: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:  # (B, 2h, H, W)
        # `inputs`: extra keyword inputs of the LSTM layer (the Diagonal BiLSTM's raw image, a label bias).
        return x + self.expand(self.lstm(x, **inputs))

    def cached_step(self, batch: int, height: int, width: int) -> Callable | None:
        """The layer at one position per call (cached sampling), if its LSTM has a cached step."""
        if not hasattr(self.lstm, "cached_step"):
            return None
        lstm = self.lstm.cached_step(batch, height, width)
        expand = ConvAtPosition(self.expand, batch, height, width)

        def step(x: torch.Tensor, r: int, c: int, **inputs: torch.Tensor) -> torch.Tensor:  # (B, 2h) at (r, c)
            return x + expand(lstm(x, r, c, **inputs), r, c)

        return step


class PixelRNN(ResidualNet):
    """Table 1 with LSTM layers: `make_lstm(i)` builds LSTM layer i (0 = first), 2h maps -> h.

    Skip connections are on by default, as in the paper's PixelRNN models (section 3.3).
    x (B, C, H, W) float -> logits (B, C, H, W) if levels == 2 else (B, K, C, H, W).
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int,
        layers: int,
        output_hidden: int,
        make_lstm: Callable[[int], nn.Module],
        output_layers: int = 1,
        skip: bool = True,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        def make_layer(i: int) -> ResidualLSTM:
            return ResidualLSTM(make_lstm(i), hidden, channels)

        super().__init__(
            channels, levels, hidden, layers, make_layer, output_hidden, output_layers, skip, classes, output
        )

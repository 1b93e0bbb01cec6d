"""Gated PixelCNN, as specified in *Conditional Image Generation with PixelCNN Decoders* (van den
Oord et al., 2016), sections 2.1-2.3 and Figure 2.

The PixelCNN's masked kernels leave a blind spot above-right of each pixel. Two stacks remove it:

- the vertical stack, an n x n receptive field over the rows above: a (n//2 + 1) x n conv whose
  output at row r reads rows r - n//2 .. r (the whole row r, so it is only ever used shifted
  down a row);
- the horizontal stack, a 1 x n conv over the pixels to the left, masked (mask A in the first
  layer, B after, with the RGB channel groups of section 3.4 of the PixelRNN paper, as in our
  other models), which also receives the vertical stack's pre-activations of the row above
  through a 1x1 conv (the vertical-to-horizontal link).

Both stacks use the gated unit tanh(W_f * x) * sigma(W_g * x) (section 2.2). The horizontal stack
is residual after its first layer (a 1x1 conv of the gated output plus the layer's input), and
each layer's gated output reaches the output through its own 1x1 conv (skip connections); their
sum goes through Table 1's output stack (models/layers.py). Class-conditional (`classes` > 0,
section 2.3): a learned embedding of the label is added to both stacks' pre-activations in every
layer (models/conditioning.py).

The first layer uses `first_kernel` (7, as the PixelCNN's input conv), later ones `kernel`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.conditioning import LabelBiases, label_biases
from pixel_lightning.models.layers import MaskedConv2d, OutputStack, causal_mask, check_sizes


def gate(x: torch.Tensor) -> torch.Tensor:
    """(B, 2p, ...) laid out [f, g] -> tanh(f) * sigmoid(g), (B, p, ...)."""
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W) -> (B, F, H, W): row r gets row r-1, row 0 zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class VerticalConv(nn.Conv2d):
    """An (n//2 + 1) x n conv whose output at (r, c) reads rows r - n//2 .. r, columns c - n//2 ..
    c + n//2 (zero padding outside the image): the rows above and the whole row r."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int):
        super().__init__(in_channels, out_channels, (kernel // 2 + 1, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W)
        kh, kw = self.kernel_size
        return F.conv2d(F.pad(x, (kw // 2, kw // 2, kh - 1, 0)), self.weight, self.bias)  # (B, out, H, W)

    def row(self, x: torch.Tensor, r: int) -> torch.Tensor:
        """Output row r alone, from x (B, in, H, W) whose rows <= r are final -> (B, out, W)."""
        kh, kw = self.kernel_size
        top = max(0, r - kh + 1)
        window = F.pad(x[:, :, top : r + 1], (kw // 2, kw // 2, kh - 1 - (r - top), 0))  # (B, in, kh, W+kw-1)
        return F.conv2d(window, self.weight, self.bias)[:, :, 0]


class GatedLayer(nn.Module):
    """Figure 2: one layer of both stacks, p gated maps each.

    (v (B, in, H, W), h (B, in, H, W)) -> (v', h', the horizontal stack's gated maps), each
    (B, p, H, W); the net takes the latter through the layer's skip connection.
    """

    def __init__(self, in_features: int, hidden: int, data_channels: int, kernel: int, mask_type: str):
        super().__init__()
        self.vertical = VerticalConv(in_features, 2 * hidden, kernel)
        self.horizontal = MaskedConv2d(in_features, 2 * hidden, (1, kernel), data_channels, mask_type)
        # f and g each keep the channel groups of the p gated maps (as the LSTM gates, models/lstm.py)
        gate_mask = causal_mask(hidden, in_features, (1, kernel), data_channels, mask_type)
        self.horizontal.set_mask(gate_mask.repeat(2, 1, 1, 1))  # (2p, in, 1, n)
        self.link = nn.Conv2d(2 * hidden, 2 * hidden, 1)  # unmasked: it reads the rows above only
        self.residual = MaskedConv2d(hidden, hidden, 1, data_channels, "B")
        self.is_residual = mask_type == "B"  # the first layer maps the image's C channels to p maps
        self.label_features = 4 * hidden  # a conditional net's label bias: [vertical 2p, horizontal 2p]

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, label_bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v_bias, h_bias = (0, 0) if label_bias is None else label_bias[:, :, None, None].chunk(2, dim=1)
        v_pre = self.vertical(v) + v_bias  # (B, 2p, H, W): rows <= r
        h_pre = self.horizontal(h) + self.link(shift_down(v_pre)) + h_bias  # (B, 2p, H, W): strictly before (r, c)
        gated = gate(h_pre)  # (B, p, H, W)
        h_out = self.residual(gated) + (h if self.is_residual else 0)
        return gate(v_pre), h_out, gated


class GatedPixelCNN(nn.Module):
    """x (B, C, H, W) float, label (B,) long if conditional -> logits (B, C, H, W) if levels == 2
    else (B, K, C, H, W).

    Args:
        hidden: p, the gated maps of each stack.
        layers: gated layers (the first with mask A).
        kernel, first_kernel: n of the later layers' and of the first layer's convs (odd).
        output_hidden, output_layers: the output stack (models/layers.py, OutputStack).
        classes: > 0 for a class-conditional net.
        output: the output distribution (models/outputs/; None: categorical), as for every net.
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int = 16,
        layers: int = 8,
        kernel: int = 3,
        first_kernel: int = 7,
        output_hidden: int = 32,
        output_layers: int = 1,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        super().__init__()
        check_sizes(channels, levels, hidden, layers)
        if layers < 1 or kernel % 2 == 0 or first_kernel % 2 == 0:
            raise ValueError(f"need layers >= 1 and odd kernels, got layers={layers}, {kernel=}, {first_kernel=}")
        self.layers = nn.ModuleList(
            GatedLayer(channels, hidden, channels, first_kernel, "A")
            if i == 0
            else GatedLayer(hidden, hidden, channels, kernel, "B")
            for i in range(layers)
        )
        # each layer's learnable skip connection to the output: a 1x1 mask-B conv of its gated maps
        self.skips = nn.ModuleList(MaskedConv2d(hidden, hidden, 1, channels, "B") for _ in range(layers))
        self.label_biases = LabelBiases(classes, [layer.label_features for layer in self.layers]) if classes else None
        self.output = OutputStack(hidden, output_hidden, channels, levels, output_layers, output)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W)
        v = h = x
        skipped = 0
        biases = label_biases(self.label_biases, label, len(self.layers))
        for layer, skip, bias in zip(self.layers, self.skips, biases):
            v, h, gated = layer(v, h, **bias)  # (B, p, H, W) each
            skipped = skipped + skip(gated)
        return self.output(skipped)

    def cached_sampler(
        self, batch: int, height: int, width: int, label: torch.Tensor | None = None
    ) -> GatedPixelCNNAtPosition:
        return GatedPixelCNNAtPosition(self, batch, height, width, label)


class GatedPixelCNNAtPosition:
    """The net at one position (r, c) per call, for cached sampling (see cached.CachedSampler).

    When row r starts, row r-1 is final: the vertical stack runs once, on row r-1 only, through all
    layers (each layer's vertical input rows are kept), and gives the link's input of row r. Per
    position only the horizontal stack runs, its 1 x n convs reading earlier positions' inputs
    from their caches, and the output stack. Calls come once per channel group of each position;
    the first layer's mask A hides a pixel's last channel from the whole pixel, so the pixel
    before (r, c) is written again (its last channel was drawn after its last call).
    """

    def __init__(self, net: GatedPixelCNN, batch: int, height: int, width: int, label: torch.Tensor | None):
        self.net, self.row = net, -1
        # per layer: the (vertical (B, 2p, 1), horizontal (B, 2p)) label biases, or zeros when unconditional
        self.biases = [(0, 0) for _ in net.layers]
        for i, bias in enumerate(label_biases(net.label_biases, label, len(net.layers))):
            if bias:
                v_bias, h_bias = bias["label_bias"].chunk(2, dim=1)
                self.biases[i] = (v_bias[:, :, None], h_bias)
        weight = net.output.logits.weight
        # The vertical inputs of layers 1.. (layer 0 reads the image): rows above row r are final.
        self.vertical_inputs = [
            weight.new_zeros(batch, layer.vertical.in_channels, height, width) for layer in net.layers[1:]
        ]
        self.links = [weight.new_zeros(batch, layer.link.out_channels, width) for layer in net.layers]

        def at_position(conv: MaskedConv2d) -> ConvAtPosition:
            return ConvAtPosition(conv, batch, height, width)

        self.horizontal = [at_position(layer.horizontal) for layer in net.layers]
        self.residual = [at_position(layer.residual) for layer in net.layers]
        self.skips = [at_position(skip) for skip in net.skips]
        self.output = [at_position(conv) for conv in (*net.output.hidden, net.output.logits)]

    def start_row(self, x: torch.Tensor, r: int) -> None:
        """The link inputs of row r (B, 2p, W) per layer, from the vertical stack on row r-1."""
        self.row = r
        v = x  # (B, C, H, W): the image, final above row r
        for i, layer in enumerate(self.net.layers):
            if r == 0:  # the shifted vertical stack is zero on row 0
                v_pre = torch.zeros_like(self.links[i])
            else:
                v_pre = layer.vertical.row(v, r - 1) + self.biases[i][0]  # (B, 2p, W)
                if i + 1 < len(self.net.layers):
                    v = self.vertical_inputs[i]
                    v[:, :, r - 1] = gate(v_pre)
            self.links[i] = layer.link(v_pre[:, :, None])[:, :, 0]  # (B, 2p, W)

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        """x (B, C, H, W) the net's input, final before (r, c) -> logits at (r, c), (B, C) or (B, K, C)."""
        if c > 0 or r > 0:  # the previous pixel's last channel was drawn after its last call
            before = (r, c - 1) if c > 0 else (r - 1, x.shape[3] - 1)
            self.horizontal[0].write(x[:, :, before[0], before[1]], *before)
        if r != self.row:
            self.start_row(x, r)
        h, skipped = x[:, :, r, c], 0  # (B, C)
        for i, layer in enumerate(self.net.layers):
            gated = gate(self.horizontal[i](h, r, c) + self.links[i][:, :, c] + self.biases[i][1])  # (B, p)
            skipped = skipped + self.skips[i](gated, r, c)  # (B, p)
            h = self.residual[i](gated, r, c) + (h if layer.is_residual else 0)  # (B, p)
        for conv in self.output:
            skipped = conv(F.relu(skipped), r, c)
        return self.net.output.layout(skipped)  # (B, C), (B, K, C) or (B, P)

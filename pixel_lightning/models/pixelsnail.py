"""PixelSNAIL, as in *PixelSNAIL: An Improved Autoregressive Generative Model* (Chen, Mishra,
Rohaninejad & Abbeel, 2018); the reference code is neocxi/pixelsnail-public (model h12_noup_smallkey).

- Model architecture (the paper's residual and attention blocks): a stream of feature maps that sees
  only the pixels before each one (the "up-left" stream of PixelCNN++, models/pixelcnn_pp.py),
  through `layers` blocks of `resnets` gated residual blocks of down-right-shifted 2x2 convolutions
  followed by an attention block: causal self-attention in which each pixel's query reads the keys
  and values of every earlier pixel. Keys and values see the input image, the stream and the
  positional channels at their pixel; queries see the stream and the positional channels. The
  attention's result joins the stream through a gated residual block of 1x1 convolutions.
- Positional inputs: two channels, row and column, as the reference code's "background"
  ((i - n/2) / n). Both are in units of the image's width, so that they do not change when naive
  sampling runs the net on the rows drawn so far; for square images they are the reference's.
- Outputs: the discretized logistic mixture (models/outputs/) from the stream, as the paper
  (its 2.85 bits/dim on CIFAR-10). A per-channel output (Bernoulli, softmax) of RGB data adds the
  pixel's earlier channels through a mask-A 1x1 conv and reads the feature groups of its channel
  (the PixelRNN paper's channel groups, models/layers.py), so that G sees R and B sees R and G.
- As the reference code's defaults: ELU non-linearity, one attention head (`heads` splits keys,
  queries and values into several), dropout in every residual block, and a class-conditional net
  (`classes` > 0) adds a learned label bias to the gates of every residual block
  (models/conditioning.py). Not here: weight normalisation and Polyak averaging (as PixelCNN++).

Cached sampling (pixelsnail_cached.py): per position, each layer once, the attention over a cache
of the earlier pixels' keys and values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.conditioning import LabelBiases, label_biases
from pixel_lightning.models.layers import MaskedConv2d
from pixel_lightning.models.outputs import build_output
from pixel_lightning.models.pixelcnn_pp import DownRightShiftedConv2d, DownShiftedConv2d, down_shift, right_shift


def positions(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The positional channels (B, 2, H, W): (row - W/2) / W and (column - W/2) / W."""
    rows = torch.arange(height, dtype=like.dtype, device=like.device)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=like.dtype, device=like.device)[None, :].expand(height, width)
    return ((torch.stack([rows, cols]) - width / 2) / width).expand(batch, 2, height, width)


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int) -> torch.Tensor:
    """Each position attends to the positions strictly before it in raster order; the first to none
    (zeros). query, key (B, dk, H, W), value (B, dv, H, W) -> (B, dv, H, W)."""
    batch, _, height, width = value.shape
    # (B, h, HW, d), contiguous: torch's fused CPU kernel (used when dk == dv) needs it, else the slow reference path
    q, k, v = (t.flatten(2).unflatten(1, (heads, -1)).transpose(2, 3).contiguous() for t in (query, key, value))
    # Query i + 1 reads keys 0..i: the causal mask, diagonal included, over queries 1.. and keys ..HW-2.
    mixed = F.scaled_dot_product_attention(q[:, :, 1:], k[:, :, :-1], v[:, :, :-1], is_causal=True)
    mixed = F.pad(mixed, (0, 0, 1, 0))  # (B, h, HW, dv/h)
    return mixed.transpose(2, 3).reshape(batch, -1, height, width)


def gated_step(
    x: torch.Tensor, convs: tuple, aux: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
) -> torch.Tensor:
    """GatedResidual at one position, x (..., B, F) and aux (..., B, A), in eval mode: `convs` (conv_in,
    conv_out, aux) map (..., B, in) -> (..., B, out) there; leading dimensions batch several blocks."""
    conv_in, conv_out, aux_conv = convs
    h = conv_in(F.elu(x))
    if aux is not None:
        h = h + aux_conv(F.elu(aux))
    ab = conv_out(F.elu(h))  # (..., B, 2F)
    if label_bias is not None:
        ab = ab + label_bias
    a, b = ab.chunk(2, dim=-1)
    return torch.addcmul(x, a, torch.sigmoid(b))  # one op fewer per call than x + a * sigmoid(b)


class GatedResidual(nn.Module):
    """The reference code's gated_resnet: x + a * sigmoid(b), (a, b) = conv(elu(conv(elu(x)) +
    1x1(elu(aux)))), with 2x2 down-right-shifted convs (`shifted`) or 1x1 ones; a conditional net's
    `label_bias` (B, 2F) is added to (a, b), the same at every position."""

    def __init__(self, channels: int, shifted: bool, aux: int = 0, dropout: float = 0.0):
        super().__init__()
        self.conv_in = DownRightShiftedConv2d(channels, channels) if shifted else nn.Conv2d(channels, channels, 1)
        self.aux = nn.Conv2d(aux, channels, 1) if aux else None
        self.dropout = nn.Dropout(dropout)
        out = 2 * channels
        self.conv_out = DownRightShiftedConv2d(channels, out) if shifted else nn.Conv2d(channels, out, 1)
        self.label_features = 2 * channels

    def forward(
        self, x: torch.Tensor, aux: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
    ) -> torch.Tensor:  # (B, F, H, W)
        h = self.conv_in(F.elu(x))
        if aux is not None:
            h = h + self.aux(F.elu(aux))
        ab = self.conv_out(self.dropout(F.elu(h)))  # (B, 2F, H, W)
        if label_bias is not None:
            ab = ab + label_bias[:, :, None, None]
        a, b = ab.chunk(2, dim=1)
        return x + a * torch.sigmoid(b)

    def step(
        self, x: torch.Tensor, convs: tuple, aux: torch.Tensor | None = None, label_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """forward at one position, x (B, F), aux (B, A): `convs` (conv_in, conv_out, aux) map (B, in) ->
        (B, out) there (`pointwise_convs` for a 1x1 block); see gated_step."""
        return gated_step(x, convs, aux, label_bias)

    def pointwise_convs(self) -> tuple:
        return pointwise(self.conv_in), pointwise(self.conv_out), None if self.aux is None else pointwise(self.aux)


class AttentionBlock(nn.Module):
    """`resnets` shifted gated residual blocks, then the attention block. ul (B, F, H, W) the stream,
    x (B, C, H, W) the image, pos (B, 2, H, W) -> (B, F, H, W)."""

    def __init__(self, channels: int, hidden: int, resnets: int, key: int, value: int, heads: int, dropout: float):
        super().__init__()
        self.resnets = nn.ModuleList(GatedResidual(hidden, True, dropout=dropout) for _ in range(resnets))
        content = channels + hidden + 2  # the image, the stream and the positions at a pixel
        self.content = GatedResidual(content, False, dropout=dropout)
        self.key_value = nn.Conv2d(content, key + value, 1)
        self.query_features = GatedResidual(hidden + 2, False, dropout=dropout)
        self.query = nn.Conv2d(hidden + 2, key, 1)
        self.mix = GatedResidual(hidden, False, aux=value, dropout=dropout)
        self.key_channels, self.value_channels, self.heads = key, value, heads
        self.gated = [*self.resnets, self.content, self.query_features, self.mix]  # label biases in this order

    def forward(self, ul: torch.Tensor, x: torch.Tensor, pos: torch.Tensor, biases: list[dict]) -> torch.Tensor:
        *resnet_biases, content_bias, query_bias, mix_bias = biases
        for resnet, bias in zip(self.resnets, resnet_biases):
            ul = resnet(ul, **bias)
        keys_values = self.key_value(self.content(torch.cat([x, ul, pos], dim=1), **content_bias))
        key, value = keys_values.split([self.key_channels, self.value_channels], dim=1)
        query = self.query(self.query_features(torch.cat([ul, pos], dim=1), **query_bias))  # (B, dk, H, W)
        return self.mix(ul, causal_attention(query, key, value, self.heads), **mix_bias)


class PixelSNAIL(nn.Module):
    """x (B, C, H, W) float in [-1, 1], label (B,) long if conditional -> the output's parameters:
    (B, P, H, W) for the mixture, (B, C, H, W) Bernoulli logits, (B, K, C, H, W) softmax logits.

    Args:
        hidden: feature maps of the stream (256 in the paper).
        layers: blocks, each residual blocks then attention (12 in the paper).
        resnets: gated residual blocks per block (4 in the paper).
        key_channels: channels of keys and queries (16 in the reference code, "smallkey").
        value_channels: channels of the values (default hidden // 2, as the reference code).
        heads: attention heads (1 in the paper); key and value channels split among them.
        dropout: drop probability inside each residual block (0.5 in the paper for CIFAR-10).
        classes: > 0 for a class-conditional net.
        output: the output distribution setting (models/outputs/); None is categorical.
    """

    def __init__(
        self, channels: int, levels: int, hidden: int = 32, layers: int = 2, resnets: int = 2,
        key_channels: int = 16, value_channels: int | None = None, heads: int = 1, dropout: float = 0.0,
        classes: int = 0, output: Mapping | None = None,
    ):  # fmt: skip
        super().__init__()
        value_channels = value_channels or hidden // 2
        if hidden < 1 or layers < 1 or resnets < 0 or not 0 <= dropout < 1:
            raise ValueError(f"need hidden, layers >= 1, resnets >= 0, 0 <= dropout < 1; got {hidden}, {layers}, "
                             f"{resnets}, {dropout}")  # fmt: skip
        if heads < 1 or key_channels % heads or value_channels % heads:
            raise ValueError(f"key_channels={key_channels} and value_channels={value_channels} must split evenly "
                             f"into heads={heads}")  # fmt: skip
        self.channels = channels
        self.distribution = build_output(output, channels, levels)
        self.input_above = DownShiftedConv2d(channels + 1, hidden, (1, 3))  # + a channel of ones: image or padding
        self.input_left = DownRightShiftedConv2d(channels + 1, hidden, (2, 1))
        self.blocks = nn.ModuleList(
            AttentionBlock(channels, hidden, resnets, key_channels, value_channels, heads, dropout)
            for _ in range(layers)
        )
        widths = [gated.label_features for block in self.blocks for gated in block.gated]
        self.gated_count = len(widths)
        self.label_biases = LabelBiases(classes, widths) if classes else None  # None: no state_dict keys
        per_pixel = self.distribution.per_pixel
        if per_pixel or channels == 1:  # the stream sees earlier pixels only: all a pixel's outputs may read it
            self.within_pixel = None
            outputs = self.distribution.params_per_pixel if per_pixel else self.distribution.params_per_channel
            self.head = nn.Conv2d(hidden, outputs, 1)
        else:  # channel c's outputs: feature group c, which also sees the pixel's channels < c
            self.within_pixel = MaskedConv2d(channels, hidden, 1, channels, "A")
            self.head = MaskedConv2d(hidden, channels * self.distribution.params_per_channel, 1, channels, "B")

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W)
        batch, _, height, width = x.shape
        biases = label_biases(self.label_biases, label, self.gated_count)  # per gated block, in call order
        pos = positions(batch, height, width, x)
        padded = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (B, C+1, H, W)
        ul = down_shift(self.input_above(padded)) + right_shift(self.input_left(padded))  # (B, F, H, W): earlier pixels
        for block in self.blocks:
            ul = block(ul, x, pos, biases[: len(block.gated)])
            biases = biases[len(block.gated) :]
        if self.within_pixel is not None:
            ul = ul + self.within_pixel(x)
        return self.distribution.layout(self.head(F.elu(ul)), self.channels)

    def cached_sampler(self, batch: int, height: int, width: int, label: torch.Tensor | None = None):
        from pixel_lightning.models.pixelsnail_cached import PixelSNAILAtPosition  # it builds on this module

        return PixelSNAILAtPosition(self, batch, height, width, label)


def pointwise(conv: nn.Conv2d, scale: float = 1.0):
    """A 1x1 conv, its output times `scale`, as a function of one position's inputs, (B, in) -> (B, out)."""
    weight = (conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight)[:, :, 0, 0].T * scale
    bias = conv.bias * scale
    return lambda x: torch.addmm(bias, x, weight)

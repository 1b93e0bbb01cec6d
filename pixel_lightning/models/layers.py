"""Masked convolutions and the output stack shared by every architecture.

Implements the masks of *Pixel Recurrent Neural Networks* (van den Oord et al., 2016),
section 3.4: every feature map is split into one group per image channel (R, G, B), and a
mask lets a feature of group g at pixel (r, c) read

- every input feature at pixels strictly before (r, c) in raster order, and
- at (r, c) itself: input groups < g (mask A, first layer) or <= g (mask B, later layers).

So for RGB images the R prediction depends on earlier pixels only, G also on the same pixel's
R, and B also on R and G. With one image channel the groups collapse to one and the masks are
the familiar "no centre" (A) / "with centre" (B) masks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import CachedSampler
from pixel_lightning.models.conditioning import LabelBiases, label_biases
from pixel_lightning.models.outputs import build_output


def channel_groups(num_features: int, data_channels: int) -> torch.Tensor:
    """Group index (0..data_channels-1) of each of `num_features` feature maps, contiguous blocks."""
    if num_features < data_channels:
        raise ValueError(
            f"{num_features} feature maps cannot hold {data_channels} channel groups; "
            f"use at least {data_channels} features"
        )
    return torch.arange(num_features) * data_channels // num_features


def causal_mask(
    out_channels: int, in_channels: int, kernel_size: tuple[int, int], data_channels: int, mask_type: str
) -> torch.Tensor:
    """The (out, in, kh, kw) 0/1 mask of section 3.4 for a kernel centred on its middle tap."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked kernels need odd sizes to have a centre, got {kernel_size}")
    cy, cx = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :cy, :] = 1  # rows above
    mask[:, :, cy, :cx] = 1  # same row, to the left
    out_group = channel_groups(out_channels, data_channels)[:, None]
    in_group = channel_groups(in_channels, data_channels)[None, :]
    centre = in_group < out_group if mask_type == "A" else in_group <= out_group
    mask[:, :, cy, cx] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose kernel is multiplied by a causal mask on every call.

    Multiplying (rather than zeroing the weights once) keeps the masked taps at exactly zero
    whatever the optimizer or weight decay does to them, so no gradient can ever leak. A mask
    without zeros (every 1x1 mask-B conv of a one-channel image) is skipped: multiplying by it
    changes nothing, forward or backward.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        data_channels: int,
        mask_type: str = "B",
        bias: bool = True,
    ):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.mask_type = mask_type
        self.set_mask(causal_mask(out_channels, in_channels, (kh, kw), data_channels, mask_type))

    def set_mask(self, mask: torch.Tensor) -> None:
        """Use `mask` (out, in, kh, kw) of 0/1 from now on."""
        self.register_buffer("mask", mask, persistent=False)
        self.mask_is_full = bool(mask.all())  # read once here: no host sync per call

    def masked_weight(self) -> torch.Tensor:
        return self.weight if self.mask_is_full else self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={self.mask_type}"


class OutputStack(nn.Module):
    """Table 1's output layers: ReLU + 1x1 mask-B conv, then the likelihood's logits.

    Table 1 lists "ReLU followed by 1x1 conv, mask B (2 layers)" before the sigmoid or softmax,
    and section 5 gives the width of the output layers (32 maps for MNIST, 1024 for CIFAR-10). We
    read the two layers as one hidden layer of `hidden` maps plus the 1x1 conv to the logits: a
    softmax over 256 levels of 3 channels needs 768 input maps, so the last 1x1 conv before it can
    only be the logits layer. The other reading, two hidden layers of `hidden` maps and then a
    projection to the logits, is `layers=2`; `layers` counts the hidden layers.

    The output distribution (models/outputs/, setting `output`) decides the last conv: levels == 2
    gives one Bernoulli logit per channel, (B, C, H, W); the categorical output a K-way softmax
    per channel, (B, K, C, H, W), whose C*K maps the last conv lays out channel-major so that the
    K logits of image channel c all sit in feature group c; a per-pixel output (the logistic
    mixture) its P parameters, (B, P, H, W), read from the first feature group alone: it sees
    earlier pixels only, and the pixel's whole distribution must be fixed before its channels.
    """

    def __init__(
        self, in_features: int, hidden: int, data_channels: int, levels: int, layers: int = 1,
        output: Mapping | None = None,
    ):  # fmt: skip
        super().__init__()
        if layers < 1:
            raise ValueError(f"output_layers must be >= 1, got {layers}")
        self.data_channels, self.levels = data_channels, levels
        self.distribution = build_output(output, data_channels, levels)
        widths = [in_features] + [hidden] * layers
        self.hidden = nn.ModuleList(MaskedConv2d(a, b, 1, data_channels, "B") for a, b in zip(widths[:-1], widths[1:]))
        if self.distribution.per_pixel:
            self.logits = MaskedConv2d(hidden, self.distribution.params_per_pixel, 1, data_channels, "B")
            first_group = (channel_groups(hidden, data_channels) == 0).float()  # (hidden,)
            self.logits.set_mask(self.logits.mask * first_group[None, :, None, None])
        else:
            per_channel = self.distribution.params_per_channel
            self.logits = MaskedConv2d(hidden, data_channels * per_channel, 1, data_channels, "B")

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, in, H, W)
        for conv in self.hidden:
            h = conv(F.relu(h))  # (B, hidden, H, W)
        if self.distribution.per_pixel or self.levels == 2:
            return self.logits(F.relu(h))  # (B, P, H, W) or (B, C, H, W)
        # The same maps level-major, (B, K*C, H, W), so that the logits (B, K, C, H, W) are a plain
        # view: the softmax over K copies `layout`'s transposed one, forward and backward.
        order = torch.arange(self.logits.out_channels, device=h.device).view(self.data_channels, -1).t().flatten()
        logits = F.conv2d(F.relu(h), self.logits.masked_weight()[order], self.logits.bias[order])
        return logits.unflatten(1, (self.levels, self.data_channels))

    def layout(self, logits: torch.Tensor) -> torch.Tensor:
        """The last conv's maps (B, C*K, ...), channel-major, as the output's parameters (see forward)."""
        return self.distribution.layout(logits, self.data_channels)


class ResidualNet(nn.Module):
    """Table 1's frame of every architecture: a 7x7 mask-A conv C -> 2h, residual layers on 2h
    feature maps (`make_layer(i)` builds layer i, 0 = first), and the output stack.

    With `skip`, each layer's 2h output also goes through its own 1x1 mask-B conv and the results
    are added to the output stack's input: the "learnable skip connections from each layer to the
    output" of section 3.3 (Table 2: residual plus skip is best). Subclasses give `layer_inputs`
    for layers that read more than the feature maps. With `classes` > 0 the net is class-conditional
    (conditioning.py): layer i also gets `label_bias` (B, layer.label_features), its label's bias.

    x (B, C, H, W) float, label (B,) long if conditional -> logits (B, C, H, W) if levels == 2 else
    (B, K, C, H, W), or the (B, P, H, W) parameters of a per-pixel `output` (models/outputs/; None:
    categorical).
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        hidden: int,
        layers: int,
        make_layer: Callable[[int], nn.Module],
        output_hidden: int,
        output_layers: int = 1,
        skip: bool = False,
        classes: int = 0,
        output: Mapping | None = None,
    ):
        super().__init__()
        check_sizes(channels, levels, hidden, layers)
        self.input_conv = MaskedConv2d(channels, 2 * hidden, 7, channels, "A")
        self.layers = nn.ModuleList(make_layer(i) for i in range(layers))
        self.label_biases = LabelBiases(classes, [layer.label_features for layer in self.layers]) if classes else None
        self.skips = (
            nn.ModuleList(MaskedConv2d(2 * hidden, 2 * hidden, 1, channels, "B") for _ in range(layers))
            if skip
            else None
        )
        self.output = OutputStack(2 * hidden, output_hidden, channels, levels, output_layers, output)

    def layer_inputs(self, index: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra keyword inputs of layer `index`, given the net's input x; none by default."""
        return {}

    def cached_sampler(
        self, batch: int, height: int, width: int, label: torch.Tensor | None = None
    ) -> CachedSampler | None:
        """The net at one position at a time (see CachedSampler), or None when a layer has no
        `cached_step(batch, height, width)` (or it returns None): then sampling is naive."""
        steps = [getattr(layer, "cached_step", lambda *_: None)(batch, height, width) for layer in self.layers]
        return None if None in steps else CachedSampler(self, steps, batch, height, width, label)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:  # (B, C, H, W)
        h = self.input_conv(x)  # (B, 2h, H, W)
        skipped = torch.zeros_like(h) if self.skips is not None else None
        biases = label_biases(self.label_biases, label, len(self.layers))
        for i, layer in enumerate(self.layers):
            h = layer(h, **self.layer_inputs(i, x), **biases[i])  # (B, 2h, H, W)
            if skipped is not None:
                skipped = skipped + self.skips[i](h)
        return self.output(h if skipped is None else h + skipped)


def check_sizes(data_channels: int, levels: int, hidden: int, layers: int) -> None:
    """Shared argument validation of the architectures, with messages a config author can act on."""
    if data_channels < 1:
        raise ValueError(f"channels must be >= 1, got {data_channels}")
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if hidden < data_channels:
        raise ValueError(f"hidden={hidden} is too small to split into {data_channels} channel groups")
    if layers < 0:
        raise ValueError(f"layers must be >= 0, got {layers}")

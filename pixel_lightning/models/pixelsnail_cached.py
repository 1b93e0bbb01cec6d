"""Cached sampling of PixelSNAIL (models/pixelsnail.py): the net one position at a time, with a
key/value cache for its attention and the convolution caches of the other nets (models/cached.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.conditioning import label_biases
from pixel_lightning.models.pixelsnail import PixelSNAIL, gated_step, pointwise, positions


class PixelSNAILAtPosition:
    """The net at one position (r, c) per call, for cached sampling (see cached.CachedSampler).

    Every layer reads the pixels before (r, c) only, so the whole stream at (r, c) is computed once,
    at its first call, when those pixels are final: the shifted convs from caches of their earlier
    inputs (ConvAtPosition), the 1x1 ones on the position alone. The keys and values of a pixel read
    the pixel itself, so they are computed one position late, at the next position's first call, from
    the blocks' streams kept for it: those of every block at once (they depend on no block's output at
    the new position), as batched products over the blocks, so their cost per position does not grow
    with the blocks. Each block's query at (r, c) then attends to its cache. Later calls at (r, c) (one
    per channel) rerun the output alone, which for an RGB per-channel output reads the pixel's channels
    drawn so far. Build it in eval mode, under no_grad.
    """

    def __init__(self, net: PixelSNAIL, batch: int, height: int, width: int, label: torch.Tensor | None):
        self.net, self.width, self.at, self.row = net, width, None, -1
        biases = iter(label_biases(net.label_biases, label, net.gated_count))
        weight = net.head.weight
        self.blocks = []  # per block: its layers' one-position forms and label biases
        content_biases = []
        for block in net.blocks:
            shifted = [
                tuple(
                    ConvAtPosition(conv, batch, height, width, anchor=(1, 1))  # the bottom-right tap
                    for conv in (r.conv_in, r.conv_out)
                )
                for r in block.resnets
            ]
            *resnet_biases, content_bias, query_bias, mix_bias = (next(biases).get("label_bias") for _ in block.gated)
            content_biases.append(content_bias)
            scale = (block.key_channels // block.heads) ** -0.5  # the attention's 1 / sqrt(dk/h), put in the query
            self.blocks.append({
                "shifted": shifted, "biases": resnet_biases, "query_bias": query_bias, "mix_bias": mix_bias,
                "query_features": block.query_features.pointwise_convs(), "query": pointwise(block.query, scale),
                "mix": block.mix.pointwise_convs(),
            })  # fmt: skip
        # The blocks' content residual blocks and key/value convs, stacked for batched products: (L, in, out)
        first = net.blocks[0]
        content_in, content_out, self.key_value = (
            batched_pointwise([b.get_submodule(name) for b in net.blocks])
            for name in ("content.conv_in", "content.conv_out", "key_value")
        )
        self.content_convs = (content_in, content_out, None)
        self.content_bias = None if net.label_biases is None else torch.stack(content_biases)  # (L, B, 2D)
        # (L, B, D): per block, the previous position's pixel, the block's stream there, and its position
        hidden = net.input_left.out_channels
        self.content = weight.new_zeros(len(net.blocks), batch, net.channels + hidden + 2)
        self.stream_slice = slice(net.channels, net.channels + hidden)
        heads, key, value = first.heads, first.key_channels, first.value_channels
        self.heads, self.key_value_channels = heads, [key, value]
        # keys transposed, (L, B, h, dk/h, HW): a query reads them in one plain batched product
        self.keys = weight.new_zeros(len(net.blocks), batch, heads, key // heads, height * width)
        self.values = weight.new_zeros(len(net.blocks), batch, heads, height * width, value // heads)
        self.pos = positions(batch, height, width, weight)  # (B, 2, H, W)
        self.zeros = weight.new_zeros(batch, hidden)
        # The left input conv's (2, 1) kernel ends at its output (r, c-1): anchored at the bottom tap.
        self.input_left = ConvAtPosition(net.input_left, batch, height, width, anchor=(1, 0))
        self.pixel = weight.new_ones(batch, net.channels + 1)  # a pixel with its channel of ones
        self.within_pixel = None if net.within_pixel is None else pointwise(net.within_pixel)
        self.head = pointwise(net.head)

    def padded_row(self, x: torch.Tensor, r: int) -> torch.Tensor:
        """Row r of the image with its channel of ones, (B, C+1, 1, W)."""
        row = x[:, :, r : r + 1]
        return torch.cat([row, torch.ones_like(row[:, :1])], dim=1)

    def input_stream(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        """The input convs at (r, c), (B, F): row r-1 at columns c-1..c+1 (the whole row, once per row),
        and (r-1, c-1), (r, c-1)."""
        if r != self.row:  # row r starts: row r-1 is final
            self.row = r
            above = self.net.input_above(self.padded_row(x, r - 1)) if r > 0 else None
            self.above = None if above is None else above[:, :, 0].permute(2, 0, 1)  # (W, B, F)
        ul = self.zeros if self.above is None else self.above[c]
        if c > 0:  # (r, c-1) is final; its row above, the conv's zero padding on top, was written before
            self.pixel[:, :-1] = x[:, :, r, c - 1]
            self.input_left.write(self.pixel, r, c - 1)
            ul = ul + self.input_left.at(r, c - 1)
        return ul

    def keys_values(self, x: torch.Tensor, p: int) -> None:
        """Every block's key and value of position p (its pixel final), into the caches: the content
        gated residual block and the key/value conv of all blocks as batched products."""
        r, c = divmod(p, self.width)
        channels = x.shape[1]
        self.content[:, :, :channels] = x[:, :, r, c]  # the streams at p are there already
        self.content[:, :, self.stream_slice.stop :] = self.pos[:, :, r, c]
        content = gated_step(self.content, self.content_convs, label_bias=self.content_bias)  # (L, B, D)
        key_value = self.key_value(content)  # (L, B, dk + dv)
        key, value = key_value.split(self.key_value_channels, dim=2)
        self.keys[..., p] = key.unflatten(2, (self.heads, -1))
        self.values[:, :, :, p] = value.unflatten(2, (self.heads, -1))

    def stream(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        """The stream at (r, c) after every block, (B, F); writes the previous position's keys and values."""
        p = r * self.width + c
        if p > 0:  # the previous position is final: its keys and values
            self.keys_values(x, p - 1)
        ul = self.input_stream(x, r, c)
        for index, (block, cache) in enumerate(zip(self.net.blocks, self.blocks)):
            for resnet, (conv_in, conv_out), bias in zip(block.resnets, cache["shifted"], cache["biases"]):
                convs = (lambda h, conv=conv_in: conv(h, r, c), lambda h, conv=conv_out: conv(h, r, c), None)
                ul = resnet.step(ul, convs, label_bias=bias)  # (B, F)
            self.content[index, :, self.stream_slice] = ul  # for this position's keys and values, at the next
            query = block.query_features.step(torch.cat([ul, self.pos[:, :, r, c]], dim=1), cache["query_features"],
                                              label_bias=cache["query_bias"])  # fmt: skip
            query = cache["query"](query).unflatten(1, (block.heads, 1, -1))  # (B, h, 1, dk/h)
            if p > 0:  # softmax(q k / sqrt(dk/h)) v by hand (the scale is in q): the fused kernel is ~4x slower
                scores = torch.matmul(query, self.keys[index, ..., :p])  # (B, h, 1, p)
                mixed = torch.matmul(torch.softmax(scores, -1), self.values[index, :, :, :p]).flatten(1)  # (B, dv)
            else:  # the first position attends to nothing
                mixed = ul.new_zeros(len(ul), block.value_channels)
            ul = block.mix.step(ul, cache["mix"], aux=mixed, label_bias=cache["mix_bias"])
        return ul

    def __call__(self, x: torch.Tensor, r: int, c: int) -> torch.Tensor:
        """x (B, C, H, W) the net's input, final before (r, c) -> the outputs at (r, c): (B, P), (B, C) or (B, K, C)."""
        if self.at != (r, c):  # the first call at (r, c): the pixels before it are final
            self.at, self.ul = (r, c), self.stream(x, r, c)
        ul = self.ul if self.within_pixel is None else self.ul + self.within_pixel(x[:, :, r, c])
        return self.net.distribution.layout(self.head(F.elu(ul)), self.net.channels)


def batched_pointwise(convs: list[nn.Conv2d]):
    """1x1 convs of the same shape, one per block, as a function of each block's inputs at one
    position: (L, B, in) -> (L, B, out), one batched product."""
    weight = torch.stack([conv.weight[:, :, 0, 0].T for conv in convs])  # (L, in, out)
    bias = torch.stack([conv.bias for conv in convs])[:, None]  # (L, 1, out)
    return lambda x: torch.baddbmm(bias, x, weight)

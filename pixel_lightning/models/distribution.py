"""An autoregressive distribution over images: likelihood and sampling, without training.

An autoregressive image model factorises p(x) = prod_i p(x_i | x_<i) over dimensions in raster
order, then R, G, B within a pixel (PixelRNN paper, section 2). The wrapped `net` computes all
conditionals in one pass; this module turns its outputs into log-likelihoods through an output
distribution (models/outputs/: Bernoulli for binary data, a K-way softmax per channel or a
discretized logistic mixture per pixel otherwise) and samples pixel by pixel. The
LightningModule that trains it (autoregressive.py) is this module plus the training loop; sample.py
rebuilds this module alone from a checkpoint, so sampling does not load the training stack.

With `condition="class"` the net is built class-conditional (models/conditioning.py) and every
method takes the images' labels, `label` (B,) long: the likelihood is then log p(x | y).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import hydra
import torch
import torch.nn as nn

from pixel_lightning.models.outputs import build_output, output_spec
from pixel_lightning.settings import check_condition


class AutoregressiveDistribution(nn.Module):
    """p(x) of `net`: float images (B, C, H, W) -> the parameters of `output` (models/outputs/):
    logits (B, C, H, W) if K == 2, (B, K, C, H, W) for the softmax, (B, P, H, W) for a mixture.

    Args:
        net: hydra config of the architecture (instantiated here, so checkpoints rebuild it).
        data: the data config; only channels, height, width and levels are read, and `classes`
            when conditional.
        condition: None, or "class" for p(x | y): the net gets `classes=data["classes"]`.
        output: the output distribution setting (`outputs.output_spec`); None is categorical. The net
            is given it as its `output` argument unless it is categorical (so any net makes those).
    """

    def __init__(self, net: Mapping, data: Mapping, condition: str | None = None, output: str | Mapping | None = None):
        super().__init__()
        check_condition(condition)
        self.condition = condition
        self.classes = int(data["classes"]) if condition == "class" else 0
        spec = output_spec(output)
        extra = ({"classes": self.classes} if self.classes else {}) | ({} if spec is None else {"output": spec})
        self.net = hydra.utils.instantiate(net, **extra)
        self.image_shape = (int(data["channels"]), int(data["height"]), int(data["width"]))
        self.levels = int(data["levels"])
        self.output = build_output(spec, self.image_shape[0], self.levels)
        self.dims = math.prod(self.image_shape)

    def _weight(self) -> torch.Tensor:
        """A parameter of the net: the dtype and device its inputs must have."""
        return next(self.net.parameters())

    # ---- likelihood -------------------------------------------------------------------------
    def to_input(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels in [0, K-1] -> floats in [-1, 1], the network's input scale."""
        return levels.to(self._weight().dtype) * (2.0 / (self.levels - 1)) - 1.0

    def net_logits(self, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """The net on inputs x (B, C, H', W'), with the label only when there is one (an
        unconditional net need not take it)."""
        return self.net(x) if label is None else self.net(x, label=label)

    def logits(self, levels: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net_logits(self.to_input(levels), label)
        expected = self.output.params_shape(levels.shape)
        if logits.shape != expected:
            raise ValueError(f"net returned logits {tuple(logits.shape)}, expected {tuple(expected)}")
        return logits

    def log_prob(self, levels: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (or log p(x | y)) in nats for integer images (B, C, H, W) -> (B,)."""
        logits = self.logits(levels, label)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # >= float32 likelihoods under bf16
        return self.output.log_prob(logits, levels).flatten(1).sum(1)  # per dimension or per pixel, summed

    # ---- sampling ---------------------------------------------------------------------------
    def complete(
        self,
        levels: torch.Tensor,
        observed_rows: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str = "cached",
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Keep the first `observed_rows` rows of `levels` (B, C, H, W) and sample the rest
        (given `label` (B,), the images' classes, when the net is conditional).

        One draw per dimension, in raster order and R, G, B within a pixel (a per-pixel output, the
        mixture, draws a pixel's channels in one call, G given R and B given both). `method="naive"` runs
        the whole net for every draw, on rows <= r only (exact because the nets are causal,
        tested). `method="cached"` (the default) asks the net for `cached_sampler(batch, height,
        width)`, which computes one position at a time from what earlier positions left in its
        caches (models/cached.py, CachedSampler); a net without one (or returning None) is
        sampled naively. Both paths make the same draws in the same order, so for the same
        weights, generator and inputs they return the same levels (tested in float64).
        """
        if method not in ("cached", "naive"):
            raise ValueError(f"method must be 'cached' or 'naive', got {method!r}")
        was_training = self.training
        self.eval()
        try:
            # Inference mode skips autograd's bookkeeping on each of the thousands of small ops per image
            # (a fifth of cached sampling's time); the clone is a plain tensor, which callers may modify.
            with torch.inference_mode():
                x = levels.clone().long().to(self._weight().device)
                label = None if label is None else label.long().to(x.device)
                self._complete(x, observed_rows, temperature, generator, method, label)
            return x.clone()
        finally:
            self.train(was_training)

    def _complete(self, x: torch.Tensor, observed_rows: int, temperature: float, generator, method: str, label) -> None:
        """`complete` in place on the levels x (B, C, H, W), in eval and inference mode."""
        batch, channels, height, width = x.shape
        make_sampler = getattr(self.net, "cached_sampler", None) if method == "cached" else None
        labelled = {} if label is None else {"label": label}
        sampler = make_sampler(batch, height, width, **labelled) if make_sampler is not None else None
        # A per-pixel output (the mixture) draws a pixel's channels at once (None); the others one by one.
        draws = [None] if self.output.per_pixel else range(channels)
        if sampler is None:
            for row in range(observed_rows, height):
                for col in range(width):
                    for ch in draws:
                        logits = self.logits(x[:, :, : row + 1], label)[..., row, col]  # (B, C), (B, K, C), (B, P)
                        drawn = self._draw(logits, ch, temperature, generator, x[:, :, row, col])
                        x[:, _channels(ch), row, col] = drawn
            return
        inputs = self.to_input(x)  # (B, C, H, W): the net's input, updated draw by draw
        for row in range(height):
            for col in range(width):
                if row < observed_rows:
                    sampler(inputs, row, col)  # fills the caches of the observed pixel
                    continue
                for ch in draws:
                    params = sampler(inputs, row, col)
                    drawn = self._draw(params, ch, temperature, generator, x[:, :, row, col])
                    x[:, _channels(ch), row, col] = drawn
                    inputs[:, _channels(ch), row, col] = self.to_input(drawn)
                if ch is None:  # once more with the pixel drawn, as the per-channel loop's last call sees
                    sampler(inputs, row, col)  # it: nets whose features read a pixel's own channels cache them

    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        method: str = "cached",
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw `num_samples` images (n, C, H, W) of integer levels (`method`: see `complete`),
        of the classes `label` (n,) when the net is conditional."""
        blank = torch.zeros(num_samples, *self.image_shape, dtype=torch.long, device=self._weight().device)
        return self.complete(blank, 0, temperature, generator, method, label)

    def _draw(
        self, logits: torch.Tensor, ch: int | None, temperature: float, generator, pixel: torch.Tensor
    ) -> torch.Tensor:
        """Levels (B,) of channel `ch` from one position's outputs, (B, C) or (B, K, C), given the
        position's levels `pixel` (B, C) (those of channels < ch drawn); with `ch` None, the levels
        (B, C) of every channel of the pixel from a per-pixel output's (B, P). Every draw of both
        sampling paths passes here."""
        if ch is None:
            return self.output.sample_pixel(logits, temperature, generator)
        return self.output.sample(logits, ch, pixel, temperature, generator)


def _channels(ch: int | None) -> int | slice:
    """The channel index of a draw (see `_draw`): one channel, or all of them."""
    return slice(None) if ch is None else ch

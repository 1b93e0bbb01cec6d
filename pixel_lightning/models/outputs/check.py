"""The checks every draw of every output distribution makes before it samples."""

from __future__ import annotations

import torch

from pixel_lightning.errors import NonFiniteError, UserError


def check_drawable(params: torch.Tensor) -> None:
    """Refuse to sample from parameters that are NaN or infinite (a diverged or damaged model) with
    a message, instead of an internal error from torch.bernoulli or torch.multinomial."""
    if not torch.isfinite(params).all():
        raise NonFiniteError(
            "The model's outputs are not finite numbers (NaN or infinite logits), so it cannot be sampled: "
            "its weights are broken, usually by a training run that diverged. Sample from an earlier checkpoint "
            "of that run, or train again with a lower optimizer.lr or a smaller trainer.gradient_clip_val."
        )


def check_temperature(temperature: float, dtype: torch.dtype) -> None:
    """Refuse a temperature below the smallest normal number of the `dtype` the outputs are divided
    in (1.2e-38 in float32): it rounds to 0 there, or a little above it, and the division gives
    infinities and 0/0. From it up, the outputs divide into finite numbers or -inf once their
    maximum is subtracted, which every output does, so no draw fails for its temperature."""
    smallest = torch.finfo(dtype).tiny
    if not temperature >= smallest:
        raise UserError(
            f"The sampling temperature {temperature:g} (temperature=, fid.temperature or "
            f"callbacks.sample_grid.temperature) is below {smallest:.3g}, the smallest that this {dtype} model's "
            f"outputs can be divided by. Use a temperature of at least {smallest:.3g}: already at 0.001 nearly every "
            "draw is the most likely level."
        )

"""The check every draw of every output distribution makes before it samples."""

from __future__ import annotations

import torch

from pixel_lightning.errors import NonFiniteError


def check_drawable(params: torch.Tensor) -> None:
    """Refuse to sample from parameters that are NaN or infinite (a diverged or damaged model) with
    a message, instead of an internal error from torch.bernoulli or torch.multinomial."""
    if not torch.isfinite(params).all():
        raise NonFiniteError(
            "The model's outputs are not finite numbers (NaN or infinite logits), so it cannot be sampled: "
            "its weights are broken, usually by a training run that diverged. Sample from an earlier checkpoint "
            "of that run, or train again with a lower optimizer.lr or a smaller trainer.gradient_clip_val."
        )

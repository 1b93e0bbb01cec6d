"""Negative log-likelihood in nats per image and bits per dimension, exact under DDP."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric


class NegativeLogLikelihood(Metric):
    """Accumulates per-image NLLs (nats) as sums, so the epoch value is exact across batches of
    unequal size and across DDP processes (sums are all-reduced, never averages of averages).

    compute() returns {"nll": nats per image, "bpd": bits per dimension}, where
    bpd = nats / (dims * ln 2) and dims = C * H * W of one image.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, dims: int, **kwargs):
        super().__init__(**kwargs)
        if dims < 1:
            raise ValueError(f"dims must be positive, got {dims}")
        self.dims = dims
        self.add_state("nats_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_nats: torch.Tensor) -> None:  # (B,) nats per image
        self.nats_sum += nll_nats.detach().to(torch.float64).sum()
        self.images += nll_nats.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        nll = self.nats_sum / self.images
        return {"nll": nll.float(), "bpd": (nll / (self.dims * math.log(2))).float()}

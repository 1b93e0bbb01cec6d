"""Negative log-likelihood in nats per image and bits per dimension, exact under DDP and on any device."""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

#: Device types without float64 tensors (Apple's MPS): their sums are kept in float64 on the CPU.
DEVICES_WITHOUT_FLOAT64 = {"mps"}


def has_float64(device: torch.device) -> bool:
    return device.type not in DEVICES_WITHOUT_FLOAT64


class NegativeLogLikelihood(Metric):
    """Accumulates per-image NLLs (nats) as float64 sums, so the epoch value is exact across
    batches of unequal size and across DDP processes (sums are all-reduced, never averages of
    averages).

    On a device without float64 (MPS) the sum stays a float64 tensor on the CPU: each batch's
    float32 NLLs are kept on the device as they come (no copy, no wait per step) and added to it in
    float64 at compute(), so the value is the same as on a device with float64.

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
        self.add_state("pending", default=[], dist_reduce_fx="cat")  # (B,) NLLs of a device without float64

    def _apply(self, fn, exclude_state=()):
        """Move the states with the module (Lightning moves it to its device), except the float64
        sum where that device has no float64: it stays on the CPU."""
        this = super()._apply(fn, exclude_state=("nats_sum", *exclude_state))
        home = this.device if has_float64(this.device) else torch.device("cpu")
        this._defaults["nats_sum"] = this._defaults["nats_sum"].to(home)
        this.nats_sum = this.nats_sum.to(home)
        return this

    def update(self, nll_nats: torch.Tensor) -> None:  # (B,) nats per image
        nats = nll_nats.detach()
        if has_float64(nats.device):
            self.nats_sum += nats.to(torch.float64).sum()
        else:
            self.pending.append(nats)
        self.images += nats.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        nats_sum, images = self.nats_sum, self.images
        if len(self.pending):  # a device without float64: its NLLs, added up in float64 on the CPU
            nats_sum = nats_sum + dim_zero_cat(self.pending).cpu().to(torch.float64).sum()
            images = images.cpu()
        nll = nats_sum / images
        return {"nll": nll.float().to(self.device), "bpd": (nll / (self.dims * math.log(2))).float().to(self.device)}

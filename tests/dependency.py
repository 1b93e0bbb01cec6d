"""Exact dependency structure of an autoregressive net, read off its Jacobian in float64.

Shared by the causality tests of every architecture. Dimensions are numbered in the model's
generation order: raster order over pixels, then channel (R, G, B) within a pixel.
"""

from __future__ import annotations

import torch


def dimension(row: int, col: int, channel: int, width: int, channels: int) -> int:
    """Generation-order index of one (row, col, channel) dimension."""
    return (row * width + col) * channels + channel


def dependency_matrix(net: torch.nn.Module, channels: int, height: int, width: int, seed: int = 0):
    """Return (D, cross_batch): D[d, e] is True iff output dim d has a non-zero gradient w.r.t.
    input dim e (any level's logit counts), for a batch of two random images; cross_batch is True
    if any output of one image depends on the other image.
    """
    net = net.double().eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, channels, height, width, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(net, x, vectorize=True)  # (*out_shape, 2, C, H, W)
    if jac.dim() == 4 + 4:  # Bernoulli logits (2, C, H, W): add a singleton levels axis
        jac = jac.unsqueeze(1)
    # (B_out, K, C, H, W, B_in, C, H, W) -> nonzero over levels
    nonzero = jac.ne(0).any(dim=1)
    cross_batch = bool(nonzero[0, ..., 1, :, :, :].any() or nonzero[1, ..., 0, :, :, :].any())
    same = nonzero[0, ..., 0, :, :, :] | nonzero[1, ..., 1, :, :, :]  # (C, H, W, C, H, W)
    # reorder to (H, W, C) on both sides so that flattening follows the generation order
    same = same.permute(1, 2, 0, 4, 5, 3).reshape(height * width * channels, height * width * channels)
    return same, cross_batch


def assert_causal(net: torch.nn.Module, channels: int, height: int = 5, width: int = 5) -> torch.Tensor:
    """Assert exact causality and the minimal receptive field; return the dependency matrix.

    Exact: every output dim has zero gradient w.r.t. every input dim at or after it, and no
    output depends on another image of the batch. Minimal field: each output depends on every
    channel of the pixel above and of the pixel to the left, and on the same pixel's earlier
    channels.
    """
    deps, cross_batch = dependency_matrix(net, channels, height, width)
    assert not cross_batch, "an output depends on another image of the batch"
    n = deps.shape[0]
    leaks = torch.triu(deps)  # e >= d
    assert not leaks.any(), f"leak: output dims depend on current/future inputs at {leaks.nonzero()[:5].tolist()}"
    for row in range(height):
        for col in range(width):
            for ch in range(channels):
                d = dimension(row, col, ch, width, channels)
                needed = [dimension(row, col, earlier, width, channels) for earlier in range(ch)]
                if row > 0:
                    needed += [dimension(row - 1, col, c, width, channels) for c in range(channels)]
                if col > 0:
                    needed += [dimension(row, col - 1, c, width, channels) for c in range(channels)]
                missing = [e for e in needed if not deps[d, e]]
                assert not missing, f"output dim {d} ignores input dims {missing}"
    assert n == height * width * channels
    return deps

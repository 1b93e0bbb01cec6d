"""Image grids of integer-level samples, written as PNG (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixel_lightning.files import atomic_write


def to_uint8(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integer levels in [0, K-1] -> uint8 intensities in [0, 255] (0 -> 0, K-1 -> 255)."""
    scaled = levels.double() * (255.0 / (num_levels - 1))
    return scaled.round().clamp(0, 255).to(torch.uint8)


def make_grid(levels: torch.Tensor, num_levels: int, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile N images (N, C, H, W) of integer levels into one (H', W', C) uint8 array.

    `nrow` images per row (default: a square-ish grid); `padding` pixels of mid grey between
    tiles, so that black and white digits both stand out from the border.
    """
    if levels.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(levels.shape)}")
    n, channels, height, width = levels.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    pixels = to_uint8(levels.detach().cpu(), num_levels).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    step_y, step_x = height + padding, width + padding
    grid = np.full((ncol * step_y + padding, nrow * step_x + padding, channels), 128, dtype=np.uint8)
    for i in range(n):
        y, x = padding + (i // nrow) * step_y, padding + (i % nrow) * step_x
        grid[y : y + height, x : x + width] = pixels[i]
    return grid


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, C) uint8 array (C = 1 or 3) as PNG; returns the path."""
    path = Path(path)
    with atomic_write(path, "the image") as f:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
    return path

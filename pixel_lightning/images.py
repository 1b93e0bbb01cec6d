"""Image grids of integer-level samples, written as PNG (no torchvision).

`make_grid` tiles images at their native size (for loggers, which keep the data as it is);
`picture` tiles them enlarged by whole pixels, so that a 28x28 digit is readable on a screen.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixel_lightning.files import atomic_write

#: The smaller side of a saved picture is at least this many pixels (a 4x4 grid of MNIST digits:
#: 122 px natively, 346 px in a picture).
MIN_PICTURE_SIDE = 256


def to_uint8(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integer levels in [0, K-1] -> uint8 intensities in [0, 255] (0 -> 0, K-1 -> 255)."""
    scaled = levels.double() * (255.0 / (num_levels - 1))
    return scaled.round().clamp(0, 255).to(torch.uint8)


def grid_shape(n: int, nrow: int | None) -> tuple[int, int]:
    """(rows, images per row) of a grid of n images, `nrow` per row (default: a square-ish grid)."""
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / nrow), nrow


def make_grid(
    levels: torch.Tensor, num_levels: int, nrow: int | None = None, padding: int = 2, scale: int = 1
) -> np.ndarray:
    """Tile N images (N, C, H, W) of integer levels into one (H', W', C) uint8 array.

    `nrow` images per row (default: a square-ish grid); each image enlarged `scale` times by
    repeating its pixels (nearest neighbour, no interpolation); `padding` pixels of mid grey
    between tiles, whatever the scale, so that black and white digits both stand out from it.
    """
    if levels.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(levels.shape)}")
    if scale < 1:
        raise ValueError(f"scale must be a whole number >= 1, got {scale}")
    n, channels, height, width = levels.shape
    rows, nrow = grid_shape(n, nrow)
    pixels = to_uint8(levels.detach().cpu(), num_levels).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, sH, sW, C)
    height, width = height * scale, width * scale
    step_y, step_x = height + padding, width + padding
    grid = np.full((rows * step_y + padding, nrow * step_x + padding, channels), 128, dtype=np.uint8)
    for i in range(n):
        y, x = padding + (i // nrow) * step_y, padding + (i % nrow) * step_x
        grid[y : y + height, x : x + width] = pixels[i]
    return grid


def picture_scale(
    n: int, image_size: tuple[int, int], nrow: int | None = None, padding: int = 2, min_side: int = MIN_PICTURE_SIDE
) -> int:
    """The smallest whole scale at which a grid of n images of `image_size` (H, W) is at least
    `min_side` pixels on both sides."""
    rows, nrow = grid_shape(n, nrow)
    height, width = image_size
    scale = 1
    for count, size in ((rows, height), (nrow, width)):  # count * (scale * size + padding) + padding >= min_side
        scale = max(scale, math.ceil((min_side - padding - count * padding) / (count * size)))
    return scale


def picture(levels: torch.Tensor, num_levels: int, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """`make_grid`, enlarged by whole pixels until both sides are at least MIN_PICTURE_SIDE pixels,
    with `padding` pixels between the images: the grid a person looks at."""
    scale = picture_scale(len(levels), tuple(levels.shape[-2:]), nrow, padding)
    return make_grid(levels, num_levels, nrow=nrow, padding=padding, scale=scale)


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, C) uint8 array (C = 1 or 3) as PNG; returns the path."""
    path = Path(path)
    with atomic_write(path, "the image") as f:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(f, format="PNG")
    return path

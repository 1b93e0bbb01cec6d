"""The README's picture: 16 samples of a zoo model and 4 completed test images (each: what the model
saw, 3 completions, the original), side by side, drawn with the cached sampler.

    python tools/readme_picture.py                           # pixelcnn-binarized-mnist, seed 0
    python tools/readme_picture.py --model <name> --out docs/images/readme.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from pixel_lightning.checkpoint import model_from_checkpoint
from pixel_lightning.data.first_images import first_test_images
from pixel_lightning.images import picture, save_png
from pixel_lightning.pretrained import DEFAULT_MODEL, read_model_source
from pixel_lightning.sample import complete_grid

GAP = 24  # white pixels between the two grids


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a zoo name, a model folder or a .ckpt")
    parser.add_argument("--out", type=Path, default=Path("docs/images/readme.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    checkpoint = read_model_source(args.model)  # read once: the model and its data identity
    model = model_from_checkpoint(checkpoint, args.model, sampling=True).eval()
    data = checkpoint["hyper_parameters"]["data"]
    generator = torch.Generator().manual_seed(args.seed)
    samples = picture(model.sample(16, generator=generator), model.levels, nrow=4)
    originals, _ = first_test_images(data, os.environ.get("PIXEL_DATA_DIR", "data"), 4, "the picture's originals")
    height = model.image_shape[1]
    completions = complete_grid(model, originals, height // 2, 3, generator, "cached", 12, None)
    completed = picture(completions, model.levels, nrow=5)
    rows = max(samples.shape[0], completed.shape[0])
    canvas = np.full((rows, samples.shape[1] + GAP + completed.shape[1], samples.shape[2]), 255, dtype=np.uint8)
    canvas[: samples.shape[0], : samples.shape[1]] = samples
    canvas[: completed.shape[0], samples.shape[1] + GAP :] = completed
    return save_png(canvas, args.out)


if __name__ == "__main__":
    print(main())

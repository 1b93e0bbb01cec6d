"""The sampling pipeline behind `sample.py`: samples or image completions from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from pixel_lightning.checkpoint import load_model
from pixel_lightning.errors import UserError
from pixel_lightning.images import make_grid, save_png

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible. Use device=cpu or device=auto.")
    return torch.device(name)


def test_images(model, data_dir: str, count: int) -> torch.Tensor:
    """The first `count` test images of the dataset the model was trained on."""
    data_cfg = dict(model.hparams.data, data_dir=data_dir)
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    return torch.stack([datamodule.test_dataset[i] for i in range(count)])


def complete_grid(model, originals: torch.Tensor, observed_rows: int, per_image: int, generator) -> torch.Tensor:
    """Rows of [occluded, completion 1..per_image, original], as in the paper's Figure 6."""
    repeated = originals.repeat_interleave(per_image, dim=0)
    completions = model.complete(repeated, observed_rows, generator=generator).cpu()
    occluded = originals.clone()
    occluded[:, :, observed_rows:] = 0
    rows = [
        torch.cat([occluded[i : i + 1], completions[i * per_image : (i + 1) * per_image], originals[i : i + 1]])
        for i in range(len(originals))
    ]
    return torch.cat(rows)


def sample(cfg: DictConfig) -> Path:
    """Write a PNG grid (and optionally .npy levels) into the job's output folder; returns the PNG path."""
    if cfg.mode not in ("sample", "complete"):
        raise UserError(f"mode={cfg.mode} is not known. Use mode=sample or mode=complete.")
    device = pick_device(cfg.device)
    model = load_model(cfg.ckpt_path, trust=cfg.trust_checkpoint, map_location=device).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.mode == "sample":
        levels = model.sample(cfg.num_samples, temperature=cfg.temperature, generator=generator).cpu()
        nrow = cfg.nrow
    else:
        height = model.image_shape[1]
        observed = cfg.completion.observed_rows if cfg.completion.observed_rows is not None else height // 2
        if not 0 <= observed < height:
            raise UserError(
                f"completion.observed_rows={observed} must be in [0, {height - 1}] for {height}-row images."
            )
        originals = test_images(model, cfg.paths.data_dir, cfg.completion.num_images)
        levels = complete_grid(model, originals, observed, cfg.completion.samples_per_image, generator)
        nrow = cfg.completion.samples_per_image + 2
    path = save_png(make_grid(levels, model.levels, nrow=nrow), output_dir / f"{cfg.mode}s.png")
    if cfg.save_npy:
        np.save(output_dir / f"{cfg.mode}s.npy", levels.numpy().astype(np.int64))
    print(f"Wrote {len(levels)} images to {path}", flush=True)
    return path

"""The sampling pipeline behind `sample.py`: samples or image completions from a checkpoint."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from pixel_lightning.checkpoint import data_config, model_from_checkpoint, read_checkpoint
from pixel_lightning.errors import UserError
from pixel_lightning.files import atomic_write
from pixel_lightning.images import make_grid, save_png
from pixel_lightning.settings import check_setting

log = logging.getLogger(__name__)


def pick_device(name: object) -> torch.device:
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise UserError(
            f"device must be auto, cpu, cuda or cuda:<index>, but it is {name}. Fix the override, e.g. device=auto."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} was asked for but no CUDA GPU is visible. Use device=cpu or device=auto.")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"device={name} names a GPU that is not there: {torch.cuda.device_count()} are visible, numbered from 0. "
            "Use device=cuda or device=auto."
        )
    return device


def check_sample_settings(cfg: DictConfig) -> None:
    """Every setting of conf/sample.yaml that the checkpoint does not decide."""
    if cfg.mode not in ("sample", "complete"):
        raise UserError(f"mode must be sample or complete, but it is {cfg.mode}. Fix the override, e.g. mode=complete.")
    if cfg.method not in ("cached", "naive"):
        raise UserError(
            f"method must be cached (the default, fast) or naive (one full network pass per draw: the slow "
            f"reference; both give the same images), but it is {cfg.method}. Fix the override, e.g. method=cached."
        )
    check_setting(cfg, "num_samples", "integer", 16, at_least=1)
    check_setting(cfg, "batch_size", "integer", 64, at_least=1)
    check_setting(cfg, "nrow", "integer", 4, at_least=1, nullable=True)
    check_setting(cfg, "temperature", "number", 1.0, above=0)
    check_setting(cfg, "seed", "integer", 0)
    check_setting(cfg, "save_npy", "boolean", "true")
    check_setting(cfg, "trust_checkpoint", "boolean", "false")
    check_setting(cfg, "completion.num_images", "integer", 8, at_least=1)
    check_setting(cfg, "completion.samples_per_image", "integer", 3, at_least=1)
    check_setting(cfg, "completion.observed_rows", "integer", 14, at_least=0, nullable=True)


def test_images(data: dict, data_dir: str, count: int) -> torch.Tensor:
    """The first `count` test images of the dataset of config `data` (a checkpoint's, already checked)."""
    data_cfg = dict(data, data_dir=data_dir)
    datamodule = hydra.utils.instantiate(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    available = len(datamodule.test_dataset)
    if count > available:
        raise UserError(
            f"completion.num_images={count} asks for more images than the {available} of the {datamodule.name} test "
            f"split. Use completion.num_images={available} or fewer."
        )
    return torch.stack([datamodule.test_dataset[i] for i in range(count)])


def in_batches(draw: Callable[[int, int], torch.Tensor], count: int, batch_size: int) -> torch.Tensor:
    """`count` images drawn as `draw(first, n)` for consecutive batches of at most `batch_size`
    (the n images from index `first` on), gathered on the CPU: (count, C, H, W)."""
    return torch.cat([draw(first, min(batch_size, count - first)).cpu() for first in range(0, count, batch_size)])


#: Peak memory of sample.py per byte of the int64 levels it draws, measured (50,000 binarized-MNIST images):
#: the levels, and make_grid's float64 and uint8 copies of them, which take 3.1 times their size.
MEMORY_PER_LEVEL_BYTE = 4.1


def check_output_fits(count: int, image_shape: tuple[int, int, int], asked: str) -> None:
    """Refuse, before drawing anything, an output of `count` images that cannot fit in the memory
    available now; `asked` names the settings that ask for them."""
    per_image = MEMORY_PER_LEVEL_BYTE * 8 * math.prod(image_shape)  # int64 levels
    available = available_memory()
    if count * per_image > available:
        raise UserError(
            f"{asked} asks for {count:,} images of shape {tuple(image_shape)}, which need about "
            f"{count * per_image / 1e9:,.1f} GB of memory (the sampled levels, and the grid drawn from them), but "
            f"only {available / 1e9:,.1f} GB are available. Ask for at most {int(available // per_image):,} images at "
            "once (run sample.py again with another seed for more)."
        )


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable, or all physical memory without /proc."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def complete_grid(
    model, originals: torch.Tensor, observed_rows: int, per_image: int, generator, method: str = "cached",
    batch_size: int = 64,
) -> torch.Tensor:
    """Rows of [occluded, completion 1..per_image, original], as in the paper's Figure 6."""
    repeated = originals.repeat_interleave(per_image, dim=0)
    completions = in_batches(
        lambda first, n: model.complete(repeated[first : first + n], observed_rows, generator=generator, method=method),
        len(repeated), batch_size,
    )
    occluded = originals.clone()
    occluded[:, :, observed_rows:] = 0
    rows = [
        torch.cat([occluded[i : i + 1], completions[i * per_image : (i + 1) * per_image], originals[i : i + 1]])
        for i in range(len(originals))
    ]
    return torch.cat(rows)


def sample(cfg: DictConfig) -> Path:
    """Write a PNG grid (and optionally .npy levels) into the job's output folder; returns the PNG path."""
    check_sample_settings(cfg)
    device = pick_device(cfg.device)
    checkpoint = read_checkpoint(cfg.ckpt_path, cfg.trust_checkpoint, map_location=device)
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path, cfg.trust_checkpoint, sampling=True).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.mode == "sample":
        check_output_fits(cfg.num_samples, model.image_shape, f"num_samples={cfg.num_samples}")
        options = {"method": cfg.method} if hasattr(model, "complete") else {}  # a GAN draws in one pass anyway
        levels = in_batches(
            lambda first, n: model.sample(n, temperature=cfg.temperature, generator=generator, **options),
            cfg.num_samples, cfg.batch_size,
        )
        nrow = cfg.nrow
    elif not hasattr(model, "complete"):
        raise UserError(
            f"mode=complete needs an autoregressive model, and this checkpoint holds a {type(model).__name__}: a GAN "
            "cannot complete images (it maps noise to whole images, with no distribution of the hidden rows given "
            "the visible ones). Use mode=sample with it, or an autoregressive model's checkpoint for completions."
        )
    else:
        height = model.image_shape[1]
        observed = cfg.completion.observed_rows if cfg.completion.observed_rows is not None else height // 2
        if not 0 <= observed < height:
            raise UserError(
                f"completion.observed_rows must be from 0 to {height - 1} for the {height}-row images of this "
                f"checkpoint, but it is {observed}. Fix the override, e.g. completion.observed_rows={height // 2}."
            )
        per_image = cfg.completion.samples_per_image
        check_output_fits(cfg.completion.num_images * (per_image + 2), model.image_shape,
                          f"completion.num_images={cfg.completion.num_images} with samples_per_image={per_image}")
        data = data_config(checkpoint, cfg.ckpt_path, cfg.trust_checkpoint)
        originals = test_images(data, cfg.paths.data_dir, cfg.completion.num_images)
        levels = complete_grid(model, originals, observed, per_image, generator, cfg.method, cfg.batch_size)
        nrow = cfg.completion.samples_per_image + 2
    path = save_png(make_grid(levels, model.levels, nrow=nrow), output_dir / f"{cfg.mode}s.png")
    if cfg.save_npy:
        with atomic_write(output_dir / f"{cfg.mode}s.npy", "the sampled levels") as f:
            np.save(f, levels.numpy().astype(np.int64))
    print(f"Wrote {len(levels)} images to {path}", flush=True)
    return path

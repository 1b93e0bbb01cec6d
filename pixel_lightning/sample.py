"""The sampling pipeline behind `sample.py`: samples or image completions from a checkpoint.

A class-conditional checkpoint (trained with model.condition=class) samples the class `label=`,
or one row per class (`labels=all`, also its default); completions keep each test image's label.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pixel_lightning.checkpoint import data_config, model_from_checkpoint
from pixel_lightning.errors import UserError
from pixel_lightning.files import atomic_write
from pixel_lightning.images import picture, save_png
from pixel_lightning.pretrained import DEFAULT_MODEL, lifts_checks, model_source, read_model_source
from pixel_lightning.settings import check_setting

log = logging.getLogger(__name__)


def pick_device(name: object) -> torch.device:
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise UserError(
            f"device must be auto, cpu, mps, cuda or cuda:<index>, but it is {name}. Fix the override, e.g. "
            "device=auto."
        )
    if name == "auto":  # a CUDA GPU, else Apple's GPU (MPS), else the CPU
        return torch.device(
            "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("device=mps was asked for but no Apple GPU (MPS) is available. Use device=cpu or device=auto.")
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
    check_label_settings(cfg)


def check_label_settings(cfg: DictConfig) -> None:
    """label= and labels=, as far as they do not depend on the checkpoint."""
    check_setting(cfg, "label", "integer", 7, at_least=0, nullable=True)
    if cfg.labels not in (None, "all"):
        raise UserError(
            f"labels must be all (one row of num_samples images per class) or null, but it is {cfg.labels}. "
            "Fix the override, e.g. labels=all, or use label=<class> for one class."
        )
    if cfg.label is not None and cfg.labels is not None:
        raise UserError(
            f"label={cfg.label} and labels={cfg.labels} were both given; they are alternatives: label= draws one "
            "class, labels=all one row per class. Keep one of them."
        )
    if cfg.mode == "complete" and (cfg.label is not None or cfg.labels is not None):
        raise UserError(
            "label= and labels= are for mode=sample: mode=complete keeps each test image's own label. Leave them "
            "out, or use mode=sample."
        )


def sample_labels(cfg: DictConfig, model, source: str = "This model") -> tuple[torch.Tensor | None, int | None]:
    """The labels (n,) of the images to draw, None for an unconditional model, and the images per
    grid row: `label=` for all num_samples images, else (labels=all, the default of a conditional
    model) one row of num_samples images per class. First refuses more images than the memory
    holds (check_output_fits), before building a label (8 bytes) for each."""
    classes = getattr(model, "classes", 0)
    if not classes:
        if cfg.label is not None or cfg.labels is not None:
            raise UserError(
                f"label= and labels= need a class-conditional checkpoint (trained with model.condition=class), but "
                f"{source} holds an unconditional model: it cannot be asked for a class. Leave them out, or "
                "use the checkpoint of a model trained with model.condition=class."
            )
        check_output_fits(cfg.num_samples, model.image_shape, f"num_samples={cfg.num_samples}")
        return None, cfg.nrow
    if cfg.label is None:
        check_output_fits(
            classes * cfg.num_samples,
            model.image_shape,
            f"num_samples={cfg.num_samples} for each of its {classes} classes",
        )
        return torch.arange(classes).repeat_interleave(cfg.num_samples), cfg.num_samples
    if cfg.label >= classes:
        raise UserError(
            f"label={cfg.label} is not a class of this checkpoint's model: its classes are numbered 0 to "
            f"{classes - 1}. Fix the override, e.g. label={classes - 1}."
        )
    check_output_fits(cfg.num_samples, model.image_shape, f"num_samples={cfg.num_samples}")
    return torch.full((cfg.num_samples,), cfg.label), cfg.nrow


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
    model,
    originals: torch.Tensor,
    observed_rows: int,
    per_image: int,
    generator,
    method: str = "cached",
    batch_size: int = 64,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows of [occluded, completion 1..per_image, original], as in the paper's Figure 6; given
    the originals' `labels` (N,), each completion keeps its original's."""
    repeated = originals.repeat_interleave(per_image, dim=0)
    repeated_labels = None if labels is None else labels.repeat_interleave(per_image).to(model._weight().device)

    def draw(first: int, n: int) -> torch.Tensor:
        label = {} if repeated_labels is None else {"label": repeated_labels[first : first + n]}
        return model.complete(repeated[first : first + n], observed_rows, generator=generator, method=method, **label)

    completions = in_batches(draw, len(repeated), batch_size)
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
    source = model_source(cfg.ckpt_path, cfg.pretrained, default=DEFAULT_MODEL)
    checkpoint = read_model_source(source, cfg.trust_checkpoint, map_location=device)
    trust = lifts_checks(checkpoint, cfg.trust_checkpoint)
    model = model_from_checkpoint(checkpoint, source, trust, sampling=True).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.mode == "sample":
        options = {"method": cfg.method} if hasattr(model, "complete") else {}  # a GAN draws in one pass anyway
        labels, nrow = sample_labels(cfg, model, source)  # refuses an output larger than the memory first
        count = cfg.num_samples if labels is None else len(labels)

        def draw(first: int, n: int) -> torch.Tensor:
            label = {} if labels is None else {"label": labels[first : first + n].to(device)}
            return model.sample(n, temperature=cfg.temperature, generator=generator, **options, **label)

        levels = in_batches(draw, count, cfg.batch_size)
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
        check_output_fits(
            cfg.completion.num_images * (per_image + 2),
            model.image_shape,
            f"completion.num_images={cfg.completion.num_images} with samples_per_image={per_image}",
        )
        # here, not at the top: the data package loads Lightning, which sampling alone never needs
        from pixel_lightning.data.first_images import first_test_images

        data = data_config(checkpoint, source, trust)
        originals, labels = first_test_images(
            data, cfg.paths.data_dir, cfg.completion.num_images, "completion.num_images"
        )
        levels = complete_grid(model, originals, observed, per_image, generator, cfg.method, cfg.batch_size, labels)
        nrow = cfg.completion.samples_per_image + 2
    path = save_png(picture(levels, model.levels, nrow=nrow), output_dir / f"{cfg.mode}s.png")
    if cfg.save_npy:
        with atomic_write(output_dir / f"{cfg.mode}s.npy", "the sampled levels") as f:
            np.save(f, levels.numpy().astype(np.int64))
    print(f"Wrote {len(levels)} images to {path}", flush=True)
    return path

"""OmegaConf resolvers used by `conf/`; importing the package registers them."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def levels(bits: int, binarize: object = None) -> int:
    """Number of discrete levels K: 2 for binarized data, else 2**bits."""
    return 2 if binarize not in (None, False, "", "null") else 2 ** int(bits)


STREAMED_DATA_MODULE = "pixel_lightning.data.streaming.StreamingImageDataModule"


def data_module(in_memory: str, streaming: object) -> str:
    """The `_target_` of a data config: its in-memory DataModule, or with `streaming: true` the one that
    streams the chunks written by `python -m pixel_lightning.data.prepare`."""
    if streaming not in (True, False):
        raise ValueError(f"data.streaming must be true or false, but it is {streaming}")
    return STREAMED_DATA_MODULE if streaming else in_memory


#: parent folder -> the run folder this process claimed in it (Hydra resolves the path repeatedly).
_claimed_run_dirs: dict[str, str] = {}


def unique_run_dir(parent: str) -> str:
    """`<parent>/<date>_<time>`, with `_1`, `_2`, ... appended when a run that started in the same
    second already holds that name. The folder is claimed by creating it (mkdir is atomic), so two
    processes never share one; within one process the same parent always gives the same folder."""
    if parent not in _claimed_run_dirs:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        Path(parent).mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            candidate = Path(parent) / (stamp if n == 0 else f"{stamp}_{n}")
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                continue
        _claimed_run_dirs[parent] = str(candidate)
    return _claimed_run_dirs[parent]


def slurm_gpus(accelerator: object, devices: object) -> object:
    """The GPUs per node a SLURM job asks for: one per device, none for a CPU trainer (a GPU request,
    even of 0, cannot be met by a partition without GPUs)."""
    return None if str(accelerator) == "cpu" else devices


def path_name(path: str) -> str:
    """The last part of a path, e.g. a sweep folder's `<date>_<time>` for a W&B group name."""
    return Path(path).name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("levels"):
        OmegaConf.register_new_resolver("levels", levels)
    if not OmegaConf.has_resolver("unique_run_dir"):
        OmegaConf.register_new_resolver("unique_run_dir", unique_run_dir, use_cache=True)
    if not OmegaConf.has_resolver("data_module"):
        OmegaConf.register_new_resolver("data_module", data_module)
    if not OmegaConf.has_resolver("slurm_gpus"):
        OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus)
    if not OmegaConf.has_resolver("path_name"):
        OmegaConf.register_new_resolver("path_name", path_name)

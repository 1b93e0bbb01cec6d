"""Checkpoints: atomic writes, safe (weights-only) reads, and clear errors for bad files."""

from __future__ import annotations

import inspect
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from pixel_lightning.errors import CheckpointError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside the target, fsyncs it and renames it
    into place, so a crash or a full disk mid-write never leaves a truncated checkpoint (the
    previous one stays intact)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | os.PathLike, trust: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict; weights-only (no arbitrary code) unless `trust` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint file at '{path}'. Pass ckpt_path=<file.ckpt> pointing to a checkpoint written "
            "by train.py (they are saved under logs/train/runs/<time>/checkpoints/, e.g. last.ckpt)."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        refused = re.search(r"(GLOBAL \S+|\S+ was not an allowed global)", str(err))
        if not refused:  # garbage bytes also fail as an unpickling error
            raise _unreadable(path, err) from err
        raise CheckpointError(
            f"Checkpoint '{path}' holds Python objects that a weights-only load refuses to run "
            f"({refused.group(1)}). If you trust where the file came from, pass "
            "trust_checkpoint=true to load it with full pickle; otherwise do not use it."
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise _unreadable(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"'{path}' is not a training checkpoint (it holds a {type(checkpoint).__name__}).")
    return checkpoint


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint '{path}' could not be read: it is truncated or corrupt ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Use another checkpoint of the run, "
        "e.g. the best epoch_*.ckpt or last.ckpt beside it."
    )


#: The LightningModules a checkpoint can rebuild, by the `module` its hyper-parameters name
#: (checkpoints without one hold an autoregressive model, as all did before the DCGAN).
MODULES = {"autoregressive": "AutoregressiveImageModel", "dcgan": "DCGAN"}


def load_model(path: str | os.PathLike, trust: bool = False, map_location: Any = "cpu"):
    """Rebuild the model (an AutoregressiveImageModel or a DCGAN) of a checkpoint written by train.py."""
    from pixel_lightning import models

    checkpoint = read_checkpoint(path, trust, map_location)
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    name = hparams.get("module", "autoregressive") if isinstance(hparams, dict) else None
    known = isinstance(name, str) and name in MODULES and (name != "autoregressive" or "net" in hparams)
    if not known or not isinstance(state, dict):
        raise CheckpointError(
            f"'{path}' is not a pixel-lightning model checkpoint (no model hyper-parameters or weights). "
            "Pass a .ckpt written by train.py."
        )
    module_class = getattr(models, MODULES[name])
    try:
        arguments = inspect.signature(module_class).parameters
        model = module_class(**{k: hparams[k] for k in arguments if k in hparams})
        model.load_state_dict(state)
    except Exception as err:  # any mismatch between the file and this code
        raise CheckpointError(
            f"Checkpoint '{path}' does not fit this version of pixel-lightning: {type(err).__name__}: "
            f"{str(err).splitlines()[0]}. Sample with the code version that trained it, or retrain."
        ) from err
    return model

"""Checkpoints: atomic writes, safe (weights-only) reads, and clear errors for bad files."""

from __future__ import annotations

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


#: What continuing a fit needs: the model's settings and weights, and what Lightning restores of the
#: trainer (optimizer, schedulers, loops, epoch and step).
RESUME_STATE = ("hyper_parameters", "state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


def check_resumable(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse to resume from a readable checkpoint that lacks the trainer state (e.g. a weights-only
    save or a file from another program), which Lightning would report with a KeyError."""
    missing = [key for key in RESUME_STATE if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"Checkpoint '{path}' cannot resume training: it lacks {', '.join(missing)}, so it "
            "is a weights-only file or comes from another program. To continue a run pass the run's "
            "checkpoints/last.ckpt (or an epoch_*.ckpt) written by train.py; to sample from these weights use "
            "sample.py."
        )


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint '{path}' could not be read: it is truncated or corrupt ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Use another checkpoint of the run, "
        "e.g. the best epoch_*.ckpt or last.ckpt beside it."
    )


def load_model(path: str | os.PathLike, trust: bool = False, map_location: Any = "cpu"):
    """Rebuild an AutoregressiveImageModel from a checkpoint written by train.py."""
    from pixel_lightning.models import AutoregressiveImageModel

    checkpoint = read_checkpoint(path, trust, map_location)
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    if not isinstance(hparams, dict) or not isinstance(state, dict) or "net" not in hparams:
        raise CheckpointError(
            f"'{path}' is not a pixel-lightning model checkpoint (no model hyper-parameters or weights). "
            "Pass a .ckpt written by train.py."
        )
    try:
        model = AutoregressiveImageModel(**{k: hparams.get(k) for k in ("net", "optimizer", "data", "scheduler")})
        model.load_state_dict(state)
    except Exception as err:  # any mismatch between the file and this code
        raise CheckpointError(
            f"Checkpoint '{path}' does not fit this version of pixel-lightning: {type(err).__name__}: "
            f"{str(err).splitlines()[0]}. Sample with the code version that trained it, or retrain."
        ) from err
    return model

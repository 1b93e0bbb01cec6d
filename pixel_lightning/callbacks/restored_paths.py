"""Confining the checkpoint paths a resumed run restores to the run's own checkpoint folder.

A resume checkpoint is data from a file, its callback states included. Lightning restores a
ModelCheckpoint's `best_model_path` (always) and `best_k_models`, `kth_best_model_path` and
`last_model_path` (when the saved `dirpath` equals the callback's), and later deletes the one a new
save replaces. Its deletion test checks `dirpath in Path(path).absolute().parents`, which neither
resolves `..` nor symlinks, and a path with a protocol other than `file` (`local://...`) passes it
unchecked. So a crafted `<checkpoints>/../../elsewhere` or `local:///elsewhere` would be deleted,
recursively, at the next save.

The choice: sanitise, do not refuse. Every restored path is kept only if it resolves (symlinks and
`..` included) to an existing file inside the callback's own `dirpath`, and the rest are dropped with
one warning. Refusing the file would also refuse honest checkpoints of a run folder that was moved
or copied: their paths name the old folder. Those are rebased (`<saved dirpath>/x` becomes
`<dirpath>/x`) before the check, so a moved run still finds and tests its best checkpoint.

The other callbacks of the project (conf/callbacks/default.yaml, pixel_lightning/callbacks/) keep
no state in checkpoints except the W&B run id (checked where the training pipeline reads it) and the
run record's names and data config (not a path; eval.py reads its data from this machine's folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

#: The fields of a ModelCheckpoint state that name a file (besides the keys of `best_k_models`).
PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RestoredPathGuard(pl.Callback):
    """Before any callback restores its state from a resume checkpoint, rewrites the state of each
    ModelCheckpoint of the trainer to paths inside its own folder (see the module docstring).
    The training pipeline always adds it (jobs.make_trainer): no config can leave it out."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict):
            return
        dropped: list[str] = []
        for callback in trainer.callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            for key in {callback.state_key, callback._legacy_state_key}:
                if key not in states:
                    continue
                if isinstance(states[key], dict) and callback.dirpath is not None:
                    dropped += confine_state(states[key], callback.dirpath, callback.mode)
                else:  # not a state, or no folder to hold its files (Lightning sets one before it restores)
                    dropped.append(f"the whole state {key}")
                    del states[key]
        if dropped:
            log.warning(
                "The resume checkpoint names files outside this run's checkpoint folder, or files that are not "
                "there; they are ignored (never deleted nor tested): %s",
                ", ".join(dict.fromkeys(dropped)),
            )


def confine_state(state: dict[str, Any], dirpath: str | os.PathLike, mode: str) -> list[str]:
    """Rewrite a ModelCheckpoint state in place to the paths that resolve to an existing file inside
    `dirpath`, named as the callback names its files (`<dirpath>/<name>`); return the dropped ones.
    The best and k-th entries of `best_k_models` are taken again from those kept (as ModelCheckpoint
    takes them, by `mode`), so the state stays one that Lightning can continue."""
    saved = state.get("dirpath")
    dropped: list[str] = []

    def confined(path: Any) -> str:
        kept = confine_path(path, saved, dirpath) if path != "" else ""
        if kept is None:
            dropped.append(repr(path))
        return kept or ""

    for field in PATH_FIELDS:
        if field in state:
            state[field] = confined(state[field])
    top_k = state.get("best_k_models")
    if top_k is not None:
        if not isinstance(top_k, Mapping):  # Lightning would fail on it
            dropped.append(repr(top_k))
            top_k = {}
        kept = {name: score for path, score in top_k.items() if (name := confined(path))}
        state["best_k_models"] = kept
        if kept:  # the best and k-th entries must be among those kept: take them again
            worst, best = (max, min) if mode == "min" else (min, max)
            state["kth_best_model_path"] = worst(kept, key=kept.get)
            state["kth_value"] = kept[state["kth_best_model_path"]]
            state["best_model_path"] = best(kept, key=kept.get)
            state["best_model_score"] = kept[state["best_model_path"]]
    return dropped


def confine_path(path: Any, saved_dirpath: Any, dirpath: str | os.PathLike) -> str | None:
    """`path` as `<dirpath>/<name>` if it resolves to an existing file inside `dirpath`, after
    rebasing it from `saved_dirpath` (where the checkpoint's run kept it) onto `dirpath`; else None.
    Only plain local paths count: any URL (`local://`, `s3://`, `file://`) is refused."""
    if not isinstance(path, str) or "://" in path or "::" in path:
        return None
    if isinstance(saved_dirpath, str) and saved_dirpath and PurePath(path).is_relative_to(saved_dirpath):
        path = os.path.join(dirpath, PurePath(path).relative_to(saved_dirpath))  # the run folder was moved
    folder, resolved = Path(dirpath).resolve(), Path(path).resolve()
    if resolved == folder or not resolved.is_relative_to(folder) or not resolved.is_file():
        return None
    return os.path.join(dirpath, resolved.relative_to(folder))

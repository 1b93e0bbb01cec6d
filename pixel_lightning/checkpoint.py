"""Checkpoints: safe (weights-only) reads, and clear errors for bad files (atomic writes: plugins.py).

A checkpoint is data, never code: it is read weights-only, and the configs in its
hyper-parameters are built only if every class they name is one of the project's own
(`safe_config`). `trust=True` (`trust_checkpoint=true`) lifts both, for files the user trusts.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pixel_lightning import models
from pixel_lightning.errors import CheckpointError
from pixel_lightning.models.outputs import output_spec
from pixel_lightning.safe_config import check_buildable

#: The data settings that fix the images a model was trained on (the rest, e.g. batch_size, may change).
DATA_IDENTITY = ("_target_", "channels", "height", "width", "levels", "bits", "binarize")


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
        refused = re.search(r"GLOBAL (\S+)", str(err))
        if refused:
            problem = f"holds Python objects that a weights-only load refuses to build ({refused.group(1)})"
        elif _is_plain_pickle(path):
            problem = (
                "is a plain Python pickle, not the zip format torch.save writes, and a weights-only load "
                "cannot read it; loading it in full could run any code it holds"
            )
        else:  # garbage bytes also fail as an unpickling error
            raise _unreadable(path, err) from err
        raise CheckpointError(
            f"Checkpoint '{path}' {problem}. If you trust where the file came from, pass "
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


def _is_plain_pickle(path: Path) -> bool:
    """A pickle (PROTO opcode, protocol 2-5) that is not a zip archive."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5 and not zipfile.is_zipfile(path)


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"Checkpoint '{path}' could not be read: it is truncated or corrupt ({type(err).__name__}: "
        f"{_first_line(err)}). Use another checkpoint of the run, "
        "e.g. the best epoch_*.ckpt or last.ckpt beside it."
    )


def _first_line(err: Exception) -> str:
    """The first line of an error's text that says something (torch's often start with a blank one)."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "no detail")


#: The modules a checkpoint can rebuild, by the `module` its hyper-parameters name (checkpoints
#: without one hold an autoregressive model, as all did before the DCGAN): the LightningModules, and
#: for sampling alone the lightest module that samples (no Lightning for an autoregressive model).
MODULES = {"autoregressive": "AutoregressiveImageModel", "dcgan": "DCGAN"}
SAMPLING_MODULES = {"autoregressive": "AutoregressiveDistribution", "dcgan": "DCGAN"}


def load_model(path: str | os.PathLike, trust: bool = False, map_location: Any = "cpu"):
    """Rebuild the model (an AutoregressiveImageModel or a DCGAN) of a checkpoint written by train.py."""
    return model_from_checkpoint(read_checkpoint(path, trust, map_location), path, trust)


def model_from_checkpoint(
    checkpoint: dict[str, Any], path: str | os.PathLike, trust: bool = False, sampling: bool = False
):
    """The model of a checkpoint dict already read from `path` (named in messages); see load_model.
    With `sampling`: what only has to sample (an AutoregressiveDistribution, or the DCGAN)."""
    hparams, state = checkpoint.get("hyper_parameters"), checkpoint.get("state_dict")
    name = hparams.get("module", "autoregressive") if isinstance(hparams, dict) else None
    known = isinstance(name, str) and name in MODULES and (name != "autoregressive" or "net" in hparams)
    if not known or not isinstance(state, dict):
        raise CheckpointError(
            f"'{path}' is not a pixel-lightning model checkpoint (no model hyper-parameters or weights). "
            "Pass a .ckpt written by train.py."
        )
    module_class = getattr(models, (SAMPLING_MODULES if sampling else MODULES)[name])
    arguments = {k: hparams[k] for k in inspect.signature(module_class).parameters if k in hparams}
    if not trust:
        check_buildable(arguments, f"Checkpoint '{path}'", "hyper_parameters")
    try:
        model = module_class(**arguments)
    except Exception as err:  # settings this code cannot build
        raise CheckpointError(
            f"Checkpoint '{path}' does not fit this version of pixel-lightning: its hyper-parameters do not build a "
            f"model here ({type(err).__name__}: {_first_line(err)}). Use the code version that trained it, or retrain."
        ) from err
    mismatch = weights_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(
            f"Checkpoint '{path}' holds weights that do not fit the model of its own hyper-parameters: {mismatch}. "
            "The file was altered, or written by a version of pixel-lightning with another architecture. Use "
            "another checkpoint of the run (last.ckpt or an epoch_*.ckpt), or the code version that wrote it."
        )
    model.load_state_dict(state)
    return model


def weights_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    """The first difference between the weights a model has (`expected`) and those of a file
    (`found`): a missing, misshapen or extra tensor, with its shapes; None when they fit."""
    for name, tensor in expected.items():
        if name not in found:
            return f"it lacks {name} (shape {tuple(tensor.shape)})"
        value = found[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shown = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
            return f"{name} is {shown} in the file but shape {tuple(tensor.shape)} in the model"
    extra = next((name for name in found if name not in expected), None)
    return f"it holds {extra}, which the model does not have" if extra else None


def saved_data(checkpoint: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The data config a checkpoint was trained with, as one that names its data module
    (`_target_`): the model's `data` hyper-parameter, or else the run record's copy (older DCGAN
    checkpoints keep only the image shape in their hyper-parameters)."""
    hparams, record = checkpoint.get("hyper_parameters"), checkpoint.get("run_record")
    for data in (
        hparams.get("data") if isinstance(hparams, Mapping) else None,
        record.get("data") if isinstance(record, Mapping) else None,
    ):
        if isinstance(data, Mapping) and "_target_" in data:
            return data
    return None


def data_config(checkpoint: Mapping[str, Any], path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """The data config (saved_data) to rebuild the datamodule of a checkpoint read from `path`,
    checked to build only the project's classes unless `trust`; a message when it names none."""
    data = saved_data(checkpoint)
    if data is None:
        raise CheckpointError(
            f"Checkpoint '{path}' does not say which dataset it was trained on: its data settings name no data "
            "module (no _target_) and it holds no run record of them, so its test images cannot be loaded. Use a "
            "checkpoint written by this version of train.py."
        )
    if not trust:
        hparams = checkpoint.get("hyper_parameters")
        ours = isinstance(hparams, Mapping) and data is hparams.get("data")
        check_buildable(data, f"Checkpoint '{path}'", "hyper_parameters.data" if ours else "run_record.data")
    return dict(data)


def check_fits(hparams: Mapping[str, Any], config: Mapping[str, Any], path: str | os.PathLike, fix: str) -> None:
    """Refuse a checkpoint whose model or data differ from those of `config`, naming both sides.

    `config` holds the composed settings to compare, keyed like the checkpoint's hyper-parameters
    (`net`, `data`, `optimizer`, ...; keys it lacks are not compared). The net must match
    entirely, `data` in DATA_IDENTITY, an optimiser or scheduler in its class. `fix` ends the
    message (what to do instead).
    """
    differences = [
        difference
        for key in config
        for difference in _differences(
            _label(key), _identity(key, hparams.get(key, _MISSING)), _identity(key, config[key])
        )
    ]
    if differences:
        raise CheckpointError(
            f"Checkpoint '{path}' was trained with another model or data than this configuration: "
            f"{'; '.join(differences)}. {fix}"
        )


_MISSING = object()


def _label(key: str) -> str:
    """The command-line name of a hyper-parameter (data and optimizer are top-level groups)."""
    return key if key in ("data", "optimizer") else f"model.{key}"


def _identity(key: str, value: Any) -> Any:
    if key == "output":  # in full, and categorical where a checkpoint predates the setting
        try:
            return output_spec(None if value is _MISSING else value)
        except ValueError:  # not a setting this code knows: compared as it is
            return value
    if isinstance(value, Mapping) and key == "data":
        return {name: value.get(name) for name in DATA_IDENTITY if name in value}
    if isinstance(value, Mapping) and key in ("optimizer", "scheduler"):
        return {"_target_": value.get("_target_")}
    return value


def _differences(name: str, theirs: Any, ours: Any) -> Iterator[str]:
    """Where a checkpoint's setting (`theirs`) and ours differ, at the deepest level where both are
    mappings: a value that is a mapping on one side only is shown whole, as one difference."""
    if isinstance(theirs, Mapping) and isinstance(ours, Mapping):
        for key in dict.fromkeys([*theirs, *ours]):
            yield from _differences(f"{name}.{key}", theirs.get(key, _MISSING), ours.get(key, _MISSING))
    elif theirs != ours and not (theirs is _MISSING and ours is None):  # a later setting, at its null default
        yield f"{name} is {_show(theirs)} in the checkpoint but {_show(ours)} here"


def _show(value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {"_target_"}:  # an optimiser's or scheduler's identity
        return f"a {value['_target_']}"
    return "not set" if value is _MISSING else "null" if value is None else str(value)

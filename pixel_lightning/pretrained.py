"""Trained models as data: the zoo's folders, any folder in that layout, a .ckpt, or a Hub repo id.

A model folder has the Hugging Face Hub layout: `model.safetensors` (the weights; safetensors
holds tensors only, so reading it runs no code) and `config.json` (the model's hyper-parameters,
its data identity and what was measured of it). The config is built only through the same
allowlist as a checkpoint's (`safe_config`), nothing in the folder is unpickled, and a folder that
holds a pickle is refused rather than skipped over. `read_model_source` turns any of the four
sources into the dict a checkpoint read gives (`hyper_parameters`, `state_dict`, `run_record`), so
sample.py, eval.py and `load_model` treat them all alike.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from pixel_lightning.checkpoint import model_from_checkpoint, read_checkpoint
from pixel_lightning.errors import CheckpointError, UserError

#: The zoo's folders, shipped inside the package: name -> pixel_lightning/zoo/<name>/.
ZOO_DIR = Path(__file__).parent / "zoo"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT = "pixel-lightning-model/1"
#: File endings of pickles (torch.save, pickle, joblib): a model folder must hold none of them.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle", ".joblib")
MAX_CONFIG_BYTES = 1 << 20
HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}")


def zoo_names() -> list[str]:
    """The names of the zoo's models (its folders that hold a config)."""
    if not ZOO_DIR.is_dir():
        return []
    return sorted(entry.name for entry in ZOO_DIR.iterdir() if (entry / CONFIG_NAME).is_file())


def read_model_source(source: str | os.PathLike, trust: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint-like dict of `source`: a zoo name, a model folder, a .ckpt file, or a Hub repo id
    ("owner/name", downloaded with huggingface_hub). `trust` applies to .ckpt files only (full pickle)."""
    text = os.fspath(source)
    path = Path(text)
    if text in zoo_names():
        return read_model_folder(ZOO_DIR / text, map_location)
    if path.is_dir():
        return read_model_folder(path, map_location)
    if path.is_file() or path.suffix == ".ckpt" or path.is_absolute() or text.startswith((".", "~")):
        return read_checkpoint(path, trust, map_location)
    if HUB_REPO_ID.fullmatch(text) and not path.parent.is_dir():
        return read_model_folder(download_from_hub(text), map_location)
    known = ", ".join(zoo_names()) or "none shipped"
    raise CheckpointError(
        f"'{text}' names no model: it is not a zoo model ({known}), a model folder (config.json and "
        "model.safetensors), a .ckpt file, or a Hugging Face Hub repo id (owner/name). Check the spelling or the path."
    )


#: What `sample.py` draws from when given no model: the zoo's PixelCNN, if this installation ships it.
DEFAULT_MODEL = "pixelcnn-binarized-mnist"


def model_source(ckpt_path: object, pretrained: object, default: str | None = None) -> str:
    """The model a command was asked for: `ckpt_path=` or `pretrained=` (one of them), else `default`
    when the zoo ships it; a paragraph naming both settings otherwise."""
    if ckpt_path and pretrained:
        raise UserError(
            f"ckpt_path={ckpt_path} and pretrained={pretrained} both name a model. Pass one of them: ckpt_path for a "
            "checkpoint of yours, pretrained for a zoo model, a model folder or a Hugging Face Hub repo id."
        )
    if ckpt_path or pretrained:
        return str(ckpt_path or pretrained)
    if default is not None and default in zoo_names():
        return default
    known = ", ".join(zoo_names()) or "none shipped with this installation"
    raise UserError(
        "No model given. Pass ckpt_path=<file.ckpt> (a checkpoint written by train.py, e.g. "
        "logs/train/runs/<time>/checkpoints/last.ckpt) or pretrained=<name>: a zoo model "
        f"({known}), a model folder (config.json and model.safetensors) or a Hugging Face Hub repo id (owner/name)."
    )


def lifts_checks(checkpoint: dict[str, Any], trust: bool) -> bool:
    """Whether `trust` (trust_checkpoint=true) lifts the allowlist for what read_model_source gave: for a
    .ckpt, as asked; never for a model folder, whose config is always checked."""
    return trust and "card" not in checkpoint


def load_model(source: str | os.PathLike, trust: bool = False, map_location: Any = "cpu", sampling: bool = False):
    """The model of `source` (see read_model_source), ready to `sample`, `complete` and `log_prob`.

    >>> model = load_model("pixelcnn-binarized-mnist")   # doctest: +SKIP
    >>> images = model.sample(16)                       # doctest: +SKIP
    """
    checkpoint = read_model_source(source, trust, map_location)
    model = model_from_checkpoint(checkpoint, source, trust=lifts_checks(checkpoint, trust), sampling=sampling)
    return model.eval()


def read_model_folder(folder: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The weights and config of a model folder, checked: regular files inside it, no pickle, JSON that
    names a pixel-lightning model, weights that fit it (checked where the model is built)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    pickles = sorted(entry.name for entry in folder.iterdir() if entry.name.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"Model folder '{folder}' holds {', '.join(pickles)}: a pickle, which could run code when read, so the "
            f"folder was not used. A model folder holds {CONFIG_NAME} and {WEIGHTS_NAME} only; to use a checkpoint "
            "you trust, pass the .ckpt file itself, or turn it into a folder with `python -m pixel_lightning.export`."
        )
    config_path, weights_path = _member(folder, CONFIG_NAME), _member(folder, WEIGHTS_NAME)
    try:
        text = config_path.read_bytes()[: MAX_CONFIG_BYTES + 1]
        config = json.loads(text) if len(text) <= MAX_CONFIG_BYTES else None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(
            f"'{config_path}' is not readable JSON ({type(err).__name__}: {err}). {_REEXPORT}"
        ) from err
    ours = isinstance(config, dict) and config.get("format") == FORMAT
    if not (ours and isinstance(config.get("hyper_parameters"), dict)):
        raise CheckpointError(
            f"'{config_path}' is not the config of a pixel-lightning model (format {FORMAT!r} with its "
            f"hyper_parameters; at most {MAX_CONFIG_BYTES} bytes). {_REEXPORT}"
        )
    try:
        state = load_file(weights_path, device=str(map_location) if map_location is not None else "cpu")
    except (OSError, SafetensorError, ValueError) as err:
        raise CheckpointError(f"'{weights_path}' is not a readable safetensors file ({err}). {_REEXPORT}") from err
    names = config.get("names") if isinstance(config.get("names"), dict) else {}
    return {"hyper_parameters": config["hyper_parameters"], "state_dict": state, "run_record": names, "card": config}


_REEXPORT = "Download the model again, or write the folder anew with `python -m pixel_lightning.export CKPT OUT_DIR`."


def _member(folder: Path, name: str) -> Path:
    """`folder/name`, a regular file inside the folder (a link that leads elsewhere is refused)."""
    path = folder / name
    if not path.is_file():
        raise CheckpointError(f"Model folder '{folder}' has no {name}. {_REEXPORT}")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"'{path}' leads outside its folder '{folder}', so it was not read. {_REEXPORT}")
    return path


def download_from_hub(repo_id: str) -> Path:
    """The local folder of Hub repo `repo_id`, with only its config and weights downloaded."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise UserError(
            f"'{repo_id}' looks like a Hugging Face Hub repo id, and loading from the Hub needs huggingface_hub: "
            'pip install "pixel-lightning[hub]". (A zoo name, a folder or a .ckpt needs nothing more.)'
        ) from err
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # offline, unknown repo, gated, bad id: huggingface_hub raises many types
        raise UserError(
            f"Could not download the model '{repo_id}' from the Hugging Face Hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}). Check the repo id and your connection; "
            "offline, pass the path of a folder that holds its config.json and model.safetensors instead."
        ) from err


def model_card(checkpoint: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    """The config.json of a checkpoint's model: its hyper-parameters (the data's identity, without the
    machine's folders), the run's model and dataset names, and `figures`, what was measured of it."""
    hparams = dict(checkpoint["hyper_parameters"])
    if isinstance(hparams.get("data"), dict):  # where the data lay on the training machine is no one else's
        hparams["data"] = {key: value for key, value in hparams["data"].items() if key != "data_dir"}
    record = checkpoint.get("run_record") if isinstance(checkpoint.get("run_record"), dict) else {}
    names = {key: record[key] for key in ("model", "dataset") if isinstance(record.get(key), str)}
    return {"format": FORMAT, "names": names, "hyper_parameters": hparams, "figures": figures}


def save_model_folder(out_dir: Path, state: dict[str, torch.Tensor], card: dict[str, Any]) -> Path:
    """Write `model.safetensors` and `config.json` into `out_dir` (each atomically)."""
    from safetensors.torch import save

    from pixel_lightning.files import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    with atomic_write(out_dir / WEIGHTS_NAME, "the model's weights") as f:
        f.write(save(weights))
    with atomic_write(out_dir / CONFIG_NAME, "the model's config") as f:
        f.write((json.dumps(card, indent=2, allow_nan=False) + "\n").encode())
    return out_dir

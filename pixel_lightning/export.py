"""Write a checkpoint's model as a folder in the Hugging Face Hub layout (model.safetensors + config.json).

    python -m pixel_lightning.export logs/train/runs/<time>/checkpoints/epoch_029.ckpt my-model \\
        --record logs/eval/runs/<time>/record.json --first-images 500

The folder loads with `pixel_lightning.load_model("my-model")`, `sample.py pretrained=my-model` and
`eval.py pretrained=my-model`, and can be published with the Hub's own upload command
(`huggingface-cli upload <you>/<repo> my-model`). The weights are those the checkpoint's `state_dict`
holds (with EMA training, the averaged ones); `--raw-weights` takes the weights before averaging
(`current_model_state`), to measure what the average gives. The config's `figures` record what was
measured: the test figures of `--record` (an eval.py or training run record of these weights), and
the NLL of the first `--first-images` test images, computed here (a figure anyone can recheck in
seconds).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

import torch

import pixel_lightning  # noqa: F401  (registers the config resolvers)
from pixel_lightning.checkpoint import data_config, model_from_checkpoint, read_checkpoint
from pixel_lightning.data.first_images import first_test_images
from pixel_lightning.errors import CheckpointError, UserError
from pixel_lightning.pretrained import model_card, save_model_folder
from pixel_lightning.records import read_record

#: The run record's fields a model card keeps (the run's own figures; null when not measured).
RECORD_FIGURES = (
    "test_nll",
    "test_bpd",
    "epochs",
    "steps",
    "train_time_s",
    "train_images_per_s",
    "params",
    "device",
    "precision",
    "git_commit",
    "overrides",
    "task",
)


def first_images_nll(model, data: dict, data_dir: str, count: int, batch_size: int = 250) -> float:
    """Mean NLL in nats per image of `model` on the first `count` test images of `data`, in float64 sums."""
    images, labels = first_test_images(data, data_dir, count, "--first-images")
    total = 0.0
    with torch.no_grad():
        for first in range(0, count, batch_size):
            label = None if labels is None else labels[first : first + batch_size]
            total -= model.log_prob(images[first : first + batch_size], label).double().sum().item()
    return total / count


def export(
    ckpt: Path,
    out_dir: Path,
    record: Path | None = None,
    first_images: int = 0,
    data_dir: str = "data",
    raw_weights: bool = False,
    command: str | None = None,
    hardware: str | None = None,
    core_hours: float | None = None,
) -> dict[str, Any]:
    """Write the folder; returns its config."""
    checkpoint = read_checkpoint(ckpt)
    if raw_weights:
        if not isinstance(checkpoint.get("current_model_state"), dict):
            raise CheckpointError(
                f"--raw-weights asks for the weights before averaging, and '{ckpt}' holds none (it was not trained "
                "with weight averaging, callbacks.ema). Leave out --raw-weights."
            )
        checkpoint = dict(checkpoint, state_dict=checkpoint["current_model_state"])
    model = model_from_checkpoint(checkpoint, ckpt, sampling=True).eval()
    figures: dict[str, Any] = {"weights": "raw" if raw_weights else "state_dict", "exported": date.today().isoformat()}
    if record is not None:
        measured = read_record(record)
        figures["record"] = {key: measured.get(key) for key in RECORD_FIGURES}
        # A resume's ckpt_path names a file of the machine that trained it, not a setting of the recipe
        overrides = measured.get("overrides") or []
        figures["record"]["overrides"] = [o for o in overrides if not str(o).startswith("ckpt_path=")]
        figures["record"]["resumed"] = len(figures["record"]["overrides"]) < len(overrides)
    if first_images:
        nll = first_images_nll(model, data_config(checkpoint, ckpt), data_dir, first_images)
        figures[f"first_{first_images}_test_nll"] = nll
        figures[f"first_{first_images}_test_bpd"] = nll / (math.prod(model.image_shape) * math.log(2))
    if command:
        figures["command"] = command
    if hardware:
        figures["hardware"] = hardware
    if core_hours is not None:
        figures["core_hours"] = core_hours
    card = model_card(checkpoint, figures)
    save_model_folder(out_dir, model.state_dict(), card)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixel_lightning.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a .ckpt written by train.py")
    parser.add_argument("out_dir", type=Path, help="the folder to write (created)")
    parser.add_argument("--record", type=Path, help="a run record (record.json) of these weights' test")
    parser.add_argument("--first-images", type=int, default=0, help="also measure the NLL of this many test images")
    parser.add_argument("--data-dir", default=None, help="the datasets' folder (default: $PIXEL_DATA_DIR or data)")
    parser.add_argument("--raw-weights", action="store_true", help="the weights before averaging (EMA runs)")
    parser.add_argument("--command", help="the command that trained the model, kept in the card")
    parser.add_argument("--hardware", help="what it trained on, kept in the card (e.g. 'a 2-core x86 CPU, one thread')")
    parser.add_argument(
        "--core-hours", type=float, help="CPU core-hours of training, kept in the card, for a run that did not use "
        "one thread throughout (the record's train_time_s is wall time)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    data_dir = args.data_dir or os.environ.get("PIXEL_DATA_DIR", "data")
    try:
        if args.first_images < 0:
            raise UserError(f"--first-images must be 0 or more, got {args.first_images}.")
        if args.core_hours is not None and not args.core_hours > 0:
            raise UserError(f"--core-hours must be a positive number of hours, got {args.core_hours}.")
        card = export(
            args.ckpt, args.out_dir, args.record, args.first_images, data_dir, args.raw_weights, args.command,
            args.hardware, args.core_hours,
        )  # fmt: skip
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = {key: value for key, value in card["figures"].items() if key.startswith("first_")}
    print(f"Wrote {args.out_dir} ({', '.join(f'{k} {v:.4f}' for k, v in shown.items()) or 'no figures measured'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

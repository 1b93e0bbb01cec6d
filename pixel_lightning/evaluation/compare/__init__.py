"""The comparison of runs: every `record.json` under some folders -> evidence a reviewer accepts.

`python -m pixel_lightning.compare <folder> [<folder> ...] [--out <folder>]` (or, at the end of
every multirun, the Hydra callback `MultirunComparison` of conf/hydra/default.yaml) writes:

  comparison.md    the models, grouped by (model, dataset, other overridden settings) with the
                   mean ± std and n of every score over their seeds; rankings that say where
                   intervals overlap ("not separated at n=3"); time to quality; the source table
                   beside the measurement (verdict.py); then every run (failed ones last)
  comparison.csv   every run (row = run), then each group's mean and std rows
  comparison.png   learning curves against training time and images seen (seed mean, min-max
                   band), the GAN's KID curve, final bits/dim and KID with error bars, time to target
  samples_side_by_side.png   one row per model: its runs' sample grids, labelled

Each file is written atomically (files.atomic_write): a full disk leaves the earlier version. Runs
on several datasets are ranked per dataset, each with its own targets. The parts: runs.py (reading
records, untrusted), aggregate.py (groups, mean ± std, targets, time to target), verdict.py (rank
words and the source's claims), tables.py, plots.py. A malformed record is skipped with a warning;
if none is left, or the targets are unusable, or a file cannot be written, the command says so in
one paragraph and exits 2 (at the end of a multirun too; unusable targets before the first job).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from pixel_lightning.errors import UserError
from pixel_lightning.evaluation.compare.aggregate import aggregate, check_target, dataset_targets, with_times_to_target
from pixel_lightning.evaluation.compare.plots import plot, side_by_side
from pixel_lightning.evaluation.compare.runs import comparison_rows, read_records
from pixel_lightning.evaluation.compare.tables import comparison_markdown, fid_header, model_table, run_table, write_csv
from pixel_lightning.files import atomic_write
from pixel_lightning.records import RECORD_NAME

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

__all__ = ["OUTPUTS", "MultirunComparison", "comparison_rows", "main", "read_records", "write_comparison"]

OUTPUTS = ("comparison.md", "comparison.csv", "comparison.png", "samples_side_by_side.png")


def write_comparison(
    folders: Sequence[str | Path], out: str | Path | None = None, target_bpd: Any = None, target_kid: Any = None
) -> dict[str, Any]:
    """Write the four files into `out` (by default the only folder); returns the rows, groups,
    targets (per dataset) and the Markdown text. A target is a number (runs on one dataset) or
    {dataset: number} (aggregate.check_target); each dataset without one gets its worst final value."""
    out = Path(out if out is not None else folders[0])
    rows = comparison_rows(read_records(*folders))
    if not rows:
        raise UserError(
            f"No valid {RECORD_NAME} under {', '.join(map(str, folders))} (any skipped ones are listed "
            "above, with why). Pass the folder of a multirun or of train.py/eval.py runs."
        )
    targets = dataset_targets(rows, target_bpd, target_kid)
    rows = with_times_to_target(rows, targets)
    groups = aggregate(rows)
    text = comparison_markdown(rows, groups, targets, folders)
    with atomic_write(out / "comparison.md", "the comparison") as stream:
        stream.write(text.encode())
    table = io.StringIO(newline="")
    write_csv(rows, groups, table)
    with atomic_write(out / "comparison.csv", "the comparison's table") as stream:
        stream.write(table.getvalue().encode())
    with atomic_write(out / "comparison.png", "the comparison's plots") as stream:
        plot(groups, targets, stream, fid_header(rows).replace("FID", "KID", 1))
    with atomic_write(out / "samples_side_by_side.png", "the comparison's samples") as stream:
        side_by_side(rows, stream)
    return {"rows": rows, "groups": groups, "targets": targets, "text": text, "out": out}


def log_to_wandb(comparison: dict[str, Any]) -> None:
    """Log the model and run tables, the curves (one table row per point), the verdict and the
    pictures to W&B in a run of its own, in the runs' group and mode (offline unless the runs were
    online); nothing if no run used W&B. The runs' own `curve/*` histories overlay in that group."""
    rows, out = comparison["rows"], comparison["out"]
    runs = [row["wandb"] for row in rows if row["wandb"] and row["wandb"].get("mode") != "disabled"]
    if not runs:
        return
    import wandb

    groups = {run.get("group") for run in runs}
    mode = "online" if any(run.get("mode") in ("online", "run") for run in runs) else "offline"
    curves = [
        [
            row["model"],
            row["seed"],
            row["run_dir"],
            *(point[key] for key in ("time_s", "images", "steps", "bpd", "kid")),
        ]
        for row in rows
        for point in row["curve"] or ()
    ]
    verdict = comparison["text"].split("## The source table, measured", 1)[1].split("## Runs", 1)[0]
    run = wandb.init(
        project=runs[0].get("project"),
        group=groups.pop() if len(groups) == 1 else None,
        job_type="compare",
        name=f"compare-{out.name}",
        dir=str(out),
        mode=mode,
    )
    try:
        run.log(
            {
                "comparison": wandb.Table(*run_table(rows)),
                "comparison_models": wandb.Table(*model_table(comparison["groups"], rows)),
                "curves": wandb.Table(
                    columns=["model", "seed", "run", "time_s", "images", "steps", "bpd", "kid"], data=curves
                ),
                "verdict": wandb.Html(f"<h2>The source table, measured</h2><pre>{_escape(verdict)}</pre>"),
                "comparison_plot": wandb.Image(str(out / "comparison.png")),
                "samples_side_by_side": wandb.Image(str(out / "samples_side_by_side.png")),
            }
        )
    finally:
        run.finish()


def comparison_loggers(config: DictConfig, out: Path) -> list[Logger]:
    """The jobs' TensorBoard and MLflow loggers (the multirun's `logger` group), for the comparison:
    TensorBoard's events in <out>/tensorboard (beside the jobs' <job>/tensorboard), MLflow's run
    `compare-<out name>` in the jobs' experiment and store."""
    # Imported here: Hydra builds this callback in every command, and sample.py must not load Lightning.
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger

    loggers: list[Logger] = []
    for entry in (OmegaConf.select(config, "logger", default=None) or {}).values():
        target = str((entry or {}).get("_target_", ""))
        if target.endswith("TensorBoardLogger"):
            loggers.append(
                TensorBoardLogger(save_dir=str(out), name="tensorboard", version="", default_hp_metric=False)
            )
        elif target.endswith("MLFlowLogger"):
            loggers.append(
                MLFlowLogger(
                    experiment_name=entry.experiment_name,
                    tracking_uri=entry.tracking_uri,
                    artifact_location=entry.get("artifact_location"),
                    run_name=f"compare-{out.name}",
                    tags={"job_type": "compare"},
                )
            )
    return loggers


def log_to_loggers(comparison: dict[str, Any], loggers: list[Logger]) -> None:
    """The pictures (comparison/comparison and comparison/samples_side_by_side) and the Markdown
    (tables, rankings, verdict) to each logger, then close it."""
    from pixel_lightning.loggers import log_image, log_text  # loads Lightning: see comparison_loggers

    for name in ("comparison", "samples_side_by_side"):
        path = comparison["out"] / f"{name}.png"
        if path.is_file():
            with Image.open(path) as picture:
                log_image(loggers, f"comparison/{name}", np.asarray(picture.convert("RGB")), 0, caption=name)
    log_text(loggers, "comparison", comparison["text"])
    for logger in loggers:
        logger.finalize("success")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class MultirunComparison(Callback):
    """Hydra callback: at the end of every multirun, write the comparison into the sweep folder,
    print it and log it to W&B (see log_to_wandb) and to the jobs' TensorBoard and MLflow loggers
    (comparison_loggers), with the targets of the `compare` node.
    Multiruns without records (sample.py) are left alone. Unusable targets stop the multirun
    before its first job; a comparison that cannot be written ends it with exit status 2. Either
    is one paragraph (Hydra would turn an error of a callback into a warning and exit 0)."""

    def __init__(self, wandb: bool = True):
        self.wandb = wandb

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        targets = OmegaConf.select(config, "compare", default=None) or {}
        try:
            for key in ("target_bpd", "target_kid"):
                check_target(f"compare.{key}", targets.get(key))
        except UserError as err:
            _exit(err)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        if not any(folder.rglob(RECORD_NAME)):
            return
        targets = OmegaConf.select(config, "compare", default=None) or {}
        try:
            comparison = write_comparison(
                [folder], target_bpd=targets.get("target_bpd"), target_kid=targets.get("target_kid")
            )
        except UserError as err:
            _exit(f"{err} The runs are kept: compare them again with python -m pixel_lightning.compare {folder}.")
        print(
            f"\nComparison of {len(comparison['rows'])} runs (also {', '.join(OUTPUTS)} in {folder}):\n"
            f"{comparison['text']}",
            flush=True,
        )
        if self.wandb:
            log_to_wandb(comparison)
        log_to_loggers(comparison, comparison_loggers(config, folder))


def _exit(message: Any) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _targets(option: str, given: list[str] | None) -> float | dict[str, float] | None:
    """`--target-bpd 0.2` (one dataset) or `--target-bpd mnist=1.1 --target-bpd cifar10=3.5`, as
    write_comparison takes it (values checked there)."""
    if not given:
        return None
    if len(given) == 1 and "=" not in given[0]:
        try:
            return float(given[0])
        except ValueError:
            raise UserError(
                f"{option} {given[0]} is not a number: give a target such as {option} 0.2, or one per "
                f"dataset, {option} binarized_mnist=0.2 {option} cifar10=3.5."
            ) from None
    pairs = [value.split("=", 1) for value in given]
    if any(len(pair) != 2 for pair in pairs):
        raise UserError(
            f"{option} {' '.join(given)}: with several targets, name each one's dataset: "
            f"{option} binarized_mnist=0.2 {option} cifar10=3.5."
        )
    targets = {}
    for dataset, value in pairs:
        try:
            targets[dataset] = float(value)
        except ValueError:
            raise UserError(f"{option} {dataset}={value}: {value} is not a number.") from None
    return targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pixel_lightning.compare",
        description="Compare the runs (record.json files) under one or more folders.",
    )
    parser.add_argument("folders", nargs="+", help="folders with record.json files, e.g. multirun folders")
    parser.add_argument("--out", help="where to write the comparison (needed with several folders)")
    parser.add_argument(
        "--target-bpd",
        action="append",
        metavar="[DATASET=]VALUE",
        help="time to quality: bits/dim target, one per dataset (default: its worst final value)",
    )
    parser.add_argument(
        "--target-kid",
        action="append",
        metavar="[DATASET=]VALUE",
        help="time to quality: KID target, one per dataset (default: its worst final value)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if len(args.folders) > 1 and args.out is None:
            raise UserError(
                f"{len(args.folders)} folders were given but no --out: name the folder to write the "
                "comparison into, e.g. --out logs/compare."
            )
        missing = [folder for folder in args.folders if not Path(folder).is_dir()]
        if missing:
            raise UserError(f"No such folder: {', '.join(missing)}. Pass folders that hold runs (record.json files).")
        comparison = write_comparison(
            args.folders, args.out, _targets("--target-bpd", args.target_bpd), _targets("--target-kid", args.target_kid)
        )
    except UserError as err:
        _exit(err)
    print(comparison["text"], end="")
    print(f"Wrote {', '.join(OUTPUTS)} into {comparison['out']}")

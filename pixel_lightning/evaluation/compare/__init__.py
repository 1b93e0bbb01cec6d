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
  samples_side_by_side.png   each run's sample grid under its name

The parts: runs.py (reading records, untrusted), aggregate.py (groups, mean ± std, time to
target), verdict.py (rank words and the source's claims), tables.py, plots.py. A malformed record
is skipped with a warning; if none is left the command says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pixel_lightning.errors import OutputError, UserError
from pixel_lightning.evaluation.compare.aggregate import aggregate, default_targets, with_times_to_target
from pixel_lightning.evaluation.compare.plots import plot, side_by_side
from pixel_lightning.evaluation.compare.runs import comparison_rows, read_records
from pixel_lightning.evaluation.compare.tables import comparison_markdown, fid_header, model_table, run_table, write_csv
from pixel_lightning.records import RECORD_NAME

__all__ = ["OUTPUTS", "MultirunComparison", "comparison_rows", "main", "read_records", "write_comparison"]

OUTPUTS = ("comparison.md", "comparison.csv", "comparison.png", "samples_side_by_side.png")


def write_comparison(folders: Sequence[str | Path], out: str | Path | None = None, target_bpd: float | None = None,
                     target_kid: float | None = None) -> dict[str, Any]:
    """Write the four files into `out` (by default the only folder); returns the rows, groups,
    targets and the Markdown text."""
    out = Path(out if out is not None else folders[0])
    rows = comparison_rows(read_records(*folders))
    if not rows:
        raise UserError(f"No valid {RECORD_NAME} under {', '.join(map(str, folders))} (any skipped ones are listed "
                        "above, with why). Pass the folder of a multirun or of train.py/eval.py runs.")
    targets = default_targets(rows)
    targets = {"bpd": targets["bpd"] if target_bpd is None else target_bpd,
               "kid": targets["kid"] if target_kid is None else target_kid}
    rows = with_times_to_target(rows, targets)
    groups = aggregate(rows)
    text = comparison_markdown(rows, groups, targets, folders)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(text)
        write_csv(rows, groups, out / "comparison.csv")
        plot(groups, targets, out / "comparison.png", fid_header(rows).replace("FID", "KID", 1))
        side_by_side(rows, out / "samples_side_by_side.png")
    except OSError as err:
        raise OutputError(f"Could not write the comparison into {out}: {err.strerror or err}. Make that folder "
                          "writable or pass another one (--out <folder>).") from err
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
    curves = [[row["model"], row["seed"], row["run_dir"], *(point[key] for key in ("time_s", "images", "steps", "bpd",
                                                                                     "kid"))]
              for row in rows for point in row["curve"] or ()]
    verdict = comparison["text"].split("## The source table, measured", 1)[1].split("## Runs", 1)[0]
    run = wandb.init(project=runs[0].get("project"), group=groups.pop() if len(groups) == 1 else None,
                     job_type="compare", name=f"compare-{out.name}", dir=str(out), mode=mode)
    try:
        run.log({
            "comparison": wandb.Table(*run_table(rows)),
            "comparison_models": wandb.Table(*model_table(comparison["groups"], rows)),
            "curves": wandb.Table(columns=["model", "seed", "run", "time_s", "images", "steps", "bpd", "kid"],
                                  data=curves),
            "verdict": wandb.Html(f"<h2>The source table, measured</h2><pre>{_escape(verdict)}</pre>"),
            "comparison_plot": wandb.Image(str(out / "comparison.png")),
            "samples_side_by_side": wandb.Image(str(out / "samples_side_by_side.png")),
        })
    finally:
        run.finish()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class MultirunComparison(Callback):
    """Hydra callback: at the end of every multirun, write the comparison into the sweep folder,
    print it and log it to W&B (see log_to_wandb), with the targets of the `compare` node.
    Multiruns without records (sample.py) are left alone."""

    def __init__(self, wandb: bool = True):
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        if not any(folder.rglob(RECORD_NAME)):
            return
        targets = OmegaConf.select(config, "compare", default=None) or {}
        comparison = write_comparison([folder], target_bpd=targets.get("target_bpd"),
                                      target_kid=targets.get("target_kid"))
        print(f"\nComparison of {len(comparison['rows'])} runs (also {', '.join(OUTPUTS)} in {folder}):\n"
              f"{comparison['text']}", flush=True)
        if self.wandb:
            log_to_wandb(comparison)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pixel_lightning.compare",
                                     description="Compare the runs (record.json files) under one or more folders.")
    parser.add_argument("folders", nargs="+", help="folders with record.json files, e.g. multirun folders")
    parser.add_argument("--out", help="where to write the comparison (needed with several folders)")
    parser.add_argument("--target-bpd", type=float, help="time to quality: bits/dim target (default: worst final)")
    parser.add_argument("--target-kid", type=float, help="time to quality: KID target (default: worst final)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if len(args.folders) > 1 and args.out is None:
            raise UserError(f"{len(args.folders)} folders were given but no --out: name the folder to write the "
                            "comparison into, e.g. --out logs/compare.")
        missing = [folder for folder in args.folders if not Path(folder).is_dir()]
        if missing:
            raise UserError(f"No such folder: {', '.join(missing)}. Pass folders that hold runs (record.json files).")
        comparison = write_comparison(args.folders, args.out, args.target_bpd, args.target_kid)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(comparison["text"], end="")
    print(f"Wrote {', '.join(OUTPUTS)} into {comparison['out']}")

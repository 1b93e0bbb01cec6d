"""The comparison of runs: every `record.json` under a folder -> a table, a plot and a picture.

`python -m pixel_lightning.compare <folder>` (or, at the end of every multirun, the Hydra
callback `MultirunComparison` of conf/hydra/default.yaml) writes into the folder:

  comparison.md, comparison.csv   one row per run: finished runs by dataset, unconditional before
                                  class-conditional (whose NLL is -log p(x | y), marked "| y"),
                                  then test bits/dim
                                  (runs without a likelihood after those with one), then FID;
                                  failed and unfinished runs last, with their status
  comparison.png                  test bits/dim against training time, and FID against training
                                  time, one labelled point per run
  samples_side_by_side.png        each run's sample grid under its model name

Training speed is relative to the fastest run of the same dataset (1.00x); the FID column is
headed by its label ("FID (<classifier>, test acc <x>%)"), as only scores of one classifier compare.
"""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont

from pixel_lightning.errors import UserError
from pixel_lightning.records import RECORD_NAME, read_record

log = logging.getLogger(__name__)

OUTPUTS = ("comparison.md", "comparison.csv", "comparison.png", "samples_side_by_side.png")


def read_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every record under `folder`, each with `run_dir` (its folder relative to `folder`)."""
    folder = Path(folder)
    records = []
    for path in sorted(folder.rglob(RECORD_NAME)):
        record = read_record(path)
        record["run_dir"] = str(path.parent.relative_to(folder)) or "."
        records.append(record)
    return records


def _sort_key(record: dict[str, Any]) -> tuple:
    finished = record["status"] == "finished"
    missing = float("inf")
    return (not finished, str(record["dataset"]), str(record["condition"] or ""),
            record["test_bpd"] if record["test_bpd"] is not None else missing,
            record["fid"] if record["fid"] is not None else missing, str(record["model"]), record["run_dir"])


def comparison_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records in table order, each with `relative_speed`: its training images/s over the
    fastest run's of the same dataset (None where not measured)."""
    fastest: dict[str, float] = {}
    for record in records:
        speed = record["train_images_per_s"]
        if speed:
            fastest[record["dataset"]] = max(speed, fastest.get(record["dataset"], 0.0))
    rows = []
    for record in sorted(records, key=_sort_key):
        speed = record["train_images_per_s"]
        rows.append(record | {"relative_speed": speed / fastest[record["dataset"]] if speed else None})
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def fid_header(rows: list[dict[str, Any]]) -> str:
    labels = sorted({row["fid_label"] for row in rows if row["fid_label"]})
    return labels[0] if len(labels) == 1 else "FID (classifier in each cell)"


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells of the comparison table."""
    fid_column = fid_header(rows)
    mixed = fid_column.startswith("FID (classifier")
    columns = ["model", "dataset", "status", "params", "epochs", "steps", "train time (s)", "train images/s",
               "training speed", "test NLL (nats)", "test bits/dim", "sampling (s/image)", fid_column,
               "IS (classifier)", "label accuracy", "peak memory (MB)", "device", "run"]
    cells = []
    for row in rows:
        fid = _fmt(row["fid"], ".2f") + (f" [{row['fid_label']}]" if mixed and row["fid_label"] else "")
        status = row["status"] + (f": {row['error']}" if row["error"] else "")
        given = " (| y)" if row["condition"] == "class" and row["test_nll"] is not None else ""  # -log p(x | y)
        memory = _fmt(row["peak_memory_mb"], ".0f") + (" (CUDA)" if row["peak_memory_kind"] == "cuda_max_allocated"
                                                         else "")
        cells.append([
            str(row["model"]), str(row["dataset"]), status, _fmt(row["params"], ","), _fmt(row["epochs"], ".2f"),
            _fmt(row["steps"], "d"), _fmt(row["train_time_s"], ".0f"), _fmt(row["train_images_per_s"], ".1f"),
            _fmt(row["relative_speed"], ".2f") + ("x" if row["relative_speed"] is not None else ""),
            _fmt(row["test_nll"], ".2f") + given, _fmt(row["test_bpd"], ".4f") + given,
            _fmt(row["sample_time_per_image_s"], ".3g"), fid, _fmt(row["classifier_score"], ".2f"),
            _fmt(row["label_accuracy"], ".1%"), memory, str(row["device"] or "–"), row["run_dir"],
        ])
    return columns, cells


def markdown(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("model", "dataset", "status", "error", "params", "epochs", "steps", "train_time_s",
              "train_images_per_s", "relative_speed", "condition", "test_nll", "test_bpd", "sample_time_per_image_s",
              "fid", "fid_label", "classifier_score", "label_accuracy", "peak_memory_mb", "peak_memory_kind", "device",
              "precision", "seed", "git_commit", "sample_grid", "overrides", "run_dir")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            values = [" ".join(row[f]) if f == "overrides" and row[f] else row[f] for f in CSV_FIELDS]
            writer.writerow(["" if value is None else value for value in values])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test bits/dim and FID against training time, one labelled point per finished run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    finished = [row for row in rows if row["status"] == "finished" and row["train_time_s"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "test_bpd", "test bits/dim"), (axes[1], "fid", fid_header(rows))):
        points = [row for row in finished if row[key] is not None]
        for row in points:
            ax.scatter(row["train_time_s"], row[key])
            given = " | y" if row["condition"] == "class" else ""  # a conditional NLL is -log p(x | y)
            ax.annotate(f"{row['model']} ({row['dataset']}{given})", (row["train_time_s"], row[key]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        left_out = [row["model"] for row in finished if row[key] is None]
        ax.set_title(label + (f"\n(not measured: {', '.join(left_out)})" if left_out else ""), fontsize=9)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(label.split(" (")[0])
        ax.grid(alpha=0.3)
        ax.margins(0.25)  # room for the labels
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def side_by_side(rows: list[dict[str, Any]], folder: Path, path: Path, scale: int = 3) -> None:
    """Each run's sample grid (scaled up `scale` times) under its model name, in table order."""
    font = ImageFont.load_default(size=14)
    panels = []
    for row in rows:
        grid_path = _grid_path(row, folder)
        if grid_path is None:
            continue
        grid = Image.open(grid_path).convert("RGB")
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
        title = f"{row['model']} ({row['dataset']})"
        panel = Image.new("RGB", (max(grid.width, 8 * len(title) + 8), grid.height + 24), "white")
        ImageDraw.Draw(panel).text((4, 4), title, fill="black", font=font)
        panel.paste(grid, (0, 24))
        panels.append(panel)
    if not panels:
        panels = [Image.new("RGB", (240, 24), "white")]
        ImageDraw.Draw(panels[0]).text((4, 4), "no sample grids recorded", fill="black", font=font)
    gap = 12
    picture = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1),
                                max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        picture.paste(panel, (x, 0))
        x += panel.width + gap
    picture.save(path)


def _grid_path(row: dict[str, Any], folder: Path) -> Path | None:
    """The run's grid: recorded relative to its run folder (or absolute), if the file is there."""
    if not row["sample_grid"]:
        return None
    path = Path(row["sample_grid"])
    path = path if path.is_absolute() else folder / row["run_dir"] / path
    return path if path.is_file() else None


def write_comparison(folder: str | Path) -> tuple[list[dict[str, Any]], str]:
    """Write the four comparison files into `folder`; returns the rows and the Markdown table."""
    folder = Path(folder)
    rows = comparison_rows(read_records(folder))
    if not rows:
        raise UserError(f"No {RECORD_NAME} under {folder}. Pass the folder of a multirun or of train.py/eval.py runs.")
    text = markdown(*table(rows))
    (folder / "comparison.md").write_text(text)
    write_csv(rows, folder / "comparison.csv")
    plot(rows, folder / "comparison.png")
    side_by_side(rows, folder, folder / "samples_side_by_side.png")
    return rows, text


def log_to_wandb(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Log the table, the plot and the picture to W&B in a run of its own, in the runs' group
    and mode (offline unless the runs were online); nothing if no run used W&B."""
    runs = [row["wandb"] for row in rows if row["wandb"] and row["wandb"].get("mode") != "disabled"]
    if not runs:
        return
    import wandb

    groups = {run["group"] for run in runs}
    mode = "online" if any(run["mode"] in ("online", "run") for run in runs) else "offline"
    columns, cells = table(rows)
    run = wandb.init(project=runs[0]["project"], group=groups.pop() if len(groups) == 1 else None,
                     job_type="compare", name=f"compare-{folder.name}", dir=str(folder), mode=mode)
    try:
        run.log({
            "comparison": wandb.Table(columns=columns, data=cells),
            "comparison_plot": wandb.Image(str(folder / "comparison.png")),
            "samples_side_by_side": wandb.Image(str(folder / "samples_side_by_side.png")),
        })
    finally:
        run.finish()


class MultirunComparison(Callback):
    """Hydra callback: at the end of every multirun, write the comparison into the sweep folder,
    print the table and log it to W&B (see log_to_wandb). Multiruns without records (sample.py)
    are left alone."""

    def __init__(self, wandb: bool = True):
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        if not any(folder.rglob(RECORD_NAME)):
            return
        rows, text = write_comparison(folder)
        print(f"\nComparison of {len(rows)} runs (also {', '.join(OUTPUTS)} in {folder}):\n{text}", flush=True)
        if self.wandb:
            log_to_wandb(folder, rows)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m pixel_lightning.compare <folder with record.json files, e.g. a multirun folder>",
              file=sys.stderr)
        sys.exit(2)
    try:
        _, text = write_comparison(args[0])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(text, end="")
    print(f"Wrote {', '.join(OUTPUTS)} into {args[0]}")


if __name__ == "__main__":
    main()

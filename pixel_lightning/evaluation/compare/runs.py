"""The runs of a comparison: every valid `record.json` under some folders, one row each.

A record is read as untrusted input: a file that is not a regular file (a FIFO would block the
read), not JSON, not an object, lacks a required field, holds a value of the wrong kind
(records.check_record) or a learning curve whose time or images run backwards or below zero is
skipped with a one-line warning naming it and why, and the others are compared. A sample grid is
only ever read from inside its own run's folder.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from pixel_lightning.records import RECORD_NAME, check_record


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def read_records(*folders: str | Path) -> list[dict[str, Any]]:
    """Every valid record under `folders`, each with `run_dir` (its folder relative to the folder
    given, prefixed by that folder when there are several) and `run_path` (its absolute folder)."""
    records = []
    for folder in map(Path, folders):
        for path in sorted(folder.rglob(RECORD_NAME)):
            try:
                record = check_curve(check_record(json.loads(read_regular_file(path))))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
                why = f"not valid JSON ({err.msg}, line {err.lineno})" if isinstance(err, json.JSONDecodeError) else err
                warn(f"skipped {path}: {why}")
                continue
            relative = str(path.parent.relative_to(folder)) or "."
            record["run_dir"] = str(Path(folder, relative)) if len(folders) > 1 else relative
            record["run_path"] = path.parent.resolve()
            records.append(record)
    return records


def read_regular_file(path: Path) -> str:
    """The text of `path`, or a ValueError if it is not a regular file: opened without blocking, so
    that a FIFO (or a device) named record.json is refused instead of waiting for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise ValueError("not a regular file")
        return stream.read().decode()


def check_curve(record: dict[str, Any]) -> dict[str, Any]:
    """The record, or a ValueError if a learning-curve point's training time or images seen is
    negative or lower than the point's before (time to target would read the curve wrongly)."""
    for field in ("time_s", "images"):
        previous = 0
        for i, point in enumerate(record["curve"] or ()):
            if point[field] < previous:
                raise ValueError(
                    f"curve[{i}].{field} is {point[field]}, "
                    + ("below 0" if previous == 0 else f"below the {previous} of the point before")
                )
            previous = point[field]
    return record


def _sort_key(record: dict[str, Any]) -> tuple:
    finished = record["status"] == "finished"
    missing = float("inf")
    return (
        not finished,
        str(record["dataset"]),
        record["test_bpd"] if record["test_bpd"] is not None else missing,
        record["kid"] if record["kid"] is not None else missing,
        record["fid"] if record["fid"] is not None else missing,
        str(record["model"]),
        record["run_dir"],
    )


def comparison_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records in table order (finished first, by dataset, test bits/dim, KID, FID), each with
    `relative_speed`: its training images/s over the fastest run's of the same dataset (None where
    not measured)."""
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


def grid_path(row: dict[str, Any]) -> Path | None:
    """The run's sample grid, if the record names a file inside the run's own folder."""
    if not row["sample_grid"]:
        return None
    run = Path(row["run_path"])
    path = (run / row["sample_grid"]).resolve()
    if not path.is_relative_to(run):
        warn(f"ignored the sample grid of {row['run_dir']}: {row['sample_grid']} is outside its run folder")
        return None
    return path if path.is_file() else None

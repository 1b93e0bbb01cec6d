"""Seeds into evidence: runs grouped by (model, dataset, other overridden settings), each group's
mean, standard deviation and n, and the time each run took to reach a quality target.

Pure functions of record dicts (compare/runs.py), so the tests check them with exact numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pixel_lightning.errors import UserError

# Overrides that vary within a group: the seed is what a group averages over; the model and the
# dataset are in the key already (as the record's names).
NOT_SETTINGS = ("seed", "model", "data")
# Record fields summarised over a group's finished runs.
SUMMARY_FIELDS = (
    "params",
    "epochs",
    "steps",
    "train_time_s",
    "train_images_per_s",
    "test_nll",
    "test_bpd",
    "sample_time_per_image_s",
    "fid",
    "classifier_score",
    "kid",
    "classes_covered",
    "label_accuracy",
    "peak_memory_mb",
)
# What time to quality adds to each run: (field, the curve's quantity, the x-axis).
TARGET_FIELDS = (
    ("time_to_bpd_s", "bpd", "time_s"),
    ("images_to_bpd", "bpd", "images"),
    ("time_to_kid_s", "kid", "time_s"),
    ("images_to_kid", "kid", "images"),
)


@dataclass(frozen=True)
class Stat:
    """Mean and standard deviation (n - 1 in the denominator; None for n = 1) of n values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def interval(self) -> tuple[float, float] | None:
        """mean ± std, or None when one value gives no interval."""
        return None if self.std is None else (self.mean - self.std, self.mean + self.std)


def settings(record: dict[str, Any]) -> tuple[str, ...]:
    """The run's overridden settings that define its group: all but seed, model and data."""
    kept = []
    for override in record["overrides"] or ():
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in NOT_SETTINGS:
            kept.append(override.replace("\\", ""))  # Hydra's escapes (00\:01\:00) are no part of the value
    return tuple(sorted(kept))


def group_key(record: dict[str, Any]) -> tuple:
    """A class-conditional run (its NLL is -log p(x | y)) never shares a group with an unconditional one."""
    return str(record["model"]), str(record["dataset"]), record["condition"], settings(record)


def final_value(curve: list[dict[str, Any]] | None, key: str) -> float | None:
    values = [point[key] for point in curve or () if point.get(key) is not None]
    return values[-1] if values else None


def time_to_target(curve: list[dict[str, Any]] | None, key: str, target: float, x: str = "time_s") -> float | None:
    """Where the curve's `key` (bpd or kid, lower is better) first reaches `target`, on the axis
    `x` (time_s or images), linearly interpolated between the two points around the crossing;
    the first point's own x if it is already there; None if the curve never gets there."""
    previous = None
    for point in curve or ():
        value = point.get(key)
        if value is None:
            continue
        if value <= target:
            if previous is None:
                return float(point[x])
            fraction = (previous[key] - target) / (previous[key] - value)
            return float(previous[x] + fraction * (point[x] - previous[x]))
        previous = point
    return None


def check_target(option: str, value: Any, dataset: str | None = None) -> float | dict[str, float] | None:
    """A time-to-quality target as given to `option` (compare.target_bpd or compare.target_kid):
    None, one finite number, or {dataset: finite number}; anything else (text, NaN, infinity, a
    bits/dim of 0 or below) is a UserError."""
    key = option.rsplit("_", 1)[-1]  # bpd or kid
    quantity = {"bpd": "bits/dim", "kid": "KID"}[key]
    if value is None:
        return None
    if isinstance(value, Mapping) and dataset is None:
        return {str(name): check_target(option, number, str(name)) for name, number in value.items()}
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or (key == "bpd" and number <= 0):
        given = f"{option}={value}" if dataset is None else f"{option}.{dataset}={value}"
        raise UserError(
            f"{given} is not a usable {quantity} target: give a finite number"
            + (" above 0" if key == "bpd" else "")
            + f", one per dataset ({option}={{binarized_mnist: 0.2, cifar10: 3.5}}), or null for each dataset's worst "
            f"final value (python -m pixel_lightning.compare: --target-{key} [DATASET=]VALUE)."
        )
    return float(number)


def dataset_targets(rows: list[dict[str, Any]], bpd: Any = None, kid: Any = None) -> dict[str, dict[str, float | None]]:
    """dataset -> {"bpd", "kid"}: the targets given (check_target), else the dataset's worst final
    values: the last curve bits/dim of its finished likelihood runs and the final KID of its
    finished runs, so that every run of a dataset reaches its bits/dim target. Bits/dim and KID
    are not comparable across datasets, so one number for several datasets is a UserError."""
    datasets = sorted({str(row["dataset"]) for row in rows})
    given = {"bpd": check_target("compare.target_bpd", bpd), "kid": check_target("compare.target_kid", kid)}
    for key, value in given.items():
        if isinstance(value, float) and len(datasets) > 1:
            raise UserError(
                f"compare.target_{key}={value:g} is one target for runs on {len(datasets)} datasets "
                f"({', '.join(datasets)}), whose {key} are not comparable: give one per dataset, e.g. "
                f"compare.target_{key}={{{datasets[0]}: ..., {datasets[1]}: ...}} (python -m pixel_lightning.compare "
                f"<folder> --target-{key} {datasets[0]}=<value> ...), or leave it null."
            )
    targets = {}
    for dataset in datasets:
        finished = [row for row in rows if row["status"] == "finished" and str(row["dataset"]) == dataset]
        bpds = [value for row in finished if (value := final_value(row["curve"], "bpd")) is not None]
        kids = [row["kid"] for row in finished if row["kid"] is not None]
        worst = {"bpd": max(bpds) if bpds else None, "kid": max(kids) if kids else None}
        targets[dataset] = {
            key: value.get(dataset, worst[key]) if isinstance(value, dict) else worst[key] if value is None else value
            for key, value in given.items()
        }
    return targets


def with_times_to_target(
    rows: list[dict[str, Any]], targets: dict[str, dict[str, float | None]]
) -> list[dict[str, Any]]:
    """Each row with TARGET_FIELDS, against its dataset's `targets` (dataset_targets): None where
    the target or the curve is missing, "not reached" where the curve never got to the target."""
    timed = []
    for row in rows:
        row, target = dict(row), targets[str(row["dataset"])]
        for field, key, x in TARGET_FIELDS:
            has_curve = final_value(row["curve"], key) is not None
            reached = (
                time_to_target(row["curve"], key, target[key], x) if has_curve and target[key] is not None else None
            )
            row[field] = "not reached" if has_curve and target[key] is not None and reached is None else reached
        timed.append(row)
    return timed


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per group, in the order of the rows' first appearance: model, dataset, settings,
    runs (all), n (finished runs), failed, diverged, and a Stat (or None) per summarised field over
    the finished runs. A target field is "not reached" if any finished run of the group missed it."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    summaries = []
    for (model, dataset, condition, overridden), runs in groups.items():
        finished = [run for run in runs if run["status"] == "finished"]
        summary = {
            "model": model,
            "dataset": dataset,
            "condition": condition,
            "settings": overridden,
            "runs": runs,
            "n": len(finished),
            "failed": sum(run["status"] == "failed" for run in runs),
            "diverged": sum(map(diverged, runs)),
            "seeds": sorted({run["seed"] for run in runs if run["seed"] is not None}),
        }
        for field in SUMMARY_FIELDS:
            summary[field] = Stat.of([run[field] for run in finished])
        for field, _, _ in TARGET_FIELDS:
            values = [run.get(field) for run in finished]
            summary[field] = "not reached" if "not reached" in values else Stat.of(values)
        summary["final_curve_bpd"] = Stat.of([final_value(run["curve"], "bpd") for run in finished])
        summaries.append(summary)
    return summaries


def diverged(record: dict[str, Any]) -> bool:
    """A run the divergence guard stopped (callbacks/divergence.py: "Training diverged ...")."""
    return record["status"] == "failed" and "diverged" in (record["error"] or "")


def relative_std(stat: Stat | None) -> float | None:
    """std / mean: the spread over seeds on the score's own scale (None without two values)."""
    if stat is None or stat.std is None or stat.mean == 0 or not math.isfinite(stat.mean):
        return None
    return stat.std / abs(stat.mean)

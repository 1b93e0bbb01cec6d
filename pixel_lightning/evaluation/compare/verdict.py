"""The source table, measured: rank words derived from the measured order, the source's claims
beside them, and whether two models are separated at all.

The project's source table (the PixelRNN comparison it set out to check) claims: training time
Row LSTM fast, Diagonal BiLSTM medium, GAN slow; sample quality Row LSTM medium-low, Diagonal
BiLSTM medium-high, GAN high; and the GAN unstable. A model's measured word comes from its position
in the measured order (thirds: fast/medium/slow); the positions it could hold given the intervals
(mean ± std over seeds) that overlap its own give the words it could have. A claim "agrees" when
every possible word is claimed, "disagrees" when none is, and is "not separated" otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from pixel_lightning.evaluation.compare.aggregate import Stat, relative_std

WORDS = {
    "time": ("fast", "medium", "slow"),
    "quality": ("high", "medium", "low"),
    "stability": ("stable", "medium", "unstable"),
}
CLAIMS = {  # model -> row -> the words the source's claim allows
    "row_lstm": {"time": ("fast",), "quality": ("medium", "low")},
    "diagonal_bilstm": {"time": ("medium",), "quality": ("medium", "high")},
    "dcgan": {"time": ("slow",), "quality": ("high",), "stability": ("unstable",)},
}
ROW_TITLES = {
    "time": "training time (time to target)",
    "quality": "sample quality (KID)",
    "stability": "stability (std over seeds of the final KID / mean; diverged runs)",
}


def word(position: int, count: int, words: tuple[str, str, str]) -> str:
    """The word of a 0-based position among `count` ordered values: first, middle or last third."""
    if count == 1:
        return words[1]
    fraction = position / (count - 1)
    return words[0] if fraction < 1 / 3 else words[2] if fraction > 2 / 3 else words[1]


def _bounds(stat: Stat) -> tuple[float, float]:
    interval = stat.interval()
    return interval if interval is not None else (-math.inf, math.inf)  # one value: no interval, overlaps all


def ranks(values: dict[str, Stat | None], words: tuple[str, str, str]) -> dict[str, dict[str, Any]]:
    """For each measured name (lower value first): its `word`, its `possible` words given the
    overlaps, and the names it is `not_separated_from`. Unmeasured names are left out."""
    measured = {name: stat for name, stat in values.items() if stat is not None}
    order = sorted(measured, key=lambda name: measured[name].mean)
    count, result = len(order), {}
    for position, name in enumerate(order):
        low, high = _bounds(measured[name])
        overlapping = [
            other
            for other in order
            if other != name and _bounds(measured[other])[0] <= high and _bounds(measured[other])[1] >= low
        ]
        below = sum(
            1
            for other in order
            if other != name and other not in overlapping and measured[other].mean < measured[name].mean
        )
        first, last = below, below + len(overlapping)
        result[name] = {
            "word": word(position, count, words),
            "position": position,
            "possible": {word(p, count, words) for p in range(first, last + 1)},
            "not_separated_from": overlapping,
        }
    return result


def judge(claimed: tuple[str, ...], possible: set[str]) -> str:
    if possible <= set(claimed):
        return "agrees"
    if not possible & set(claimed):
        return "disagrees"
    return "not separated"


def stability_ranks(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Relative std of the final KID, with any diverged run making a model unstable outright."""
    spread = {group["model"]: relative_std(group["kid"]) for group in groups}
    order = sorted((name for name, value in spread.items() if value is not None), key=spread.get)
    result = {name: {"word": word(i, len(order), WORDS["stability"])} for i, name in enumerate(order)}
    for group in groups:
        if group["diverged"]:
            result[group["model"]] = {"word": "unstable"}
    for entry in result.values():
        entry["possible"], entry["not_separated_from"] = {entry["word"]}, []
    return result


def time_values(groups: list[dict[str, Any]]) -> dict[str, Stat | None]:
    """Time to the bits/dim target; to the KID target for a model without a likelihood curve.
    A model that never reached its target is slower than any that did."""
    values = {}
    for group in groups:
        value = group["time_to_bpd_s"] if group["final_curve_bpd"] is not None else group["time_to_kid_s"]
        values[group["model"]] = Stat(math.inf, 0.0, group["n"]) if value == "not reached" else value
    return values


def verdict_rows(groups: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """row (time, quality, stability) -> model -> {word, possible, not_separated_from, claim, judgement}
    for the groups of one dataset and one setting (one model each)."""
    rows = {
        "time": ranks(time_values(groups), WORDS["time"]),
        "quality": ranks({group["model"]: group["kid"] for group in groups}, WORDS["quality"]),
        "stability": stability_ranks(groups),
    }
    for row, entries in rows.items():
        for model, entry in entries.items():
            claimed = CLAIMS.get(model, {}).get(row)
            entry["claim"] = "-".join(claimed) if claimed else None
            entry["judgement"] = judge(claimed, entry["possible"]) if claimed else None
    return rows

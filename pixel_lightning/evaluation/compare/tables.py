"""The comparison as text: comparison.md (models as mean ± std and n, rankings, time to quality,
the source table measured, then every run) and comparison.csv (every run, then each group's mean
and std rows, marked in the `row` column).

Everything is per dataset (bits/dim and KID are not comparable across datasets): every table has
a dataset column or heading, every ranking names its dataset. Names come from untrusted records,
so every one is written through `text` (no line breaks, no table pipes, no HTML): a name cannot
forge a section, a row or a column of comparison.md.
"""

from __future__ import annotations

import csv
import re
from typing import Any, TextIO

from pixel_lightning.evaluation.compare.aggregate import SUMMARY_FIELDS, TARGET_FIELDS, Stat, relative_std, settings
from pixel_lightning.evaluation.compare.verdict import ROW_TITLES, verdict_rows

# field -> (column title, format of one value)
FORMATS = {
    "params": ("params", ",.0f"),
    "epochs": ("epochs", ".2f"),
    "steps": ("steps", ".0f"),
    "train_time_s": ("train time (s)", ".0f"),
    "train_images_per_s": ("train images/s", ".1f"),
    "test_nll": ("test NLL (nats)", ".2f"),
    "test_bpd": ("test bits/dim", ".4f"),
    "sample_time_per_image_s": ("sampling (s/image)", ".3g"),
    "fid": ("FID", ".1f"),
    "classifier_score": ("IS (classifier)", ".2f"),
    "kid": ("KID", ".4g"),
    "classes_covered": ("classes covered", ".1f"),
    "label_accuracy": ("label accuracy", ".1%"),
    "peak_memory_mb": ("peak memory (MB)", ".0f"),
    "time_to_bpd_s": ("time to target bits/dim (s)", ".0f"),
    "images_to_bpd": ("images to target bits/dim", ",.0f"),
    "time_to_kid_s": ("time to target KID (s)", ".0f"),
    "images_to_kid": ("images to target KID", ",.0f"),
}
MODEL_COLUMNS = (
    "test_bpd",
    "kid",
    "fid",
    "classifier_score",
    "classes_covered",
    "label_accuracy",
    "time_to_bpd_s",
    "images_to_bpd",
    "time_to_kid_s",
    "images_to_kid",
    "train_images_per_s",
    "sample_time_per_image_s",
    "params",
    "steps",
    "epochs",
    "peak_memory_mb",
)


#: The mark of a class-conditional model and of its NLL, -log p(x | y): never ranked with p(x) unmarked.
GIVEN = {"class": " (| y)"}


def fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, Stat):
        spread = "" if value.std is None else f" ± {format(value.std, spec.lstrip(','))}"
        return f"{format(value.mean, spec)}{spread}"
    return format(value, spec)


def fid_header(rows: list[dict[str, Any]]) -> str:
    labels = sorted({row["fid_label"] for row in rows if row["fid_label"]})
    return "FID" if not labels else labels[0] if len(labels) == 1 else "FID (classifier in each cell)"


def title(field: str, rows: list[dict[str, Any]]) -> str:
    if field == "fid":
        return fid_header(rows)
    if field == "kid":  # the same classifier's features
        return fid_header(rows).replace("FID", "KID", 1)
    return FORMATS[field][0]


def text(value: Any) -> str:
    """`value` as one line of Markdown text: line breaks and other control characters (U+2028 and
    U+2029 too) shown escaped (\\n), `|` escaped, `<` and `>` as entities."""
    escaped = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda m: repr(m.group())[1:-1], str(value))
    return escaped.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(text, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(text, row)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def model_table(groups: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per group: mean ± std over its finished runs, and n."""
    columns = ["model", "dataset", "settings", "n"] + [title(field, rows) + " (mean ± std)" for field in MODEL_COLUMNS]
    cells = []
    for group in groups:
        n = f"{group['n']}" + (
            f" (+{len(group['runs']) - group['n']} not finished)" if len(group["runs"]) > group["n"] else ""
        )
        cells.append(
            [
                group["model"] + GIVEN.get(group["condition"], ""),
                group["dataset"],
                " ".join(group["settings"]) or "–",
                n,
            ]
            + [fmt(group[field], FORMATS[field][1]) for field in MODEL_COLUMNS]
        )
    return columns, cells


def run_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Column names and formatted cells, one row per run."""
    fields = (
        "params",
        "epochs",
        "steps",
        "train_time_s",
        "train_images_per_s",
        "test_nll",
        "test_bpd",
        "sample_time_per_image_s",
        "fid",
        "kid",
        "classifier_score",
        "classes_covered",
        "label_accuracy",
        "time_to_bpd_s",
        "time_to_kid_s",
        "peak_memory_mb",
    )
    columns = (
        ["model", "dataset", "seed", "status"]
        + [title(field, rows) for field in fields]
        + ["training speed", "device", "run"]
    )
    mixed = fid_header(rows).startswith("FID (classifier")
    cells = []
    for row in rows:
        status = row["status"] + (f": {row['error']}" if row["error"] else "")
        values = [fmt(row[field], FORMATS[field][1]) for field in fields]
        if row["kid"] is not None and row["kid_std"] is not None:  # one run: the std over KID's subsets
            values[fields.index("kid")] += f" ± {row['kid_std']:.2g}"
        if mixed and row["fid_label"]:
            values[fields.index("fid")] += f" [{row['fid_label']}]"
        for field in ("test_nll", "test_bpd"):  # a class-conditional NLL is -log p(x | y)
            values[fields.index(field)] += GIVEN.get(row["condition"], "") if row[field] is not None else ""
        speed = fmt(row["relative_speed"], ".2f") + ("x" if row["relative_speed"] is not None else "")
        cells.append(
            [
                str(row["model"]),
                str(row["dataset"]),
                fmt(row["seed"], "d"),
                status,
                *values,
                speed,
                str(row["device"] or "–"),
                row["run_dir"],
            ]
        )
    return columns, cells


def time_table(groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    fields = [field for field, _, _ in TARGET_FIELDS]
    columns = ["model", "dataset", "settings", "n", *(FORMATS[field][0] for field in fields)]
    return columns, [
        [
            group["model"] + GIVEN.get(group["condition"], ""),
            group["dataset"],
            " ".join(group["settings"]) or "–",
            str(group["n"]),
            *(fmt(group[field], FORMATS[field][1]) for field in fields),
        ]
        for group in groups
    ]


def by_dataset(groups: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The groups of each dataset, in the groups' order."""
    datasets: dict[str, list[dict[str, Any]]] = {}
    for group in groups:
        datasets.setdefault(group["dataset"], []).append(group)
    return datasets


def rankings(groups: list[dict[str, Any]]) -> list[str]:
    """Per dataset and score, the groups best first, saying which neighbours' intervals overlap."""
    lines, varied = [], len({group["settings"] for group in groups}) > 1
    for dataset, members in by_dataset(groups).items():
        for field, better in (
            ("test_bpd", "lower"),
            ("kid", "lower"),
            ("time_to_bpd_s", "sooner"),
            ("time_to_kid_s", "sooner"),
        ):
            for condition in dict.fromkeys(group["condition"] for group in members):  # p(x) and p(x | y) apart
                measured = [
                    group for group in members if isinstance(group[field], Stat) and group["condition"] == condition
                ]
                if len(measured) < 2:
                    continue
                measured.sort(key=lambda group: group[field].mean)
                lines.append(
                    f"- {text(dataset)}, {FORMATS[field][0]}{GIVEN.get(condition, '')} ({better} is better): "
                    + "; ".join(
                        f"{i + 1}. {_name(group, varied)} {fmt(group[field], FORMATS[field][1])} "
                        f"(n={group[field].n})" + _overlap_note(group, measured, field, varied)
                        for i, group in enumerate(measured)
                    )
                )
    return lines


def kid_precision(groups: list[dict[str, Any]]) -> list[str]:
    """Per dataset, whether the samples were enough: KID's own std over subsets (the largest of any
    run) against a third of the smallest gap between two models' mean KIDs."""
    lines = []
    for dataset, members in by_dataset(groups).items():
        means = sorted(group["kid"].mean for group in members if isinstance(group["kid"], Stat))
        stds = [run["kid_std"] for group in members for run in group["runs"] if run["kid_std"] is not None]
        if len(means) < 2 or not stds:
            continue
        gap = min(b - a for a, b in zip(means, means[1:], strict=False))
        verdict = "under" if max(stds) < gap / 3 else "not under"
        lines.append(
            f"- {text(dataset)}: KID's own std over subsets (at most {max(stds):.3g} in any run) is {verdict} "
            f"a third of the smallest gap between two models' mean KIDs ({gap:.3g}): "
            f"{'enough' if verdict == 'under' else 'too few'} samples to rank by KID."
        )
    return lines


def _name(group: dict[str, Any], varied: bool) -> str:
    """The model, with its settings where the groups' settings differ."""
    return text(
        group["model"]
        + GIVEN.get(group["condition"], "")
        + (f" [{' '.join(group['settings']) or 'defaults'}]" if varied else "")
    )


def _overlap_note(group: dict[str, Any], measured: list[dict[str, Any]], field: str, varied: bool) -> str:
    mine = group[field].interval()
    others = [other for other in measured if other is not group]
    close = [
        other
        for other in others
        if mine is None
        or other[field].interval() is None
        or not (other[field].interval()[1] < mine[0] or other[field].interval()[0] > mine[1])
    ]
    names = ", ".join(_name(other, varied) for other in close)
    return f", not separated from {names} at n={group[field].n}" if close else ""


def verdict_section(groups: list[dict[str, Any]]) -> list[str]:
    """The source table beside the measurement, per dataset and setting (one model each)."""
    lines = [
        "## The source table, measured",
        "",
        "Training time is the time to the dataset's target (Time to quality; a model without a likelihood "
        "curve: to the KID target); sample quality is the final KID (lower is higher quality); stability is "
        "the std over seeds of the final KID over its mean, and any run that diverged makes a model unstable. "
        'Words come from the measured order (thirds); "not separated" where mean ± std intervals overlap so '
        "that the word could differ.",
        "",
    ]
    by_setting: dict[tuple, list[dict[str, Any]]] = {}
    for group in groups:
        by_setting.setdefault((group["dataset"], group["settings"]), []).append(group)
    for (dataset, setting), members in by_setting.items():
        lines += [text(f"### {dataset}" + (f" ({' '.join(setting)})" if setting else "")), ""]
        verdict = verdict_rows(members)
        columns = ["", *(group["model"] for group in members)]
        cells = [
            [ROW_TITLES[row], *(_verdict_cell(row, group, entries.get(group["model"])) for group in members)]
            for row, entries in verdict.items()
        ]
        lines.append(markdown(columns, cells))
    return lines


def _verdict_cell(row: str, group: dict[str, Any], entry: dict[str, Any] | None) -> str:
    if row == "time":
        uses_kid = group["final_curve_bpd"] is None
        value = fmt(group["time_to_kid_s" if uses_kid else "time_to_bpd_s"], ".0f")
        measured = f"{value} s" + (" (to the KID target)" if uses_kid else "") if value != "–" else "–"
    elif row == "quality":
        measured = fmt(group["kid"], ".4g")
    else:
        spread = relative_std(group["kid"])
        measured = (
            f"{100 * spread:.0f}%" if spread is not None else "–"
        ) + f", diverged {group['diverged']}/{len(group['runs'])}"
    if entry is None:
        return measured + " (not ranked)"
    cell = f"{measured}: **{entry['word']}**"
    if entry["not_separated_from"] and len(entry["possible"]) > 1:
        cell += f" (not separated from {', '.join(entry['not_separated_from'])})"
    if entry["claim"]:
        cell += f"; source: {entry['claim']}, {entry['judgement']}"
    return cell


def comparison_markdown(rows, groups, targets, folders) -> str:
    datasets = ", ".join(targets)
    target_lines = [
        f"- {text(dataset)}: bits/dim {fmt(target['bpd'], '.4f')}, KID {fmt(target['kid'], '.4g')}"
        for dataset, target in targets.items()
    ]
    lines = [
        text(f"# Comparison on {datasets}"),
        "",
        text(
            f"Runs under {', '.join(map(str, folders))}: {len(rows)} "
            f"({sum(row['status'] == 'finished' for row in rows)} finished). Plots: comparison.png (learning "
            "curves, final scores), samples_side_by_side.png."
        ),
        "",
        "## Models (mean ± std over seeds, n finished runs)",
        "",
        markdown(*model_table(groups, rows)),
        "## Rankings",
        "",
        *(rankings(groups) or ["- fewer than two models measured"]),
        *kid_precision(groups),
        "",
        "## Time to quality",
        "",
        "The targets, per dataset (`compare.target_bpd`, `compare.target_kid`, a "
        "number or one per dataset; by default the dataset's worst final values):",
        "",
        *target_lines,
        "",
        "Time is training time (measurements excluded), read off the learning curves (linear between points); "
        '"not reached" when a run\'s curve never got there.',
        "",
        markdown(*time_table(groups)),
        *verdict_section(groups),
        "## Runs",
        "",
        markdown(*run_table(rows)),
    ]
    return "\n".join(lines)


CSV_FIELDS = (
    "row",
    "n",
    "model",
    "dataset",
    "condition",
    "settings",
    "status",
    "error",
    "seed",
    *SUMMARY_FIELDS,
    "kid_std",
    *(field for field, _, _ in TARGET_FIELDS),
    "relative_speed",
    "fid_label",
    "peak_memory_kind",
    "device",
    "precision",
    "git_commit",
    "sample_grid",
    "overrides",
    "run_dir",
)


def write_csv(rows: list[dict[str, Any]], groups: list[dict[str, Any]], stream: TextIO) -> None:
    """Every run (`row` = run), then per group a `mean` and a `std` row with its n, into `stream`
    (opened with newline="")."""
    writer = csv.writer(stream)
    writer.writerow(CSV_FIELDS)
    for row in rows:
        values = row | {
            "row": "run",
            "n": 1,
            "settings": " ".join(settings(row)),
            "overrides": " ".join(row["overrides"] or ()),
        }
        writer.writerow(["" if values.get(f) is None else values.get(f) for f in CSV_FIELDS])
    for group in groups:
        for kind in ("mean", "std"):
            values = {
                "row": kind,
                "n": group["n"],
                "model": group["model"],
                "dataset": group["dataset"],
                "condition": group["condition"],
                "settings": " ".join(group["settings"]),
            }
            for field in (*SUMMARY_FIELDS, *(field for field, _, _ in TARGET_FIELDS)):
                stat = group[field]
                values[field] = getattr(stat, kind) if isinstance(stat, Stat) else stat
            writer.writerow(["" if values.get(f) is None else values.get(f) for f in CSV_FIELDS])

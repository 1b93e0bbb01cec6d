"""The comparison as pictures, each fitting a page's width (PAGE_WIDTH pixels) at its native size:
comparison.png (learning curves, final scores with error bars, time to quality) and
samples_side_by_side.png (one labelled row per model: its runs' sample grids, seeds side by side).
Names come from untrusted records: written on one line, never parsed as matplotlib's mathtext."""

from __future__ import annotations

import math
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixel_lightning.evaluation.compare.aggregate import Stat, group_key
from pixel_lightning.evaluation.compare.runs import grid_path, warn

PAGE_WIDTH = 1200  # pixels


def curve_band(curves: list[list[dict[str, Any]]], key: str, x: str, points: int = 60):
    """The seeds' curves of `key` against `x` on a common grid (log-spaced over the x range all of
    them cover): (xs, mean, min, max) arrays, or None if no curve has two positive-x points."""
    series = []
    for curve in curves:
        pairs = [(point[x], point[key]) for point in curve or () if point.get(key) is not None and point[x] > 0]
        if len(pairs) >= 2:
            series.append(np.array(pairs, dtype=float))
    if not series:
        return None
    low, high = max(s[0, 0] for s in series), min(s[-1, 0] for s in series)
    if high <= low:  # the seeds share no stretch of x: the longest curve alone
        longest = max(series, key=len)
        series, low, high = [longest], longest[0, 0], longest[-1, 0]
    xs = np.geomspace(low, high, points)
    ys = np.stack([np.interp(xs, s[:, 0], s[:, 1]) for s in series])
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def one_line(name: Any) -> str:
    """A name as one line of plain text: line breaks and other whitespace runs as one space."""
    return " ".join(str(name).split())


def _label(group: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """The group's model, with its dataset where the groups span several and its settings where
    the model appears more than once; `$` escaped so that matplotlib takes it as text."""
    same_model = sum(other["model"] == group["model"] for other in groups) > 1
    several_datasets = len({other["dataset"] for other in groups}) > 1
    label = (
        group["model"]
        + (f" [{group['dataset']}]" if several_datasets else "")
        + (f" [{' '.join(group['settings'])}]" if same_model and group["settings"] else "")
        + f" (n={group['n']})"
    )
    return one_line(label).replace("$", r"\$")


def plot(
    groups: list[dict[str, Any]], targets: dict[str, dict[str, float | None]], stream: BinaryIO, kid_title: str
) -> None:
    """Curves (seed mean, min-max band) against training time and images, KID curves, final bits/dim
    and KID with mean ± std error bars, and time to the bits/dim target; each dataset's target a
    dotted line. A PNG PAGE_WIDTH pixels wide into `stream`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    datasets = one_line(", ".join(targets)).replace("$", r"\$")
    fig, axes = plt.subplots(2, 3, figsize=(PAGE_WIDTH / 100, 8.5))
    colors = {id(group): f"C{i % 10}" for i, group in enumerate(groups)}
    panels = (
        (axes[0, 0], "bpd", "time_s", "training time (s, log scale)", "held-out bits/dim"),
        (axes[0, 1], "bpd", "images", "training images seen (log scale)", "held-out bits/dim"),
        (axes[0, 2], "kid", "time_s", "training time (s, log scale)", "KID"),
    )
    for ax, key, x, xlabel, name in panels:
        drawn = False
        for group in groups:
            band = curve_band([run["curve"] for run in group["runs"] if run["status"] == "finished"], key, x)
            if band is None:
                continue
            xs, mean, low, high = band
            ax.plot(xs, mean, color=colors[id(group)], label=_label(group, groups))
            ax.fill_between(xs, low, high, color=colors[id(group)], alpha=0.2, linewidth=0)
            drawn = True
        for i, (dataset, target) in enumerate(targets.items()):
            if target[key] is not None and drawn:
                which = f" {one_line(dataset)}".replace("$", r"\$") if len(targets) > 1 else ""
                ax.axhline(
                    target[key],
                    color="grey",
                    linestyle=(":", "--", "-.")[i % 3],
                    label=f"target{which} {target[key]:.4g}",
                )
        ax.set_xscale("log")
        ax.set(
            xlabel=xlabel,
            ylabel=kid_title if key == "kid" else name,
            title=name + (" during training" if drawn else ": no curves"),
        )
        if drawn:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    bars = (
        (axes[1, 0], "test_bpd", "test bits/dim", "test bits/dim (whole test split)"),
        (axes[1, 1], "kid", "final KID", kid_title),
        (axes[1, 2], "time_to_bpd_s", "time to target bits/dim", "training time to the target bits/dim (s)"),
    )
    for ax, field, name, label in bars:
        measured = [group for group in groups if isinstance(group[field], Stat)]
        for i, group in enumerate(measured):
            stat = group[field]
            ax.errorbar(i, stat.mean, yerr=stat.std or 0.0, fmt="o", capsize=6, color=colors[id(group)])
            runs = [run.get(field) for run in group["runs"] if isinstance(run.get(field), int | float)]
            ax.scatter([i] * len(runs), runs, s=10, color="black", alpha=0.5, zorder=3)
        ax.set_xticks(
            range(len(measured)), [_label(group, groups) for group in measured], rotation=25, fontsize=7, ha="right"
        )
        ax.set(ylabel=label, title=name if measured else f"no {name}")
        ax.grid(alpha=0.3, axis="y")
        ax.margins(x=0.2)
    fig.suptitle(
        f"{datasets}: learning curves (lines: seed mean, bands: min-max over seeds);\nfinal scores (mean ± "
        "std over seeds, dots: runs)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(stream, format="png", dpi=100)
    plt.close(fig)


def side_by_side(rows: list[dict[str, Any]], stream: BinaryIO, width: int = PAGE_WIDTH, side: int = 256) -> None:
    """One row per model (group: model, dataset, settings), in table order: its label, then its
    runs' sample grids side by side, each under its seed. The grids are scaled by one whole factor
    (nearest neighbour: a pixel stays a square of pixels) that brings the largest to about `side`
    pixels, or less, so that the widest row fits `width`; a row too wide even at one pixel per pixel
    is shrunk to fit. A PNG into `stream`."""
    title_font, seed_font = ImageFont.load_default(size=16), ImageFont.load_default(size=13)
    margin, gap, title_height, seed_height = 8, 8, 24, 18
    models: dict[tuple, list[tuple[str, Image.Image]]] = {}
    labels: dict[tuple, str] = {}
    for row in rows:
        grid = _sample_grid(row)
        if grid is None:
            continue
        key = group_key(row)
        labels[key] = one_line(f"{row['model']} ({row['dataset']}" + "".join(f", {s}" for s in key[3]) + ")")
        models.setdefault(key, []).append((f"seed {row['seed']}" if row["seed"] is not None else "", grid))
    room = width - 2 * margin

    def row_width(grids, scale):
        return sum(math.floor(grid.width * scale) for _, grid in grids) + gap * (len(grids) - 1)

    largest = max((max(grid.size) for grids in models.values() for _, grid in grids), default=1)
    scale = max(1, math.ceil(side / largest))
    while scale > 1 and any(row_width(grids, scale) > room for grids in models.values()):
        scale -= 1
    bands = []
    for key, grids in models.items():
        fitted = (room - gap * (len(grids) - 1)) / sum(grid.width for _, grid in grids)  # below 1 pixel per pixel
        factor = fitted if row_width(grids, scale) > room else scale
        shown = [
            (
                seed,
                grid.resize(
                    (max(1, math.floor(grid.width * factor)), max(1, math.floor(grid.height * factor))),
                    Image.NEAREST if factor >= 1 else Image.LANCZOS,
                ),
            )
            for seed, grid in grids
        ]
        label = _fit(labels[key], title_font, room)
        band_width = max(math.ceil(title_font.getlength(label)), row_width(shown, 1))
        band = Image.new(
            "RGB", (band_width, title_height + seed_height + max(grid.height for _, grid in shown)), "white"
        )
        draw = ImageDraw.Draw(band)
        draw.text((0, 2), label, fill="black", font=title_font)
        x = 0
        for seed, grid in shown:
            draw.text((x, title_height), _fit(seed, seed_font, grid.width), fill="dimgray", font=seed_font)
            band.paste(grid, (x, title_height + seed_height))
            x += grid.width + gap
        bands.append(band)
    if not bands:
        bands = [Image.new("RGB", (240, title_height), "white")]
        ImageDraw.Draw(bands[0]).text((0, 2), "no sample grids recorded", fill="black", font=title_font)
    picture = Image.new(
        "RGB",
        (2 * margin + max(band.width for band in bands), margin + sum(band.height + 2 * gap for band in bands)),
        "white",
    )
    y = margin
    for band in bands:
        picture.paste(band, (margin, y))
        y += band.height + 2 * gap
    picture.save(stream, format="PNG")


def _sample_grid(row: dict[str, Any]) -> Image.Image | None:
    """The run's sample grid as RGB, or None (with a warning if it is no picture or a huge one)."""
    grid_file = grid_path(row)
    if grid_file is None:
        return None
    try:
        return Image.open(grid_file).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        warn(f"ignored the sample grid of {row['run_dir']}: {err}")
        return None


def _fit(label: str, font: ImageFont.ImageFont, width: int) -> str:
    """`label`, cut with an ellipsis to fit `width` pixels in `font`."""
    if font.getlength(label) <= width:
        return label
    while label and font.getlength(label + "…") > width:
        label = label[:-1]
    return label + "…"

"""The comparison as pictures: comparison.png (learning curves, final scores with error bars, time
to quality) and samples_side_by_side.png (each run's sample grid under its name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixel_lightning.evaluation.compare.aggregate import Stat
from pixel_lightning.evaluation.compare.runs import grid_path, warn


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


def _label(group: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    same_model = sum(other["model"] == group["model"] for other in groups) > 1
    return group["model"] + (f" [{' '.join(group['settings'])}]" if same_model and group["settings"] else "") \
        + f" (n={group['n']})"


def plot(groups: list[dict[str, Any]], targets: dict[str, float | None], path: Path, kid_title: str) -> None:
    """Curves (seed mean, min-max band) against training time and images, KID curves, final bits/dim
    and KID with mean ± std error bars, and time to the bits/dim target."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    datasets = ", ".join(sorted({group["dataset"] for group in groups}))
    fig, axes = plt.subplots(2, 3, figsize=(16, 9.5))
    colors = {id(group): f"C{i % 10}" for i, group in enumerate(groups)}
    panels = ((axes[0, 0], "bpd", "time_s", "training time (s, log scale)", "held-out bits/dim"),
              (axes[0, 1], "bpd", "images", "training images seen (log scale)", "held-out bits/dim"),
              (axes[0, 2], "kid", "time_s", "training time (s, log scale)", "KID"))
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
        if targets[key] is not None and drawn:
            ax.axhline(targets[key], color="grey", linestyle=":", label=f"target {targets[key]:.4g}")
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel=kid_title if key == "kid" else name,
               title=name + (" during training" if drawn else ": no curves"))
        if drawn:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    bars = ((axes[1, 0], "test_bpd", "test bits/dim", "test bits/dim (whole test split)"),
            (axes[1, 1], "kid", "final KID", kid_title), (axes[1, 2], "time_to_bpd_s", "time to target bits/dim",
                                                          "training time to the target bits/dim (s)"))
    for ax, field, name, label in bars:
        measured = [group for group in groups if isinstance(group[field], Stat)]
        for i, group in enumerate(measured):
            stat = group[field]
            ax.errorbar(i, stat.mean, yerr=stat.std or 0.0, fmt="o", capsize=6, color=colors[id(group)])
            runs = [run.get(field) for run in group["runs"] if isinstance(run.get(field), int | float)]
            ax.scatter([i] * len(runs), runs, s=10, color="black", alpha=0.5, zorder=3)
        ax.set_xticks(range(len(measured)), [_label(group, groups) for group in measured], rotation=20, fontsize=8)
        ax.set(ylabel=label, title=name if measured else f"no {name}")
        ax.grid(alpha=0.3, axis="y")
        ax.margins(x=0.2)
    fig.suptitle(f"{datasets}: learning curves (lines: seed mean, bands: min-max over seeds); final scores (mean ± std "
                 "over seeds, dots: runs)", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def side_by_side(rows: list[dict[str, Any]], path: Path, scale: int = 3) -> None:
    """Each run's sample grid (scaled up `scale` times) under its model name, in table order."""
    font = ImageFont.load_default(size=14)
    panels = []
    for row in rows:
        grid_file = grid_path(row)
        if grid_file is None:
            continue
        try:
            grid = Image.open(grid_file).convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # not a picture, or a huge one
            warn(f"ignored the sample grid of {row['run_dir']}: {err}")
            continue
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
        title = f"{row['model']} ({row['dataset']}" + (f", seed {row['seed']})" if row["seed"] is not None else ")")
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

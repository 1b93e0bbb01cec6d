"""The Markdown tables of the suite's rows, printed and written with --markdown."""

from __future__ import annotations

import argparse


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | data | train img/s eager / compiled | peak MB eager / compiled | Lightning overhead "
        "| sampling img/s naive / cached | cached speedup | one image cached | loader img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} | {r['train_images_per_s']} / {r['compiled_train_images_per_s']} "
            f"| {r['peak_memory_mb']} / {r['compiled_peak_memory_mb']} | {r['lightning_overhead']} "
            f"| {r['naive_sample_images_per_s']} / {r['cached_sample_images_per_s']} | {r['cached_speedup']}x "
            f"| {r['cached_one_image_ms'] / 1000:.2f} s | {r['loader_images_per_s']} |"
        )
    return "\n".join(lines)


def sampling_markdown(rows: list[dict]) -> str:
    """Naive against cached sampling per (model, data), and one image's cached latency."""
    lines = [
        "| model | data | images | sampling img/s naive / cached | cached speedup | drawn alike | one image cached |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} | {r['sample_images']} | {r['naive_sample_images_per_s']} "
            f"/ {r['cached_sample_images_per_s']} | {r['cached_speedup']}x "
            f"| {r['identical_images']}/{r['sample_images']} | {r['cached_one_image_ms'] / 1000:.2f} s |"
        )
    return "\n".join(lines)


def pipeline_markdown(rows: list[dict]) -> str:
    """The pipeline's overhead per (model, data); with the breakdown, what removing each part saves."""
    lines = [
        "| model | data | without | plain loop ms/step | pipeline ms/step | overhead | extra ms/step | saved ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    whole = {(r["model"], r["data"]): r for r in rows if not r["without"]}
    for r in rows:
        base = whole.get((r["model"], r["data"]))
        saved = round(base["extra_ms"] - r["extra_ms"], 2) if r["without"] and base else ""
        lines.append(
            f"| {r['model']} | {r['data']} | {r['without'] or '(whole pipeline)'} | {r['plain_loop_step_ms']} "
            f"| {r['lightning_step_ms']} | {r['lightning_overhead']} | {r['extra_ms']} | {saved} |"
        )
    return "\n".join(lines)


def summarise(rows: list[dict], summary: str, args: argparse.Namespace) -> list[dict]:
    """Print the Markdown `summary` of `rows` (and write it to --markdown); returns the rows."""
    print("\n" + summary, flush=True)
    if args.markdown:
        args.markdown.write_text(summary + "\n")
    return rows

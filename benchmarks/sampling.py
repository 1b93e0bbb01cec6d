"""Sampling speed: naive against cached sampling of the same model, side by side in one process (the
same weights and seed), images/s and their ratio, and how many images both drew alike; and the latency
of one image, cached, for interactive use.

In exact arithmetic both paths draw the same levels (the tests check it in float64, output for output).
In float32 they sum in different orders, so an output differs in its last bits, and a draw that falls
within that of a level's edge can go the other way; its image differs from there on."""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.models import build, setup


def sampling_speed(job: tuple[str, str, argparse.Namespace]) -> dict:
    """`sample(n, method=...)` timed for each method (naive first), then `sample(1)` cached."""
    model_name, data_name, args = job
    device = setup(args)
    module = build(model_name, data_name, args).to(device)
    times, levels = {}, {}
    for method in ("naive", "cached"):
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(0)
        levels[method] = module.sample(args.sample_images, generator=generator, method=method)
        times[method] = time.perf_counter() - start
    start = time.perf_counter()
    module.sample(1, generator=torch.Generator(device=device).manual_seed(0))
    one_image = time.perf_counter() - start
    return {
        "sample_images": args.sample_images,
        "naive_sample_images_per_s": round(args.sample_images / times["naive"], 3),
        "cached_sample_images_per_s": round(args.sample_images / times["cached"], 3),
        "cached_speedup": round(times["naive"] / times["cached"], 1),
        "identical_images": int((levels["naive"] == levels["cached"]).flatten(1).all(1).sum()),
        "cached_one_image_ms": round(1000 * one_image, 1),
    }

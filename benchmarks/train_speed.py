"""Training images/s (the median step: log_prob, backward, Adam step) and peak memory of one model,
eager or compiled, each in its own process so that its peak memory is its own."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.models import build, loss_of, max_rss_mb, random_batches, setup


def train_speed(job: tuple[str, str, bool, argparse.Namespace]) -> dict:
    """Training images/s and peak memory of one model, eager or compiled (its own process)."""
    model_name, data_name, compiled, args = job
    device = setup(args)
    module = build(model_name, data_name, args).to(device)
    optimizer = module.configure_optimizers()
    loss_fn = torch.compile(loss_of) if compiled else loss_of
    batch = random_batches(module, 1, args.batch_size)[0].to(device)
    cuda = device.type == "cuda"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(module, batch).backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = max_rss_mb()
    for _ in range(args.warmup + (1 if compiled else 0)):  # compiled: one more, for the compilation
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else max_rss_mb() - rss_before
    prefix = "compiled_" if compiled else ""
    return {
        "params": sum(p.numel() for p in module.parameters()),
        "hidden": module.hparams.net.get("hidden"),
        "layers": module.hparams.net.get("layers"),
        "image_shape": "x".join(map(str, module.image_shape)),
        "memory": "cuda_max_allocated" if cuda else "cpu_max_rss_growth",
        # The median step: robust to other processes briefly taking the (shared) CPU cores.
        f"{prefix}train_images_per_s": round(args.batch_size / statistics.median(times), 2),
        f"{prefix}peak_memory_mb": round(peak, 1),
    }

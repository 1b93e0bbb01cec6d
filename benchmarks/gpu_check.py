"""The GPU check, for the day a GPU is lent (never run in CI; not yet run at all: docs/streaming.md).

On one CUDA GPU, for every model of conf/model/ with a likelihood (its config sizes, CIFAR-10's
3x32x32 images with 256 levels, batch 16), it reports one JSON line with

- training images/s in fp32 and bf16-mixed, each eager and with torch.compile (the median step);
- cached sampling images/s, and whether cached sampling on CUDA draws the same levels as naive
  sampling on CUDA, both in float64 (same weights, same generator);
- whether train.py's own Trainer (every default callback, the W&B logger offline) synchronises
  with the device between logging steps: 12 steps with `log_every_n_steps=4`, under
  `torch.cuda.set_sync_debug_mode("error")` from each other step's start to its end, so that
  any sync there raises ("none", or the first line of that error);

and then the streamed loader's images/s on synthetic chunks in the ImageNet 32x32 format (written
by `prepare` into a temporary folder, read by the StreamingImageDataModule). Meant to finish in
under 8 minutes:

    python benchmarks/gpu_check.py

Without CUDA it stops at once with a message (exit status 1).
"""

from __future__ import annotations

import sys

import torch

if not torch.cuda.is_available():
    sys.exit(
        "error: benchmarks/gpu_check.py needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is "
        "False). Run it on a GPU machine with the CUDA build of torch; CPU figures come from benchmarks/run.py."
    )

import argparse  # noqa: E402  (after the CUDA check, so that a CPU machine fails at once)
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402

import numpy as np  # noqa: E402
from run import build, loss_of, random_batches  # noqa: E402  (benchmarks/run.py, beside this file)

MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm", "spatial_lstm"]
DEVICE = torch.device("cuda")


def train_images_per_s(model: str, args: argparse.Namespace, precision: str, compiled: bool) -> float:
    module = build(model, "cifar10", args).to(DEVICE)
    optimizer = module.configure_optimizers()
    loss_fn = torch.compile(loss_of) if compiled else loss_of
    batch = random_batches(module, 1, args.batch_size)[0].to(DEVICE)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(module, batch)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize(DEVICE)
        return time.perf_counter() - start

    for _ in range(2):  # warm-up (and compilation)
        step()
    return round(args.batch_size / statistics.median(step() for _ in range(args.steps)), 1)


def pipeline_syncs(model: str, args: argparse.Namespace) -> dict:
    import hydra
    import pytorch_lightning as pl
    from run import TRAINING_ONLY, train_config
    from torch.utils.data import DataLoader

    from pixel_lightning.jobs import finish_wandb, make_trainer
    from pixel_lightning.logging_steps import is_logging_step

    class SyncsRaise(pl.Callback):  # first: every other hook of a step that is not a logging step is covered
        def on_train_batch_start(self, trainer, *_) -> None:
            torch.cuda.set_sync_debug_mode("default" if is_logging_step(trainer) else "error")

    class SyncsAllowed(pl.Callback):  # last: Lightning's own logging after the step may read
        def on_train_batch_end(self, *_) -> None:
            torch.cuda.set_sync_debug_mode("default")

    overrides = ["trainer.accelerator=cuda", "++trainer.max_steps=12", "trainer.log_every_n_steps=4", *TRAINING_ONLY]
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = train_config(model, "cifar10", output_dir, args, overrides)
        module = hydra.utils.instantiate(cfg.model)
        trainer, loggers = make_trainer(cfg)
        trainer.callbacks = [SyncsRaise(), *trainer.callbacks, SyncsAllowed()]
        batches = torch.cat(random_batches(module, 12, args.batch_size))
        try:
            trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=args.batch_size))
            found = "none"
        except RuntimeError as err:  # "called a synchronizing CUDA operation"
            found = str(err).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
            finish_wandb(loggers)
    return {"syncs_between_logging_steps": found}


def sampling(model: str, args: argparse.Namespace) -> dict:
    module = build(model, "cifar10", args).to(DEVICE).eval()
    with torch.no_grad():
        start = time.perf_counter()
        module.sample(args.sample_images, generator=torch.Generator(DEVICE).manual_seed(0), method="cached")
        torch.cuda.synchronize(DEVICE)
        cached_per_s = args.sample_images / (time.perf_counter() - start)
        module = module.double()
        levels = {
            method: module.sample(4, generator=torch.Generator(DEVICE).manual_seed(0), method=method)
            for method in ("naive", "cached")
        }
    return {
        "cached_sample_images_per_s": round(cached_per_s, 2),
        "cached_equals_naive_float64": bool(torch.equal(levels["naive"], levels["cached"])),
    }


def streamed_loader(args: argparse.Namespace) -> dict:
    from pixel_lightning.data.prepare import prepare
    from pixel_lightning.data.sources import ArrayOriginal, Source, Split
    from pixel_lightning.data.streaming import StreamingImageDataModule

    images = np.random.default_rng(0).integers(0, 256, (args.loader_images, 3, 32, 32), dtype=np.uint8)
    splits = {name: Split(ArrayOriginal(images, None), np.arange(len(images))) for name in ("train", "val", "test")}
    with tempfile.TemporaryDirectory() as root:
        prepare(Source("imagenet32", (3, 32, 32), 8, None, splits, {"format": "synthetic"}), root, workers=4)
        datamodule = StreamingImageDataModule(root, batch_size=64, num_workers=4)
        datamodule.setup("fit")
        count, start = 0, time.perf_counter()
        for batch in datamodule.train_dataloader():
            count += len(batch.to(DEVICE, non_blocking=True))
        torch.cuda.synchronize(DEVICE)
        return {"streamed_loader_images_per_s": round(count / (time.perf_counter() - start), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--sample-images", type=int, default=16)
    parser.add_argument("--loader-images", type=int, default=50000)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")  # the pipeline check's logger, as train.py's default
    args.hidden = args.layers = args.image_size = None  # what run.build reads: the models' config sizes
    print(json.dumps({"gpu": torch.cuda.get_device_name(DEVICE), "date": time.strftime("%Y-%m-%d")}), flush=True)
    for model in args.models:
        row = {"model": model}
        for precision in ("32-true", "bf16-mixed"):
            for compiled in (False, True):
                key = f"train_images_per_s_{precision}{'_compiled' if compiled else ''}"
                row[key] = train_images_per_s(model, args, precision, compiled)
        row.update(sampling(model, args))
        row.update(pipeline_syncs(model, args))
        print(json.dumps(row), flush=True)
    print(json.dumps(streamed_loader(args)), flush=True)


if __name__ == "__main__":
    main()

"""The benchmark suite: training, Lightning's overhead, sampling and the data loader, per architecture.

For each model (a name of `conf/model/`, e.g. pixelcnn, row_lstm, diagonal_bilstm) and each dataset
(a name of `conf/data/`: binarized_mnist, cifar10), built from its config (its default sizes unless
--hidden / --layers set them for every model), it measures

- training images/s (median step: log_prob, backward, Adam step) and peak memory, eager and with
  `torch.compile`, each in a fresh process so that its peak memory is its own;
- Lightning's overhead: the median step of `Trainer.fit` over the median step of a plain PyTorch
  loop training the same net on the same batches, side by side in one process, step for step
  (one plain step before each of Lightning's) so that drift on a shared machine hits both alike
  (1.0 = none);
- sampling images/s, naive and cached, with their ratio, side by side in one process, and how many
  images both drew alike (all, in exact arithmetic; see benchmarks/sampling.py for float32); and the
  latency of one image, cached (batch 1, for interactive use);
- the DataModule's training loader alone, images/s (real data under PIXEL_DATA_DIR), to show that
  it is never the bottleneck.

Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the growth of the process's max RSS
over the steps (activations, gradients, optimizer state; not weights, libraries or data). Ratios
come from one run side by side; absolute figures drift on a shared machine.

Prints one JSON line per (model, data) and then a Markdown summary (also written with --markdown);
`python -m benchmarks` is the same as `python benchmarks/run.py`:

    python benchmarks/run.py                       # the models' config sizes, both datasets
    python benchmarks/run.py --quick               # tiny sizes: checks that everything runs
    python benchmarks/run.py --models spatial_lstm row_lstm --hidden 16 --layers 2 --data cifar10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
from pathlib import Path

import torch

from benchmarks.loader import loader_speed
from benchmarks.models import REPO
from benchmarks.overhead import bare_trainer_overhead, pipeline_overhead, pipeline_parts
from benchmarks.sampling import sampling_speed
from benchmarks.summary import markdown, pipeline_markdown, sampling_markdown, summarise
from benchmarks.train_speed import train_speed

#: every net with a cached sampler (spatial_lstm has none: its cached speedup would be 1)
MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm", "gated_pixelcnn", "pixelcnn_pp", "pixelsnail"]
DATA = ["binarized_mnist", "cifar10"]
FIELDS = (
    "model", "data", "image_shape", "hidden", "layers", "params", "batch_size", "device", "threads", "memory",
    "train_images_per_s", "peak_memory_mb", "compiled_train_images_per_s", "compiled_peak_memory_mb",
    "plain_loop_step_ms", "lightning_step_ms", "lightning_overhead",
    "sample_images", "naive_sample_images_per_s", "cached_sample_images_per_s", "cached_speedup",
    "identical_images", "cached_one_image_ms", "loader_images_per_s",
)  # fmt: skip


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="names of conf/model/*.yaml")
    parser.add_argument("--data", nargs="+", default=DATA, help="names of conf/data/*.yaml")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: that everything runs")
    parser.add_argument("--hidden", type=int, help="h of every model (default: each model's config)")
    parser.add_argument("--layers", type=int, help="layers of every model (default: each model's config)")
    parser.add_argument(
        "--image-size", type=int, help="height and width of the training and sampling images (default: the dataset's)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--sample-images", type=int, default=64, help="images sampled by each method")
    parser.add_argument("--loader-batches", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    # One thread by default: on a CPU shared with other jobs, OpenMP threads waiting on each other
    # slow the many small ops of the recurrent models down erratically.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (ignored on CUDA)")
    parser.add_argument("--markdown", type=Path, help="also write the summary table to this file")
    parser.add_argument(
        "--sampling-only",
        action="store_true",
        help="only sampling: naive and cached side by side, and one image's cached latency",
    )
    parser.add_argument(
        "--pipeline-overhead",
        action="store_true",
        help="only time train.py's own Trainer (every default callback, the W&B logger offline) "
        "against a plain loop, step for step",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time the overhead steps by the wall clock, or by the main thread's CPU time (a CPU with "
        "--threads 1 only: steadier on a shared machine, but blind to work in other threads)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="with --pipeline-overhead: also without each callback, and without the logger, in turn",
    )
    args = parser.parse_args(argv)
    for kind, names in (("model", args.models), ("data", args.data)):
        for name in names:
            if not (REPO / "conf" / kind / f"{name}.yaml").is_file():
                parser.error(f"no conf/{kind}/{name}.yaml; choose from the files in conf/{kind}/")
    if args.clock == "cpu" and (args.device != "cpu" or args.threads != 1):
        parser.error("--clock cpu times one thread's CPU time: use it with --device cpu --threads 1")
    if args.quick:
        # 8 x 8 images: the recurrent models' scans, unrolled by torch.compile, compile in seconds
        args.hidden, args.layers, args.image_size = args.hidden or 4, args.layers or 1, args.image_size or 8
        args.batch_size, args.steps, args.warmup, args.sample_images, args.loader_batches = 4, 2, 1, 2, 5
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    # torch.compile needs a C compiler on CPU and a cache folder: keep it out of the home folder.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "pixel-lightning-inductor"))
    pairs = [(model, data) for data in args.data for model in args.models]
    if args.pipeline_overhead:
        return main_pipeline(args, pairs)
    if args.sampling_only:
        return main_sampling(args, pairs)
    # One fresh process per job (spawn: no CUDA state inherited), so that peak memory is per job.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        loaders = dict(zip(args.data, pool.map(loader_speed, [(data, args) for data in args.data], chunksize=1)))
        rows = []
        for model, data in pairs:
            row = {"model": model, "data": data, "batch_size": args.batch_size, "device": args.device}
            row["threads"] = args.threads if args.device == "cpu" else None
            row.update(pool.apply(train_speed, ((model, data, False, args),)))
            row.update(pool.apply(train_speed, ((model, data, True, args),)))
            row.update(pool.apply(bare_trainer_overhead, ((model, data, args),)))
            row.update(pool.apply(sampling_speed, ((model, data, args),)))
            row.update(loaders[data])
            row = {key: row[key] for key in FIELDS}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return summarise(rows, markdown(rows), args)


def main_pipeline(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> list[dict]:
    """--pipeline-overhead: one fresh process per (model, data, part removed), so no run inherits
    another's W&B run, caches or allocator state."""
    os.environ.setdefault("WANDB_MODE", "offline")
    rows = []
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for model, data in pairs:
            for removed in pipeline_parts(args):
                row = pool.apply(pipeline_overhead, ((model, data, removed, args),))
                row.update(
                    batch_size=args.batch_size,
                    device=args.device,
                    threads=args.threads if args.device == "cpu" else None,
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    return summarise(rows, pipeline_markdown(rows), args)


def main_sampling(args: argparse.Namespace, pairs: list[tuple[str, str]]) -> list[dict]:
    """--sampling-only: one fresh process per (model, data)."""
    rows = []
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for model, data in pairs:
            row = {
                "model": model,
                "data": data,
                "device": args.device,
                "threads": args.threads if args.device == "cpu" else None,
            }
            row.update(pool.apply(sampling_speed, ((model, data, args),)))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return summarise(rows, sampling_markdown(rows), args)

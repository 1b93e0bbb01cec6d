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
- sampling images/s, naive and cached, with their ratio, side by side in one process, and whether
  both drew the same levels (they must, for the same weights and seed);
- the DataModule's training loader alone, images/s (real data under PIXEL_DATA_DIR), to show that
  it is never the bottleneck.

Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the growth of the process's max RSS
over the steps (activations, gradients, optimizer state; not weights, libraries or data). Ratios
come from one run side by side; absolute figures drift on a shared machine.

Prints one JSON line per (model, data) and then a Markdown summary (also written with --markdown):

    python benchmarks/run.py                       # the models' config sizes, both datasets
    python benchmarks/run.py --quick               # tiny sizes: checks that everything runs
    python benchmarks/run.py --models spatial_lstm row_lstm --hidden 16 --layers 2 --data cifar10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere: this checkout's package, not an installed one

MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm", "gated_pixelcnn", "pixelcnn_pp"]
DATA = ["binarized_mnist", "cifar10"]
FIELDS = (
    "model", "data", "image_shape", "hidden", "layers", "params", "batch_size", "device", "threads", "memory",
    "train_images_per_s", "peak_memory_mb", "compiled_train_images_per_s", "compiled_peak_memory_mb",
    "plain_loop_step_ms", "lightning_step_ms", "lightning_overhead",
    "sample_images", "naive_sample_images_per_s", "cached_sample_images_per_s", "cached_speedup",
    "sampling_identical", "loader_images_per_s",
)  # fmt: skip


def configs(model: str, data: str, args: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """The resolved net config of conf/model/<model>.yaml on conf/data/<data>.yaml, the data config,
    and the model's output setting (conf/model/output/, picked by the model's defaults list)."""
    from omegaconf import OmegaConf

    import pixel_lightning  # noqa: F401  (registers the config resolvers)

    paths = {"data_dir": os.environ.get("PIXEL_DATA_DIR", "data")}
    root = OmegaConf.create({"paths": paths})
    root.data = OmegaConf.load(REPO / "conf" / "data" / f"{data}.yaml")
    root.model = OmegaConf.load(REPO / "conf" / "model" / f"{model}.yaml")
    net = OmegaConf.to_container(root.model.net, resolve=True)
    # --hidden / --layers size the nets that have those settings (PixelCNN++ has filters and blocks)
    net.update({k: v for k, v in (("hidden", args.hidden), ("layers", args.layers)) if v is not None and k in net})
    output = root.model.get("output")  # the model's own output settings, if any
    for choice in root.model.get("defaults", []):  # `- output: <name>` picks conf/model/output/<name>.yaml
        if isinstance(choice, Mapping) and "output" in choice:
            output = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "model" / "output" / f"{choice.output}.yaml"),
                                     output or {})  # fmt: skip
    output = OmegaConf.to_container(output) if output is not None else None
    return net, OmegaConf.to_container(root.data, resolve=True), output


def build(model: str, data: str, args: argparse.Namespace):
    from pixel_lightning.models import AutoregressiveImageModel

    net, data_cfg, output = configs(model, data, args)
    if args.image_size:  # the batches are synthetic: any size the net takes
        data_cfg.update(height=args.image_size, width=args.image_size)
    torch.manual_seed(0)
    return AutoregressiveImageModel(net, {"_target_": "torch.optim.Adam", "lr": 1e-3}, data_cfg, output=output)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def random_batches(module, count: int, batch_size: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, *module.image_shape)
    return [torch.randint(0, module.levels, shape, generator=generator) for _ in range(count)]


def loss_of(module, batch: torch.Tensor) -> torch.Tensor:
    return -module.log_prob(batch).mean() / module.dims  # the training loss, nats per dimension


def setup(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    return device


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


def interleaved(trainer, module, plain, batches: list[torch.Tensor], args: argparse.Namespace,
                device: torch.device, clip: float | None = None) -> tuple[list[float], list[float]]:
    """`trainer.fit(module)` against a plain PyTorch loop training `plain` (a copy of it) on the same
    batches, one plain step before each of Lightning's: a shared machine's drift (blocks of identical
    steps differ by +-5% here) hits both alike. Returns the timed plain and Lightning steps (s).
    `clip`: the plain loop clips the gradients' norm like `trainer.gradient_clip_val` does."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    def loader() -> DataLoader:  # the same batches, in order, as a DataLoader like the DataModule's
        return DataLoader(torch.cat(batches), batch_size=args.batch_size, shuffle=False)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # --clock cpu: this thread's CPU time, which a busy machine's other processes do not stretch (with
    # one thread the whole step runs here on a CPU; not the time a GPU or W&B's own process takes)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    plain = plain.to(device)
    optimizer = plain.configure_optimizers()
    plain_batches = iter(loader())
    plain_times, fit_times = [], []

    def step_plain_loop() -> None:
        start = clock()
        batch = next(plain_batches).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss_of(plain, batch).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(plain.parameters(), clip)
        optimizer.step()
        sync()
        plain_times.append(clock() - start)

    class Interleave(pl.Callback):
        """Lightning's step: from the end of the plain step to the next batch's start (its fetch,
        training_step, backward, optimizer step, hooks and logging)."""

        step_end = None

        def on_train_batch_start(self, *_) -> None:
            sync()
            if self.step_end is not None:
                fit_times.append(clock() - self.step_end)
            step_plain_loop()
            self.step_end = clock()

    trainer.callbacks.insert(0, Interleave())  # first: every other hook of the step counts as Lightning's
    trainer.fit(module, train_dataloaders=loader())
    return plain_times[args.warmup : args.warmup + args.steps], fit_times[args.warmup :]


def overhead_fields(plain_times: list[float], fit_times: list[float]) -> dict:
    """Median steps (ms), the median of the paired ratios, and of the paired differences (ms)."""
    return {
        "plain_loop_step_ms": round(1000 * statistics.median(plain_times), 2),
        "lightning_step_ms": round(1000 * statistics.median(fit_times), 2),
        "lightning_overhead": round(statistics.median(f / p for f, p in zip(fit_times, plain_times)), 3),
        "extra_ms": round(1000 * statistics.median(f - p for f, p in zip(fit_times, plain_times)), 2),
    }


def side_by_side(job: tuple[str, str, argparse.Namespace]) -> dict:
    """Lightning's overhead (a bare Trainer) and naive against cached sampling, in one process."""
    import pytorch_lightning as pl

    model_name, data_name, args = job
    device = setup(args)
    steps = args.warmup + args.steps + 1  # the last batch only ends the last timed interval
    module = build(model_name, data_name, args)
    batches = random_batches(module, steps, args.batch_size)
    trainer = pl.Trainer(
        accelerator=device.type, devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    times = interleaved(trainer, module, build(model_name, data_name, args), batches, args, device)
    fields = overhead_fields(*times)

    module = module.to(device)
    times, levels = {}, {}
    for method in ("naive", "cached"):
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(0)
        levels[method] = module.sample(args.sample_images, generator=generator, method=method)
        times[method] = time.perf_counter() - start
    return {
        **{key: fields[key] for key in ("plain_loop_step_ms", "lightning_step_ms", "lightning_overhead")},
        "sample_images": args.sample_images,
        "naive_sample_images_per_s": round(args.sample_images / times["naive"], 3),
        "cached_sample_images_per_s": round(args.sample_images / times["cached"], 3),
        "cached_speedup": round(times["naive"] / times["cached"], 1),
        "sampling_identical": bool(torch.equal(levels["naive"], levels["cached"])),
    }


def train_config(model: str, data: str, output_dir: str, args: argparse.Namespace, overrides: list[str]):
    """conf/train.yaml composed as `train.py model=<model> data=<data> <overrides>` would, resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    import pixel_lightning  # noqa: F401  (registers the config resolvers)

    sizes = [f"model.net.{key}={value}" for key in ("hidden", "layers") if (value := getattr(args, key)) is not None]
    if args.image_size:
        sizes += [f"data.height={args.image_size}", f"data.width={args.image_size}"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", [f"model={model}", f"data={data}", *sizes, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg


# train.py's trainer with training alone: no validation, no test and no sample quality at the end
TRAINING_ONLY = ["trainer.limit_val_batches=0", "test=false", "callbacks.run_record.quality=null"]


def pipeline_overhead(job: tuple[str, str, str | None, argparse.Namespace]) -> dict:
    """train.py's own Trainer (every callback of conf/callbacks/, the default W&B logger offline, the
    trainer config), without the callback or logger named `removed`, against a plain loop."""
    import hydra

    from pixel_lightning.jobs import make_trainer

    model_name, data_name, removed, args = job
    device = setup(args)
    steps = args.warmup + args.steps + 1
    overrides = [f"trainer.accelerator={device.type}", f"++trainer.max_steps={steps}",
                 f"data.batch_size={args.batch_size}", *TRAINING_ONLY]
    parts = removed.split(",") if removed else []  # "callbacks" drops the whole group: no setting inside it is left
    overrides = [o for o in overrides if not any(o.startswith(f"{part}.") for part in parts)] + [f"~{p}" for p in parts]
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = train_config(model_name, data_name, output_dir, args, overrides)
        torch.manual_seed(0)
        module, plain = hydra.utils.instantiate(cfg.model), hydra.utils.instantiate(cfg.model)
        plain.load_state_dict(module.state_dict())
        trainer, loggers = make_trainer(cfg)
        batches = random_batches(module, steps, args.batch_size)
        times = interleaved(trainer, module, plain, batches, args, device, clip=cfg.trainer.gradient_clip_val)
        if loggers:
            from pixel_lightning.jobs import finish_wandb

            finish_wandb(loggers)
    return {"model": model_name, "data": data_name, "without": removed or "", **overhead_fields(*times)}


def pipeline_parts(args: argparse.Namespace) -> list[str | None]:
    """None (the whole pipeline), then each callback of conf/callbacks/default.yaml, the logger, and
    all of them ("callbacks,logger": Lightning's Trainer alone, what this project cannot remove)."""
    from omegaconf import OmegaConf

    callbacks = OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml")
    parts = [*(f"callbacks.{name}" for name in callbacks), "logger", "callbacks,logger"]
    return [None, *parts] if args.breakdown else [None]


def loader_speed(job: tuple[str, argparse.Namespace]) -> dict:
    """Images/s of the DataModule's training loader alone, on the real data."""
    import hydra

    data_name, args = job
    setup(args)
    _, data_cfg, _ = configs(MODELS[0], data_name, args)
    datamodule = hydra.utils.instantiate(dict(data_cfg, batch_size=args.batch_size, download=False))
    datamodule.prepare_data()
    datamodule.setup("fit")
    count, start = 0, time.perf_counter()
    for i, batch in enumerate(datamodule.train_dataloader()):
        count += len(batch)
        if i + 1 == args.loader_batches:
            break
    return {"loader_images_per_s": round(count / (time.perf_counter() - start), 1)}


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | data | train img/s eager / compiled | peak MB eager / compiled | Lightning overhead "
        "| sampling img/s naive / cached | cached speedup | loader img/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['data']} | {r['train_images_per_s']} / {r['compiled_train_images_per_s']} "
            f"| {r['peak_memory_mb']} / {r['compiled_peak_memory_mb']} | {r['lightning_overhead']} "
            f"| {r['naive_sample_images_per_s']} / {r['cached_sample_images_per_s']} | {r['cached_speedup']}x "
            f"| {r['loader_images_per_s']} |"
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


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="names of conf/model/*.yaml")
    parser.add_argument("--data", nargs="+", default=DATA, help="names of conf/data/*.yaml")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: that everything runs")
    parser.add_argument("--hidden", type=int, help="h of every model (default: each model's config)")
    parser.add_argument("--layers", type=int, help="layers of every model (default: each model's config)")
    parser.add_argument("--image-size", type=int,
                        help="height and width of the training and sampling images (default: the dataset's)")
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
    parser.add_argument("--pipeline-overhead", action="store_true",
                        help="only time train.py's own Trainer (every default callback, the W&B logger offline) "
                        "against a plain loop, step for step")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time the overhead steps by the wall clock, or by the main thread's CPU time (a CPU with "
                        "--threads 1 only: steadier on a shared machine, but blind to work in other threads)")
    parser.add_argument("--breakdown", action="store_true",
                        help="with --pipeline-overhead: also without each callback, and without the logger, in turn")
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
    # One fresh process per job (spawn: no CUDA state inherited), so that peak memory is per job.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        loaders = dict(zip(args.data, pool.map(loader_speed, [(data, args) for data in args.data], chunksize=1)))
        rows = []
        for model, data in pairs:
            row = {"model": model, "data": data, "batch_size": args.batch_size, "device": args.device}
            row["threads"] = args.threads if args.device == "cpu" else None
            row.update(pool.apply(train_speed, ((model, data, False, args),)))
            row.update(pool.apply(train_speed, ((model, data, True, args),)))
            row.update(pool.apply(side_by_side, ((model, data, args),)))
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
                row.update(batch_size=args.batch_size, device=args.device,
                           threads=args.threads if args.device == "cpu" else None)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return summarise(rows, pipeline_markdown(rows), args)


def summarise(rows: list[dict], summary: str, args: argparse.Namespace) -> list[dict]:
    """Print the Markdown `summary` of `rows` (and write it to --markdown); returns the rows."""
    print("\n" + summary, flush=True)
    if args.markdown:
        args.markdown.write_text(summary + "\n")
    return rows


if __name__ == "__main__":
    main()

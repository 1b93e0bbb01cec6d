"""Lightning's overhead: the median step of `Trainer.fit` (a bare Trainer, or train.py's own with every
default callback and the logger) over the median step of a plain PyTorch loop training the same net on
the same batches, side by side in one process, step for step (1.0 = none)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.models import REPO, build, loss_of, random_batches, setup


def interleaved(
    trainer,
    module,
    plain,
    batches: list[torch.Tensor],
    args: argparse.Namespace,
    device: torch.device,
    clip: float | None = None,
) -> tuple[list[float], list[float]]:
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


def bare_trainer_overhead(job: tuple[str, str, argparse.Namespace]) -> dict:
    """Lightning's overhead with a bare Trainer (no logger, checkpoint or progress bar)."""
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
    fields = overhead_fields(*interleaved(trainer, module, build(model_name, data_name, args), batches, args, device))
    return {key: fields[key] for key in ("plain_loop_step_ms", "lightning_step_ms", "lightning_overhead")}


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
    overrides = [
        f"trainer.accelerator={device.type}",
        f"++trainer.max_steps={steps}",
        f"data.batch_size={args.batch_size}",
        *TRAINING_ONLY,
    ]
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

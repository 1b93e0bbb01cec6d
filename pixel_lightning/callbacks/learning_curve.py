"""The learning curve of a training run: held-out bits/dim at fixed intervals of training time
and of images seen, so that a comparison shows how fast each model learns, not one snapshot.

Each point is measured on a fixed validation subset (`images` images drawn with a fixed seed,
the same for every model and every point) and holds {time_s, images, steps, bpd, bpd_se}:
bpd is the subset's mean bits/dim and bpd_se its standard error. A model without a likelihood
(no `log_prob`, the DCGAN) gets the KID of `kid_samples` fresh samples instead ({kid, kid_std},
evaluation/fid.py), on the same schedule.

The training clock excludes the measurements: time_s is the wall time since training started
less the time spent measuring, and the trainer's time budget (`trainer.max_time`, Lightning's
Timer) is extended by the same amount, so a model that is slow to evaluate loses no training.
Per step the callback only counts images and reads the clock (no tensor is read, no device is
synchronised); it measures once an interval has passed, and once more at the end of training.
The points go into record.json (the RunRecord reads `points`), to every logger as history
(`curve/bpd` or `curve/kid`, with `curve/time_s` and `curve/images` as x-axes), and into
checkpoints, so a resumed run continues its curve.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import RunningStage

from pixel_lightning.callbacks.images_seen import trained_images
from pixel_lightning.errors import CheckpointError
from pixel_lightning.evaluation.fid import SampleQuality, labelled_subset
from pixel_lightning.records import check_curve, check_number

log = logging.getLogger(__name__)


class LearningCurve(pl.Callback):
    """Measure the learning curve (see the module docstring).

    Args:
        every_seconds: a point each time this much training time has passed (null: none).
        every_images: a point each time this many more training images have been seen (null: none).
        images: the validation subset's size. The standard error of the mean is the per-image
            spread over sqrt(images); measured on binarized MNIST (Row LSTM): 0.56-0.61% of the
            bits/dim with 1000 digits at 0.32-0.47 bits/dim, 0.49-0.51% with 2000 at 0.19-0.22, so
            2000 keeps it under 1% as training widens the spread.
        batch_size: images per forward pass of the measurement.
        kid_samples: samples per point of a model without a likelihood.
        quality: an evaluation.fid.SampleQuality (or its config, the `fid` node) for that KID.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        every_seconds: float | None = 60.0,
        every_images: int | None = None,
        images: int = 2000,
        batch_size: int = 250,
        kid_samples: int = 250,
        quality: SampleQuality | Mapping | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        for name, value in (("every_seconds", every_seconds), ("every_images", every_images)):
            if value is not None and not value > 0:
                raise ValueError(f"curve.{name} must be positive or null, got {value}")
        if images < 2:
            raise ValueError(f"curve.images must be at least 2 (a mean and its standard error), got {images}")
        self.every_seconds, self.every_images = every_seconds, every_images
        self.images, self.batch_size, self.kid_samples = images, batch_size, kid_samples
        self.quality = hydra.utils.instantiate(quality) if isinstance(quality, Mapping) else quality
        self.clock = clock
        self.points: list[dict[str, float | None]] = []
        self.images_seen, self.elapsed = 0, 0.0  # at the last checkpoint (or 0): a resumed run goes on from there
        self.measuring_s = 0.0  # time spent measuring, excluded from the training clock
        self._start: float | None = None
        self.active = False  # measuring this run (set when training starts)
        self._subset: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # ---- the schedule -----------------------------------------------------------------------
    def training_clock(self) -> float:
        return self.clock() - self._start - self.measuring_s

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self.measuring_s = self.clock() - self.elapsed, 0.0
        # nothing to measure for a model without a likelihood when sample quality is off (fid.num_samples=0),
        # nor without a DataModule (a bare dataloader given to fit has no held-out split), nor in a
        # trainer.fast_dev_run (a check that the code runs: a curve of a few steps means nothing)
        self.active = (
            trainer.datamodule is not None
            and not getattr(trainer, "fast_dev_run", False)
            and (has_likelihood(pl_module) or bool(self.quality and self.quality.num_samples))
        )
        if trainer.datamodule is None and trainer.is_global_zero:
            log.warning(
                "No learning curve for this run: it is measured on the DataModule's validation split, and "
                "the fit was given bare dataloaders."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images_seen += trained_images(batch, trainer)  # alike on every rank: all measure at the same steps
        if self.active and self._due(self.training_clock()):
            if pl_module.device.type == "cuda":  # the clock must count the queued kernels, at intervals only
                torch.cuda.synchronize(pl_module.device)
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active and (not self.points or self.points[-1]["images"] != self.images_seen):
            self.measure(trainer, pl_module)  # the final point: where the run ended

    def _due(self, now: float) -> bool:
        """Has the clock or the image count crossed a multiple of its interval since the last point?"""
        last = self.points[-1] if self.points else {"time_s": 0.0, "images": 0}
        by_time = self.every_seconds and _interval(now, self.every_seconds) > _interval(
            last["time_s"], self.every_seconds
        )
        by_images = self.every_images and _interval(self.images_seen, self.every_images) > _interval(
            last["images"], self.every_images
        )
        return bool(by_time or by_images)

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Append a point at the current training clock, stop the clock and extend the time budget
        meanwhile, and log it (rank zero only: the other processes wait at the next step)."""
        now = self.training_clock()
        begin = self.clock()
        if trainer.is_global_zero:
            point = {"time_s": now, "images": self.images_seen, "steps": trainer.global_step}
            with torch.random.fork_rng(devices=[]):  # training's random stream stays as it was
                point |= self.evaluate(trainer, pl_module)
            self.points.append(
                {key: point.get(key) for key in ("time_s", "images", "steps", "bpd", "bpd_se", "kid", "kid_std")}
            )
            # at the step of the batch just trained, as Lightning logs that batch's own metrics
            log_point(trainer.loggers, self.points[-1], max(trainer.global_step - 1, 0))
        spent = self.clock() - begin
        self.measuring_s += spent
        extend_time_budget(trainer, spent)

    # ---- one measurement --------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """{bpd, bpd_se} on the validation subset, or {kid, kid_std} for a model without a likelihood."""
        if has_likelihood(pl_module):
            images, labels = self.subset(trainer)
            return held_out_bpd(pl_module, images, self.batch_size, labels)
        kid, kid_std = self.quality.kid(pl_module, trainer.datamodule, self.kid_samples)
        return {"kid": kid, "kid_std": kid_std}

    def subset(self, trainer: pl.Trainer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The validation subset's images, and their labels for a class-conditional model (else None)."""
        if self._subset is None:
            datamodule = trainer.datamodule
            datamodule.setup("fit")
            # a dynamically binarized split draws its pixels from the global CPU generator: the same ones every
            # run (measure() runs this inside fork_rng, so training's streams, CPU and CUDA, are untouched)
            torch.default_generator.manual_seed(0)
            self._subset = labelled_subset(datamodule.val_dataset, min(self.images, len(datamodule.val_dataset)))
        return self._subset

    # ---- resuming ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        elapsed = self.training_clock() if self._start is not None else self.elapsed
        return {"points": self.points, "images_seen": self.images_seen, "elapsed": elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the curve of a checkpoint, unless this process trained already: the test after
        training loads the best checkpoint, whose curve stops before the run's end. The state comes
        from a file: anything but what state_dict writes is refused (CheckpointError)."""
        if self._start is not None:
            return
        try:
            if not isinstance(state_dict, dict):
                raise ValueError(f"a {type(state_dict).__name__}, not an object")
            points = check_curve(state_dict.get("points"))
            images_seen, elapsed = state_dict.get("images_seen"), state_dict.get("elapsed")
            for name, value in (("images_seen", images_seen), ("elapsed", elapsed)):
                check_number(name, value)
                if value is None or value < 0:
                    raise ValueError(f"{name} is {value}, not a number of at least 0")
            if not isinstance(images_seen, int):
                raise ValueError(f"images_seen is {images_seen}, not a whole number of images")
        except ValueError as err:
            raise CheckpointError(
                f"The learning-curve state of the resume checkpoint cannot be used: {err}. The file was not written "
                "by train.py, or was altered since: resume from another checkpoint of the run, or leave out ckpt_path "
                "to start a fresh run."
            ) from err
        self.points, self.images_seen, self.elapsed = points, images_seen, float(elapsed)


def has_likelihood(pl_module: pl.LightningModule) -> bool:
    return callable(getattr(pl_module, "log_prob", None))


def _interval(value: float, every: float) -> int:
    return math.floor(value / every)


@torch.no_grad()
def held_out_bpd(
    pl_module: pl.LightningModule, images: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None
) -> dict[str, float]:
    """Mean bits/dim of `images` (N, C, H, W) under the model (given their `labels` (N,) when it is
    class-conditional: -log p(x | y)), and its standard error over the images."""
    was_training = pl_module.training
    pl_module.eval()

    def nats_of(start: int) -> torch.Tensor:
        label = {} if labels is None else {"label": labels[start : start + batch_size].to(pl_module.device)}
        nats = -pl_module.log_prob(images[start : start + batch_size].to(pl_module.device), **label)
        return nats.cpu().double()  # float64 on the CPU: a device may have none (MPS)

    try:
        nats = torch.cat([nats_of(start) for start in range(0, len(images), batch_size)])  # (N,)
    finally:
        pl_module.train(was_training)
    bpd = nats / (pl_module.dims * math.log(2))
    return {"bpd": float(bpd.mean()), "bpd_se": float(bpd.std() / math.sqrt(len(bpd)))}


def extend_time_budget(trainer: pl.Trainer, seconds: float) -> None:
    """Move the start of Lightning's Timer (trainer.max_time) later by `seconds`: time spent
    measuring is not training time. Timer keeps its start per stage in `_start_time`."""
    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback._start_time.get(RunningStage.TRAINING) is not None:
            callback._start_time[RunningStage.TRAINING] += seconds


def log_point(loggers, point: dict[str, float | None], step: int) -> None:
    """The point as history: `curve/<field>`; W&B plots bpd and kid against the training time by default."""
    metrics = {f"curve/{key}": value for key, value in point.items() if value is not None}
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            for key in ("curve/bpd", "curve/kid"):
                run.define_metric(key, step_metric="curve/time_s")
        logger.log_metrics(metrics, step=step)

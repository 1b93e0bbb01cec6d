"""The run record: what one training (or eval.py) run measured, as `<run>/record.json`.

`python -m pixel_lightning.compare <folder>` turns the records under a folder into the
comparison table, so every field is measured here, the same way for every model.

Record contract: any LightningModule can be recorded and compared if it has
  - `sample(n, temperature=..., generator=...)` returning integer levels (n, C, H, W) in
    [0, levels - 1] (on any device; the record calls it under no_grad, in eval mode);
  - `levels` (K, the number of levels per channel) and `image_shape` ((C, H, W));
  - training batches that are image tensors (B, C, H, W), or sequences whose first item is one;
  - for a class-conditional model, `condition` ("class"), `classes`, and `sample(...,
    label=...)` taking the samples' labels (n,);
  - a likelihood only if it logs `test/nll` (nats per image) and `test/bpd` (bits per
    dimension) in its test epoch. A model without one (a GAN) logs neither, and its record holds
    null for both: never a made-up number.

The record's fields and its file: pixel_lightning/records.py.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities.model_helpers import is_overridden

from pixel_lightning.callbacks.images_seen import trained_images
from pixel_lightning.callbacks.learning_curve import LearningCurve
from pixel_lightning.callbacks.sample_grid import SampleGrid
from pixel_lightning.images import make_grid, save_png
from pixel_lightning.records import blank_record, check_number, git_commit, write_record

log = logging.getLogger(__name__)

#: The totals a checkpoint keeps (RunRecord.state_dict), so the record of a resumed run counts the whole training.
EARLIER_TOTALS = ("epochs", "train_time_s", "batch_seconds", "images")


class RunRecord(pl.Callback):
    """Measures a run and writes `<output_dir>/record.json` (see the module docstring).

    With `after_test` (train.py with test=true, eval.py) the record is completed at the end of
    the test, on the weights that were tested; otherwise (or for a model without test_step) at
    the end of training. A record with
    status "running" is written at the end of training either way, so a crash in the test still
    leaves the training measurements. The final record goes to every logger: W&B summary
    (`record/<field>`) and a one-row W&B Table `run_record`; other loggers (CSV) as metrics.

    Args:
        output_dir: the run folder.
        model_name, dataset: names for the table (the Hydra choices).
        task: train or eval.  seed: the run's seed.  overrides: its command-line overrides.
        quality: an evaluation.fid.SampleQuality, or its config (the `fid` node), or None.
        after_test: complete the record at the end of the test (see above).
        data: the data config, saved in checkpoints for eval.py.
    """

    def __init__(
        self,
        output_dir: str,
        model_name: str | None = None,
        dataset: str | None = None,
        task: str = "train",
        seed: int | None = None,
        overrides: Sequence[str] = (),
        quality=None,
        after_test: bool = True,
        data: Mapping | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.known = {
            "model": model_name,
            "dataset": dataset,
            "task": task,
            "seed": seed,
            "overrides": list(overrides),
            "git_commit": git_commit(),
        }
        self.quality = hydra.utils.instantiate(quality) if isinstance(quality, Mapping) else quality
        self.after_test = after_test
        self.data = OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data
        self.batch_seconds, self.batch_images = 0.0, 0  # of this session
        self._batch_start = self._train_start = self._last_batch_end = None
        self.train_time_s: float | None = None
        self.epochs: float | None = None
        self._start_step = 0
        self._trainer: pl.Trainer | None = None
        # What the sessions before this one measured (EARLIER_TOTALS, from the resume checkpoint):
        # None until training starts, and after it when they are unknown (a checkpoint without them).
        self.earlier: dict[str, float] | None = None
        self._memory_start: int | None = None
        self._cuda = self._unsynced = False

    # ---- measuring --------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._memory_start is None:  # the first stage of the run (fit, or test in eval.py)
            if self.quality is not None and not trainer.fast_dev_run and trainer.datamodule is not None:
                self.quality.check_usable(trainer.datamodule)  # not after hours of training or testing
            self._cuda = pl_module.device.type == "cuda" or trainer.strategy.root_device.type == "cuda"
            if self._cuda:
                torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)
            self._memory_start = 0 if self._cuda else reset_peak_rss()

    def on_train_start(self, trainer, pl_module) -> None:
        self._train_start = time.perf_counter()
        self._start_step, self._trainer = trainer.global_step, trainer
        if self.earlier is None and trainer.global_step == 0:  # a new training, not a resumed one
            self.earlier = dict.fromkeys(EARLIER_TOTALS, 0.0)

    def state_dict(self) -> dict[str, float]:
        """The totals of the training so far, kept in each checkpoint for the record of a resumed run
        (nothing when the earlier sessions are unknown: they stay unknown)."""
        if self.earlier is None or self._trainer is None:
            return {}
        session = {
            "epochs": _epochs(self._trainer, self.batch_images),
            "batch_seconds": self.batch_seconds,
            "images": self.batch_images,
            "train_time_s": self._session_time(),
        }
        return {key: self.earlier[key] + session[key] for key in EARLIER_TOTALS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the totals (numbers from a file: anything else leaves them unknown) when a fit
        resumes. Not after training here: the test then restores the best checkpoint's callback
        states too, and those totals count this session already."""
        if self._train_start is not None or not state:  # no totals: its earlier sessions are unknown
            return
        try:
            if not isinstance(state, dict):
                raise ValueError(f"a {type(state).__name__}, not an object")
            for key in EARLIER_TOTALS:
                check_number(key, state.get(key))  # at most LARGEST: sums and rates of them stay finite
                if state.get(key) is None or state[key] < 0:
                    raise ValueError(f"{key} is {state.get(key)}")
        except ValueError as err:
            log.warning(
                "The resume checkpoint's run-record totals are unusable (%s): the record's totals over every "
                "session stay unknown (null)",
                err,
            )
            return
        self.earlier = {key: float(state[key]) for key in EARLIER_TOTALS}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_batch_end = time.perf_counter()
        self.batch_seconds += self._last_batch_end - self._batch_start
        self.batch_images += trained_images(batch, trainer)  # every process's: epochs and images/s are the run's
        self._unsynced = self._cuda

    def _sync(self) -> None:
        """CUDA kernels run asynchronously: when training pauses (validation, epoch end, the end), add
        the time the device still needs for the batches queued so far. Never per batch: a
        synchronisation per step would serialise the GPU with Python."""
        if self._unsynced:
            torch.cuda.synchronize()
            now = time.perf_counter()
            self.batch_seconds += now - self._last_batch_end
            self._last_batch_end, self._unsynced = now, False

    def on_validation_start(self, trainer, pl_module) -> None:
        self._sync()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync()

    def _session_time(self) -> float:
        return self._last_batch_end - self._train_start if self._last_batch_end else 0.0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()
        self.train_time_s = self._session_time()
        self.epochs = _epochs(trainer, self.batch_images)  # the train dataloader is gone after the test
        no_test = not is_overridden("test_step", pl_module)  # no likelihood to test (a GAN)
        self._write(trainer, pl_module, trainer.datamodule, final=not self.after_test or no_test)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_test:
            self._write(trainer, pl_module, trainer.datamodule, final=False)  # the test's figures before the
            self.finish(trainer, pl_module, trainer.datamodule)  # sample quality, which may fail

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule) -> None:
        """Complete the record (sample quality, status finished), write it and log it: at the end
        of the test, or called by eval.py for a model that has no test."""
        self.setup(trainer, pl_module, "test")  # a no-op unless nothing ran before (eval.py, no test)
        self._write(trainer, pl_module, datamodule, final=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Names and the data config for eval.py (plain values: loadable weights-only). A model
        that keeps only the data's shape in its hyper-parameters (the DCGAN) needs the latter."""
        checkpoint["run_record"] = {"model": self.known["model"], "dataset": self.known["dataset"], "data": self.data}

    # ---- writing ----------------------------------------------------------------------------
    def measured(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        if self._cuda:
            peak, kind = torch.cuda.max_memory_allocated(trainer.strategy.root_device) / 2**20, "cuda_max_allocated"
        else:
            peak, kind = (peak_rss() - self._memory_start) / 2**20, "cpu_max_rss_growth"
        trained = self._train_start is not None
        session = {
            "session_epochs": self.epochs,
            "session_steps": trainer.global_step - self._start_step if trained else None,
            "session_train_time_s": self.train_time_s,
            "session_train_images_per_s": self.batch_images / self.batch_seconds if self.batch_seconds else None,
        }
        earlier = self.earlier if trained else None  # None: not trained here, or the earlier sessions are unknown
        seconds = earlier["batch_seconds"] + self.batch_seconds if earlier else None
        return {
            "params": sum(p.numel() for p in pl_module.parameters()),
            "epochs": earlier["epochs"] + self.epochs if earlier else None,
            "steps": trainer.global_step if trained else None,
            "train_time_s": earlier["train_time_s"] + self.train_time_s if earlier else None,
            "train_images_per_s": (earlier["images"] + self.batch_images) / seconds if seconds else None,
            **session,
            "condition": getattr(pl_module, "condition", None),
            "test_nll": float(metrics["test/nll"]) if "test/nll" in metrics else None,
            "test_bpd": float(metrics["test/bpd"]) if "test/bpd" in metrics else None,
            "peak_memory_mb": peak,
            "peak_memory_kind": kind,
            "device": _device_name(trainer.strategy.root_device),
            "precision": str(trainer.precision),
            "sample_grid": next(
                (
                    _relative(c.last_path, self.output_dir)
                    for c in trainer.callbacks
                    if isinstance(c, SampleGrid) and c.last_path
                ),
                None,
            ),
            "wandb": _wandb_run(trainer),
            "curve": next((c.points for c in trainer.callbacks if isinstance(c, LearningCurve)), None),
        }

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule, final: bool) -> None:
        if not trainer.is_global_zero:
            return
        record = blank_record(**self.known, **self.measured(trainer, pl_module), status="running")
        if getattr(datamodule, "note", None):  # a caveat of the data itself (Chrabaszcz's ImageNet: not the paper's)
            record["dataset"] = f"{record['dataset']} ({datamodule.note})"
        if final:
            if self.quality is not None and not trainer.fast_dev_run:  # a dev run checks code, measures nothing
                with torch.inference_mode(False):  # the classifier may train here, inside the test loop
                    fields, samples = self.quality.evaluate(pl_module, datamodule)
                record.update(fields)
                if samples is not None:  # the scored samples are the run's picture
                    grid = make_grid(samples[:16], pl_module.levels)
                    path = save_png(grid, self.output_dir / "samples" / "scored.png")
                    record["sample_grid"] = _relative(path, self.output_dir)
            record["status"] = "finished"
        path = write_record(self.output_dir, record)
        if final:
            log.info("Wrote the run record %s", path)
            log_record(trainer.loggers, record)


def log_record(loggers, record: dict[str, Any]) -> None:
    """W&B: summary `record/<field>` and a one-row Table `run_record`; CSV: every field; other
    loggers (TensorBoard, MLflow): the numeric fields as metrics."""
    flat = {
        key: " ".join(value) if key == "overrides" else value
        for key, value in record.items()
        if value is not None and key != "wandb"
    }
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update({f"record/{key}": value for key, value in flat.items()})
            logger.log_table(key="run_record", columns=list(flat), data=[list(flat.values())])
        else:  # CSV keeps text too; TensorBoard and MLflow metrics are numbers only
            text = type(logger).__name__ == "CSVLogger"
            logger.log_metrics(
                {f"record/{key}": value for key, value in flat.items() if text or isinstance(value, int | float)}
            )
            logger.save()


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the process's peak RSS where Linux allows it (so the loading of the data before
    the run does not hide the run's own peak); returns the RSS to measure growth from, bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (VmHWM)
        return _proc_status_bytes("VmRSS")
    except (OSError, TypeError):
        return peak_rss()


def peak_rss() -> int:
    """Peak RSS of the process in bytes: VmHWM, or ru_maxrss (KiB on Linux) without /proc."""
    return _proc_status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _epochs(trainer: pl.Trainer, images: int) -> float:
    """Passes over the training set (fractional when a time budget stopped one midway)."""
    try:
        return images / len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):  # no sized dataset: count the epochs Lightning began
        return float(trainer.fit_loop.epoch_progress.current.completed)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _relative(path: Path, output_dir: Path) -> str:
    """The path relative to the run folder when inside it, so records survive moving the folder."""
    path, output_dir = Path(path).absolute(), output_dir.absolute()
    return str(path.relative_to(output_dir)) if path.is_relative_to(output_dir) else str(path)


def _wandb_run(trainer: pl.Trainer) -> dict | None:
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            return {"project": run.project, "group": run.group or None, "mode": run.settings.mode}
    return None

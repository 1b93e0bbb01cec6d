"""The sample grid: images sampled during training, saved and logged (rank zero, eval mode, no_grad)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from pixel_lightning.errors import UserError
from pixel_lightning.images import make_grid, picture, save_png
from pixel_lightning.loggers import log_image

log = logging.getLogger(__name__)


class SampleGrid(pl.Callback):
    """Every `every_n_epochs` epochs and once at the end of training, sample `num_samples`
    images, save them as `<dirpath>/epoch_XXX.png` (`final_step_N.png` when training stopped
    between those epochs; enlarged to be read, see images.picture) and log them at their native
    size to every logger that keeps images (W&B, TensorBoard, MLflow). Sampling uses a fixed
    seed, so grids of successive epochs are comparable. A class-conditional model (one with
    `classes`) draws one row per class instead, `samples_per_class` images each.
    """

    def __init__(
        self,
        dirpath: str,
        num_samples: int = 16,
        every_n_epochs: int = 1,
        temperature: float = 1.0,
        seed: int = 0,
        samples_per_class: int = 4,
    ):
        if num_samples < 1 or every_n_epochs < 1 or samples_per_class < 1 or not temperature > 0:
            raise UserError(
                "callbacks.sample_grid needs num_samples, every_n_epochs and samples_per_class of at least 1 and a "
                f"temperature above 0, but they are {num_samples}, {every_n_epochs}, {samples_per_class} and "
                f"{temperature}. Fix those overrides."
            )
        self.dirpath = Path(dirpath)
        self.num_samples, self.every_n_epochs, self.samples_per_class = num_samples, every_n_epochs, samples_per_class
        self.temperature, self.seed = temperature, seed
        self._last_step: int | None = None
        self.last_path: Path | None = None  # of the last grid saved (read by the run record)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._sample_and_log(trainer, pl_module, f"epoch_{trainer.current_epoch:03d}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_step != trainer.global_step:  # trained further since the last grid
            self._sample_and_log(trainer, pl_module, f"final_step_{trainer.global_step}")

    def _sample_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str) -> None:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        classes = getattr(pl_module, "classes", 0)
        if classes:  # one row per class
            label = torch.arange(classes, device=pl_module.device).repeat_interleave(self.samples_per_class)
            options, count, nrow = {"label": label}, len(label), self.samples_per_class
        else:
            options, count, nrow = {}, self.num_samples, None
        with torch.no_grad():  # sample() also switches to eval mode and back
            levels = pl_module.sample(count, temperature=self.temperature, generator=generator, **options)
        path = self.last_path = save_png(picture(levels, pl_module.levels, nrow=nrow), self.dirpath / f"{name}.png")
        grid = make_grid(levels, pl_module.levels, nrow=nrow)  # the loggers keep the native size, for analysis
        log.info("Saved a sample grid to %s", path)
        log_image(trainer.loggers, "samples", grid, trainer.global_step, caption=path.stem)

"""The loggers of the `logger` config group, and figures and text sent to any of them.

W&B, TensorBoard and MLflow each keep images their own way (a media panel, an image summary, a
PNG artifact); CSV keeps none. log_image and log_text are the one place that knows which is which:
the sample grids, the learning curve's callers and the multirun comparison log through them.
"""

from __future__ import annotations

import importlib.util

import hydra
import numpy as np
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from pixel_lightning.errors import UserError

#: A logger's class -> the modules it can write with (one is enough) and the package extra that installs one.
NEEDS = {"TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"), "MLFlowLogger": (("mlflow",), "mlflow")}


def instantiate_loggers(group: DictConfig | None) -> list[Logger]:
    """The loggers of the `logger` group (null -> []); one paragraph, not a traceback, for a
    logger whose package is not installed."""
    loggers = []
    for name, entry in (group or {}).items():
        if not entry or "_target_" not in entry:
            continue
        modules, extra = NEEDS.get(str(entry._target_).rsplit(".", 1)[-1], ((), None))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise UserError(
                f"logger={name} needs the {modules[0]} package, which is not installed. Install it with "
                f"pip install 'pixel-lightning[{extra}]' (or pip install {modules[0]}), or pick another logger, e.g. "
                "logger=csv."
            )
        loggers.append(hydra.utils.instantiate(entry))
    return loggers


def log_image(loggers: list[Logger], key: str, image: np.ndarray, step: int, caption: str) -> None:
    """An (H, W, C) uint8 image to every logger that keeps images: W&B (media under `key`),
    TensorBoard (an image summary `key` at `step`), MLflow (the artifact `<key>/<caption>.png`)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step, caption=[caption])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, image, artifact_file=f"{key}/{caption}.png")


def log_text(loggers: list[Logger], key: str, markdown: str) -> None:
    """Markdown to TensorBoard (its text tab renders it) and MLflow (the artifact `<key>.md`)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, markdown, 0)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_text(logger.run_id, markdown, f"{key}.md")

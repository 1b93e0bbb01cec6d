"""Configs read from files the user did not write are data, never code.

A checkpoint's hyper-parameters (and a run record, or another run's `.hydra/config.yaml`) are
handed to `hydra.utils.instantiate`, which calls whatever `_target_` names with the arguments
beside it: a crafted file that passes the weights-only load could still name a function that
writes files or runs commands. So before anything is built from such a config, every `_target_`
in it, however deeply nested (dicts, lists, `_args_`, `_partial_`), must be one of the classes
below. `trust_checkpoint=true` is the only way around the check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pixel_lightning.errors import CheckpointError

#: Everything a file may ask to build: the project's own nets, modules and datamodules, and the
#: torch optimisers and schedulers its configs use. Adding a class is one line here.
ALLOWED_TARGETS = frozenset(
    {
        "pixel_lightning.models.pixelcnn.PixelCNN",
        "pixel_lightning.models.pixelcnn_pp.PixelCNNpp",
        "pixel_lightning.models.row_lstm.RowLSTM",
        "pixel_lightning.models.diagonal_bilstm.DiagonalBiLSTM",
        "pixel_lightning.models.spatial_lstm.SpatialLSTM",
        "pixel_lightning.models.gated_pixelcnn.GatedPixelCNN",
        "pixel_lightning.models.pixelsnail.PixelSNAIL",
        "pixel_lightning.models.AutoregressiveImageModel",
        "pixel_lightning.data.BinarizedMNISTDataModule",
        "pixel_lightning.data.MNISTDataModule",
        "pixel_lightning.data.CIFAR10DataModule",
        "pixel_lightning.data.streaming.StreamingImageDataModule",
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.RMSprop",
        "torch.optim.SGD",
        "torch.optim.lr_scheduler.StepLR",
        "torch.optim.lr_scheduler.MultiStepLR",
        "torch.optim.lr_scheduler.ExponentialLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
    }
)


def check_buildable(config: Any, source: str, where: str) -> None:
    """Raise CheckpointError unless every `_target_` in `config` is in ALLOWED_TARGETS.

    `source` names the file in the message ("Checkpoint 'x.ckpt'"), `where` the path of
    `config` inside it ("hyper_parameters"). Interpolations (`${...}`) are refused too: configs
    are saved resolved, and a resolver could read the environment.
    """
    if isinstance(config, Mapping):
        target = config.get("_target_")
        if "_target_" in config and (not isinstance(target, str) or target not in ALLOWED_TARGETS):
            raise _refused(
                f"{source} asks to build {target} (at {where}._target_), which is not one of pixel-lightning's "
                "own models, datamodules or torch optimisers, so nothing was built from it: a file can name any "
                "Python function there, including one that writes files or runs commands."
            )
        for key, value in config.items():
            check_buildable(value, source, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for index, value in enumerate(config):
            check_buildable(value, source, f"{where}[{index}]")
    elif isinstance(config, str) and "${" in config:
        raise _refused(
            f"{source} holds the interpolation {config} (at {where}), which a saved config never does, "
            "so nothing was built from it."
        )


def _refused(problem: str) -> CheckpointError:
    return CheckpointError(
        f"{problem} If you trust the file and where it came from, pass trust_checkpoint=true; otherwise do not use it."
    )

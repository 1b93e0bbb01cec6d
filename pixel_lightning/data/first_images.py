"""The first images of a dataset's test split, for completions and the zoo cards' quick figure."""

from __future__ import annotations

from collections.abc import Mapping

import hydra
import torch

from pixel_lightning.errors import UserError


def first_test_images(data: Mapping, data_dir: str, count: int, asked: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `count` test images of the dataset of config `data` (a checkpoint's, already
    checked), and their labels when the data is class-conditional (else None). `asked` names the
    setting that asked for `count` images, for the message when the split has fewer."""
    datamodule = hydra.utils.instantiate(dict(data, data_dir=data_dir))
    datamodule.prepare_data()
    datamodule.setup("test")
    available = len(datamodule.test_dataset)
    if count > available:
        raise UserError(
            f"{asked}={count} asks for more images than the {available} of the {datamodule.name} test split. "
            f"Use {asked}={available} or fewer."
        )
    items = [datamodule.test_dataset[i] for i in range(count)]
    if datamodule.condition == "class":  # (image, label) items
        return torch.stack([image for image, _ in items]), torch.stack([label for _, label in items])
    return torch.stack(items), None

"""Helpers shared by the tests: the repo root, real-data gating, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    value = os.environ.get("PIXEL_DATA_DIR")
    return Path(value).resolve() if value else None


requires_data = pytest.mark.skipif(
    real_data_dir() is None,
    reason="PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data) to run this test",
)


def tiny_model(channels: int = 1, levels: int = 2, height: int = 4, width: int = 4, arch: str = "pixelcnn.PixelCNN", **net):
    """A small AutoregressiveImageModel for unit tests."""
    from pixel_lightning.models import AutoregressiveImageModel

    net_cfg = {"_target_": f"pixel_lightning.models.{arch}", "channels": channels, "levels": levels}
    net_cfg.update({"hidden": 12, "layers": 1, "output_hidden": 24} | net)
    return AutoregressiveImageModel(
        net=net_cfg,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels},
    )

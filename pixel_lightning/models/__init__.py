"""Architectures (one per file) and the LightningModule that trains and samples them."""

from pixel_lightning.models.autoregressive import AutoregressiveImageModel

__all__ = ["AutoregressiveImageModel"]

"""Architectures (one per file) and the LightningModules that train and sample them."""

from pixel_lightning.models.autoregressive import AutoregressiveImageModel
from pixel_lightning.models.dcgan import DCGAN

__all__ = ["DCGAN", "AutoregressiveImageModel"]

"""pixel-lightning: PixelCNN and PixelRNN experiments with PyTorch Lightning and Hydra."""

from pixel_lightning.config import register_resolvers

register_resolvers()

__version__ = "0.1.0"

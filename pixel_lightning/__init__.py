"""pixel-lightning: PixelCNN and PixelRNN experiments with PyTorch Lightning and Hydra."""

from pixel_lightning.config import register_resolvers

register_resolvers()


def __getattr__(name: str):
    """`pixel_lightning.load_model` (pretrained.load_model), imported on first use so that importing the
    package (which every command does first) does not load torch and the models."""
    if name == "load_model":
        from pixel_lightning.pretrained import load_model

        return load_model
    raise AttributeError(f"module 'pixel_lightning' has no attribute {name!r}")


__version__ = "0.1.0"

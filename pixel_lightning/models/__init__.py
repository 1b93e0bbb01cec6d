"""Architectures (one per file), the distribution they define, and the LightningModules that train them.

The LightningModules load on first use (`models.AutoregressiveImageModel`, `models.DCGAN`), so that
what only samples (sample.py) does not import Lightning.
"""

from importlib import import_module

from pixel_lightning.models.distribution import AutoregressiveDistribution

_LIGHTNING_MODULES = {"AutoregressiveImageModel": "autoregressive", "DCGAN": "dcgan"}

__all__ = ["DCGAN", "AutoregressiveDistribution", "AutoregressiveImageModel"]


def __getattr__(name: str):
    if name in _LIGHTNING_MODULES:
        return getattr(import_module(f"{__name__}.{_LIGHTNING_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""OmegaConf resolvers used by `conf/`; importing the package registers them."""

from __future__ import annotations

from omegaconf import OmegaConf


def levels(bits: int, binarize: object = None) -> int:
    """Number of discrete levels K: 2 for binarized data, else 2**bits."""
    return 2 if binarize not in (None, False, "", "null") else 2 ** int(bits)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("levels"):
        OmegaConf.register_new_resolver("levels", levels)

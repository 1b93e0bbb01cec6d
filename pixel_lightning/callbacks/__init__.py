"""Lightning callbacks of pixel-lightning (configured in `conf/callbacks/`)."""

from pixel_lightning.callbacks.divergence import DivergenceGuard
from pixel_lightning.callbacks.sample_grid import SampleGrid

__all__ = ["DivergenceGuard", "SampleGrid"]

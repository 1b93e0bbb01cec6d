"""Lightning callbacks of pixel-lightning (configured in `conf/callbacks/`)."""

from pixel_lightning.callbacks.divergence import DivergenceGuard
from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.callbacks.sample_grid import SampleGrid

__all__ = ["DivergenceGuard", "RunRecord", "SampleGrid"]

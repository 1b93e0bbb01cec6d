"""Lightning callbacks of pixel-lightning (configured in `conf/callbacks/`)."""

from pixel_lightning.callbacks.rank_seed import RankSeed
from pixel_lightning.callbacks.sample_grid import SampleGrid

__all__ = ["RankSeed", "SampleGrid"]

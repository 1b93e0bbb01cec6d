"""Lightning callbacks of pixel-lightning (configured in `conf/callbacks/`)."""

from pixel_lightning.callbacks.divergence import DivergenceGuard
from pixel_lightning.callbacks.learning_curve import LearningCurve
from pixel_lightning.callbacks.progress import PlainProgress, progress_bar
from pixel_lightning.callbacks.rank_seed import RankSeed
from pixel_lightning.callbacks.restored_paths import RestoredPathGuard
from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.callbacks.sample_grid import SampleGrid
from pixel_lightning.callbacks.wandb_run_id import WandbRunId

__all__ = [
    "DivergenceGuard",
    "LearningCurve",
    "PlainProgress",
    "progress_bar",
    "RankSeed",
    "RestoredPathGuard",
    "RunRecord",
    "SampleGrid",
    "WandbRunId",
]

"""`python benchmarks/run.py`: the benchmark suite (the package benchmarks/, options in benchmarks/cli.py),
the same as `python -m benchmarks`. Imported as `run` from this folder (tests, gpu_check.py), it gives the
suite's parts by their old names."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package benchmarks/, from anywhere

from benchmarks.cli import DATA, FIELDS, MODELS, main, parse  # noqa: E402
from benchmarks.models import build, loss_of, random_batches  # noqa: E402
from benchmarks.overhead import TRAINING_ONLY, pipeline_parts, train_config  # noqa: E402

__all__ = [
    "DATA",
    "FIELDS",
    "MODELS",
    "TRAINING_ONLY",
    "build",
    "loss_of",
    "main",
    "parse",
    "pipeline_parts",
    "random_batches",
    "train_config",
]

if __name__ == "__main__":
    main()

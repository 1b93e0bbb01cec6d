"""The commands of the installed package (pyproject.toml, [project.scripts]), also behind the scripts
train.py, sample.py and eval.py at the top of the repository:

- pixel-train, pixel-sample, pixel-eval: the Hydra pipelines (commands/train.py, sample.py, eval.py:
  Hydra names a job, and its log file, after the module of its function);
- pixel-compare, pixel-prepare: the argparse tools of pixel_lightning/evaluation/compare/ and
  pixel_lightning/data/prepare.py.

Their outputs go under the current folder (paths.log_dir=logs); users add config folders of their own
with `hydra.searchpath=[file:///abs/path/to/configs]` or from conf/local/ (see conf/local/example.yaml).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pixel_lightning.cli import exit_if_jobs_failed, list_failed_jobs
from pixel_lightning.extras import missing_extra, missing_plugin


def config_dir() -> str:
    """The Hydra configs: inside the package in a wheel (setup.py carries conf/ there), at the top of the
    repository in a clone (and its editable install)."""
    packaged = Path(__file__).resolve().parents[1] / "conf"
    return str(packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf")


def run_hydra(main: Callable[[], object]) -> None:
    """Run a @hydra.main function on the command line's overrides; exit non-zero if a job of a multirun failed."""
    hint = missing_plugin(sys.argv[1:])
    if hint is not None:
        fail(hint)
    try:
        main()
    except SystemExit:  # a job interrupted by a signal, or a comparison that could not be written
        list_failed_jobs()
        raise
    exit_if_jobs_failed()


def compare() -> None:
    """pixel-compare <folder> [<folder> ...] [--out <folder>]: the comparison of the runs under some folders."""
    from pixel_lightning.evaluation.compare import main

    main()


def prepare() -> None:
    """pixel-prepare <dataset> <output>: a dataset as litdata chunks, for streamed training."""
    try:
        from pixel_lightning.data.prepare import main
    except ModuleNotFoundError as err:
        hint = missing_extra(err)
        if hint is None:
            raise
        fail(hint)
    main()


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

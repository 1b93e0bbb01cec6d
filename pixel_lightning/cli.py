"""Running a Hydra job so that users see one-paragraph errors, never tracebacks, for their own
mistakes, and so that one failing job of a multirun is recorded while the others still run."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pixel_lightning.errors import UserError
from pixel_lightning.records import record_failure

log = logging.getLogger(__name__)

#: Output folders of the multirun jobs of this process that failed; train.py exits non-zero if any.
failed_jobs: list[str] = []


def user_error_message(err: BaseException) -> str | None:
    """The message to show for a user-fixable error, or None if `err` is a bug."""
    for cause in _chain(err):
        if isinstance(cause, UserError):
            return str(cause)
    if isinstance(err, MissingMandatoryValue):
        return f"Missing a required setting: {err.full_key}. Pass it on the command line, e.g. {err.full_key}=<value>."
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        first_line = str(err).splitlines()[0].rstrip(".")
        return f"Invalid configuration: {first_line}. Check the override of {key or 'that setting'}."
    if isinstance(err, InstantiationException):
        target = re.search(r"target '([^']+)'", str(err))
        key = re.search(r"full_key: (\S+)", str(err))
        cause = err.__cause__ or err
        detail = " ".join(str(cause).split()).rstrip(".")
        return (
            f"Could not build {target.group(1) if target else 'an object'} from the config: {type(cause).__name__}: "
            f"{detail}. Check the overrides of {key.group(1) if key else 'its settings'}."
        )
    return None


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def run_job(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task(cfg)` as one Hydra job; report user errors plainly and record failures."""
    try:
        return task(cfg)
    except Exception as err:
        message = user_error_message(err)
        hydra_cfg = HydraConfig.get()
        output_dir = Path(hydra_cfg.runtime.output_dir)
        write_failure(output_dir, message or traceback.format_exc())
        record_failure(cfg, output_dir, message or f"{type(err).__name__}: {err}")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            failed_jobs.append(str(output_dir))
            log.error("Job %s failed; see %s. The other jobs go on.", hydra_cfg.job.num, output_dir / "failure.txt")
            print(f"error: {message or err!r}", file=sys.stderr)
            return None
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def write_failure(output_dir: Path, report: str) -> None:
    """Leave why the job failed in <output_dir>/failure.txt; best effort, since the folder itself may be
    what failed. (The W&B run of a failed job is closed as failed by the pipeline that opened it.)"""
    try:
        (output_dir / "failure.txt").write_text(report.rstrip("\n") + "\n")
    except OSError as err:
        log.error("Could not write %s: %s", output_dir / "failure.txt", err)


def exit_if_jobs_failed() -> None:
    """After a multirun: list the failed jobs and exit non-zero, so scripts notice."""
    if failed_jobs:
        print(f"error: {len(failed_jobs)} job(s) failed; their failure.txt says why:", file=sys.stderr)
        for path in failed_jobs:
            print(f"  {path}", file=sys.stderr)
        sys.exit(1)

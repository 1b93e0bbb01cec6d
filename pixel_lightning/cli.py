"""Running a Hydra job so that users see one-paragraph errors, never tracebacks, for their own
mistakes, so that one failing job of a multirun is recorded while the others still run, and so
that a job stopped by SIGTERM or SIGINT is recorded as interrupted and exits 128 + the signal."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from pixel_lightning.errors import UserError
from pixel_lightning.extras import missing_extra
from pixel_lightning.files import failed_write
from pixel_lightning.records import record_failure

log = logging.getLogger(__name__)

#: Output folders of the failed jobs of this process's multirun; the entry points exit non-zero if any.
failed_jobs: list[str] = []
FAILURE_NAME = "failure.txt"


def user_error_message(err: BaseException) -> str | None:
    """The message to show for a user-fixable error, or None if `err` is a bug."""
    for cause in _chain(err):
        if isinstance(cause, UserError):
            return str(cause)
        if missing_extra(cause) is not None:  # a feature whose optional dependencies are not installed
            return missing_extra(cause)
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
    """Run `task(cfg)` as one Hydra job; report user errors plainly, record failures and interruptions."""
    with interruptible() as received:
        try:
            return task(cfg)
        except BaseException as err:
            if received:  # whatever the signal's exception turned into on its way out
                end_interrupted(cfg, received[0])
            if not isinstance(err, Exception):
                raise
            message = user_error_message(err)
            hydra_cfg = HydraConfig.get()
            output_dir = Path(hydra_cfg.runtime.output_dir)
            write_failure(output_dir, message or traceback.format_exc())
            record_failure(cfg, output_dir, message or f"{type(err).__name__}: {err}")
            if hydra_cfg.mode == RunMode.MULTIRUN:
                failed_jobs.append(str(output_dir))
                log.error("Job %s failed; see %s. The other jobs go on.", hydra_cfg.job.num, output_dir / FAILURE_NAME)
                print(f"error: {message or err!r}", file=sys.stderr)
                return None
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)


class Interrupted(BaseException):
    """The job received SIGTERM or SIGINT (see `interruptible`). Not an Exception, like
    KeyboardInterrupt: no `except Exception` on its way out may take it for a failure."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: What usually sends each signal, for the message.
SENDERS = {signal.SIGTERM: "a scheduler's preemption, a container stop or a kill", signal.SIGINT: "Ctrl+C"}


@contextmanager
def interruptible() -> Iterator[list[int]]:
    """Within it, the first SIGTERM or SIGINT raises Interrupted in the main thread and is added to
    the list yielded; later ones are ignored, so that recording the interruption is not cut short.
    (SIGTERM's default would end the process on the spot, and Lightning turns it into a clean exit
    0; SIGINT into exit 1.) A signal another handler already claims keeps it: submitit's job runner
    bypasses SIGTERM so that its own preemption signal can requeue the job. A forked process (a
    DataLoader worker) that inherits the handler gets the default behaviour."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    pid, previous = os.getpid(), {}

    def handle(signum: int, frame) -> None:
        if os.getpid() != pid:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        elif not received:
            received.append(signum)
            raise Interrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = signal.signal(signum, handle)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def end_interrupted(cfg: DictConfig, signum: int) -> None:
    """Record the job as interrupted (failure.txt, record.json), say how to resume it, and exit
    128 + signum, as a shell reports a process ended by that signal. A multirun stops too: the
    signal was meant for the whole process (the entry point lists its earlier failed jobs)."""
    name = signal.Signals(signum).name
    last = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", throw_on_resolution_failure=False)
    last = Path(str(last)) / "last.ckpt" if last else None
    if last is not None and last.is_file():
        how = (
            f"Its last checkpoint resumes it where that checkpoint was written: run the same command with "
            f"ckpt_path={last.absolute()}"
        )
    else:
        how = "It left no checkpoint to resume from: run the same command again"
    message = f"Interrupted by {name} ({SENDERS[signum]}) before the job finished. {how}."
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    write_failure(output_dir, message)
    record_failure(cfg, output_dir, message, status="interrupted")
    print(f"error: {message}", file=sys.stderr)
    sys.exit(128 + signum)


def write_failure(output_dir: Path, report: str) -> None:
    """Leave why the job failed in <output_dir>/failure.txt; best effort, since the folder itself may be
    what failed. (The W&B run of a failed job is closed as failed by the pipeline that opened it.)"""
    try:
        (output_dir / FAILURE_NAME).write_text(report.rstrip("\n") + "\n")
    except OSError as err:
        log.error("Could not write %s: %s", output_dir / FAILURE_NAME, err)


def exit_if_jobs_failed() -> None:
    """After a multirun: list the failed jobs and exit non-zero, so scripts notice."""
    if failed_jobs:
        list_failed_jobs()
        sys.exit(1)


def list_failed_jobs() -> None:
    if failed_jobs:
        paths = list(dict.fromkeys(failed_jobs))  # a job of this process is also found by JobFolders
        print(f"error: {len(paths)} job(s) failed; their failure.txt says why:", file=sys.stderr)
        for path in paths:
            print(f"  {path}", file=sys.stderr)


class JobFolders(Callback):
    """Hydra callback (conf/hydra/default.yaml) around the run or the sweep:

    - at its start, makes the run (or sweep) folder before Hydra does, so that a folder that cannot
      be made or written (a path through a file, no permission, a read-only disk) is one paragraph
      and exit status 2: Hydra reports any error of its own job start with a traceback;
    - at the end of a multirun, adds to `failed_jobs` every job of the sweep that left a failure.txt.
      Under the submitit launchers (local, SLURM) the jobs run in other processes, so run_job's
      `failed_jobs` stays empty here: their files are what they leave.
    """

    def __init__(self) -> None:
        self._failures_before: dict[Path, int] = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        make_output_folder(config, "hydra.sweep.dir")
        self._failures_before = failure_files(config)  # a reused sweep folder may hold older ones

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for path, stamp in failure_files(config).items():
            if self._failures_before.get(path) != stamp:
                failed_jobs.append(str(path.parent))


def failure_files(config: DictConfig) -> dict[Path, int]:
    """The failure.txt files under the sweep folder, with their modification times (ns); by absolute
    paths, as run_job names the failed jobs of this process."""
    folder = Path(os.path.abspath(config.hydra.sweep.dir))
    return {path: path.stat().st_mtime_ns for path in sorted(folder.rglob(FAILURE_NAME))}


def make_output_folder(config: DictConfig, key: str) -> Path:
    """Create the folder `config.<key>` and check that a file can be written in it; returns it.
    On failure print one paragraph and exit 2 (Hydra would print a traceback)."""
    HydraConfig.instance().set_config(config)  # the folder may name hydra:... values
    folder = key  # until it resolves
    try:
        folder = Path(str(OmegaConf.select(config, key)))
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except Exception as err:
        cause = failed_write(err)
        if cause is None:
            raise
        print(
            f"error: Could not make or write the output folder ({key}) {cause.filename or folder}: "
            f"{cause.strerror or cause}. Set {key}=<a writable folder>, or paths.log_dir=<a writable folder> "
            "for the default folders under it.",
            file=sys.stderr,
        )
        sys.exit(2)
    return folder

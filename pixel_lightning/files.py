"""Writing output files atomically, with a one-paragraph error when the disk or folder refuses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pixel_lightning.errors import OutputError


@contextmanager
def atomic_write(path: str | os.PathLike, what: str) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file beside it, fsynced and renamed into
    place only when the writing succeeded, so a crash or a full disk never leaves a truncated
    file and an earlier version stays intact. An OSError becomes an OutputError naming `what`
    ("the checkpoint") and the path, and so does a RuntimeError that wraps one (torch's zip writer
    reports a failed write as `[enforce fail at inline_container.cc] unexpected pos`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        cause = failed_write(err)
        if cause is None:  # a RuntimeError of the writer's own (a bug), not of the disk
            raise
        raise OutputError(
            f"Could not write {what} {path}: {cause.strerror or cause}. Free space on that disk, raise the file-size "
            "limit (ulimit -f), make the folder writable, or write elsewhere (hydra.run.dir=<folder>); whatever was "
            "written there before is intact."
        ) from err
    finally:
        if tmp.is_file():
            tmp.unlink()


def failed_write(err: BaseException) -> OSError | None:
    """The OSError behind a failed write: `err` itself, or the one a wrapping error arose from."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err

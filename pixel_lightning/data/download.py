"""Finding dataset files in the data folder, and fetching the missing ones with verification.

A download goes to a temporary file outside the data folder and is verified there; only a
verified file is moved in (creating the folder at that moment), so a failed or offline download
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pixel_lightning.errors import DataError

TIMEOUT_S = 30.0  # per socket operation: fail fast when offline, tolerate slow servers
CHUNK = 1 << 20

Verifier = Callable[[Path], None]  # raises DataError when the file is not the expected one


@dataclass(frozen=True)
class RemoteFile:
    """A canonical download: its file name in the data folder, mirrors tried in order, and
    the check a downloaded copy must pass."""

    name: str
    urls: tuple[str, ...]
    verify: Verifier


@dataclass(frozen=True)
class Requirement:
    """One needed input, satisfied by the first of `alternatives` (file or folder names) that
    exists in the data folder; `remote` provides the canonical one when none does."""

    alternatives: tuple[str, ...]
    remote: RemoteFile

    def find(self, folder: Path) -> Path | None:
        return next((folder / name for name in self.alternatives if (folder / name).exists()), None)

    def describe(self) -> str:
        first, *others = self.alternatives
        return first + "".join(f" (or {name})" for name in others)


def md5_verifier(md5: str, *, gunzipped: bool = False) -> Verifier:
    """Check the MD5 of the file, or of its decompressed content when `gunzipped` (the
    published MNIST checksums are those of the uncompressed IDX files)."""

    def verify(path: Path) -> None:
        digest = hashlib.md5()
        try:
            with gzip.open(path, "rb") if gunzipped else path.open("rb") as stream:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"it cannot be read ({exc})") from None
        if digest.hexdigest() != md5:
            raise DataError(f"its MD5 is {digest.hexdigest()}, expected {md5}")

    return verify


def ensure_present(dataset: str, folder: Path, requirements: Sequence[Requirement], download: bool) -> None:
    """Download what `requirements` lack in `folder` (if allowed); raise one DataError naming
    every missing file when they cannot all be provided."""
    missing = [req for req in requirements if req.find(folder) is None]
    if not missing:
        return
    if not download:
        raise missing_error(dataset, folder, missing, "Downloading is disabled (download=False).")
    for remote in _unique_remotes(missing):
        try:
            fetch(remote, folder)
        except DataError as exc:
            raise missing_error(dataset, folder, missing, f"Downloading {remote.name} failed: {exc}") from None


def missing_error(dataset: str, folder: Path, missing: Iterable[Requirement], reason: str) -> DataError:
    """The one message for absent data: which files, which folder, why, and the three fixes."""
    names = "; ".join(req.describe() for req in missing)
    return DataError(
        f"{dataset} data not found: missing {names} in {folder}. {reason} To fix it, point "
        "PIXEL_DATA_DIR (or data_dir) at a folder with the layout MNIST/raw/, binarized_mnist/, "
        "cifar10/ (e.g. PIXEL_DATA_DIR=../shared/data), or run once with network access so the "
        f"files download, or copy the files into {folder}."
    )


def fetch(remote: RemoteFile, folder: Path, timeout: float = TIMEOUT_S) -> Path:
    """Download `remote` from its first working mirror, verify it, then move it into `folder`."""
    failures = []
    for url in remote.urls:
        try:
            temp = _download_to_temp(url, remote.name, timeout)
        except DataError as exc:
            failures.append(str(exc))
            continue
        try:
            remote.verify(temp)
        except DataError as exc:
            failures.append(f"{url} gave a bad file: {exc}")
            temp.unlink()
            continue
        return _install(temp, folder / remote.name)
    raise DataError("; ".join(failures) + ".")


def _download_to_temp(url: str, name: str, timeout: float) -> Path:
    """The download, in a temporary file outside the data folder."""
    handle, temp_name = tempfile.mkstemp(prefix="pixel-lightning-", suffix=f"-{name}")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, CHUNK)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        temp.unlink()
        raise DataError(f"{url}: {exc}") from None
    return temp


def _install(temp: Path, target: Path) -> Path:
    """Move a verified download into place; the .part step keeps a cross-device copy from
    ever leaving a half-written file under the final name."""
    partial = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(temp, partial)
        os.replace(partial, target)
    except OSError as exc:
        for leftover in (temp, partial):
            with contextlib.suppress(OSError):  # e.g. the folder itself could not be made
                leftover.unlink()
        raise DataError(f"it could not be saved as {target} ({exc})") from None
    return target


def _unique_remotes(requirements: Iterable[Requirement]) -> list[RemoteFile]:
    """Each download once, even when it serves several requirements (CIFAR train and test)."""
    return list({req.remote.name: req.remote for req in requirements}.values())

"""A prepared chunk folder: its manifest (prepared.json), and the checks every split passes before
litdata opens it.

litdata trusts a split's index.json: a `data_format` of `pickle` sends every item through
`pickle.loads` (a chunk folder could run code), a chunk name may be an absolute path or `../`,
and a missing or truncated chunk is noticed only when it is read (after a stall, hours into a
run). So before a split is opened, its index.json must say exactly what `prepare` writes, list
exactly the chunks the manifest recorded (bare names, their image counts and sizes, summing to the
split's count), and every chunk must be a regular file of its recorded size whose header agrees.
The datasets are also given `SAFE_SERIALIZERS`, which refuse every format `prepare` never writes,
so no chunk reaches `pickle.loads` whatever its index says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import litdata.helpers
import numpy as np
from litdata.streaming.serializers import _SERIALIZERS, Serializer
from litdata.utilities._pytree import tree_flatten, treespec_dumps

from pixel_lightning.errors import DataError
from pixel_lightning.files import atomic_write

# litdata asks PyPI for a newer version whenever a dataset is opened or written (a 30 s timeout on an offline
# node) and urges an upgrade, but its versions from 0.2.45 on break this install (docs/install.md).
litdata.helpers._get_newer_version = lambda version: None

MANIFEST = "prepared.json"
MANIFEST_VERSION = 2  # 2: each split lists its chunks (name, images, bytes, SHA-256)
INDEX = "index.json"
CHUNK_NAME = re.compile(r"chunk-[0-9]+-[0-9]+\.bin")  # what litdata's optimize() names its chunks
PREPARE = "python -m pixel_lightning.data.prepare <dataset> <folder>"


def is_remote(root: str) -> bool:
    return root.startswith(("s3://", "gs://"))


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if is_remote(root) else str(Path(root) / name)


def _read_text(path: str) -> str | None:
    """A small file of a folder or s3:// / gs:// URI, None when there is none."""
    if not is_remote(path):
        return Path(path).read_text() if Path(path).is_file() else None
    from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own s3/gs client

    provider = _get_fs_provider(path)
    if not provider.exists(path):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        provider.download_file(path, os.path.join(tmp, "file"))
        return Path(tmp, "file").read_text()


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of a chunk folder or URI, None when there is none yet."""
    try:
        text = _read_text(join(root, MANIFEST))
        return None if text is None else json.loads(text)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"The manifest {join(root, MANIFEST)} cannot be read ({exc}). Prepare the data again into "
            f"an empty folder: {PREPARE}."
        ) from None


def write_manifest(root: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2) + "\n"
    if is_remote(root):
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, MANIFEST).write_text(text)
            _get_fs_provider(root).upload_file(os.path.join(tmp, MANIFEST), join(root, MANIFEST))
        return
    with atomic_write(Path(root) / MANIFEST, "the chunks' manifest") as f:
        f.write(text.encode())


def item_layout(labelled: bool) -> dict[str, Any]:
    """The index.json `config` entries of a split that `prepare` wrote: items {"index": int, "image":
    uint8 array[, "label": int]}, uncompressed, unencrypted, read by litdata's PyTreeLoader."""
    item = {"index": 0, "image": np.zeros((1, 1, 1), np.uint8)} | ({"label": 0} if labelled else {})
    return {
        "compression": None,
        "encryption": None,
        "item_loader": "PyTreeLoader",
        "data_format": ["int", "numpy", "int"] if labelled else ["int", "numpy"],
        "data_spec": treespec_dumps(tree_flatten(item)[1]),
    }


class RefusedFormat(Serializer):
    """A litdata serializer that `prepare` never uses: reading it is refused (pickle would run code)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        raise DataError(f"Chunks of the format '{self.name}' are not written here.")

    def deserialize(self, data: bytes) -> Any:
        raise DataError(
            f"A chunk says that its items are stored as '{self.name}', which prepare never writes and "
            "which is never read (it could run code). Prepare the data again with "
            f"{PREPARE}, and use only chunk folders that you prepared."
        )

    def can_serialize(self, item: Any) -> bool:
        return False


SAFE_SERIALIZERS = {name: RefusedFormat(name) for name in _SERIALIZERS if name not in ("int", "numpy")}


def chunk_records(folder: str) -> list[dict[str, Any]]:
    """What the manifest records of a split that `prepare` wrote: its chunks in index order, each
    with its image count, size and SHA-256 (null for a remote split, which is not read back whole)."""
    records = []
    for chunk in json.loads(_read_text(join(folder, INDEX)))["chunks"]:
        digest = None
        if not is_remote(folder):
            with open(Path(folder, chunk["filename"]), "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        records.append(
            {
                "filename": chunk["filename"],
                "images": chunk["chunk_size"],
                "bytes": chunk["chunk_bytes"],
                "sha256": digest,
            }
        )
    return records


def check_split(root: str, name: str, entry: dict[str, Any], labelled: bool) -> None:
    """Refuse a split whose index.json or chunks are not exactly what the manifest recorded (see the
    module docstring); cheap: reads the index and each chunk's header only."""
    folder = join(root, name)
    damaged = (
        f"The {name} split in {folder} is damaged or was not written by prepare: {{}}. Prepare the data "
        f"again with {PREPARE} --overwrite (or into an empty folder)."
    )
    try:
        text = _read_text(join(folder, INDEX))
        index = None if text is None else json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(damaged.format(f"its {INDEX} cannot be read ({exc})")) from None
    if index is None:
        raise DataError(damaged.format(f"its {INDEX} is missing"))
    config = index.get("config") if isinstance(index, dict) else None
    if not isinstance(config, dict) or {key: config.get(key) for key in item_layout(labelled)} != item_layout(labelled):
        raise DataError(
            damaged.format(
                f"its {INDEX} does not describe the items prepare writes (uncompressed, unencrypted "
                f"{'labelled ' if labelled else ''}uint8 images of litdata's PyTreeLoader); such chunks are "
                "never opened, as their format could run code"
            )
        )
    recorded = entry["chunks"]
    listed = index.get("chunks")
    expected = [
        {"chunk_bytes": c["bytes"], "chunk_size": c["images"], "dim": None, "filename": c["filename"]} for c in recorded
    ]
    if listed != expected:
        raise DataError(
            damaged.format(
                f"its {INDEX} lists other chunks than the {len(recorded)} the manifest {join(root, MANIFEST)} recorded"
            )
        )
    if not is_remote(root):
        for chunk in recorded:
            _check_chunk(Path(folder) / chunk["filename"], chunk, damaged)


def _check_chunk(path: Path, chunk: dict[str, Any], damaged: str) -> None:
    try:
        info = path.lstat()
        with open(path, "rb") as f:
            header = f.read(4 * (chunk["images"] + 2))
    except FileNotFoundError:
        raise DataError(damaged.format(f"its chunk {path.name} is missing")) from None
    except OSError as exc:
        raise DataError(damaged.format(f"its chunk {path.name} cannot be read ({exc})")) from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(damaged.format(f"its chunk {path.name} is not a regular file"))
    if info.st_size != chunk["bytes"]:
        raise DataError(
            damaged.format(
                f"its chunk {path.name} has {info.st_size} bytes, where the manifest "
                f"recorded {chunk['bytes']} (a truncated or replaced file)"
            )
        )
    # litdata's chunk header: the item count, then count + 1 offsets from the header's end to the file's
    numbers = np.frombuffer(header, np.uint32) if len(header) % 4 == 0 else np.zeros(0, np.uint32)
    offsets = numbers[1:]
    if (
        len(numbers) != chunk["images"] + 2
        or numbers[0] != chunk["images"]
        or offsets[0] != len(header)
        or offsets[-1] != chunk["bytes"]
        or (np.diff(offsets.astype(np.int64)) <= 0).any()
    ):
        raise DataError(damaged.format(f"the header of its chunk {path.name} is garbled"))


def check_chunk_records(manifest: dict[str, Any]) -> bool:
    """Whether every split of a manifest lists its chunks as prepare records them, summing to its count."""
    for entry in manifest["splits"].values():
        chunks = entry.get("chunks")
        if not isinstance(chunks, list) or not chunks:
            return False
        for chunk in chunks:
            if not (
                isinstance(chunk, dict)
                and set(chunk) == {"filename", "images", "bytes", "sha256"}
                and isinstance(chunk["filename"], str)
                and CHUNK_NAME.fullmatch(chunk["filename"])
                and all(
                    isinstance(chunk[key], int) and not isinstance(chunk[key], bool) and chunk[key] > 0
                    for key in ("images", "bytes")
                )
            ):
                return False
        if sum(chunk["images"] for chunk in chunks) != entry["images"]:
            return False
    return True

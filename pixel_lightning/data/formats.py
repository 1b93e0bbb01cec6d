"""Readers for the canonical dataset file formats: IDX (MNIST), .amat (binarized MNIST), the
CIFAR-10 python pickles (in the tarball or extracted) and the CIFAR-10 npz layout.

Every reader validates what it reads and raises `DataError` naming the file on any sign of
corruption, so a damaged file can never turn into garbage batches. Readers return uint8 arrays.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pixel_lightning.errors import DataError

AMAT_PIXELS = 784
CIFAR_SHAPE = (3, 32, 32)
CIFAR_ARCHIVE_FOLDER = "cifar-10-batches-py"


def corrupt(path: Path, problem: str) -> DataError:
    """The one message for a damaged file: what is wrong, which file, how to fix it."""
    return DataError(
        f"The data file {path} is corrupt or truncated: {problem}. Delete it and download it "
        "again (or copy it again from a good copy of the dataset)."
    )


def read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when its name ends in .gz (so one reader serves both)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise corrupt(path, f"it cannot be read ({exc})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (3 for images, 1 for labels)."""
    data = read_bytes(path)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise corrupt(path, f"it has {len(data)} bytes, shorter than the {header_size}-byte IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:  # 0x08: unsigned byte data
        raise corrupt(path, f"its IDX magic number is {magic:#010x}, expected {0x0800 + ndim:#010x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise corrupt(path, f"it has {len(data)} bytes but its header {shape} implies {expected}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def read_amat(path: Path) -> np.ndarray:
    """A binarized-MNIST .amat file: one image a line, 784 values '0'/'1' separated by spaces.

    Parsed vectorised on the raw bytes (np.loadtxt takes minutes on the 50,000-line file).
    Returns (N, 784) uint8 in {0, 1}.
    """
    chars = np.frombuffer(read_bytes(path).rstrip(), np.uint8)
    if chars.size == 0:
        raise corrupt(path, "it is empty")
    digit = (chars == ord("0")) | (chars == ord("1"))
    newline = chars == ord("\n")
    blank = (chars == ord(" ")) | (chars == ord("\r")) | newline
    if not (digit | blank).all():
        bad = int(np.argmin(digit | blank))
        found = chr(chars[bad]) if chr(chars[bad]).isprintable() else f"the byte 0x{chars[bad]:02x}"
        line = int(np.count_nonzero(newline[:bad])) + 1
        raise corrupt(path, f"line {line} contains {found}, where only the values 0 and 1 and spaces belong")
    long_value = digit[1:] & digit[:-1]  # two adjacent digits form a value outside {0, 1}
    if long_value.any():
        line = int(np.count_nonzero(newline[: int(np.argmax(long_value))])) + 1
        raise corrupt(path, f"line {line} has a value of more than one digit, where only 0 and 1 belong")
    line_starts = np.concatenate(([0], np.flatnonzero(newline) + 1))  # never empty: input is rstripped
    per_line = np.add.reduceat(digit, line_starts, dtype=np.int64)
    if (per_line != AMAT_PIXELS).any():
        line = int(np.argmax(per_line != AMAT_PIXELS))
        raise corrupt(path, f"line {line + 1} has {per_line[line]} values, expected {AMAT_PIXELS}")
    return (chars[digit] - ord("0")).reshape(-1, AMAT_PIXELS)


def read_cifar_npz(path: Path, key: str = "x") -> np.ndarray:
    """One split of the npz layout (`x` uint8 (N, 32, 32, 3)), returned as (N, 3, 32, 32); with
    key="y", its labels (N,) int64 instead."""
    try:
        with np.load(path, allow_pickle=False) as archive:  # no pickles: npz must hold plain arrays
            images = archive[key]
    except KeyError:
        raise corrupt(path, f"it has no array named '{key}'") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise corrupt(path, f"it cannot be read as an npz archive ({exc})") from None
    if key == "y":
        return _checked_labels(images, path)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise corrupt(path, f"its array 'x' is {images.dtype} {images.shape}, expected uint8 (N, 32, 32, 3)")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else.

    A pickle can call any importable function while loading (os.system, ...), so find_class
    allows only the three globals that the original CIFAR-10 batches (protocol 2, written by
    Python 2 with numpy 1.x) reference. They hold no numpy scalars (labels are Python ints) and
    ndarray pickles via its own __reduce__, so neither numpy's `scalar` nor
    `copyreg._reconstructor` is needed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],  # numpy 1.x name
        ("numpy._core.multiarray", "_reconstruct"): np.array(0).__reduce__()[0],  # numpy 2.x name
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR-10 batch never does") from None


def _checked_labels(labels: object, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.size == 0 or labels.min() < 0 or labels.max() > 9:
        raise corrupt(path, "its labels are not a list of class numbers 0..9")
    return labels.astype(np.int64)


def _unpickle_batch(data: bytes, path: Path) -> object:
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()  # Python 2 pickles
    except Exception as exc:  # a damaged pickle fails in many ways (EOFError, ValueError, ...)
        raise corrupt(path, f"it is not a valid CIFAR-10 pickle ({exc})") from None


def read_cifar_batch_labels(data: bytes, path: Path) -> np.ndarray:
    """The b'labels' (N,) int64 of one CIFAR-10 pickle batch."""
    batch = _unpickle_batch(data, path)
    return _checked_labels(batch.get(b"labels") if isinstance(batch, dict) else None, path)


def read_cifar_batch(data: bytes, path: Path) -> np.ndarray:
    """One CIFAR-10 pickle batch (`path` names it in errors), as uint8 (N, 3, 32, 32).

    b'data' rows are the R, G, then B planes of 32x32 in row-major order, so a plain reshape
    gives channels-first images.
    """
    batch = _unpickle_batch(data, path)
    images = batch.get(b"data") if isinstance(batch, dict) else None
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise corrupt(path, "it has no uint8 (N, 3072) array under b'data'")
    return images.reshape(-1, *CIFAR_SHAPE)


def read_cifar_pickles(source: Path, names: Iterable[str], reader=read_cifar_batch) -> np.ndarray:
    """The named batches (e.g. data_batch_1..5) from `cifar-10-python.tar.gz` or from an extracted
    `cifar-10-batches-py/` folder, concatenated in the given order. The tarball is read in
    place, never extracted. `reader=read_cifar_batch_labels` gives their labels instead.
    """
    names = list(names)
    if source.is_dir():
        batches = {name: reader(_read_member_file(source / name), source / name) for name in names}
    else:
        batches = _read_tar_batches(source, names, reader)
    return np.concatenate([batches[name] for name in names])


def _read_member_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"The CIFAR-10 folder {path.parent} has no file {path.name}. Delete the folder and "
            "download cifar-10-python.tar.gz again (or copy the complete folder)."
        ) from None
    except OSError as exc:
        raise corrupt(path, f"it cannot be read ({exc})") from None


def _read_tar_batches(tarball: Path, names: list[str], reader) -> dict[str, np.ndarray]:
    """Decode the wanted members in one pass over the gzip stream (no seeking back)."""
    wanted = {f"{CIFAR_ARCHIVE_FOLDER}/{name}": name for name in names}
    batches: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                name = wanted.get(member.name)
                if name is not None and member.isfile():
                    data = archive.extractfile(member).read()
                    batches[name] = reader(data, tarball / member.name)
                    if len(batches) == len(wanted):
                        break
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise corrupt(tarball, f"it cannot be read as a tar.gz archive ({exc})") from None
    missing = sorted(set(wanted) - {f"{CIFAR_ARCHIVE_FOLDER}/{name}" for name in batches})
    if missing:
        raise corrupt(tarball, f"it lacks {', '.join(missing)}")
    return batches

"""Readers for the two published downsampled-ImageNet formats (van den Oord et al. 2016, Table 5).

- `PNGFolder`: the paper's own "downsampled ImageNet" (image-net.org/small): train_32x32 /
  valid_32x32 (and _64x64) archives of PNG files, as the .tar or its extracted folder. Images
  are in name order; the archives hold no class labels.
- `read_chrabaszcz_npz`: the later "Imagenet32/64" batches of Chrabaszcz et al. 2017
  (train_data_batch_1..10.npz, val_data.npz): `data` (N, 3*H*W) uint8 in channel-planar order
  (R plane, G plane, B plane, each row-major) and 1-based `labels`. Their box resize differs from
  the paper's, so likelihoods on them are not comparable with Table 5.

Both read lazily (one archive member, one npz at a time), so the 1.28M images never sit in one
process's memory, and both raise `DataError` naming the file on a wrong layout, a truncated file
or a wrong image size.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixel_lightning.data.formats import corrupt
from pixel_lightning.errors import DataError

IMAGENET_CLASSES = 1000


def wrong_size(path: Path, found: tuple[int, ...], size: int) -> DataError:
    """A file of the other resolution: the most likely mix-up, so the message says so."""
    return DataError(
        f"The file {path} holds images of shape {found}, but {size}x{size} ImageNet images were asked for. Give the "
        f"{size}x{size} files (train_{size}x{size} / valid_{size}x{size}, or Imagenet{size}), or pick the data config "
        "of their size (data=imagenet32 or data=imagenet64)."
    )


@dataclass(frozen=True)
class PNGMember:
    """One PNG of an archive: its name, and where its bytes are (a folder: the file; a .tar: an offset)."""

    name: str
    offset: int
    size: int


class PNGFolder:
    """The PNG images of one split of the paper's downsampled ImageNet, in name order.

    `source` is the uncompressed .tar (read in place, members by offset, so any worker can read
    any image) or the folder it extracts to. Every image must be an RGB PNG of `size` x `size`.
    """

    def __init__(self, source: Path, size: int) -> None:
        self.source, self.size = Path(source), size
        self.members = self._list()
        if not self.members:
            raise DataError(
                f"{self.source} holds no .png files: it is not a split of the paper's downsampled ImageNet "
                f"(train_{size}x{size} or valid_{size}x{size}). Give the .tar from image-net.org/small or its folder."
            )

    def _list(self) -> list[PNGMember]:
        if self.source.is_dir():
            files = sorted(p for p in self.source.rglob("*") if p.is_file())
            self._check_pngs([str(p.relative_to(self.source)) for p in files])
            return [PNGMember(str(p.relative_to(self.source)), 0, p.stat().st_size) for p in files]
        try:
            with tarfile.open(self.source, "r:") as archive:  # "r:": uncompressed only, so members can be sought
                members = [m for m in archive if m.isfile()]
        except FileNotFoundError:
            raise DataError(
                f"{self.source} does not exist. Give the path of the .tar or of its extracted folder."
            ) from None
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise corrupt(self.source, f"it cannot be read as an uncompressed .tar archive ({exc})") from None
        self._check_pngs([m.name for m in members])
        return sorted((PNGMember(m.name, m.offset_data, m.size) for m in members), key=lambda m: m.name)

    def _check_pngs(self, names: list[str]) -> None:
        others = [name for name in names if not name.lower().endswith(".png")]
        if others:
            raise DataError(
                f"{self.source} holds files that are not PNGs (e.g. {others[0]}), so it is not a split of the paper's "
                "downsampled ImageNet. Give the train or valid .tar from image-net.org/small (or its folder), or give "
                "--source the folder of the Imagenet32/64 npz batches (train_data_batch_1.npz ... and val_data.npz)."
            )

    def __len__(self) -> int:
        return len(self.members)

    def read(self, index: int) -> np.ndarray:
        """Image `index` in name order, uint8 (3, size, size)."""
        member = self.members[index]
        path = self.source / member.name
        try:
            if self.source.is_dir():
                data = path.read_bytes()
            else:
                with open(self.source, "rb") as f:
                    f.seek(member.offset)
                    data = f.read(member.size)
            if len(data) != member.size:
                raise OSError(f"{len(data)} of {member.size} bytes")
            with Image.open(io.BytesIO(data)) as image:
                # the header's mode and size, checked before any pixel is decoded (a decompression bomb never is)
                mode, (width, height) = image.mode, image.size
                if mode != "RGB":
                    raise corrupt(path, f"it is a {mode} image, where the downsampled ImageNet has RGB images")
                if (height, width) != (self.size, self.size):
                    raise wrong_size(path, (3, height, width), self.size)
                image.load()
                pixels = np.asarray(image)
        except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as exc:
            raise corrupt(path, f"it is not a readable PNG ({exc})") from None  # PIL: truncated PNGs are OSErrors
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def read_chrabaszcz_npz(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One Imagenet32/64 batch file: (images uint8 (N, 3, size, size), labels int64 (N,) in 0..999)."""
    try:
        with np.load(path, allow_pickle=False) as archive:  # plain arrays only: a pickle could run code
            missing = sorted({"data", "labels"} - set(archive.files))
            if missing:
                raise corrupt(
                    path, f"it has no array named '{missing[0]}'; an Imagenet32/64 batch has 'data' and 'labels'"
                )
            data, labels = archive["data"], archive["labels"]
    except FileNotFoundError:
        raise DataError(f"{path} does not exist. Give the folder that holds the Imagenet{size} npz batches.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise corrupt(path, f"it cannot be read as an npz archive ({exc})") from None
    check_npz_data(path, data.dtype, data.shape, size)
    return data.reshape(-1, 3, size, size), checked_npz_labels(path, labels, len(data))


def check_npz_data(path: Path, dtype: np.dtype, shape: tuple[int, ...], size: int) -> None:
    """Refuse an Imagenet32/64 `data` array other than uint8 (N, 3 * size * size)."""
    if dtype != np.uint8 or len(shape) != 2:
        raise corrupt(path, f"its array 'data' is {dtype} {shape}, expected uint8 (N, 3 * H * W)")
    if shape[1] != 3 * size * size:
        side = int(round((shape[1] / 3) ** 0.5))
        raise wrong_size(path, (3, side, side) if 3 * side * side == shape[1] else (shape[1],), size)


def checked_npz_labels(path: Path, labels: np.ndarray, count: int) -> np.ndarray:
    """An Imagenet32/64 batch's `count` 1-based labels, as int64 class numbers 0..999."""
    labels = np.asarray(labels)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise corrupt(path, f"its 'labels' are {labels.dtype} {labels.shape}, expected {count} integers")
    if len(labels) and (labels.min() < 1 or labels.max() > IMAGENET_CLASSES):
        raise corrupt(path, f"its labels run from {labels.min()} to {labels.max()}, expected 1..{IMAGENET_CLASSES}")
    return labels.astype(np.int64) - 1

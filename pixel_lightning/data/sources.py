"""The images of every supported dataset, split by split, as `prepare` converts them to chunks.

A `Source` names a dataset's fixed train / val / test splits. Each split is a sorted list of
positions in one of the dataset's original files (`Original`), which reads any positions on
demand, so a worker converts its own block without the rest of the dataset in memory.

The splits are those of the in-memory DataModules: MNIST and CIFAR-10 take `val_size` training
images with `split_seed` for validation (the same images as data.streaming=false), binarized
MNIST keeps its three files. ImageNet takes `val_size` images of the train archive with
`split_seed` for validation and tests on the published validation set, the set of the paper's
Table 5 figures.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pixel_lightning.data.cifar10 import CIFAR10DataModule
from pixel_lightning.data.datamodule import split_train_val
from pixel_lightning.data.formats import corrupt
from pixel_lightning.data.imagenet import (
    IMAGENET_CLASSES,
    PNGFolder,
    check_npz_data,
    checked_npz_labels,
    read_chrabaszcz_npz,
)
from pixel_lightning.data.labelled import labelled_split
from pixel_lightning.data.mnist import BinarizedMNISTDataModule, MNISTDataModule
from pixel_lightning.errors import DataError

CHRABASZCZ_NOTE = (
    "Imagenet{size} of Chrabaszcz et al. 2017 (box resize): its likelihoods are not comparable with the "
    "downsampled ImageNet of the PixelRNN paper (Table 5)"
)


class ArrayOriginal:
    """A file read whole into memory (MNIST, CIFAR-10: small), labels optional."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None) -> None:
        self.images, self.labels = images, labels  # (N, C, H, W) uint8, (N,) int64

    def __len__(self) -> int:
        return len(self.images)

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.images[positions], None if self.labels is None else self.labels[positions]


class PNGOriginal:
    """One archive of the paper's downsampled ImageNet; it has no labels."""

    def __init__(self, folder: PNGFolder) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, None]:
        return np.stack([self.folder.read(int(p)) for p in positions]), None


class NpzOriginal:
    """The Imagenet32/64 npz batches of one split, read one file at a time (a 64x64 batch is 1.5 GB)."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size
        self.starts = np.cumsum([0] + [npz_rows(path, size) for path in files])  # position of each file's first row

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        file_of = np.searchsorted(self.starts, positions, side="right") - 1
        images, labels = [], []
        for file in np.unique(file_of):
            rows = positions[file_of == file] - self.starts[file]
            data, classes = self._load(int(file))
            images.append(data[rows])
            labels.append(classes[rows])
        return np.concatenate(images), np.concatenate(labels)

    @lru_cache(maxsize=1)  # consecutive blocks of a worker mostly fall in the same file
    def _load(self, file: int) -> tuple[np.ndarray, np.ndarray]:
        return read_chrabaszcz_npz(self.files[file], self.size)


def npz_rows(path: Path, size: int) -> int:
    """Rows of the `data` array of an Imagenet32/64 batch, checked in this process before any worker
    reads it: the header of `data` (no decompression of the images) and the small `labels` array."""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = sorted({"data.npy", "labels.npy"} - set(archive.namelist()))
            if missing:
                raise corrupt(
                    path, f"it has no array named '{missing[0][:-4]}'; an Imagenet32/64 batch has 'data' and 'labels'"
                )
            with archive.open("data.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            with archive.open("labels.npy") as member:
                labels = np.lib.format.read_array(member, allow_pickle=False)  # a pickle could run code
    except FileNotFoundError:
        raise DataError(f"{path} does not exist. Give the folder that holds the Imagenet npz batches.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise corrupt(path, f"it cannot be read as an npz archive ({exc})") from None
    check_npz_data(path, dtype, shape, size)
    checked_npz_labels(path, labels, shape[0])
    return int(shape[0])


@dataclass
class Split:
    """Positions (ascending) of one split's images in its original file."""

    original: ArrayOriginal | PNGOriginal | NpzOriginal
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Images (and labels) of split items start..stop-1."""
        return self.original.read(self.positions[start:stop])


@dataclass
class Source:
    """A dataset as `prepare` writes it: its splits and what the chunks' manifest says about them."""

    dataset: str
    shape: tuple[int, int, int]
    bits: int  # levels stored: 2**bits (8, or 1 for the fixed binarization)
    classes: int | None  # None: no labels
    splits: dict[str, Split]
    settings: dict = field(default_factory=dict)  # what fixed the splits (val_size, split_seed, format)
    note: str | None = None  # a caveat every record of a run on this data repeats


def held_out(original, val_size: int, split_seed: int, what: str) -> tuple[Split, Split]:
    """(train, val): `val_size` images of `original` drawn with `split_seed` form val."""
    if not 1 <= val_size < len(original):
        raise DataError(
            f"--val-size {val_size} must be at least 1 and leave training images: {what} has "
            f"{len(original)}. Choose a smaller --val-size."
        )
    train, val = split_train_val(np.arange(len(original)), val_size, split_seed)
    return Split(original, train), Split(original, val)


def in_memory_source(dataset: str, data_dir: Path, download: bool, val_size: int | None, split_seed: int) -> Source:
    """MNIST, binarized MNIST or CIFAR-10 from data_dir, read by their DataModules (at 8 bits)."""
    if dataset == "binarized_mnist":
        if val_size is not None:
            raise DataError(
                "--val-size does not apply to binarized_mnist: its validation split is its own file "
                "(binarized_mnist_valid.amat). Leave --val-size out."
            )
        module = BinarizedMNISTDataModule(data_dir, download=download)
        module.setup()
        splits = {
            name: ArrayOriginal(ds.images.numpy(), None)
            for name, ds in zip(
                ("train", "val", "test"), (module.train_dataset, module.val_dataset, module.test_dataset)
            )
        }
        return Source(dataset, module.shape, 1, None, {name: Split(o, np.arange(len(o))) for name, o in splits.items()})
    module_class = {"mnist": MNISTDataModule, "cifar10": CIFAR10DataModule}[dataset]
    module = module_class(
        data_dir, download=download, **({} if val_size is None else {"val_size": val_size}), split_seed=split_seed
    )
    train_file, test_file = (ArrayOriginal(*labelled_split(module, split)) for split in ("train", "test"))
    train, val = held_out(train_file, module.val_size, split_seed, f"the {module.name} training file")
    settings = {"val_size": module.val_size, "split_seed": split_seed}
    test = Split(test_file, np.arange(len(test_file)))
    return Source(dataset, module.shape, 8, 10, {"train": train, "val": val, "test": test}, settings)


def imagenet_source(size: int, source: Path, val_size: int, split_seed: int) -> Source:
    """Downsampled ImageNet of `size` from `source`: a folder with the paper's train_/valid_<size>x<size>
    archives (.tar or extracted), or one with the Imagenet<size> npz batches (auto-detected)."""
    source = Path(source)
    npz = list(source.glob("train_data_batch_*.npz"))
    misnamed = [path.name for path in npz if not re.fullmatch(r"train_data_batch_[0-9]+\.npz", path.name)]
    if misnamed:
        raise DataError(
            f"{source} holds {misnamed[0]}, which is not an Imagenet{size} batch name "
            "(train_data_batch_<number>.npz). Rename or remove it, then run prepare again."
        )
    npz.sort(key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if npz or (source / "val_data.npz").exists():
        train_file, test_file = NpzOriginal(npz, size), NpzOriginal([source / "val_data.npz"], size)
        fmt, classes, note = "chrabaszcz", IMAGENET_CLASSES, CHRABASZCZ_NOTE.format(size=size)
    else:
        archives = [
            next(
                (p for p in (source / f"{split}_{size}x{size}.tar", source / f"{split}_{size}x{size}") if p.exists()),
                None,
            )
            for split in ("train", "valid")
        ]
        if None in archives:
            raise DataError(
                f"{source} holds neither the paper's downsampled ImageNet (train_{size}x{size}.tar and "
                f"valid_{size}x{size}.tar, or their folders) nor the Imagenet{size} npz batches (train_data_batch_1.npz"
                " ... and val_data.npz). Give --source the folder that holds one of them."
            )
        train_file, test_file = (PNGOriginal(PNGFolder(path, size)) for path in archives)
        fmt, classes, note = "paper", None, None
    train, val = held_out(train_file, val_size, split_seed, f"the ImageNet {size}x{size} training set")
    return Source(
        f"imagenet{size}",
        (3, size, size),
        8,
        classes,
        {"train": train, "val": val, "test": Split(test_file, np.arange(len(test_file)))},
        {"val_size": val_size, "split_seed": split_seed, "format": fmt},
        note,
    )

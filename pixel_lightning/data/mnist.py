"""MNIST as LightningDataModules: the fixed binarization (Salakhutdinov & Murray 2008, the PixelRNN
paper's benchmark) and the grey-level MNIST, quantized or binarized (see datamodule.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from pixel_lightning.data.datamodule import (
    CONFIG_HINT,
    DynamicBinarizedDataset,
    ImageDataModule,
    ImageDataset,
    binarize_once,
    check_int,
    misplaced_ones,
    quantize,
    split_train_val,
)
from pixel_lightning.data.download import RemoteFile, Requirement, md5_verifier
from pixel_lightning.data.formats import corrupt, read_amat, read_idx
from pixel_lightning.errors import DataError


class BinarizedMNISTDataModule(ImageDataModule):
    """The fixed binarization of MNIST (Salakhutdinov & Murray 2008): 50k/10k/10k from the
    Larochelle .amat files, levels {0, 1}."""

    name = "Binarized MNIST"
    folder = "binarized_mnist"
    shape = (1, 28, 28)
    expected_sizes = {"train": 50000, "valid": 10000, "test": 10000}
    URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{}.amat"

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        channels: int | None = 1,
        height: int | None = 28,
        width: int | None = 28,
        levels: int | None = 2,
        download: bool = True,
        eval_batch_size: int | None = None,
        classes: int | None = 10,
        condition: str | None = None,
        streaming: bool = False,  # the data config's switch: true builds the StreamingImageDataModule instead
        root: str | None = None,  # where the streamed chunks are (read by the StreamingImageDataModule only)
        dataset: str | None = None,  # the data config's name (the StreamingImageDataModule checks its chunks)
    ) -> None:
        super().__init__(
            data_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            download=download,
            eval_batch_size=eval_batch_size,
            channels=channels,
            height=height,
            width=width,
            levels=levels,
            produced_levels=2,
            levels_because="the binarization is fixed",
            classes=classes,
            condition=condition,
        )

    def requirements(self) -> list[Requirement]:
        return [self._requirement(split) for split in self.expected_sizes]

    def _requirement(self, split: str) -> Requirement:
        name = f"binarized_mnist_{split}.amat"
        # No published checksum of these files can be relied on, so a download is verified by its
        # structure instead: the split's line count and 784 values in {0, 1} on every line.
        remote = RemoteFile(name, (self.URL.format(split),), verify=lambda path: self._read(path, split))
        return Requirement((name, name + ".gz"), remote)

    def _read(self, path: Path, split: str) -> np.ndarray:
        return self._check_count(read_amat(path), split, path).reshape(-1, *self.shape)

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        splits = [self._read(self._requirement(split).find(self.root), split) for split in self.expected_sizes]
        return tuple(ImageDataset(images) for images in splits)

    def load_labels(self, splits: tuple[ImageDataset, ImageDataset, ImageDataset]) -> tuple[np.ndarray, ...]:
        """MNIST's labels, relying on the fixed binarization's order: train and valid are MNIST's
        training images 1-50,000 and 50,001-60,000, test is MNIST's test set, each in order. That
        order is checked against the MNIST images (misplaced_ones) before any label is used."""
        mnist = MNISTDataModule(self.data_dir, batch_size=1, download=self.download, condition="class")
        mnist.prepare_data()
        train_grey, train_labels = mnist._read("train"), mnist._read_labels("train")
        sizes = self.expected_sizes
        sources = {
            "train": (train_grey[: sizes["train"]], train_labels[: sizes["train"]]),
            "valid": (train_grey[sizes["train"] :][: sizes["valid"]], train_labels[sizes["train"] :][: sizes["valid"]]),
            "test": (mnist._read("test"), mnist._read_labels("test")),
        }
        labels = []
        for (split, (grey, split_labels)), images in zip(sources.items(), splits, strict=True):
            misplaced = misplaced_ones(images.images.numpy(), grey[: len(images)])
            if len(grey) < len(images) or misplaced > 0.01:
                raise DataError(
                    f"The binarized MNIST {split} file in {self.root} is not in MNIST's order: {100 * misplaced:.0f}% "
                    "of its 1-pixels fall on pixels that are 0 in the MNIST image of the same index (none would if "
                    "it held MNIST's images in order), so MNIST's labels cannot be attached to it and "
                    "model.condition=class cannot use it. For class-conditional binary MNIST use data=mnist "
                    "data.binarize=dynamic (MNIST's own images binarized, with their labels), or binarized MNIST files "
                    "in MNIST's order (train: MNIST train 1-50,000; valid: 50,001-60,000; test: MNIST test)."
                )
            labels.append(split_labels[: len(images)])
        return tuple(labels)


class MNISTDataModule(ImageDataModule):
    """MNIST grey levels quantized to `bits`, or binarized.

    60k train / 10k test IDX files; the validation split is `val_size` images drawn from train
    with `split_seed` (the same on every run). `binarize`: None keeps 2**bits levels; "dynamic"
    re-draws train images as Bernoulli(pixel / 255) at every fetch while val and test are drawn
    once with `binarize_seed`; "static" draws all splits once with `binarize_seed`. When
    binarized, `bits` is ignored and there are 2 levels. The label files are read (or
    downloaded) only for class-conditional data (`condition="class"`).
    """

    name = "MNIST"
    folder = "MNIST/raw"
    shape = (1, 28, 28)
    expected_sizes = {"train": 60000, "test": 10000}
    MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
    # file name and the published MD5 of the uncompressed file
    FILES = {
        "train": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        "test": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    }
    LABEL_FILES = {
        "train": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
        "test": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    }
    BINARIZE = (None, "dynamic", "static")

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        channels: int | None = 1,
        height: int | None = 28,
        width: int | None = 28,
        levels: int | None = None,
        download: bool = True,
        eval_batch_size: int | None = None,
        streaming: bool = False,  # the data config's switch: true builds the StreamingImageDataModule instead
        root: str | None = None,  # where the streamed chunks are (read by the StreamingImageDataModule only)
        dataset: str | None = None,  # the data config's name (the StreamingImageDataModule checks its chunks)
        bits: int = 8,
        binarize: str | None = None,
        val_size: int = 10000,
        split_seed: int = 0,
        binarize_seed: int = 0,
        classes: int | None = 10,
        condition: str | None = None,
    ) -> None:
        check_int("bits", bits, 1, 8)
        if binarize not in self.BINARIZE:
            raise DataError(
                f"data.binarize must be null, dynamic or static, but it is {binarize}. "
                + CONFIG_HINT.format(key="binarize")
            )
        check_int("val_size", val_size, 1)
        check_int("split_seed", split_seed, 0)
        check_int("binarize_seed", binarize_seed, 0)
        produced, because = (2, f"binarize={binarize}") if binarize else (2**bits, f"bits={bits} gives 2**{bits}")
        super().__init__(
            data_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            download=download,
            eval_batch_size=eval_batch_size,
            channels=channels,
            height=height,
            width=width,
            levels=levels,
            produced_levels=produced,
            levels_because=because,
            classes=classes,
            condition=condition,
        )
        self.bits = bits
        self.binarize = binarize
        self.val_size = val_size
        self.split_seed = split_seed
        self.binarize_seed = binarize_seed

    def requirements(self) -> list[Requirement]:
        labels = [self._requirement(split, labels=True) for split in self.LABEL_FILES] if self.condition else []
        return [self._requirement(split) for split in self.FILES] + labels

    def _requirement(self, split: str, labels: bool = False) -> Requirement:
        """The image file of a split, or with `labels` its label file."""
        name, md5 = (self.LABEL_FILES if labels else self.FILES)[split]
        urls = tuple(mirror + name + ".gz" for mirror in self.MIRRORS)
        remote = RemoteFile(name + ".gz", urls, md5_verifier(md5, gunzipped=True))
        return Requirement((name, name + ".gz"), remote)

    def _read(self, split: str) -> np.ndarray:
        path = self._requirement(split).find(self.root)
        images = self._check_count(read_idx(path, 3), split, path)
        if images.shape[1:] != self.shape[1:]:
            raise corrupt(path, f"its images are {images.shape[1:]}, MNIST images are 28x28")
        return images[:, None]

    def _read_labels(self, split: str) -> np.ndarray:
        """The labels (N,) int64 of a split's IDX file (present: prepare_data with condition="class")."""
        path = self._requirement(split, labels=True).find(self.root)
        return self._check_count(read_idx(path, 1), split, path).astype(np.int64)

    def load_labels(self, splits: tuple[Dataset, Dataset, Dataset]) -> tuple[np.ndarray, ...]:
        train, val = split_train_val(self._read_labels("train"), self.val_size, self.split_seed)  # as the images
        return train, val, self._read_labels("test")

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        train, val = self._split_val(self._read("train"), self.val_size, self.split_seed)
        test = self._read("test")
        if self.binarize is None:
            return tuple(ImageDataset(quantize(images, self.bits)) for images in (train, val, test))
        fixed = [binarize_once(images, self.binarize_seed, stream) for stream, images in enumerate((train, val, test))]
        train_set = DynamicBinarizedDataset(train) if self.binarize == "dynamic" else ImageDataset(fixed[0])
        return train_set, ImageDataset(fixed[1]), ImageDataset(fixed[2])

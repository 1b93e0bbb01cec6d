"""CIFAR-10 as a LightningDataModule: 32x32 RGB quantized to `bits` (see datamodule.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from pixel_lightning.data.datamodule import (
    ImageDataModule,
    ImageDataset,
    check_int,
    quantize,
    split_train_val,
)
from pixel_lightning.data.download import RemoteFile, Requirement, md5_verifier
from pixel_lightning.data.formats import (
    CIFAR_ARCHIVE_FOLDER,
    read_cifar_batch,
    read_cifar_batch_labels,
    read_cifar_npz,
    read_cifar_pickles,
)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10, 32x32 RGB quantized to `bits`; the validation split is `val_size` images drawn
    from the 50k train with `split_seed`. Reads cifar10_{train,test}.npz, an extracted
    cifar-10-batches-py/ folder, or the canonical tarball in place (first found, in that order)."""

    name = "CIFAR-10"
    folder = "cifar10"
    shape = (3, 32, 32)
    expected_sizes = {"train": 50000, "test": 10000}
    URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    MD5 = "c58f30108f718f92721af3b95e74349a"
    BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        channels: int | None = 3,
        height: int | None = 32,
        width: int | None = 32,
        levels: int | None = None,
        download: bool = True,
        eval_batch_size: int | None = None,
        streaming: bool = False,  # the data config's switch: true builds the StreamingImageDataModule instead
        root: str | None = None,  # where the streamed chunks are (read by the StreamingImageDataModule only)
        dataset: str | None = None,  # the data config's name (the StreamingImageDataModule checks its chunks)
        bits: int = 8,
        val_size: int = 5000,
        split_seed: int = 0,
        classes: int | None = 10,
        condition: str | None = None,
    ) -> None:
        check_int("bits", bits, 1, 8)
        check_int("val_size", val_size, 1)
        check_int("split_seed", split_seed, 0)
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
            produced_levels=2**bits,
            levels_because=f"bits={bits} gives 2**{bits}",
            classes=classes,
            condition=condition,
        )
        self.bits = bits
        self.val_size = val_size
        self.split_seed = split_seed

    def requirements(self) -> list[Requirement]:
        remote = RemoteFile(self.URL.rsplit("/", 1)[1], (self.URL,), md5_verifier(self.MD5))
        return [
            Requirement((f"cifar10_{split}.npz", CIFAR_ARCHIVE_FOLDER, remote.name), remote) for split in self.BATCHES
        ]

    def _read(self, split: str, requirement: Requirement, labels: bool = False) -> np.ndarray:
        """A split's images (N, 3, 32, 32), or with `labels` its labels (N,) int64."""
        source = requirement.find(self.root)
        if source.suffix == ".npz":
            images = read_cifar_npz(source, key="y" if labels else "x")
        else:
            reader = read_cifar_batch_labels if labels else read_cifar_batch
            images = read_cifar_pickles(source, self.BATCHES[split], reader)
        return self._check_count(images, split, source)

    def load_labels(self, splits: tuple[Dataset, Dataset, Dataset]) -> tuple[np.ndarray, ...]:
        train_req, test_req = self.requirements()
        train, val = split_train_val(self._read("train", train_req, labels=True), self.val_size, self.split_seed)
        return train, val, self._read("test", test_req, labels=True)

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        train_req, test_req = self.requirements()
        train, val = self._split_val(self._read("train", train_req), self.val_size, self.split_seed)
        test = self._read("test", test_req)
        return tuple(ImageDataset(quantize(images, self.bits)) for images in (train, val, test))

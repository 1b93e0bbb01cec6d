"""Labelled images for the sample-quality classifier (evaluation/feature_net.py).

Unconditional models never see labels (class-conditional ones get them from their data module);
the FID feature classifier is trained on the labelled training file of the dataset family, in the
same levels as the model's data: MNIST's 60k IDX images and labels serve both MNIST variants
(binarized once with a fixed seed when the data has 2 levels, quantized to the data's bits
otherwise), CIFAR-10's 50k training images serve CIFAR-10. The data folder is only read
(missing label files are downloaded and verified like the images).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pixel_lightning.data.cifar10 import CIFAR10DataModule
from pixel_lightning.data.datamodule import ImageDataModule, binarize_once
from pixel_lightning.data.formats import read_cifar_batch_labels, read_cifar_npz, read_cifar_pickles
from pixel_lightning.data.mnist import BinarizedMNISTDataModule, MNISTDataModule
from pixel_lightning.errors import DataError

BINARIZE_SEED = 12345  # the classifier's own fixed binarization of MNIST (2-level data)


def family(datamodule: ImageDataModule) -> str:
    """The labelled dataset behind a data module: 'mnist' or 'cifar10', or for streamed chunks of them
    'mnist-streamed' or 'cifar10-streamed' (trained on the streamed training split, cached apart)."""
    # A streamed DataModule has imported its module; importing it here would need litdata (the 'stream' extra).
    streaming = sys.modules.get("pixel_lightning.data.streaming")
    if (
        streaming is not None
        and isinstance(datamodule, streaming.StreamingImageDataModule)
        and datamodule.dataset in ("mnist", "cifar10")
    ):
        return f"{datamodule.dataset}-streamed"
    if isinstance(datamodule, (MNISTDataModule, BinarizedMNISTDataModule)):
        return "mnist"
    if isinstance(datamodule, CIFAR10DataModule):
        return "cifar10"
    raise DataError(
        f"No labelled dataset is known for {type(datamodule).__name__}, so no sample-quality classifier can be "
        "trained for it. Use data=binarized_mnist, mnist or cifar10, or disable the score with fid.num_samples=0."
    )


def labelled_split(datamodule: ImageDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, C, H, W) in the data module's levels, labels int64 (N,)) of the
    'train' or 'test' file of the data module's dataset family."""
    if family(datamodule).endswith("-streamed"):
        return datamodule.labelled(split)
    if family(datamodule) == "cifar10":
        images, labels = _cifar10(datamodule, split)
        return images >> (8 - datamodule.bits), labels
    grey, labels = _mnist(datamodule.data_dir, split, datamodule.download)
    if datamodule.levels == 2:
        return binarize_once(grey, BINARIZE_SEED, 0 if split == "train" else 1), labels
    return grey >> (8 - datamodule.bits), labels


def _mnist(data_dir: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    reader = MNISTDataModule(data_dir, batch_size=1, download=download, condition="class")
    reader.prepare_data()  # the image and label files
    return reader._read(split), reader._read_labels(split)


def _cifar10(datamodule: CIFAR10DataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    requirement = datamodule.requirements()[0 if split == "train" else 1]
    datamodule.prepare_data()
    source = requirement.find(datamodule.root)
    if source.suffix == ".npz":
        images, labels = read_cifar_npz(source), read_cifar_npz(source, key="y")
    else:
        names = CIFAR10DataModule.BATCHES[split]
        images, labels = read_cifar_pickles(source, names), read_cifar_pickles(source, names, read_cifar_batch_labels)
    if len(labels) != len(images):
        raise DataError(
            f"The CIFAR-10 {split} file {source} has {len(labels)} labels for {len(images)} images. "
            "Delete it and download it again."
        )
    return images, labels

"""LightningDataModules for binarized MNIST, MNIST and CIFAR-10.

Every module yields images: an item is a uint8 (C, H, W) tensor of integer levels in
[0, levels - 1], a batch is (B, C, H, W) uint8. With `condition="class"` (set by
`model.condition=class` through the data config) an item is (image, label), the label int64 in
[0, classes), and a batch [images, labels]. The constructor arguments `channels`, `height`,
`width`, `levels` and `classes` come from the data config, which the model config interpolates;
they are checked against what the module really produces so that a model is never built for
other data.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from pixel_lightning.data.download import RemoteFile, Requirement, ensure_present, md5_verifier
from pixel_lightning.data.formats import (
    CIFAR_ARCHIVE_FOLDER,
    corrupt,
    read_amat,
    read_cifar_batch,
    read_cifar_batch_labels,
    read_cifar_npz,
    read_cifar_pickles,
    read_idx,
)
from pixel_lightning.errors import DataError
from pixel_lightning.settings import check_condition

CONFIG_HINT = "Fix it in conf/data/ or on the command line (e.g. data.{key}=...)."


class ImageDataset(Dataset):
    """Fixed images: item i is images[i], a uint8 (C, H, W) tensor."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(images)  # (N, C, H, W) uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class LabelledDataset(Dataset):
    """Item i is (images[i], labels[i]): an image of `images` (a dataset) and its class, int64."""

    def __init__(self, images: Dataset, labels: np.ndarray) -> None:
        self.images, self.labels = images, torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def image_of(item: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The image of a dataset item, labelled or not."""
    return item[0] if isinstance(item, tuple) else item


class DynamicBinarizedDataset(ImageDataset):
    """Grey images (0..255) binarized afresh as Bernoulli(pixel / 255) at every fetch, so every
    epoch sees a new binarization. It draws from torch's global generator, which DataLoader
    seeds differently in each worker (and seed_everything makes reproducible)."""

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.bernoulli(self.images[index].float() / 255).to(torch.uint8)


def check_int(key: str, value: object, low: int, high: int | None = None) -> None:
    """Reject a config value that is not an integer in [low, high] (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise DataError(f"data.{key} must be an integer {bounds}, but it is {value}. " + CONFIG_HINT.format(key=key))


def quantize(images: np.ndarray, bits: int) -> np.ndarray:
    """Keep the top `bits` bits of 8-bit pixels: levels 0 .. 2**bits - 1."""
    return images >> (8 - bits)


def binarize_once(grey: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """One fixed Bernoulli(pixel / 255) draw; the same (seed, stream) always gives the same images.
    Each split uses its own stream so that changing one split's size leaves the others alone."""
    rng = np.random.default_rng([seed, stream])
    return (rng.random(grey.shape, dtype=np.float32) < grey / np.float32(255)).astype(np.uint8)


def split_train_val(images: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed random validation split; both parts keep the file's order."""
    order = np.random.default_rng(seed).permutation(len(images))
    return images[np.sort(order[val_size:])], images[np.sort(order[:val_size])]


def misplaced_ones(binary: np.ndarray, grey: np.ndarray) -> float:
    """The fraction of the ones of binarized images that fall on pixels which are 0 in the grey
    images of the same index: none when `binary` is a Bernoulli(grey / 255) draw of the same images
    in the same order, about half for unrelated images (measured on binarized MNIST: 0.50)."""
    ones = binary.astype(bool)
    return float((ones & (grey == 0)).sum() / max(int(ones.sum()), 1))


def unpadded_shard_sampler(dataset: Dataset) -> UnrepeatedDistributedSampler | None:
    """Under DDP, give each process every world_size-th image of an evaluation split, padding
    nothing: Lightning's default DistributedSampler repeats images to even out the shards, which
    would count them twice in val/test NLL. Lightning keeps a DistributedSampler it is given.
    None (a plain sequential loader) in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)


class ImageDataModule(pl.LightningDataModule):
    """What the three datasets share: argument checks, locating/downloading the files, loading
    every split once, and the dataloaders. Subclasses say where their files are and how to read
    them."""

    name: ClassVar[str]  # for messages
    folder: ClassVar[str]  # under data_dir
    shape: ClassVar[tuple[int, int, int]]  # (C, H, W)
    # images per split of the canonical files: a file with another count is rejected
    # (tests shrink these to use tiny fixtures)
    expected_sizes: ClassVar[dict[str, int]]

    def __init__(
        self,
        data_dir: str | Path,
        *,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        download: bool,
        eval_batch_size: int | None,
        channels: int | None,
        height: int | None,
        width: int | None,
        levels: int | None,
        produced_levels: int,
        levels_because: str,
        classes: int | None = None,
        condition: str | None = None,
    ) -> None:
        super().__init__()
        check_condition(condition)
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        if eval_batch_size is not None:
            check_int("eval_batch_size", eval_batch_size, 1)
        for key, given, produced in zip(("channels", "height", "width"), (channels, height, width), self.shape):
            self._check_matches(key, given, produced, f"fixed by {self.name}")
        self._check_matches("levels", levels, produced_levels, levels_because)
        self._check_matches("classes", classes, 10, f"{self.name} has 10 classes")
        self.data_dir = Path(data_dir).expanduser().absolute()  # relative to the cwd of construction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.download = download
        self.channels, self.height, self.width = self.shape
        self.levels = produced_levels
        self.classes, self.condition = 10, condition
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    def _check_matches(self, key: str, given: int | None, produced: int, because: str) -> None:
        if given is not None and given != produced:
            raise DataError(
                f"data.{key}={given} does not match the data: {self.name} gives {key}={produced} "
                f"({because}). Set data.{key}={produced} or leave the default interpolation in conf/data/."
            )

    @property
    def root(self) -> Path:
        """The dataset's own folder inside data_dir."""
        return self.data_dir / self.folder

    def requirements(self) -> list[Requirement]:
        """The inputs this module reads, each with its canonical download."""
        raise NotImplementedError

    def load(self) -> tuple[Dataset, Dataset, Dataset]:
        """Read the files (all present) into the train, val and test datasets."""
        raise NotImplementedError

    def load_labels(self, splits: tuple[Dataset, Dataset, Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The labels (N,) of the train, val and test images `splits` (class-conditional data)."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        ensure_present(self.name, self.root, self.requirements(), self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load all splits once, whatever the stage; later calls reuse them. Makes sure the
        files are there first, so scripts that skip prepare_data() still work (a no-op after it)."""
        if self.train_dataset is None:
            self.prepare_data()
            splits = self.load()
            if self.condition == "class":
                splits = tuple(LabelledDataset(*pair) for pair in zip(splits, self.load_labels(splits), strict=True))
            self.train_dataset, self.val_dataset, self.test_dataset = splits

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, self.eval_batch_size, shuffle=False)

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        sampler = None if shuffle else unpadded_shard_sampler(dataset)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def _check_count(self, images: np.ndarray, split: str, path: Path) -> np.ndarray:
        expected = self.expected_sizes[split]
        if len(images) != expected:
            raise corrupt(path, f"it holds {len(images)} images, but the {self.name} {split} split has {expected}")
        return images

    def _split_val(self, train: np.ndarray, val_size: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
        if val_size >= len(train):
            raise DataError(
                f"data.val_size={val_size} leaves no training images: the {self.name} training file "
                f"has {len(train)}. " + CONFIG_HINT.format(key="val_size")
            )
        return split_train_val(train, val_size, split_seed)


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
    ) -> None:
        super().__init__(
            data_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            download=download, eval_batch_size=eval_batch_size, channels=channels, height=height,
            width=width, levels=levels, produced_levels=2, levels_because="the binarization is fixed",
            classes=classes, condition=condition,
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
            data_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            download=download, eval_batch_size=eval_batch_size, channels=channels, height=height,
            width=width, levels=levels, produced_levels=produced, levels_because=because,
            classes=classes, condition=condition,
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
            data_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            download=download, eval_batch_size=eval_batch_size, channels=channels, height=height,
            width=width, levels=levels, produced_levels=2**bits, levels_because=f"bits={bits} gives 2**{bits}",
            classes=classes, condition=condition,
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

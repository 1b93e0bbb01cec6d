"""The image DataModules' common frame (ImageDataModule) and the dataset helpers they share; the
datasets themselves are mnist.py (binarized MNIST, MNIST) and cifar10.py.

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

from pixel_lightning.data.download import Requirement, ensure_present
from pixel_lightning.data.formats import corrupt
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

"""Streamed datasets: a LightningDataModule over litdata's StreamingDataset, for data too large for
one process's memory (downsampled ImageNet, Table 5 of the paper) and, with data.streaming=true,
for MNIST and CIFAR-10.

It reads the chunks and manifest that `python -m pixel_lightning.data.prepare` wrote to a local
folder or an s3:// / gs:// URI. Under DDP (one node or many) litdata gives every process its own
chunks: training shards are equal in size (the remainder is dropped, so that no process waits for
another), validation and test shards are disjoint and together the whole split (nothing dropped,
nothing repeated), so the NLL metric's sums are exact. The training loader is a
StreamingDataLoader, whose position Lightning keeps in the checkpoint: a run resumed mid-epoch
neither repeats nor skips images. Items are uint8 (C, H, W) tensors of levels, or (image, label)
pairs with `condition="class"` (set by model.condition=class; class numbers from 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset

from pixel_lightning.data.datamodule import CONFIG_HINT, ImageDataModule, check_int
from pixel_lightning.data.prepare import MANIFEST_VERSION, is_remote, join, read_manifest
from pixel_lightning.errors import DataError


class StreamedImages(StreamingDataset):
    """One prepared split; an item is its image shifted down to the wanted levels (and its label)."""

    def __init__(self, input_dir: str, shift: int, with_labels: bool, **kwargs: Any) -> None:
        super().__init__(input_dir, **kwargs)
        self.shift, self.with_labels = shift, with_labels

    def __getitem__(self, index: Any) -> torch.Tensor | tuple[torch.Tensor, int]:
        item = super().__getitem__(index)
        image = torch.from_numpy(item["image"].copy()) >> self.shift  # (C, H, W) uint8; the chunk's buffer is read-only
        return (image, torch.tensor(item["label"])) if self.with_labels else image  # int64, as the in-memory ones


class StreamingImageDataModule(ImageDataModule):
    """The prepared splits under `root` (relative paths are inside `data_dir`), quantized to `bits`.

    `val_size` and `split_seed` were fixed when the chunks were written; given here (the in-memory
    configs carry them), they must match the manifest. `download` and `binarize_seed` are accepted
    for those configs and do nothing: the chunks are prepared beforehand. `shuffle_seed` fixes the
    order of the training images in each epoch (the same on every process, as litdata needs).
    """

    name = "streamed data"

    def __init__(
        self,
        root: str,
        data_dir: str | Path = ".",
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        channels: int | None = None,
        height: int | None = None,
        width: int | None = None,
        levels: int | None = None,
        download: bool = False,
        eval_batch_size: int | None = None,
        bits: int = 8,
        classes: int | None = None,
        condition: str | None = None,
        val_size: int | None = None,
        split_seed: int | None = None,
        shuffle_seed: int = 0,
        cache_dir: str | None = None,
        streaming: bool = True,
        binarize: str | None = None,
        binarize_seed: int = 0,
    ) -> None:
        if root is None:
            raise DataError("data.root is not set: name the folder or s3:// / gs:// URI of the chunks that `python -m "
                            "pixel_lightning.data.prepare <dataset> <folder>` wrote, e.g. data.root=<folder>.")
        if not streaming:
            raise DataError("data.streaming=false: this dataset is only streamed (it does not fit in memory). "
                            "Leave data.streaming=true.")
        if binarize is not None:
            raise DataError(f"data.binarize={binarize} is not streamed: the chunks hold grey levels. Use "
                            "data=binarized_mnist (the fixed binarization) for streamed binary MNIST, or "
                            "data.streaming=false.")
        check_int("bits", bits, 1, 8)
        check_int("shuffle_seed", shuffle_seed, 0)
        self.chunks = root if is_remote(str(root)) else str(Path(data_dir).expanduser().absolute() / root)
        manifest = read_manifest(self.chunks)
        self._check_manifest(manifest)
        self.name = f"{manifest['dataset']} (streamed from {self.chunks})"
        self.shape = tuple(manifest["shape"])
        stored_bits = manifest["bits"]
        for key, given in (("val_size", val_size), ("split_seed", split_seed)):
            fixed = manifest["settings"].get(key)
            if given is not None and given != fixed:
                raise DataError(f"data.{key}={given}, but the chunks in {self.chunks} were prepared with "
                                f"{key}={fixed}. Set data.{key}={fixed}, or prepare the data again with "
                                f"--{key.replace('_', '-')} {given} into another folder.")
        produced_bits = min(bits, stored_bits)
        super().__init__(
            data_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory, download=download,
            eval_batch_size=eval_batch_size, channels=channels, height=height, width=width, levels=levels,
            produced_levels=2**produced_bits, levels_because=f"{stored_bits} bits stored, bits={bits}",
            condition=condition,
        )
        if condition == "class" and manifest["classes"] is None:
            raise DataError(f"model.condition=class needs labels, but {self.name} has no labels (the paper's "
                            "ImageNet archives and binarized MNIST carry none). Train it unconditionally "
                            "(model.condition=null), or prepare a labelled source (Chrabaszcz's ImageNet npz, "
                            "MNIST, CIFAR-10).")
        if condition == "class" and classes is not None and classes != manifest["classes"]:
            raise DataError(f"data.classes={classes} does not match the data: {self.name} has {manifest['classes']} "
                            f"classes. Set data.classes={manifest['classes']}. " + CONFIG_HINT.format(key="classes"))
        self.dataset = manifest["dataset"]
        self.bits, self.shift = produced_bits, stored_bits - produced_bits
        self.condition, self.with_labels = condition, condition == "class"
        self.classes = manifest["classes"]
        self.note = manifest["note"]  # a caveat for the run record (Chrabaszcz's ImageNet)
        self.sizes = {split: entry["images"] for split, entry in manifest["splits"].items()}
        self.shuffle_seed, self.cache_dir = shuffle_seed, cache_dir

    def _check_manifest(self, manifest: dict | None) -> None:
        fix = f"Run `python -m pixel_lightning.data.prepare <dataset> {self.chunks}` (it finishes an interrupted run)."
        if manifest is None:
            raise DataError(f"{self.chunks} holds no prepared chunks ({join(self.chunks, 'prepared.json')} is "
                            f"missing). {fix}")
        if manifest.get("version") != MANIFEST_VERSION:
            raise DataError(f"The chunks in {self.chunks} were written by another version of prepare. Prepare "
                            "them again into an empty folder.")
        if not manifest.get("complete"):
            raise DataError(f"The chunks in {self.chunks} are unfinished (preparing them stopped midway). {fix}")
        shape, bits, classes, splits = (manifest.get(key) for key in ("shape", "bits", "classes", "splits"))
        valid = (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)
                 and bits in range(1, 9) and (classes is None or isinstance(classes, int) and classes > 0)
                 and isinstance(splits, dict) and set(splits) == {"train", "val", "test"}
                 and all(isinstance(entry.get("images"), int) for entry in splits.values())
                 and isinstance(manifest.get("settings"), dict) and isinstance(manifest.get("note"), (str, type(None))))
        if not valid:
            raise DataError(f"The manifest {join(self.chunks, 'prepared.json')} is damaged (its shape, bits, classes "
                            "or splits are not what prepare writes). Prepare the data again into an empty folder.")

    def prepare_data(self) -> None:
        """Nothing to fetch: the chunks are written by `prepare` and streamed by each process."""

    def setup(self, stage: str | None = None) -> None:
        """Open the splits once, in each process (litdata reads the DDP rank and world size here)."""
        if self.train_dataset is None:
            self.train_dataset = self._split("train", shuffle=True)
            self.val_dataset = self._split("val", shuffle=False)
            self.test_dataset = self._split("test", shuffle=False)

    def _split(self, split: str, shuffle: bool) -> StreamedImages:
        # training shards are evened out by dropping the remainder (litdata's default under DDP); evaluation keeps
        # every image once
        drop_last = None if shuffle else False
        return StreamedImages(join(self.chunks, split), self.shift, self.with_labels, shuffle=shuffle,
                              drop_last=drop_last, seed=self.shuffle_seed, cache_dir=self.cache_dir)

    def labelled(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label of a split, (N, C, H, W) uint8 and (N,) int64, whatever this process's
        shard: for the sample-quality classifier (data/labelled.py), which rank zero trains alone."""
        if self.classes is None:
            raise DataError(f"{self.name} has no labels, so no sample-quality classifier can be trained for it. "
                            "Disable the score with fid.num_samples=0.")
        dataset = StreamedImages(join(self.chunks, split), self.shift, True, cache_dir=self.cache_dir)
        items = [dataset[index] for index in range(self.sizes[split])]  # global indices, not this rank's share
        return torch.stack([image for image, _ in items]).numpy(), np.array([label for _, label in items], np.int64)

    def _loader(self, dataset: StreamedImages | None, batch_size: int, shuffle: bool) -> StreamingDataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                                   pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

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
from litdata.streaming.item_loader import PyTreeLoader

from pixel_lightning.data.chunks import (
    MANIFEST,
    MANIFEST_VERSION,
    SAFE_SERIALIZERS,
    check_chunk_records,
    check_split,
    is_remote,
    join,
    read_manifest,
)
from pixel_lightning.data.datamodule import CONFIG_HINT, ImageDataModule, check_int
from pixel_lightning.errors import DataError


def is_count(value: object) -> bool:
    """A positive int read from a manifest (bools are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class StreamedImages(StreamingDataset):
    """One prepared split (checked by chunks.check_split before it is opened); an item is its image
    shifted down to the wanted levels (and its label). Each item is checked as it is read: a uint8
    image of the manifest's shape and levels, a label among its classes."""

    def __init__(self, input_dir: str, manifest: dict[str, Any], shift: int, with_labels: bool, **kwargs: Any) -> None:
        super().__init__(input_dir, item_loader=PyTreeLoader(), serializers=SAFE_SERIALIZERS, **kwargs)
        self.shape, self.levels, self.classes = tuple(manifest["shape"]), 2 ** manifest["bits"], manifest["classes"]
        self.shift, self.with_labels = shift, with_labels

    def __getitem__(self, index: Any) -> torch.Tensor | tuple[torch.Tensor, int]:
        item = super().__getitem__(index)
        image, label = item["image"], item.get("label")
        if image.dtype != np.uint8 or image.shape != self.shape or image.max() >= self.levels:
            self._refuse(
                f"an image is {image.dtype} {image.shape} with levels up to {image.max()}, where the manifest "
                f"says uint8 {self.shape} with levels below {self.levels}"
            )
        if self.with_labels and not 0 <= label < self.classes:
            self._refuse(f"an image has the label {label}, where the manifest says {self.classes} classes")
        image = torch.from_numpy(image.copy()) >> self.shift  # (C, H, W) uint8; the chunk's buffer is read-only
        return (image, torch.tensor(label)) if self.with_labels else image  # int64, as the in-memory ones

    def _refuse(self, problem: str) -> None:
        raise DataError(
            f"The chunks in {self.input_dir.url or self.input_dir.path} do not hold what their manifest "
            f"says: {problem}. Prepare the data again with `python -m pixel_lightning.data.prepare "
            "<dataset> <folder> --overwrite`."
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resumed run's position in the epoch; litdata keeps it only for the folder it was saved with."""
        if state_dict and (state_dict.get("input_dir_path"), state_dict.get("input_dir_url")) != (
            self.input_dir.path,
            self.input_dir.url,
        ):
            saved = state_dict.get("input_dir_url") or state_dict.get("input_dir_path")
            raise DataError(
                f"The checkpoint was saved in the middle of an epoch streamed from {saved}, but the chunks are now "
                f"read from {self.input_dir.url or self.input_dir.path}, and the position within an epoch holds only "
                "for the folder it was saved with. Put the chunks back at their old place (or link that path to the "
                "new one) and resume with data.root naming it."
            )
        super().load_state_dict(state_dict)


class StreamingImageDataModule(ImageDataModule):
    """The prepared splits under `root` (relative paths are inside `data_dir`), quantized to `bits`.

    `val_size` and `split_seed` were fixed when the chunks were written; given here (the in-memory
    configs carry them), they must match the manifest. `download` and `binarize_seed` are accepted
    for those configs and do nothing: the chunks are prepared beforehand. `shuffle_seed` fixes the
    order of the training images in each epoch (the same on every process, as litdata needs).
    `dataset` is the data config's (data=mnist ...): the chunks must hold that dataset.
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
        dataset: str | None = None,
    ) -> None:
        if root is None:
            raise DataError(
                "data.root is not set: name the folder or s3:// / gs:// URI of the chunks that `python -m "
                "pixel_lightning.data.prepare <dataset> <folder>` wrote, e.g. data.root=<folder>."
            )
        if not streaming:
            raise DataError(
                "data.streaming=false: this dataset is only streamed (it does not fit in memory). "
                "Leave data.streaming=true."
            )
        if binarize is not None:
            raise DataError(
                f"data.binarize={binarize} is not streamed: the chunks hold grey levels. Use "
                "data=binarized_mnist (the fixed binarization) for streamed binary MNIST, or "
                "data.streaming=false."
            )
        check_int("bits", bits, 1, 8)
        check_int("shuffle_seed", shuffle_seed, 0)
        self.chunks = root if is_remote(str(root)) else str(Path(data_dir).expanduser().absolute() / root)
        manifest = read_manifest(self.chunks)
        self._check_manifest(manifest)
        if dataset is not None and dataset != manifest["dataset"]:
            raise DataError(
                f"The chunks in {self.chunks} hold {manifest['dataset']}, not {dataset} (data={dataset}). "
                f"Train on them with data={manifest['dataset']} data.streaming=true data.root={root}, or "
                f"name the chunks of {dataset} in data.root (prepare them with `python -m "
                f"pixel_lightning.data.prepare {dataset} <folder>`)."
            )
        self.manifest = manifest
        self.name = f"{manifest['dataset']} (streamed from {self.chunks})"
        self.shape = tuple(manifest["shape"])
        stored_bits = manifest["bits"]
        for key, given in (("val_size", val_size), ("split_seed", split_seed)):
            fixed = manifest["settings"].get(key)
            if given is not None and given != fixed:
                raise DataError(
                    f"data.{key}={given}, but the chunks in {self.chunks} were prepared with "
                    f"{key}={fixed}. Set data.{key}={fixed}, or prepare the data again with "
                    f"--{key.replace('_', '-')} {given} into another folder."
                )
        produced_bits = min(bits, stored_bits)
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
            produced_levels=2**produced_bits,
            levels_because=f"{stored_bits} bits stored, bits={bits}",
            condition=condition,
        )
        if condition == "class" and manifest["classes"] is None:
            raise DataError(
                f"model.condition=class needs labels, but {self.name} has no labels (the paper's "
                "ImageNet archives and binarized MNIST carry none). Train it unconditionally "
                "(model.condition=null), or prepare a labelled source (Chrabaszcz's ImageNet npz, "
                "MNIST, CIFAR-10)."
            )
        if condition == "class" and classes is not None and classes != manifest["classes"]:
            raise DataError(
                f"data.classes={classes} does not match the data: {self.name} has {manifest['classes']} "
                f"classes. Set data.classes={manifest['classes']}. " + CONFIG_HINT.format(key="classes")
            )
        self.dataset = manifest["dataset"]
        self.bits, self.shift = produced_bits, stored_bits - produced_bits
        self.condition, self.with_labels = condition, condition == "class"
        self.classes = manifest["classes"]
        self.note = manifest["note"]  # a caveat for the run record (Chrabaszcz's ImageNet)
        self.sizes = {split: entry["images"] for split, entry in manifest["splits"].items()}
        self.shuffle_seed, self.cache_dir = shuffle_seed, cache_dir

    def _check_manifest(self, manifest: dict | None) -> None:
        fix = f"Run `python -m pixel_lightning.data.prepare <dataset> {self.chunks}` (it finishes an interrupted run)."
        damaged = (
            f"The manifest {join(self.chunks, MANIFEST)} is damaged ({{}} is not what prepare writes). Prepare "
            "the data again: python -m pixel_lightning.data.prepare <dataset> <folder> --overwrite."
        )
        if manifest is None:
            raise DataError(
                f"{self.chunks} holds no prepared chunks ({join(self.chunks, 'prepared.json')} is missing). {fix}"
            )
        if manifest.get("version") != MANIFEST_VERSION:
            raise DataError(
                f"The chunks in {self.chunks} were written by another version of prepare. Prepare "
                "them again: python -m pixel_lightning.data.prepare <dataset> <folder> --overwrite."
            )
        if not manifest.get("complete"):
            raise DataError(f"The chunks in {self.chunks} are unfinished (preparing them stopped midway). {fix}")
        shape, bits, classes, splits, settings = (
            manifest.get(key) for key in ("shape", "bits", "classes", "splits", "settings")
        )
        if not (isinstance(manifest.get("dataset"), str) and isinstance(manifest.get("note"), (str, type(None)))):
            raise DataError(damaged.format("its dataset or note"))
        if not (
            isinstance(shape, list)
            and len(shape) == 3
            and all(is_count(n) for n in shape)
            and is_count(bits)
            and bits <= 8
            and (classes is None or is_count(classes))
        ):
            raise DataError(damaged.format("its shape, bits or classes"))
        if not (
            isinstance(settings, dict)
            and all(
                is_count(settings[key]) or settings[key] == 0 for key in ("val_size", "split_seed") if key in settings
            )
        ):
            raise DataError(damaged.format("its settings"))
        if not (
            isinstance(splits, dict)
            and set(splits) == {"train", "val", "test"}
            and all(isinstance(entry, dict) and is_count(entry.get("images")) for entry in splits.values())
            and check_chunk_records(manifest)
        ):
            raise DataError(damaged.format("its list of splits and their chunks"))

    def prepare_data(self) -> None:
        """Nothing to fetch: the chunks are written by `prepare` and streamed by each process."""

    def setup(self, stage: str | None = None) -> None:
        """Check the splits' chunks against the manifest (chunks.check_split), then open them, once in
        each process (litdata reads the DDP rank and world size here)."""
        if self.train_dataset is None:
            processes = self.trainer.world_size if self.trainer is not None else 1
            for split, entry in self.manifest["splits"].items():
                check_split(self.chunks, split, entry, self.manifest["classes"] is not None)
                if entry["images"] < processes:  # litdata would give a process no image, and every process fails
                    raise DataError(
                        f"The {split} split of {self.name} has {entry['images']} images, fewer than the "
                        f"{processes} processes of this run, each of which needs at least one. Run on at "
                        f"most {entry['images']} processes (trainer.devices, trainer.num_nodes), or "
                        "prepare a larger split."
                    )
            self.train_dataset = self._split("train", shuffle=True)
            self.val_dataset = self._split("val", shuffle=False)
            self.test_dataset = self._split("test", shuffle=False)

    def _split(self, split: str, shuffle: bool) -> StreamedImages:
        # training shards are evened out by dropping the remainder (litdata's default under DDP); evaluation keeps
        # every image once
        drop_last = None if shuffle else False
        return StreamedImages(
            join(self.chunks, split),
            self.manifest,
            self.shift,
            self.with_labels,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=self.shuffle_seed,
            cache_dir=self.cache_dir,
        )

    def labelled(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label of a split, (N, C, H, W) uint8 and (N,) int64, whatever this process's
        shard: for the sample-quality classifier (data/labelled.py), which rank zero trains alone."""
        if self.classes is None:
            raise DataError(
                f"{self.name} has no labels, so no sample-quality classifier can be trained for it. "
                "Disable the score with fid.num_samples=0."
            )
        self.setup()
        dataset = StreamedImages(join(self.chunks, split), self.manifest, self.shift, True, cache_dir=self.cache_dir)
        items = [dataset[index] for index in range(self.sizes[split])]  # global indices, not this rank's share
        return torch.stack([image for image, _ in items]).numpy(), np.array([label for _, label in items], np.int64)

    def _loader(self, dataset: StreamedImages | None, batch_size: int, shuffle: bool) -> StreamingDataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a dataloader")
        return StreamingDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

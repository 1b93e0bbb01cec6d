"""Convert a dataset into litdata's optimized chunks for data.streaming=true (and data=imagenet32/64):

    python -m pixel_lightning.data.prepare cifar10 /data/streamed/cifar10
    python -m pixel_lightning.data.prepare imagenet32 s3://bucket/imagenet32 --source /data/imagenet32 --workers 16

Writes <output>/{train,val,test}/ (litdata chunks: items {"index", "image" uint8 (C, H, W)[, "label"]})
and <output>/prepared.json, the manifest the streaming DataModule reads. CPU workers convert
blocks of images in parallel; litdata prints the progress. Each split is verified when written
(its image count, and the SHA-256 of its first and last images against the source) and entered
in the manifest with its chunks' names, sizes and SHA-256, so a run that stops is restarted by the
same command and redoes only the splits that were not finished.

The sources are checked in this process before any worker starts; the workers run in a process
group of their own, ended as a whole if anything fails, and stage their chunks in a folder of
this run under the output (or under the system temp dir for a remote output), removed at the end.
A folder that holds chunks no matching manifest accounts for is never written over without
--overwrite.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from litdata import StreamingDataset, optimize
from litdata.utilities.format import _convert_bytes_to_int

from pixel_lightning.data.chunks import (
    INDEX,
    MANIFEST_VERSION,
    SAFE_SERIALIZERS,
    chunk_records,
    is_remote,
    join,
    read_manifest,
    write_manifest,
)
from pixel_lightning.data.sources import Source, Split, imagenet_source, in_memory_source
from pixel_lightning.errors import DataError, OutputError, UserError
from pixel_lightning.files import failed_write

DATASETS = ("binarized_mnist", "mnist", "cifar10", "imagenet32", "imagenet64")
BLOCK = 1024  # images per unit of work


def image_digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


class BlockWriter:
    """litdata's per-input function: the items of split positions start..stop-1. A source's
    DataError (a damaged file) is left in `failure` for the main process to report."""

    def __init__(self, split: Split, failure: Path) -> None:
        self.split, self.failure = split, failure

    def __call__(self, block: tuple[int, int]):
        start, stop = block
        try:
            images, labels = self.split.read(start, stop)
        except DataError as err:
            self.failure.write_text(str(err))
            raise
        for offset, image in enumerate(images):
            item = {"index": start + offset, "image": np.ascontiguousarray(image)}
            if labels is not None:
                item["label"] = int(labels[offset])
            yield item


def write_split(split: Split, output: str, workers: int, chunk_bytes: int, staging: Path) -> None:
    """Write one split's chunks to `output` with litdata's optimize(), run in a child process that leads
    a process group of its own: litdata's workers start uploaders that outlive a failed worker, so on
    any failure (or Ctrl-C) the whole group is ended, and the child joined."""
    failure = staging / "failure.txt"
    failure.unlink(missing_ok=True)
    blocks = [(start, min(start + BLOCK, len(split))) for start in range(0, len(split), BLOCK)]
    context = multiprocessing.get_context("fork")  # the split's readers are inherited, not pickled
    child = context.Process(
        target=_optimize, args=(split, blocks, output, min(workers, len(blocks)), chunk_bytes, staging, failure)
    )
    child.start()
    try:
        child.join()
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the workers and their uploaders, whatever their state
        except ProcessLookupError:
            pass
        child.join()
    if failure.exists():
        raise DataError(failure.read_text())
    if child.exitcode != 0:
        raise RuntimeError(f"Writing the chunks of {output} failed (exit code {child.exitcode}); see the output above.")


def _optimize(
    split: Split,
    blocks: list[tuple[int, int]],
    output: str,
    workers: int,
    chunk_bytes: int,
    staging: Path,
    failure: Path,
) -> None:
    os.setsid()
    # litdata stages chunks in $DATA_OPTIMIZER_CACHE_FOLDER (default: one folder under the system temp dir, shared
    # by every run); this run's own folder instead
    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(staging / "chunks")
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(staging / "data")
    try:
        optimize(
            fn=BlockWriter(split, failure),
            inputs=blocks,
            output_dir=output,
            num_workers=workers,
            chunk_bytes=chunk_bytes,
            mode="overwrite",
            start_method="fork",
            reorder_files=False,
        )
    except BaseException as err:
        cause = failed_write(err)
        if cause is not None and not failure.exists():
            failure.write_text(
                f"The chunks could not be written to {output}: {cause.strerror or cause}. Prepare "
                "into a writable folder with free space."
            )
        if failure.exists():
            sys.exit(1)  # reported by the main process in one paragraph
        raise  # a bug: its traceback


def verify_split(name: str, split: Split, output: str) -> dict[str, Any]:
    """Read the written chunks back: the count, and the first and last images against the source."""
    written = StreamingDataset(output, serializers=SAFE_SERIALIZERS)
    if len(written) != len(split):
        raise DataError(
            f"The {name} split written to {output} holds {len(written)} images instead of {len(split)}. "
            "Run the same prepare command again: it rewrites the unfinished splits."
        )
    ends = {}
    for where, position in (("first", 0), ("last", len(written) - 1)):
        item = written[position]
        source_image = split.read(item["index"], item["index"] + 1)[0][0]
        if image_digest(item["image"]) != image_digest(source_image):
            raise DataError(
                f"The {where} image of the {name} split written to {output} differs from its source "
                f"(image {item['index']}). Run the same prepare command again to rewrite the split."
            )
        ends[where] = {"index": int(item["index"]), "sha256": image_digest(source_image)}
    return {"images": len(written), **ends}


def prepare(
    source: Source, root: str, workers: int = 1, chunk_bytes: int = 64_000_000, overwrite: bool = False
) -> dict[str, Any]:
    """Write and verify every split of `source` under `root` (a folder or s3:// / gs:// URI), resuming
    a run that wrote some of them; returns the manifest. Chunks that no matching manifest accounts
    for are replaced only with `overwrite`."""
    if not is_remote(root):
        root = str(Path(root).expanduser().absolute())
    manifest = {
        "version": MANIFEST_VERSION,
        "dataset": source.dataset,
        "shape": list(source.shape),
        "bits": source.bits,
        "classes": source.classes,
        "settings": source.settings,
        "note": source.note,
        "splits": {},
        "complete": False,
    }
    earlier = None if overwrite else read_manifest(root)
    same = earlier is not None and {k: v for k, v in earlier.items() if k not in ("splits", "complete")} == {
        k: v for k, v in manifest.items() if k not in ("splits", "complete")
    }
    if same:
        manifest["splits"] = earlier["splits"]
    elif not overwrite and (earlier is not None or _holds_chunks(root)):
        held = "chunks that no manifest of prepare accounts for"
        if isinstance(earlier, dict):
            held = f"chunks of other data or settings ({earlier.get('dataset')}, {earlier.get('settings')})"
        raise DataError(
            f"{root} already holds {held}. Prepare {source.dataset} into another folder, or pass "
            "--overwrite to replace them."
        )
    if not same:
        with _staging(root):  # a clear message if the output cannot be written
            write_manifest(root, manifest)  # unfinished: whatever was there no longer counts
    with _staging(root) as staging:
        for name, split in source.splits.items():
            if name in manifest["splits"]:
                print(f"{name}: already written and verified ({manifest['splits'][name]['images']} images)", flush=True)
                continue
            print(f"{name}: writing {len(split)} images with {workers} worker(s)", flush=True)
            write_split(split, join(root, name), workers, chunk_bytes, staging)
            manifest["splits"][name] = verify_split(name, split, join(root, name))
            manifest["splits"][name]["chunks"] = chunk_records(join(root, name))
            write_manifest(root, manifest)
            print(f"{name}: verified {len(split)} images (first and last match the source)", flush=True)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return manifest


def _holds_chunks(root: str) -> bool:
    """Whether `root` has a split folder with an index.json or chunk files (of any dataset)."""
    if is_remote(root):
        from litdata.streaming.fs_provider import _get_fs_provider

        provider = _get_fs_provider(root)
        return any(provider.exists(join(join(root, name), INDEX)) for name in ("train", "val", "test"))
    return any(
        path.name == INDEX or path.suffix == ".bin"
        for name in ("train", "val", "test")
        for path in Path(root, name).glob("*")
    )


class _staging:
    """A folder of this run for litdata's staged chunks, under `root` (a local output: the chunks move
    within one disk) or the system temp dir; removed on exit. An output that cannot be written is one
    paragraph."""

    def __init__(self, root: str) -> None:
        self.root = root

    def __enter__(self) -> Path:
        try:
            if is_remote(self.root):
                self.path = Path(tempfile.mkdtemp(prefix="pixel-prepare-"))
            else:
                Path(self.root).mkdir(parents=True, exist_ok=True)
                self.path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        except OSError as err:
            raise OutputError(
                f"The output folder {self.root} cannot be written ({err.strerror or err}). Prepare "
                "into a writable folder with free space."
            ) from None
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def byte_count(text: str) -> int:
    """--chunk-bytes: a positive number of bytes, with litdata's units (64MB, 1GB, 1000)."""
    try:
        count = int(text) if text.strip().isdigit() else _convert_bytes_to_int(text)
    except (ValueError, OverflowError):
        count = 0
    if count <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give a positive number of bytes such as 64MB, 1GB or 1000000"
        )
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pixel_lightning.data.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("output", help="folder, s3://bucket/prefix or gs://bucket/prefix for the chunks")
    parser.add_argument(
        "--source",
        type=Path,
        help="ImageNet: the folder with the paper's train_/valid_ archives or the Imagenet32/64 npz batches",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PIXEL_DATA_DIR", "data")),
        help="MNIST / CIFAR-10: the data folder of train.py (default $PIXEL_DATA_DIR or ./data)",
    )
    parser.add_argument("--no-download", action="store_true", help="MNIST / CIFAR-10: never download missing files")
    parser.add_argument(
        "--val-size",
        type=int,
        help="validation images taken from the training set (default: the DataModule's; ImageNet 10000)",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="fixes which training images form validation")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU worker processes")
    parser.add_argument("--chunk-bytes", type=byte_count, default="64MB", help="size of one chunk file (e.g. 64MB)")
    parser.add_argument("--overwrite", action="store_true", help="replace chunks of other data or settings in output")
    args = parser.parse_args(argv)
    try:
        if args.val_size is not None and args.val_size < 1:
            raise UserError(f"--val-size {args.val_size} must be at least 1. Choose a positive --val-size.")
        if args.split_seed < 0:
            raise UserError(f"--split-seed {args.split_seed} must be 0 or more. Choose another --split-seed.")
        if args.dataset.startswith("imagenet"):
            if args.source is None:
                raise UserError(
                    f"{args.dataset} needs --source <folder with the ImageNet files>: they cannot be "
                    "downloaded automatically (image-net.org asks for a login)."
                )
            source = imagenet_source(
                int(args.dataset[len("imagenet") :]),
                args.source,
                10000 if args.val_size is None else args.val_size,
                args.split_seed,
            )
        else:
            source = in_memory_source(args.dataset, args.data_dir, not args.no_download, args.val_size, args.split_seed)
        manifest = prepare(source, args.output, max(1, args.workers), args.chunk_bytes, args.overwrite)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    counts = ", ".join(f"{name} {split['images']}" for name, split in manifest["splits"].items())
    use = f"data={args.dataset}" if args.dataset.startswith("imagenet") else f"data={args.dataset} data.streaming=true"
    print(
        f"Prepared {args.dataset} in {args.output}: {counts} images. Train on them with {use} data.root={args.output}",
        flush=True,
    )


if __name__ == "__main__":
    main()

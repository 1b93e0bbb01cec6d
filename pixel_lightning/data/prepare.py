"""Convert a dataset into litdata's optimized chunks for data.streaming=true (and data=imagenet32/64):

    python -m pixel_lightning.data.prepare cifar10 /data/streamed/cifar10
    python -m pixel_lightning.data.prepare imagenet32 s3://bucket/imagenet32 --source /data/imagenet32 --workers 16

Writes <output>/{train,val,test}/ (litdata chunks: items {"index", "image" uint8 (C, H, W)[, "label"]})
and <output>/prepared.json, the manifest the streaming DataModule reads. CPU workers convert
blocks of images in parallel; litdata prints the progress. Each split is verified when written
(its image count, and the SHA-256 of its first and last images against the source) and entered
in the manifest, so a run that stops is restarted by the same command and redoes only the splits
that were not finished.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import litdata.helpers
import numpy as np
from litdata import StreamingDataset, optimize

from pixel_lightning.data.sources import Source, Split, imagenet_source, in_memory_source
from pixel_lightning.errors import DataError, UserError
from pixel_lightning.files import atomic_write

# litdata asks PyPI for a newer version whenever a dataset is opened or written (a 30 s timeout on an offline
# node) and urges an upgrade, but its versions from 0.2.45 on break this install (README "Install").
litdata.helpers._get_newer_version = lambda version: None

MANIFEST = "prepared.json"
MANIFEST_VERSION = 1
DATASETS = ("binarized_mnist", "mnist", "cifar10", "imagenet32", "imagenet64")
BLOCK = 1024  # images per unit of work


def is_remote(root: str) -> bool:
    return root.startswith(("s3://", "gs://"))


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if is_remote(root) else str(Path(root) / name)


def image_digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def read_manifest(root: str) -> dict[str, Any] | None:
    """The manifest of a chunk folder or URI, None when there is none yet."""
    try:
        if is_remote(root):
            from litdata.streaming.fs_provider import _get_fs_provider  # litdata's own s3/gs client

            provider = _get_fs_provider(root)
            if not provider.exists(join(root, MANIFEST)):
                return None
            with tempfile.TemporaryDirectory() as tmp:
                provider.download_file(join(root, MANIFEST), os.path.join(tmp, MANIFEST))
                return json.loads(Path(tmp, MANIFEST).read_text())
        path = Path(root) / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError) as exc:
        raise DataError(f"The manifest {join(root, MANIFEST)} cannot be read ({exc}). Prepare the data again into "
                        "an empty folder: python -m pixel_lightning.data.prepare <dataset> <folder>.") from None


def write_manifest(root: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2) + "\n"
    if is_remote(root):
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, MANIFEST).write_text(text)
            _get_fs_provider(root).upload_file(os.path.join(tmp, MANIFEST), join(root, MANIFEST))
        return
    with atomic_write(Path(root) / MANIFEST, "the chunks' manifest") as f:
        f.write(text.encode())


class BlockWriter:
    """litdata's per-input function: the items of split positions start..stop-1."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __call__(self, block: tuple[int, int]):
        start, stop = block
        images, labels = self.split.read(start, stop)
        for offset, image in enumerate(images):
            item = {"index": start + offset, "image": np.ascontiguousarray(image)}
            if labels is not None:
                item["label"] = int(labels[offset])
            yield item


def write_split(split: Split, output: str, workers: int, chunk_bytes: str) -> None:

    blocks = [(start, min(start + BLOCK, len(split))) for start in range(0, len(split), BLOCK)]
    optimize(fn=BlockWriter(split), inputs=blocks, output_dir=output, num_workers=min(workers, len(blocks)),
             chunk_bytes=chunk_bytes, mode="overwrite", start_method="fork", reorder_files=False)


def verify_split(name: str, split: Split, output: str) -> dict[str, Any]:
    """Read the written chunks back: the count, and the first and last images against the source."""
    written = StreamingDataset(output)
    if len(written) != len(split):
        raise DataError(f"The {name} split written to {output} holds {len(written)} images instead of {len(split)}. "
                        "Run the same prepare command again: it rewrites the unfinished splits.")
    ends = {}
    for where, position in (("first", 0), ("last", len(written) - 1)):
        item = written[position]
        source_image = split.read(item["index"], item["index"] + 1)[0][0]
        if image_digest(item["image"]) != image_digest(source_image):
            raise DataError(f"The {where} image of the {name} split written to {output} differs from its source "
                            f"(image {item['index']}). Run the same prepare command again to rewrite the split.")
        ends[where] = {"index": int(item["index"]), "sha256": image_digest(source_image)}
    return {"images": len(written), **ends}


def prepare(source: Source, root: str, workers: int = 1, chunk_bytes: str = "64MB") -> dict[str, Any]:
    """Write and verify every split of `source` under `root` (a folder or s3:// / gs:// URI), resuming
    a run that wrote some of them; returns the manifest."""
    if not is_remote(root):
        root = str(Path(root).expanduser().absolute())
    manifest = {"version": MANIFEST_VERSION, "dataset": source.dataset, "shape": list(source.shape),
                "bits": source.bits, "classes": source.classes, "settings": source.settings, "note": source.note,
                "splits": {}, "complete": False}
    earlier = read_manifest(root)
    if earlier is not None:
        if {k: v for k, v in earlier.items() if k not in ("splits", "complete")} != \
                {k: v for k, v in manifest.items() if k not in ("splits", "complete")}:
            raise DataError(f"{root} already holds chunks of other data or settings ({earlier['dataset']}, "
                            f"{earlier['settings']}). Prepare into another folder, or delete that one first.")
        manifest["splits"] = earlier["splits"]
    for name, split in source.splits.items():
        if name in manifest["splits"]:
            print(f"{name}: already written and verified ({manifest['splits'][name]['images']} images)", flush=True)
            continue
        print(f"{name}: writing {len(split)} images with {workers} worker(s)", flush=True)
        write_split(split, join(root, name), workers, chunk_bytes)
        manifest["splits"][name] = verify_split(name, split, join(root, name))
        write_manifest(root, manifest)
        print(f"{name}: verified {len(split)} images (first and last match the source)", flush=True)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pixel_lightning.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("output", help="folder, s3://bucket/prefix or gs://bucket/prefix for the chunks")
    parser.add_argument("--source", type=Path, help="ImageNet: the folder with the paper's train_/valid_ archives or "
                        "the Imagenet32/64 npz batches")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("PIXEL_DATA_DIR", "data")),
                        help="MNIST / CIFAR-10: the data folder of train.py (default $PIXEL_DATA_DIR or ./data)")
    parser.add_argument("--no-download", action="store_true", help="MNIST / CIFAR-10: never download missing files")
    parser.add_argument("--val-size", type=int, help="validation images taken from the training set "
                        "(default: the DataModule's; ImageNet 10000)")
    parser.add_argument("--split-seed", type=int, default=0, help="fixes which training images form validation")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPU worker processes")
    parser.add_argument("--chunk-bytes", default="64MB", help="size of one chunk file")
    args = parser.parse_args(argv)
    try:
        if args.dataset.startswith("imagenet"):
            if args.source is None:
                raise UserError(f"{args.dataset} needs --source <folder with the ImageNet files>: they cannot be "
                                "downloaded automatically (image-net.org asks for a login).")
            source = imagenet_source(int(args.dataset[len("imagenet"):]), args.source,
                                     10000 if args.val_size is None else args.val_size, args.split_seed)
        else:
            source = in_memory_source(args.dataset, args.data_dir, not args.no_download, args.val_size,
                                      args.split_seed)
        manifest = prepare(source, args.output, max(1, args.workers), args.chunk_bytes)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    counts = ", ".join(f"{name} {split['images']}" for name, split in manifest["splits"].items())
    use = f"data={args.dataset}" if args.dataset.startswith("imagenet") else f"data={args.dataset} data.streaming=true"
    print(f"Prepared {args.dataset} in {args.output}: {counts} images. Train on them with {use} "
          f"data.root={args.output}", flush=True)

if __name__ == "__main__":
    main()

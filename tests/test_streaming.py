"""Streamed data: the two downsampled-ImageNet readers on generated files in their published layouts,
`prepare` round trips into litdata chunks, the streaming DataModule's contract, exact sharding over
2 DDP processes (image ids recorded per process) and a mid-epoch resume that neither repeats nor
skips images. Everything runs on small synthetic files."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from ddp_stream import SPLITS, SeenIds, datamodule, id_images, image_ids, run
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from support import REPO, tiny_model
from test_checkpoint import model_checkpoint

from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.checkpoint import load_model
from pixel_lightning.config import STREAMED_DATA_MODULE, data_module
from pixel_lightning.data import CIFAR10DataModule
from pixel_lightning.data.chunks import MANIFEST, read_manifest
from pixel_lightning.data.formats import read_cifar_npz
from pixel_lightning.data.imagenet import PNGFolder, read_chrabaszcz_npz
from pixel_lightning.data.prepare import main, prepare, verify_split
from pixel_lightning.data.sources import ArrayOriginal, Source, Split, imagenet_source, in_memory_source
from pixel_lightning.data.streaming import StreamingImageDataModule
from pixel_lightning.errors import DataError
from pixel_lightning.plugins import AtomicCheckpointIO

ENV = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def rgb(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def png_bytes(image: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0) if mode == "RGB" else image[0], mode).save(out, "PNG")
    return out.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def paper_split(folder: Path, split: str, images: np.ndarray, as_tar: bool = True) -> Path:
    """The paper's layout: <split>_32x32.tar of <split>_32x32/<name>.png (names not in image order on disk)."""
    size = images.shape[-1]
    name = f"{split}_{size}x{size}"
    members = {f"{name}/{i:07d}.png": png_bytes(image) for i, image in enumerate(images)}
    members = dict(reversed(list(members.items())))  # the reader sorts by name
    if as_tar:
        return write_tar(folder / f"{name}.tar", members)
    for member, data in members.items():
        (folder / member).parent.mkdir(parents=True, exist_ok=True)
        (folder / member).write_bytes(data)
    return folder / name


def chrabaszcz_file(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Chrabaszcz et al.'s layout: data (N, 3*H*W) channel-planar, labels 1-based, and the mean image."""
    np.savez(path, data=images.reshape(len(images), -1), labels=list(labels + 1), mean=images.mean(0).ravel())
    return path


# ---- readers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("as_tar", [True, False])
def test_paper_pngs_read_back_in_name_order_from_tar_and_folder(tmp_path, as_tar):
    images = rgb(5, 8, 0)
    reader = PNGFolder(paper_split(tmp_path, "train", images, as_tar), 8)
    assert len(reader) == 5
    np.testing.assert_array_equal(np.stack([reader.read(i) for i in range(5)]), images)


def test_paper_png_errors_are_one_paragraph(tmp_path):
    images = rgb(2, 8, 0)
    tar = paper_split(tmp_path, "train", images)
    with pytest.raises(DataError, match=r"shape \(3, 8, 8\), but 16x16 ImageNet images were asked for.*imagenet64"):
        PNGFolder(tar, 16).read(0)  # the other resolution
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[:700])  # the archive ends inside the first PNG
    with pytest.raises(DataError, match="corrupt or truncated: it cannot be read as an uncompressed .tar"):
        PNGFolder(cut, 8)
    folder = paper_split(tmp_path / "x", "valid", images, as_tar=False)
    png = next(folder.glob("*.png"))
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(DataError, match="corrupt or truncated: it is not a readable PNG"):
        PNGFolder(folder, 8).read(0)
    grey = write_tar(tmp_path / "grey.tar", {"a.png": png_bytes(images[0][:1], "L")})
    with pytest.raises(DataError, match="it is a L image"):
        PNGFolder(grey, 8).read(0)
    with pytest.raises(DataError, match="not PNGs .e.g. x/readme.txt"):
        PNGFolder(write_tar(tmp_path / "other.tar", {"x/readme.txt": b"hello"}), 8)
    gz = tmp_path / "train.tar.gz"
    gz.write_bytes(b"\x1f\x8b" + b"\0" * 100)
    with pytest.raises(DataError, match="cannot be read as an uncompressed .tar"):
        PNGFolder(gz, 8)


def test_chrabaszcz_npz_is_channel_planar_with_one_based_labels(tmp_path):
    images, labels = rgb(4, 8, 1), np.array([0, 999, 5, 7])
    path = chrabaszcz_file(tmp_path / "train_data_batch_1.npz", images, labels)
    read_images, read_labels = read_chrabaszcz_npz(path, 8)
    np.testing.assert_array_equal(read_images, images)
    # row layout: the R plane, then G, then B, each row-major
    raw = np.load(path)["data"][1]
    assert raw[0] == images[1, 0, 0, 0] and raw[64] == images[1, 1, 0, 0] and raw[9] == images[1, 0, 1, 1]
    np.testing.assert_array_equal(read_labels, labels)


def test_chrabaszcz_npz_errors(tmp_path):
    images = rgb(3, 8, 2)
    good = chrabaszcz_file(tmp_path / "good.npz", images, np.array([1, 2, 3]))
    with pytest.raises(DataError, match=r"shape \(3, 8, 8\), but 16x16 ImageNet images"):
        read_chrabaszcz_npz(good, 16)
    np.savez(tmp_path / "nolabels.npz", data=images.reshape(3, -1))
    with pytest.raises(DataError, match="no array named 'labels'"):
        read_chrabaszcz_npz(tmp_path / "nolabels.npz", 8)
    np.savez(tmp_path / "zero.npz", data=images.reshape(3, -1), labels=[0, 1, 2])
    with pytest.raises(DataError, match="labels run from 0 to 2, expected 1..1000"):
        read_chrabaszcz_npz(tmp_path / "zero.npz", 8)
    np.savez(tmp_path / "short.npz", data=images.reshape(3, -1), labels=[1, 2])
    with pytest.raises(DataError, match="expected 3 integers"):
        read_chrabaszcz_npz(tmp_path / "short.npz", 8)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="corrupt or truncated: it cannot be read as an npz"):
        read_chrabaszcz_npz(cut, 8)


# ---- prepare -----------------------------------------------------------------------------------
def read_all(root: Path, split: str) -> dict[int, dict]:
    from litdata import StreamingDataset

    dataset = StreamingDataset(str(root / split))
    return {int(item["index"]): item for item in (dataset[i] for i in range(len(dataset)))}


@pytest.mark.parametrize("layout", ["paper", "chrabaszcz"])
def test_prepare_imagenet_round_trip(tmp_path, layout):
    """Every image (and label) read back from the chunks equals its source image; the validation
    split is val_size training images, the test split the published validation set."""
    train, valid = rgb(23, 8, 3), rgb(6, 8, 4)
    train_labels, valid_labels = np.arange(23) % 1000, np.arange(6) * 100
    src = tmp_path / "src"
    src.mkdir()
    if layout == "paper":
        paper_split(src, "train", train), paper_split(src, "valid", valid, as_tar=False)
    else:
        chrabaszcz_file(src / "train_data_batch_1.npz", train[:10], train_labels[:10])
        chrabaszcz_file(src / "train_data_batch_2.npz", train[10:], train_labels[10:])
        chrabaszcz_file(src / "val_data.npz", valid, valid_labels)
    manifest = prepare(imagenet_source(8, src, val_size=5, split_seed=0), str(tmp_path / "out"), workers=2)
    assert {name: split["images"] for name, split in manifest["splits"].items()} == {"train": 18, "val": 5, "test": 6}
    assert manifest["complete"] and manifest == read_manifest(str(tmp_path / "out"))
    assert (manifest["note"] is None) == (layout == "paper")  # Chrabaszcz's: not comparable with the paper
    seen = []
    for split, source, labels in (
        ("train", train, train_labels),
        ("val", train, train_labels),
        ("test", valid, valid_labels),
    ):
        items = read_all(tmp_path / "out", split)
        assert sorted(items) == list(range(manifest["splits"][split]["images"]))
        found = np.stack([items[i]["image"] for i in sorted(items)])
        positions = [int(np.flatnonzero((source == image).all(axis=(1, 2, 3)))[0]) for image in found]
        np.testing.assert_array_equal(found, source[positions])
        if layout == "chrabaszcz":
            assert [items[i]["label"] for i in sorted(items)] == list(labels[positions])
        if split != "test":
            seen += positions
    assert sorted(seen) == list(range(23))  # train and val: disjoint, all of the train archive
    # the run record of a test on Chrabaszcz's data says that it is not the paper's
    record = RunRecord(str(tmp_path / "run"), "pixelcnn", "imagenet8", quality=None)
    pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    ).test(tiny_model(3, 256, 8, 8), StreamingImageDataModule(str(tmp_path / "out")))
    dataset = json.loads((tmp_path / "run" / "record.json").read_text())["dataset"]
    assert dataset == ("imagenet8" if layout == "paper" else f"imagenet8 ({manifest['note']})")
    assert layout == "paper" or "not comparable with the downsampled ImageNet of the PixelRNN paper" in dataset


def test_prepared_cifar10_streams_the_in_memory_splits_with_their_labels(tmp_path, monkeypatch):
    """data.streaming=true sees the same train / val / test images as the in-memory DataModule."""
    monkeypatch.setattr(CIFAR10DataModule, "expected_sizes", {"train": 30, "test": 8})
    rng = np.random.default_rng(5)
    (tmp_path / "cifar10").mkdir()
    for split, count in (("train", 30), ("test", 8)):
        np.savez(
            tmp_path / "cifar10" / f"cifar10_{split}.npz",
            y=rng.integers(0, 10, count),
            x=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
        )
    prepare(in_memory_source("cifar10", tmp_path, False, 6, 3), str(tmp_path / "out"), workers=2)
    in_memory = CIFAR10DataModule(tmp_path, download=False, val_size=6, split_seed=3, bits=5)
    in_memory.setup()
    streamed = StreamingImageDataModule("out", tmp_path, val_size=6, split_seed=3, bits=5, condition="class", levels=32)
    streamed.setup()
    labels = read_cifar_npz(tmp_path / "cifar10" / "cifar10_train.npz", key="y")
    for split in ("train", "val", "test"):
        expected = getattr(in_memory, f"{split}_dataset").images
        items = [getattr(streamed, f"{split}_dataset")[i] for i in range(len(expected))]
        assert torch.equal(torch.stack([image for image, _ in items]), expected), split
    val_labels = [label for _, label in (streamed.val_dataset[i] for i in range(6))]
    order = np.sort(np.random.default_rng(3).permutation(30)[:6])  # split_train_val's validation positions
    assert val_labels == labels[order].tolist()


def synthetic_source(splits: dict[str, int] = SPLITS, classes: int | None = 3) -> Source:
    """Binary 4x4 images whose pixels spell their id (ddp_stream.id_images), labels id % classes."""

    def split(count: int, first: int) -> Split:
        ids = np.arange(first, first + count)
        return Split(ArrayOriginal(id_images(ids), None if classes is None else ids % classes), np.arange(count))

    firsts = np.cumsum([0, *splits.values()])
    return Source(
        "synthetic",
        (1, 4, 4),
        1,
        classes,
        {name: split(count, int(first)) for (name, count), first in zip(splits.items(), firsts)},
        {"val_size": splits["val"]},
    )


def test_prepare_verifies_its_output_and_restarts_unfinished_splits(tmp_path, monkeypatch, capsys):
    source = synthetic_source({"train": 5, "val": 2, "test": 3})
    root = tmp_path / "out"
    prepare(source, str(root))
    # a damaged chunk (a pixel of the last image) is caught by the checksum
    chunk = next((root / "test").glob("*.bin"))
    data = bytearray(chunk.read_bytes())
    data[data.rfind(source.splits["test"].read(2, 3)[0][0].tobytes())] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(DataError, match="The last image of the test split .* differs from its source"):
        verify_split("test", source.splits["test"], str(root / "test"))
    # a run stopped before the test split: the same command writes only that one
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["splits"]["test"]
    manifest["complete"] = False
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="are unfinished .* finishes an interrupted run"):
        StreamingImageDataModule(str(root))
    capsys.readouterr()
    prepare(source, str(root))
    out = capsys.readouterr().out
    assert "train: already written" in out and "val: already written" in out and "test: verified 3" in out
    assert verify_split("test", source.splits["test"], str(root / "test"))["images"] == 3
    other = synthetic_source({"train": 6, "val": 2, "test": 3}, classes=None)
    with pytest.raises(DataError, match="already holds chunks of other data"):
        prepare(other, str(root))


def test_prepare_command_reports_user_errors_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["imagenet32", str(tmp_path / "out"), "--source", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "holds neither the paper's downsampled ImageNet" in capsys.readouterr().err


# ---- the streaming DataModule ------------------------------------------------------------------
@pytest.fixture(scope="module")
def chunks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chunks")
    prepare(synthetic_source(), str(root))
    return root


def test_datamodule_splits_shapes_labels_and_levels(chunks):
    dm = StreamingImageDataModule(str(chunks), batch_size=5, levels=2, condition="class", channels=1, height=4, width=4)
    dm.setup()
    assert {name: len(getattr(dm, f"{name}_dataset")) for name in SPLITS} == SPLITS
    assert (dm.levels, dm.classes, dm.shape) == (2, 3, (1, 4, 4))
    images, labels = next(iter(dm.val_dataloader()))  # evaluation order: the split's own
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 4, 4) and images.max() <= 1
    assert images.tolist() == id_images(np.arange(36, 41)).tolist() and labels.tolist() == [0, 1, 2, 0, 1]
    plain = StreamingImageDataModule(str(chunks), batch_size=36)
    plain.setup()
    train = next(iter(plain.train_dataloader()))
    assert isinstance(train, torch.Tensor) and train.shape == (36, 1, 4, 4)
    assert sorted(image_ids(train)) == list(range(36))


def test_datamodule_refuses_settings_the_chunks_do_not_have(chunks, tmp_path):
    with pytest.raises(DataError, match="data.levels=256 does not match the data"):
        StreamingImageDataModule(str(chunks), levels=256)
    with pytest.raises(DataError, match=r"data.val_size=5000, but the chunks .* val_size=7"):
        StreamingImageDataModule(str(chunks), val_size=5000)
    with pytest.raises(DataError, match="holds no prepared chunks"):
        StreamingImageDataModule(str(tmp_path))
    with pytest.raises(DataError, match="data.root is not set"):
        StreamingImageDataModule(None)
    with pytest.raises(DataError, match="data.binarize=dynamic is not streamed"):
        StreamingImageDataModule(str(chunks), binarize="dynamic")
    unlabelled = tmp_path / "unlabelled"
    prepare(synthetic_source({"train": 2, "val": 1, "test": 1}, classes=None), str(unlabelled))
    with pytest.raises(DataError, match="has no labels"):
        StreamingImageDataModule(str(unlabelled), condition="class")
    manifest = json.loads((unlabelled / MANIFEST).read_text())
    (unlabelled / MANIFEST).write_text(json.dumps(manifest | {"bits": 12}))
    with pytest.raises(DataError, match="prepared.json is damaged"):
        StreamingImageDataModule(str(unlabelled))


def test_streaming_switch_selects_the_streamed_module(tmp_path):
    from test_configs import compose_train

    assert data_module("pixel_lightning.data.CIFAR10DataModule", False) == "pixel_lightning.data.CIFAR10DataModule"
    cfg = compose_train(["data=cifar10", "data.streaming=true", f"data.root={tmp_path}"], tmp_path)
    assert cfg.data._target_ == STREAMED_DATA_MODULE
    for name in ("imagenet32", "imagenet64"):
        assert compose_train([f"data={name}"], tmp_path).data._target_ == STREAMED_DATA_MODULE


# ---- 2 processes, and a resume mid-epoch --------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(tiny_model()), path)
    return path


@pytest.fixture(scope="module")
def two_processes(chunks, checkpoint, tmp_path_factory) -> list[dict]:
    """tests/ddp_stream.py on 2 processes (one subprocess; Lightning starts the second)."""
    out = tmp_path_factory.mktemp("ddp")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_stream.py"), str(chunks), str(checkpoint), "2", str(out)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("stage, ids", [("test", range(43, 54)), ("train", range(36))])
def test_each_process_reads_disjoint_images_and_together_all(two_processes, stage, ids):
    first, second = (set(rank[f"{stage}_ids"]) for rank in two_processes)
    assert first and second and not first & second
    assert sum(len(rank[f"{stage}_ids"]) for rank in two_processes) == len(ids)  # none twice within a process
    assert first | second == set(ids)


def test_test_nll_on_two_processes_equals_one_process_and_the_closed_form(two_processes, chunks, checkpoint):
    model = load_model(checkpoint)
    with torch.no_grad():
        exact = -model.log_prob(torch.from_numpy(id_images(np.arange(43, 54)))).double().mean().item()
    one = run(str(chunks), str(checkpoint), devices=1)
    assert sorted(one["test_ids"]) == list(range(43, 54))
    for result in (one, *two_processes):
        assert result["test_nll"] == pytest.approx(exact, abs=1e-5)


def test_a_run_resumed_mid_epoch_neither_repeats_nor_skips_images(chunks, checkpoint, tmp_path):
    """A checkpoint written after 5 of the 12 training steps of an epoch holds the loader's position:
    resumed from it, a run trains on exactly the remaining images, in the same order."""

    def fit(ckpt_path: str | None = None) -> list[int]:
        seen = SeenIds()
        every_5_steps = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=5, save_top_k=-1)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            limit_val_batches=0,
            callbacks=[seen, every_5_steps],
        )
        trainer.fit(load_model(checkpoint), datamodule(str(chunks)), ckpt_path=ckpt_path, weights_only=True)
        return seen.seen["train"]

    whole_epoch = fit()
    assert sorted(whole_epoch) == list(range(36))
    assert fit(str(tmp_path / "step=5.ckpt")) == whole_epoch[5 * 3 :]


# ---- the install -------------------------------------------------------------------------------
def test_the_streaming_engine_leaves_torchmetrics_and_lightning_importable(two_processes):
    """litdata >= 0.2.45 pulls in a torchvision that breaks torchmetrics and pytorch_lightning beside the
    CPU torch (README "Install"). The 2-process run started in a clean interpreter, imported litdata,
    torchmetrics and pytorch_lightning, and trained: it shows the installed litdata's version."""
    for rank in two_processes:
        assert tuple(int(part) for part in rank["litdata"].split(".")[:3]) < (0, 2, 45)


def test_gpu_check_stops_at_once_without_cuda():
    env = ENV | {"CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "gpu_check.py needs a CUDA GPU, and torch sees none" in result.stderr

"""Streamed chunks are data, never code, and never silently wrong: a chunk folder whose index.json
names pickle (or any format prepare never writes) never reaches pickle.loads, chunk names are
confined to their split folder, every split is checked against the manifest's chunk list at setup
(missing, truncated, garbled, dropped), levels and labels are checked as they are read, the chunks'
dataset is compared with data=, and a moved folder on resume or a split smaller than the number of
processes is one paragraph. Everything runs on tiny folders made here."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
from ddp_stream import datamodule
from litdata.streaming.writer import BinaryWriter
from pytorch_lightning.callbacks import ModelCheckpoint
from support import REPO, tiny_model
from test_streaming import ENV, synthetic_source

from pixel_lightning.data.chunks import MANIFEST, MANIFEST_VERSION, chunk_records
from pixel_lightning.data.prepare import prepare
from pixel_lightning.data.sources import ArrayOriginal, Source, Split
from pixel_lightning.data.streaming import StreamedImages, StreamingImageDataModule
from pixel_lightning.errors import DataError

SMALL = {"train": 6, "val": 2, "test": 3}


class Payload:
    """An object whose unpickling runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').write('ran')",)


def hostile_folder(root: Path, marker: Path, dataset: str = "synthetic", shape=(1, 4, 4)) -> Path:
    """A chunk folder as a hostile user makes it: litdata's BinaryWriter with items {"index", "image":
    Payload} (stored as pickle), and a manifest that accounts for its chunks exactly."""
    splits = {}
    for name, count in SMALL.items():
        writer = BinaryWriter(str(root / name), chunk_bytes="1MB")
        for j in range(count):
            writer[j] = {"index": j, "image": Payload(marker)}
        writer.done()
        writer.merge()
        splits[name] = {"images": count, "chunks": chunk_records(str(root / name))}
    manifest = {
        "version": MANIFEST_VERSION,
        "dataset": dataset,
        "shape": list(shape),
        "bits": 1,
        "classes": None,
        "settings": {},
        "note": None,
        "splits": splits,
        "complete": True,
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    assert json.loads((root / "train" / "index.json").read_text())["config"]["data_format"] == ["int", "pickle"]
    return root


def test_a_chunk_folder_that_pickles_is_refused_before_it_is_opened(tmp_path):
    marker = tmp_path / "marker"
    root = hostile_folder(tmp_path / "chunks", marker)
    dm = StreamingImageDataModule(str(root), batch_size=2)
    with pytest.raises(DataError, match="train split .* does not describe the items prepare writes .* could run code"):
        dm.setup()
    assert not marker.exists()


def test_no_chunk_reaches_pickle_whatever_its_index_says(tmp_path):
    """Past the index check (here bypassed), litdata's own pickle serializer is replaced by one that refuses."""
    marker = tmp_path / "marker"
    root = hostile_folder(tmp_path / "chunks", marker)
    manifest = json.loads((root / MANIFEST).read_text())
    with pytest.raises(DataError, match="stored as 'pickle', which prepare never writes"):
        StreamedImages(str(root / "train"), manifest, 0, False)[0]
    assert not marker.exists()


@pytest.mark.slow
def test_train_py_on_a_chunk_folder_that_pickles_runs_no_code(tmp_path):
    marker = tmp_path / "marker"
    root = hostile_folder(tmp_path / "chunks", marker, dataset="binarized_mnist", shape=(1, 28, 28))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "data=binarized_mnist",
            "data.streaming=true",
            f"data.root={root}",
            "logger=csv",
            "debug=smoke",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "does not describe the items prepare writes" in result.stderr
    assert not marker.exists()


# ---- a split checked against the manifest at setup ----------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder whose train split has several chunks (of 2 images)."""
    root = tmp_path_factory.mktemp("prepared") / "chunks"
    prepare(synthetic_source(SMALL), str(root), chunk_bytes=2 * 140)
    assert len(json.loads((root / "train" / "index.json").read_text())["chunks"]) > 1
    return root


@pytest.fixture
def chunks(prepared, tmp_path) -> Path:
    """A copy of `prepared` for one test to damage."""
    return Path(shutil.copytree(prepared, tmp_path / "chunks"))


def edit_index(root: Path, split: str, change) -> None:
    path = root / split / "index.json"
    index = json.loads(path.read_text())
    change(index)
    path.write_text(json.dumps(index))


def setup_error(root: Path) -> str:
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        StreamingImageDataModule(str(root)).setup()
    assert time.perf_counter() - start < 5  # refused at once, not after a stall
    return str(info.value)


def test_chunk_names_must_be_the_recorded_bare_names(chunks, tmp_path):
    outside = tmp_path / "outside.bin"
    shutil.copy(chunks / "train" / "chunk-0-0.bin", outside)
    for name in (str(outside), "../../outside.bin"):
        edit_index(chunks, "train", lambda index: index["chunks"][0].update(filename=name))
        assert "its index.json lists other chunks than the" in setup_error(chunks)
    manifest = json.loads((chunks / MANIFEST).read_text())
    manifest["splits"]["train"]["chunks"][0]["filename"] = str(outside)
    (chunks / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="prepared.json is damaged .its list of splits and their chunks"):
        StreamingImageDataModule(str(chunks))


def test_a_chunk_dropped_from_the_index_is_refused(chunks):
    edit_index(chunks, "train", lambda index: index["chunks"].pop())
    assert "its index.json lists other chunks than the" in setup_error(chunks)


def test_a_manifest_whose_chunks_do_not_sum_to_its_count_is_damaged(chunks):
    manifest = json.loads((chunks / MANIFEST).read_text())
    manifest["splits"]["test"]["images"] = 10
    (chunks / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="damaged .its list of splits and their chunks is not what prepare writes"):
        StreamingImageDataModule(str(chunks))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda path: path.unlink(), "its chunk chunk-0-0.bin is missing"),
        (lambda path: path.write_bytes(path.read_bytes()[:-7]), "has 273 bytes, where the manifest recorded 280"),
        (
            lambda path: path.write_bytes(b"\x07" * 20 + path.read_bytes()[20:]),
            "header of its chunk chunk-0-0.bin is garbled",
        ),
        (lambda path: (path.parent / "index.json").unlink(), "its index.json is missing"),
        (lambda path: (path.parent / "index.json").write_text('{"chunks": [1, 2'), "its index.json cannot be read"),
    ],
)
def test_a_missing_truncated_or_garbled_chunk_or_index_is_refused_at_setup(chunks, damage, expected):
    damage(chunks / "train" / "chunk-0-0.bin")
    message = setup_error(chunks)
    assert "The train split in" in message and expected in message and "--overwrite" in message


def test_levels_out_of_range_are_refused_when_read(tmp_path):
    """Binary chunks holding the level 200 (prepare copies what its source holds)."""
    images = np.zeros((SMALL["train"], 1, 4, 4), np.uint8)
    images[3, 0, 1, 2] = 200
    splits = {name: Split(ArrayOriginal(images[:count], None), np.arange(count)) for name, count in SMALL.items()}
    prepare(Source("synthetic", (1, 4, 4), 1, None, splits), str(tmp_path / "chunks"))
    dm = StreamingImageDataModule(str(tmp_path / "chunks"), batch_size=6)
    dm.setup()
    with pytest.raises(DataError, match=r"an image is uint8 \(1, 4, 4\) with levels up to 200, where the manifest"):
        next(iter(dm.train_dataloader()))


# ---- the chunks' dataset against data= -----------------------------------------------------------------------
def test_chunks_of_another_dataset_are_refused_by_name(chunks, tmp_path):
    from test_configs import compose_train

    with pytest.raises(DataError, match=r"hold synthetic, not mnist \(data=mnist\). Train on them with data=synthetic"):
        StreamingImageDataModule(str(chunks), dataset="mnist", levels=256)  # refused before the levels are compared
    for name in ("mnist", "binarized_mnist", "cifar10", "imagenet32", "imagenet64"):
        assert compose_train([f"data={name}", "data.streaming=true"], tmp_path).data.dataset == name


def test_a_damaged_manifest_is_not_blamed_on_the_overrides(chunks):
    manifest = json.loads((chunks / MANIFEST).read_text())
    manifest["settings"]["val_size"] = "abc"
    (chunks / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="prepared.json is damaged .its settings is not what prepare writes") as info:
        StreamingImageDataModule(str(chunks), val_size=2)
    assert "data.val_size" not in str(info.value)


# ---- processes and resumes -----------------------------------------------------------------------------------
def test_a_split_smaller_than_the_number_of_processes_is_one_paragraph(chunks):
    dm = StreamingImageDataModule(str(chunks))
    dm.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(DataError, match="The val split of .* has 2 images, fewer than the 3 processes .* at most 2"):
        dm.setup()
    dm.trainer = SimpleNamespace(world_size=2)
    dm.setup()


def test_a_run_resumed_mid_epoch_after_its_chunks_moved_is_one_paragraph(tmp_path):
    root = tmp_path / "chunks"
    prepare(synthetic_source(SMALL | {"train": 12}), str(root))
    every_2_steps = ModelCheckpoint(tmp_path, "{step}", every_n_train_steps=2, save_top_k=-1)

    def fit(chunks: Path, ckpt_path: str | None = None) -> None:
        pl.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            limit_val_batches=0,
            callbacks=[every_2_steps],
        ).fit(tiny_model(), datamodule(str(chunks)), ckpt_path=ckpt_path, weights_only=True)

    fit(root)
    root.rename(tmp_path / "moved")
    with pytest.raises(
        DataError,
        match=r"saved in the middle of an epoch streamed from .*chunks/train, but the chunks "
        r"are now read from .*moved/train.* Put the chunks back",
    ):
        fit(tmp_path / "moved", str(tmp_path / "step=2.ckpt"))


# ---- the house: no import circle in data/ ----------------------------------------------------------------------
def test_the_data_package_has_no_import_cycle():
    """Every import between modules of pixel_lightning/data, at the top or inside a function."""
    folder = REPO / "pixel_lightning" / "data"
    graph = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixel_lightning.data."):
                imported.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = imported

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        for other in sorted(graph.get(module, ())):
            found = cycle_from(other, path + [module])
            if found:
                return found
        return None

    for module in graph:
        assert cycle_from(module, []) is None, " -> ".join(cycle_from(module, []))

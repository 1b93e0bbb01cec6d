"""`prepare` as a careless user runs it: a source that fails inside a worker leaves no process behind,
another dataset's chunks are never written over without --overwrite, the staging folder is this
run's own (never litdata's shared one) and is removed, an unusable output or a malformed ImageNet
source is one paragraph, and its messages name its own options."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from support import REPO
from test_streaming import ENV, chrabaszcz_file, paper_split, png_bytes, rgb, synthetic_source, write_tar

from pixel_lightning.data.chunks import MANIFEST
from pixel_lightning.data.prepare import main, prepare
from pixel_lightning.data.sources import imagenet_source
from pixel_lightning.errors import DataError

SMALL = {"train": 6, "val": 2, "test": 3}

FAILING_IN_A_WORKER = """
import ctypes, os, sys, time
import numpy as np
from pixel_lightning.data.prepare import prepare
from pixel_lightning.data.sources import ArrayOriginal, Source, Split
from pixel_lightning.errors import DataError

ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: processes orphaned below us become our children

class Damaged(ArrayOriginal):
    def read(self, positions):
        if positions[0] >= 1024:  # the second block: read by a worker
            raise DataError("the source file is damaged")
        return super().read(positions)

images = Damaged(np.zeros((3000, 1, 4, 4), np.uint8), None)
source = Source("synthetic", (1, 4, 4), 1, None, {name: Split(images, np.arange(n)) for name, n in
                                                  (("train", 3000), ("val", 2), ("test", 2))})
try:
    prepare(source, sys.argv[1], workers=2)
except DataError as err:
    print("refused:", err)
time.sleep(1)
stats = [open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split() for pid in os.listdir("/proc") if pid.isdigit()]
print("children:", sum(stat[1] == str(os.getpid()) and stat[0] != "Z" for stat in stats))  # Z: ended, not reaped
"""


def test_a_source_failing_in_a_worker_is_one_paragraph_and_leaves_no_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FAILING_IN_A_WORKER, str(tmp_path / "out")],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refused: the source file is damaged\n" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
    assert "children: 0\n" in result.stdout, result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert not list((tmp_path / "out").glob(".staging*"))


def test_chunks_no_manifest_accounts_for_are_replaced_only_with_overwrite(tmp_path):
    foreign = tmp_path / "foreign"
    prepare(synthetic_source(SMALL), str(foreign))
    (foreign / MANIFEST).unlink()  # another tool's chunks: no manifest of ours
    index = (foreign / "train" / "index.json").read_text()
    with pytest.raises(DataError, match="already holds chunks that no manifest of prepare accounts for.*--overwrite"):
        prepare(synthetic_source(SMALL, classes=None), str(foreign))
    assert (foreign / "train" / "index.json").read_text() == index
    manifest = prepare(synthetic_source(SMALL, classes=None), str(foreign), overwrite=True)
    assert manifest["complete"] and manifest["classes"] is None
    assert json.loads((foreign / MANIFEST).read_text()) == manifest


def test_prepare_stages_in_a_folder_of_its_own_and_removes_it(tmp_path, monkeypatch):
    """litdata's default staging folder is <system temp>/chunks, shared by every run."""
    system_temp = tmp_path / "system_temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    prepare(synthetic_source(SMALL), str(tmp_path / "out"))
    assert list(system_temp.iterdir()) == []
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [MANIFEST, "test", "train", "val"]


def test_an_unusable_output_is_one_paragraph(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "imagenet32",
                str(tmp_path / "file" / "out"),
                "--source",
                str(imagenet_folder(tmp_path)),
                "--val-size",
                "1",
            ]
        )
    assert exit_info.value.code == 2
    assert "cannot be written" in capsys.readouterr().err


def imagenet_folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    chrabaszcz_file(src / "train_data_batch_1.npz", rgb(6, 32, 0), np.arange(6))
    chrabaszcz_file(src / "val_data.npz", rgb(3, 32, 1), np.arange(3))
    return src


# ---- malformed ImageNet sources ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, labels, expected",
    [
        (np.zeros((3, 192), np.float32), [1, 2, 3], "its array 'data' is float32 (3, 192), expected uint8"),
        (np.zeros((3, 3, 64), np.uint8), [1, 2, 3], r"its array 'data' is uint8 (3, 3, 64), expected uint8"),
        (np.zeros((3, 100), np.uint8), [1, 2, 3], "holds images of shape (100,), but 8x8 ImageNet images"),
        (np.zeros((3, 192), np.uint8), [1, 2, 1001], "its labels run from 1 to 1001, expected 1..1000"),
        (np.zeros((3, 192), np.uint8), [1.5, 2, 3], "its 'labels' are float64 (3,), expected 3 integers"),
    ],
)
def test_a_malformed_npz_batch_is_refused_before_any_worker_starts(tmp_path, data, labels, expected):
    np.savez(tmp_path / "train_data_batch_1.npz", data=data, labels=labels)
    chrabaszcz_file(tmp_path / "val_data.npz", rgb(2, 8, 0), np.arange(2))
    with pytest.raises(DataError) as info:
        imagenet_source(8, tmp_path, 1, 0)
    assert expected in str(info.value)


def test_a_misnamed_npz_batch_is_one_paragraph(tmp_path):
    chrabaszcz_file(tmp_path / "train_data_batch_x.npz", rgb(2, 8, 0), np.arange(2))
    with pytest.raises(DataError, match="train_data_batch_x.npz, which is not an Imagenet8 batch name"):
        imagenet_source(8, tmp_path, 1, 0)


def bomb_png() -> bytes:
    """A PNG whose header claims 20000 x 20000 RGB pixels (1.2 GB decoded): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda png: png[:60], "is not a readable PNG"),
        (lambda png: png_bytes(np.zeros((1, 8, 8), np.uint8), "L"), "it is a L image"),
        (lambda png: bomb_png(), "is not a readable PNG (Image size (400000000 pixels) exceeds limit"),
    ],
)
def test_a_damaged_png_read_by_a_worker_is_one_paragraph(tmp_path, damage, expected, capsys):
    images = rgb(4, 32, 0)
    paper_split(tmp_path, "valid", images)
    members = {f"train_32x32/{i:07d}.png": png_bytes(image) for i, image in enumerate(images)}
    members["train_32x32/0000002.png"] = damage(members["train_32x32/0000002.png"])
    write_tar(tmp_path / "train_32x32.tar", members)
    with pytest.raises(SystemExit) as exit_info:
        main(["imagenet32", str(tmp_path / "out"), "--source", str(tmp_path), "--val-size", "1", "--workers", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "0000002.png" in err and "Traceback" not in err


def test_prepare_names_its_own_options(tmp_path, capsys):
    for args, expected in (
        (["--chunk-bytes", "abc"], "argument --chunk-bytes: 'abc' is not a size"),
        (["--val-size", "0"], "--val-size 0 must be at least 1"),
        (["--split-seed", "-1"], "--split-seed -1 must be 0 or more"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["mnist", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--no-download", *args])
        err = capsys.readouterr().err.split("error: ")[-1]
        assert exit_info.value.code == 2 and expected in err and "data." not in err, err
    (tmp_path / "train_8x8").mkdir()
    (tmp_path / "train_8x8" / "readme.txt").write_text("")
    (tmp_path / "valid_8x8").mkdir()
    with pytest.raises(DataError) as info:
        imagenet_source(8, tmp_path, 1, 0)
    assert "--format" not in str(info.value) and "give --source the folder of the Imagenet32/64 npz" in str(info.value)

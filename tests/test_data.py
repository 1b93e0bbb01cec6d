"""Tests of the data layer: format readers, downloads, and the three DataModules.

Unit tests write tiny files in the canonical formats into tmp_path and compare what comes back
exactly; the DataModules' expected split sizes are shrunk to fit (`tiny`). Integration tests
read the real datasets from $PIXEL_DATA_DIR and are skipped when it is unset. Nothing here
touches the network: urllib is monkeypatched wherever a download is attempted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from pixel_lightning.config import register_resolvers
from pixel_lightning.data import BinarizedMNISTDataModule, CIFAR10DataModule, MNISTDataModule
from pixel_lightning.data.datamodule import split_train_val
from pixel_lightning.data.download import RemoteFile, fetch, md5_verifier
from pixel_lightning.data.formats import read_amat, read_cifar_npz, read_cifar_pickles, read_idx
from pixel_lightning.errors import DataError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
N_TRAIN, N_TEST, N_VAL = 20, 8, 5  # tiny MNIST / CIFAR fixtures


# ---------------------------------------------------------------- writers of the canonical formats


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def amat_bytes(images: np.ndarray) -> bytes:
    return "".join(" ".join(map(str, row)) + "\n" for row in images.reshape(len(images), -1)).encode()


class Py2Pickler(pickle._Pickler):
    """Writes bytes and str the way Python 2 wrote its str (BINSTRING opcodes), as in the
    original CIFAR batches; Python 3 would route bytes through _codecs.encode, which they never
    reference."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str


def cifar_batch_bytes(images: np.ndarray, numpy1_names: bool = True) -> bytes:
    """A CIFAR-10 batch pickle as the originals are: protocol 2, bytes keys, numpy 1.x names."""
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [i % 10 for i in range(len(images))],
        b"data": images.reshape(len(images), -1),
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(batch)
    data = out.getvalue()
    # protocol 2 names globals as plain text lines, so the module can be renamed in place
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if numpy1_names else data


def cifar_members(train: np.ndarray, test: np.ndarray) -> dict[str, bytes]:
    """The batch files: train split into 5 data batches, test in one."""
    members = {f"data_batch_{i + 1}": cifar_batch_bytes(part) for i, part in enumerate(np.array_split(train, 5))}
    members["test_batch"] = cifar_batch_bytes(test, numpy1_names=False)  # numpy 2.x names load too
    return members


def write_tarball(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in {"batches.meta": b"", **members}.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_folder(folder: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        write(folder / name, data)
    return folder


def write_npz(path: Path, images: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=images.transpose(0, 2, 3, 1), y=np.zeros(len(images), np.uint8))
    return path


class Exploit:
    """Unpickling this runs a shell command; a safe reader must refuse before that happens."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def tiny(monkeypatch):
    """Expected split sizes shrunk to the tiny fixtures (real sizes stay enforced elsewhere)."""
    monkeypatch.setattr(MNISTDataModule, "expected_sizes", {"train": N_TRAIN, "test": N_TEST})
    monkeypatch.setattr(CIFAR10DataModule, "expected_sizes", {"train": N_TRAIN, "test": N_TEST})
    monkeypatch.setattr(BinarizedMNISTDataModule, "expected_sizes", {"train": 6, "valid": 3, "test": 4})


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """urlopen always fails; temporary files go to a folder of their own to check for leftovers."""
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    return calls, temp


def serve(monkeypatch, files: dict[str, bytes], down: tuple[str, ...] = ()) -> list[str]:
    """urlopen answers the URLs whose last part is in `files`, fails for hosts in `down` and
    for every other file."""
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        if name not in files or url.split("/")[2] in down:
            raise urllib.error.URLError(f"{url} unreachable")
        return io.BytesIO(files[name])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def grey_images(n: int, seed: int, shape=(1, 28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.fixture
def mnist(tmp_path, tiny):
    """Tiny MNIST in tmp_path/MNIST/raw (train gzipped, test plain); test[0] holds all 256 values."""
    train, test = grey_images(N_TRAIN, 1), grey_images(N_TEST, 2)
    test[0].flat[:256] = np.arange(256)
    write(tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz", idx_bytes(train[:, 0]))
    write(tmp_path / "MNIST/raw/t10k-images-idx3-ubyte", idx_bytes(test[:, 0]))
    return tmp_path, train, test


@pytest.fixture
def binarized(tmp_path, tiny):
    rng = np.random.default_rng(3)
    sizes = BinarizedMNISTDataModule.expected_sizes  # shrunk by `tiny`
    splits = {split: rng.integers(0, 2, (n, 1, 28, 28), dtype=np.uint8) for split, n in sizes.items()}
    for split, images in splits.items():
        suffix = ".amat.gz" if split == "train" else ".amat"
        write(tmp_path / f"binarized_mnist/binarized_mnist_{split}{suffix}", amat_bytes(images))
    return tmp_path, splits


def rows(images: torch.Tensor | np.ndarray) -> list[bytes]:
    """Images as hashable rows, to compare sets of images."""
    return [np.asarray(image).tobytes() for image in images]


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [grey_images(3, 0)[:, 0], np.arange(10, dtype=np.uint8)], ids=["images", "labels"])
def test_idx_round_trip(tmp_path, suffix, array):
    path = write(tmp_path / f"file-ubyte{suffix}", idx_bytes(array))
    np.testing.assert_array_equal(read_idx(path, array.ndim), array)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: b"\x00\x00\x08\x01" + data[4:], "magic"),
        (lambda data: data[:-1], "bytes"),
        (lambda data: data + b"\x00", "bytes"),
        (lambda data: data[:10], "header"),
    ],
    ids=["bad-magic", "truncated", "extra-byte", "short-header"],
)
def test_idx_corrupt(tmp_path, damage, message):
    path = write(tmp_path / "train-images-idx3-ubyte", damage(idx_bytes(grey_images(3, 0)[:, 0])))
    with pytest.raises(DataError, match=message) as error:
        read_idx(path, 3)
    assert str(path) in str(error.value) and "download it again" in str(error.value)


def test_bad_gzip(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(grey_images(3, 0)[:, 0]))[:-20])  # truncated stream
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path, 3)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=str(path)):
        read_idx(path, 3)


# ---------------------------------------------------------------- .amat


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
def test_amat_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 2, (5, 784), dtype=np.uint8)
    path = write(tmp_path / f"x{suffix}", amat_bytes(images))
    np.testing.assert_array_equal(read_amat(path), images)


def test_amat_tolerates_crlf_and_missing_final_newline(tmp_path):
    images = np.random.default_rng(0).integers(0, 2, (3, 784), dtype=np.uint8)
    path = write(tmp_path / "x.amat", amat_bytes(images).replace(b"\n", b"\r\n").rstrip())
    np.testing.assert_array_equal(read_amat(path), images)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text.replace(b"0 ", b"2 ", 1), "line 1 contains 2, where only the values 0 and 1"),
        (lambda text: text[:3000] + b"x" + text[3001:], "line 2 contains x,"),
        (lambda text: text[:3000] + b"\x07" + text[3001:], "line 2 contains the byte 0x07,"),
        (lambda text: text.replace(b"\n0 ", b"\n10 ", 1), "line 2 has a value of more than one digit"),
        (lambda text: text.replace(b"0 ", b"", 1), "line 1 has 783 values"),
        (lambda text: text + b"0 1\n", "line 4 has 2 values"),
        (lambda text: text.replace(b"\n", b"\n\n", 1), "line 2 has 0 values"),
        (lambda text: b"", "empty"),
    ],
    ids=["value-2", "letter", "control-byte", "value-10", "783-values", "short-last-line", "blank-line", "empty"],
)
def test_amat_corrupt(tmp_path, damage, message):
    images = np.zeros((3, 784), np.uint8)
    path = write(tmp_path / "binarized_mnist_test.amat", damage(amat_bytes(images)))
    with pytest.raises(DataError, match=message) as error:
        read_amat(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- CIFAR-10 pickles and npz


def test_cifar_pickles_round_trip_from_tarball_and_folder(tmp_path):
    train, test = grey_images(N_TRAIN, 4, (3, 32, 32)), grey_images(N_TEST, 5, (3, 32, 32))
    members = cifar_members(train, test)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    for source in (tarball, write_folder(tmp_path / "batches", members)):
        np.testing.assert_array_equal(read_cifar_pickles(source, batches), train)
        np.testing.assert_array_equal(read_cifar_pickles(source, ["test_batch"]), test)


def test_cifar_pickle_layout_is_rgb_planes(tmp_path):
    """b'data' rows are 1024 R, then 1024 G, then 1024 B values, each plane row-major."""
    image = np.zeros((1, 3, 32, 32), np.uint8)
    image[0, 0, 0, 1], image[0, 1, 1, 0], image[0, 2, 31, 31] = 10, 20, 30
    flat = image.reshape(1, -1)
    assert flat[0, 1] == 10 and flat[0, 1024 + 32] == 20 and flat[0, 3071] == 30
    write(tmp_path / "test_batch", cifar_batch_bytes(image))
    np.testing.assert_array_equal(read_cifar_pickles(tmp_path, ["test_batch"]), image)


def test_cifar_npz_round_trip(tmp_path):
    images = grey_images(4, 6, (3, 32, 32))
    np.testing.assert_array_equal(read_cifar_npz(write_npz(tmp_path / "cifar10_test.npz", images)), images)


@pytest.mark.parametrize("where", ["folder", "tarball"])
def test_malicious_pickle_is_refused_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    members = {"test_batch": pickle.dumps(Exploit(marker), protocol=2)}
    if where == "folder":
        source = write_folder(tmp_path / "batches", members)
    else:
        source = write_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match="posix.system|os.system|nt.system"):
        read_cifar_pickles(source, ["test_batch"])
    assert not marker.exists()


@pytest.mark.parametrize(
    "data, message",
    [
        (cifar_batch_bytes(grey_images(2, 0, (3, 32, 32)))[:-30], "not a valid CIFAR-10 pickle"),
        (b"garbage", "not a valid CIFAR-10 pickle"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32)}, protocol=2), "_codecs.encode"),
        (pickle.dumps([1, 2], protocol=2), "b'data'"),
        (pickle.dumps({b"labels": [1]}, protocol=4), "b'data'"),
    ],
    ids=["truncated", "garbage", "py3-bytes", "not-a-dict", "no-data"],
)
def test_cifar_pickle_corrupt(tmp_path, data, message):
    path = write(tmp_path / "test_batch", data)
    with pytest.raises(DataError, match=message) as error:
        read_cifar_pickles(tmp_path, ["test_batch"])
    assert str(path) in str(error.value)


def test_cifar_pickle_wrong_array(tmp_path):
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump({b"data": np.zeros((2, 3000), np.uint8)})
    write(tmp_path / "test_batch", out.getvalue())
    with pytest.raises(DataError, match=r"uint8 \(N, 3072\)"):
        read_cifar_pickles(tmp_path, ["test_batch"])


def test_cifar_tarball_corrupt_or_incomplete(tmp_path):
    members = cifar_members(grey_images(N_TRAIN, 4, (3, 32, 32)), grey_images(N_TEST, 5, (3, 32, 32)))
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", {"test_batch": members["test_batch"]})
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_1"):
        read_cifar_pickles(tarball, ["data_batch_1"])
    tarball.write_bytes(tarball.read_bytes()[:-100])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is corrupt"):
        read_cifar_pickles(tarball, ["data_batch_1"])
    with pytest.raises(DataError, match="has no file data_batch_1"):
        read_cifar_pickles(write_folder(tmp_path / "folder", {"test_batch": members["test_batch"]}), ["data_batch_1"])


def test_cifar_npz_corrupt(tmp_path):
    path = tmp_path / "cifar10_train.npz"
    np.savez(path, x=np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="expected uint8"):
        read_cifar_npz(path)
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="no array named 'x'"):
        read_cifar_npz(path)
    np.savez(path, x=np.array([object()], dtype=object))  # would need pickle to load
    with pytest.raises(DataError, match="cannot be read"):
        read_cifar_npz(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=str(path)):
        read_cifar_npz(path)


# ---------------------------------------------------------------- missing files and downloads


@pytest.mark.parametrize(
    "module, folder, names",
    [
        (
            BinarizedMNISTDataModule,
            "binarized_mnist",
            ["binarized_mnist_train.amat", "binarized_mnist_valid.amat", "binarized_mnist_test.amat.gz"],
        ),
        (MNISTDataModule, "MNIST/raw", ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"]),
        (CIFAR10DataModule, "cifar10", ["cifar10_train.npz", "cifar-10-python.tar.gz", "cifar-10-batches-py"]),
    ],
)
@pytest.mark.parametrize("download", [False, True])
def test_missing_files(tmp_path, no_network, module, folder, names, download):
    calls, temp = no_network
    data_dir = tmp_path / "nonexistent"
    dm = module(data_dir, download=download)
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert all(name in message for name in names)
    assert str(data_dir / folder) in message and "PIXEL_DATA_DIR" in message and "\n" not in message
    assert ("download=False" in message) != download
    assert bool(calls) == download
    assert not data_dir.exists() and not list(temp.iterdir())  # nothing left behind
    with pytest.raises(DataError, match="PIXEL_DATA_DIR"):  # setup() reports the same way
        dm.setup("fit")


def test_download_with_bad_checksum_leaves_nothing(tmp_path, monkeypatch, no_network):
    _, temp = no_network
    serve(monkeypatch, {"cifar-10-python.tar.gz": b"an error page, not the tarball"})
    with pytest.raises(DataError, match="MD5") as error:
        CIFAR10DataModule(tmp_path / "data").prepare_data()
    assert "cifar-10-python.tar.gz" in str(error.value)
    assert not (tmp_path / "data").exists() and not list(temp.iterdir())


def test_mnist_download_falls_back_to_second_mirror_and_checks_uncompressed_md5(mnist, monkeypatch, no_network):
    source, train, test = mnist
    raw = {"train-images-idx3-ubyte": idx_bytes(train[:, 0]), "t10k-images-idx3-ubyte": idx_bytes(test[:, 0])}
    md5s = [(name, hashlib.md5(data).hexdigest()) for name, data in raw.items()]
    files = dict(zip(("train", "test"), md5s))
    monkeypatch.setattr(MNISTDataModule, "FILES", files)  # the tiny files' uncompressed MD5s
    first, second = (url.split("/")[2] for url in MNISTDataModule.MIRRORS)
    calls = serve(monkeypatch, {name + ".gz": gzip.compress(data) for name, data in raw.items()}, down=(first,))
    data_dir = source / "fresh"
    dm = MNISTDataModule(data_dir, val_size=N_VAL)
    dm.setup("fit")
    installed = sorted(path.name for path in (data_dir / "MNIST/raw").iterdir())
    assert installed == ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"]  # no .part left
    assert [url.split("/")[2] for url in calls] == [first, second] * 2
    np.testing.assert_array_equal(dm.test_dataset.images.numpy(), test)


def test_binarized_download_is_verified_by_structure(binarized, monkeypatch, no_network):
    source, splits = binarized
    good = {f"binarized_mnist_{s}.amat": amat_bytes(images) for s, images in splits.items()}
    serve(monkeypatch, {**good, "binarized_mnist_valid.amat": amat_bytes(splits["valid"][:2])})  # one line short
    with pytest.raises(DataError, match="binarized_mnist_valid.amat.*holds 2 images"):
        BinarizedMNISTDataModule(source / "fresh").prepare_data()
    serve(monkeypatch, good)
    dm = BinarizedMNISTDataModule(source / "fresh")
    dm.setup()
    for dataset, split in ((dm.train_dataset, "train"), (dm.val_dataset, "valid"), (dm.test_dataset, "test")):
        np.testing.assert_array_equal(dataset.images.numpy(), splits[split])


def test_fetch_reports_an_unwritable_folder(tmp_path, monkeypatch, no_network):
    _, temp = no_network
    serve(monkeypatch, {"f": b"x"})
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(DataError, match="could not be saved"):
        fetch(RemoteFile("f", ("http://h/f",), md5_verifier(hashlib.md5(b"x").hexdigest())), blocker / "sub")
    assert not list(temp.iterdir())


# ---------------------------------------------------------------- DataModules on tiny files


def test_binarized_datamodule_round_trip_and_loaders(binarized):
    data_dir, splits = binarized
    dm = BinarizedMNISTDataModule(data_dir, batch_size=4, eval_batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    for dataset, split in ((dm.train_dataset, "train"), (dm.val_dataset, "valid"), (dm.test_dataset, "test")):
        assert torch.equal(torch.stack([dataset[i] for i in range(len(dataset))]), torch.from_numpy(splits[split]))
    assert [b.shape for b in dm.train_dataloader()] == [(4, 1, 28, 28), (2, 1, 28, 28)]  # drop_last=False
    assert [b.shape for b in dm.test_dataloader()] == [(2, 1, 28, 28), (2, 1, 28, 28)]
    assert next(iter(dm.val_dataloader())).dtype == torch.uint8


def test_wrong_split_size_is_rejected(binarized, monkeypatch):
    data_dir, _ = binarized
    monkeypatch.setattr(BinarizedMNISTDataModule, "expected_sizes", {"train": 6, "valid": 10000, "test": 4})
    with pytest.raises(DataError, match="binarized_mnist_valid.amat is corrupt.*holds 3 images.*has 10000"):
        BinarizedMNISTDataModule(data_dir).setup()


@pytest.mark.parametrize("bits", range(1, 9))
def test_mnist_quantization_is_exact(mnist, bits):
    data_dir, train, test = mnist
    dm = MNISTDataModule(data_dir, bits=bits, val_size=N_VAL, levels=2**bits)
    dm.setup("test")
    assert dm.levels == 2**bits
    np.testing.assert_array_equal(dm.test_dataset.images.numpy(), test >> (8 - bits))
    assert dm.test_dataset.images[0, 0].flatten()[:256].tolist() == [v >> (8 - bits) for v in range(256)]
    assert sorted(rows(dm.train_dataset.images) + rows(dm.val_dataset.images)) == sorted(rows(train >> (8 - bits)))


def test_cifar_quantization_and_sources(tmp_path, tiny):
    train, test = grey_images(N_TRAIN, 4, (3, 32, 32)), grey_images(N_TEST, 5, (3, 32, 32))
    members = cifar_members(train, test)
    layouts = {
        "npz": lambda root: (write_npz(root / "cifar10_train.npz", train), write_npz(root / "cifar10_test.npz", test)),
        "tarball": lambda root: write_tarball(root / "cifar-10-python.tar.gz", members),
        "folder": lambda root: write_folder(root / "cifar-10-batches-py", members),
    }
    for layout, make in layouts.items():
        make(tmp_path / layout / "cifar10")
        dm = CIFAR10DataModule(tmp_path / layout, bits=3, val_size=N_VAL, levels=8)
        dm.setup()
        np.testing.assert_array_equal(dm.test_dataset.images.numpy(), test >> 5, err_msg=layout)
        assert sorted(rows(dm.train_dataset.images) + rows(dm.val_dataset.images)) == sorted(rows(train >> 5))
        assert next(iter(dm.train_dataloader())).shape == (N_TRAIN - N_VAL, 3, 32, 32)


def test_val_split_is_deterministic_and_disjoint(mnist):
    data_dir, train, _ = mnist
    first, again = (MNISTDataModule(data_dir, val_size=N_VAL) for _ in range(2))
    other = MNISTDataModule(data_dir, val_size=N_VAL, split_seed=1)
    for dm in (first, again, other):
        dm.setup("fit")
    assert len(first.train_dataset) == N_TRAIN - N_VAL and len(first.val_dataset) == N_VAL
    assert torch.equal(first.val_dataset.images, again.val_dataset.images)
    assert torch.equal(first.train_dataset.images, again.train_dataset.images)
    assert not set(rows(first.val_dataset.images)) & set(rows(first.train_dataset.images))
    assert not torch.equal(first.val_dataset.images, other.val_dataset.images)
    order = np.random.default_rng(0).permutation(N_TRAIN)  # the documented rule
    np.testing.assert_array_equal(first.val_dataset.images.numpy(), train[np.sort(order[:N_VAL])])
    assert split_train_val(train, N_VAL, 0)[1].shape == (N_VAL, 1, 28, 28)


def test_dynamic_binarization(mnist):
    data_dir, train, _ = mnist
    dm, twin = (MNISTDataModule(data_dir, binarize="dynamic", val_size=N_VAL, levels=2) for _ in range(2))
    dm.setup("fit")
    twin.setup("fit")
    torch.manual_seed(0)
    draws = torch.stack([dm.train_dataset[0] for _ in range(2)])
    assert draws.dtype == torch.uint8 and set(draws.unique().tolist()) == {0, 1}
    assert not torch.equal(draws[0], draws[1])  # a new binarization at every fetch
    # Bernoulli(pixel / 255): black pixels stay 0, white stay 1, averages follow the grey level
    grey = dm.train_dataset.images[0].float() / 255
    mean = torch.stack([dm.train_dataset[0] for _ in range(400)]).float().mean(0)
    assert (mean[grey == 0] == 0).all() and (mean[grey == 1] == 1).all()
    assert (mean - grey).abs().max() < 0.15
    for dataset, twin_set in ((dm.val_dataset, twin.val_dataset), (dm.test_dataset, twin.test_dataset)):
        assert torch.equal(dataset[0], dataset[0]) and set(dataset.images.unique().tolist()) <= {0, 1}
        assert torch.equal(dataset.images, twin_set.images)  # drawn once, same seed, same result
    other_seed = MNISTDataModule(data_dir, binarize="dynamic", val_size=N_VAL, binarize_seed=1)
    other_seed.setup("test")
    assert not torch.equal(other_seed.test_dataset.images, dm.test_dataset.images)


def test_static_binarization(mnist):
    data_dir, _, _ = mnist
    dm, twin = (MNISTDataModule(data_dir, binarize="static", val_size=N_VAL) for _ in range(2))
    dm.setup()
    twin.setup()
    assert dm.levels == 2
    for name in ("train_dataset", "val_dataset", "test_dataset"):
        dataset = getattr(dm, name)
        assert torch.equal(dataset[0], dataset[0]) and torch.equal(dataset.images, getattr(twin, name).images)
        assert set(dataset.images.unique().tolist()) == {0, 1}


def test_setup_loads_once(mnist, monkeypatch):
    data_dir, _, _ = mnist
    dm = MNISTDataModule(data_dir, val_size=N_VAL)
    dm.setup("fit")
    loaded = dm.train_dataset, dm.test_dataset
    monkeypatch.setattr("pixel_lightning.data.mnist.read_idx", lambda *args: pytest.fail("re-parsed"))
    dm.setup("test")
    assert (dm.train_dataset, dm.test_dataset) == loaded


def test_relative_data_dir(mnist, monkeypatch):
    data_dir, _, test = mnist
    monkeypatch.chdir(data_dir.parent)
    dm = MNISTDataModule(data_dir.name, val_size=N_VAL)
    monkeypatch.chdir("/")  # later cwd changes do not matter
    dm.setup()
    np.testing.assert_array_equal(dm.test_dataset.images.numpy(), test)


@pytest.mark.parametrize(
    "module, kwargs, message",
    [
        (MNISTDataModule, {"bits": 4, "levels": 256}, "data.levels=256 .* levels=16 .*bits=4"),
        (MNISTDataModule, {"binarize": "dynamic", "levels": 256}, "levels=2 .*binarize=dynamic"),
        (MNISTDataModule, {"bits": 0}, "data.bits must be an integer from 1 to 8, but it is 0\\."),
        (MNISTDataModule, {"bits": 9}, "data.bits"),
        (MNISTDataModule, {"bits": "8"}, "data.bits"),
        (MNISTDataModule, {"bits": True}, "data.bits"),
        (MNISTDataModule, {"binarize": "yes"}, "data.binarize must be null, dynamic or static, but it is yes\\."),
        (MNISTDataModule, {"binarize": True}, "data.binarize"),
        (MNISTDataModule, {"val_size": 0}, "data.val_size"),
        (MNISTDataModule, {"channels": 3}, "data.channels=3 .* channels=1"),
        (CIFAR10DataModule, {"height": 28}, "data.height=28 .* height=32"),
        (CIFAR10DataModule, {"bits": 5, "levels": 256}, "levels=32"),
        (CIFAR10DataModule, {"val_size": -1}, "data.val_size"),
        (BinarizedMNISTDataModule, {"levels": 256}, "levels=2 .*fixed"),
        (BinarizedMNISTDataModule, {"batch_size": 0}, "data.batch_size"),
        (BinarizedMNISTDataModule, {"num_workers": -1}, "data.num_workers"),
    ],
)
def test_bad_arguments(tmp_path, module, kwargs, message):
    with pytest.raises(DataError, match=message):
        module(tmp_path, **kwargs)


def test_val_size_too_large(mnist):
    data_dir, _, _ = mnist
    with pytest.raises(DataError, match="data.val_size=20 leaves no training images.*has 20"):
        MNISTDataModule(data_dir, val_size=N_TRAIN).setup()


@pytest.mark.parametrize(
    "name, overrides, module, levels",
    [
        ("binarized_mnist", [], BinarizedMNISTDataModule, 2),
        ("mnist", [], MNISTDataModule, 256),
        ("mnist", ["data.bits=3"], MNISTDataModule, 8),
        ("mnist", ["data.binarize=dynamic"], MNISTDataModule, 2),
        ("cifar10", ["data.bits=5"], CIFAR10DataModule, 32),
    ],
)
def test_yaml_configs_instantiate(tmp_path, name, overrides, module, levels):
    register_resolvers()
    cfg = OmegaConf.merge(
        {"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(CONF / f"{name}.yaml")},
        OmegaConf.from_dotlist(overrides),
    )
    assert cfg.data.levels == levels
    dm = instantiate(cfg.data)
    assert type(dm) is module and dm.levels == levels and dm.data_dir == tmp_path
    assert (dm.channels, dm.height, dm.width) == (cfg.data.channels, cfg.data.height, cfg.data.width)


# ---------------------------------------------------------------- real data (PIXEL_DATA_DIR)

REAL = os.environ.get("PIXEL_DATA_DIR")
needs_real_data = pytest.mark.skipif(not REAL, reason="PIXEL_DATA_DIR is not set: no real datasets to check")


def loaded(module, **kwargs):
    dm = module(REAL, download=False, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def check_loaders(dm, shape):
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch.shape == (64, *shape) and batch.dtype == torch.uint8


@needs_real_data
def test_real_binarized_mnist():
    dm = loaded(BinarizedMNISTDataModule)
    sets = (dm.train_dataset, dm.val_dataset, dm.test_dataset)
    assert [len(s) for s in sets] == [50000, 10000, 10000]
    for dataset, mean in zip(sets, (0.1306, 0.1311, 0.1325)):
        assert dataset.images.dtype == torch.uint8 and dataset.images.max() == 1
        assert dataset.images.float().mean().item() == pytest.approx(mean, abs=1e-4)
    check_loaders(dm, (1, 28, 28))


@needs_real_data
def test_real_mnist():
    dm = loaded(MNISTDataModule, val_size=10000)
    sets = (dm.train_dataset, dm.val_dataset, dm.test_dataset)
    assert [len(s) for s in sets] == [50000, 10000, 10000]
    assert all(s.images.dtype == torch.uint8 and s.images.min() == 0 and s.images.max() == 255 for s in sets)
    check_loaders(dm, (1, 28, 28))
    for name, md5 in MNISTDataModule.FILES.values():  # the published MD5s of the uncompressed files
        md5_verifier(md5, gunzipped=True)(Path(REAL) / f"MNIST/raw/{name}.gz")


@needs_real_data
def test_real_cifar10():
    dm = loaded(CIFAR10DataModule)
    assert [len(s) for s in (dm.train_dataset, dm.val_dataset, dm.test_dataset)] == [45000, 5000, 10000]
    # undo the documented split to get the file's 50000 images back, in order
    full = np.empty((50000, 3, 32, 32), np.uint8)
    order = np.random.default_rng(0).permutation(50000)
    full[np.sort(order[5000:])], full[np.sort(order[:5000])] = dm.train_dataset.images, dm.val_dataset.images
    test = dm.test_dataset.images.numpy()
    assert hashlib.sha256(full.transpose(0, 2, 3, 1).tobytes()).hexdigest().startswith("47af8b02cfcfb6cd")
    assert hashlib.sha256(test.transpose(0, 2, 3, 1).tobytes()).hexdigest().startswith("f9b1e2130bab680d")
    assert full[0, :, 0, 0].tolist() == [59, 62, 63] and test[0, :, 0, 0].tolist() == [158, 112, 49]
    np.testing.assert_allclose(full.mean(axis=(0, 2, 3)) / 255, [0.4914, 0.4822, 0.4465], atol=1e-4)
    np.testing.assert_allclose(test.mean(axis=(0, 2, 3)) / 255, [0.4942, 0.4851, 0.4504], atol=1e-4)
    check_loaders(dm, (3, 32, 32))

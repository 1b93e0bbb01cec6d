"""Helpers shared by the tests: the repo root, real-data gating, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    value = os.environ.get("PIXEL_DATA_DIR")
    return Path(value).resolve() if value else None


requires_data = pytest.mark.skipif(
    real_data_dir() is None,
    reason="PIXEL_DATA_DIR is not set: point it at a folder with the datasets (e.g. ../shared/data) to run this test",
)


def tiny_model(
    channels: int = 1,
    levels: int = 2,
    height: int = 4,
    width: int = 4,
    arch: str = "pixelcnn.PixelCNN",
    output: dict | None = None,
    **net,
):
    """A small AutoregressiveImageModel for unit tests (`output`: the model's output setting, None categorical);
    of the sizes hidden, layers and output_hidden (tiny ones unless given), those the net takes."""
    import inspect

    import hydra

    from pixel_lightning.models import AutoregressiveImageModel

    net_cfg = {"_target_": f"pixel_lightning.models.{arch}", "channels": channels, "levels": levels}
    takes = inspect.signature(hydra.utils.get_class(net_cfg["_target_"])).parameters
    sizes = {"hidden": 12, "layers": 1, "output_hidden": 24}  # given or not, kept only where the net takes them
    net_cfg.update({k: v for k, v in (sizes | net).items() if k in takes or k not in sizes})
    return AutoregressiveImageModel(
        net=net_cfg,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels},
        output=output,
    )


def sample_recording_draws(model, method: str, draw) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """The levels of draw(method, generator) (a `sample` or `complete` of `model`, seed 3) and, draw by
    draw, the channel and a copy of the outputs (logits or distribution parameters) it was fed:
    every draw of both sampling paths passes through `model._draw`, wrapped here."""
    fed, draw_levels = [], model._draw

    def recording(logits: torch.Tensor, ch: int, *rest) -> torch.Tensor:
        fed.append((ch, logits.clone()))  # the cached sampler may reuse its buffers for the next call
        return draw_levels(logits, ch, *rest)

    model._draw = recording
    try:
        levels = draw(method, torch.Generator().manual_seed(3))
    finally:
        del model._draw  # the class's method again
    return levels, fed


def sample_both_ways(model, draw) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive then the cached levels of draw(method, generator) (see sample_recording_draws), after
    checking that each draw of the two paths was fed the same outputs, to 1e-10 in float64. Equal
    levels alone can come from lucky draws (large weights make most draws nearly certain); equal
    inputs to every draw cannot."""
    (naive, naive_fed), (cached, cached_fed) = (sample_recording_draws(model, m, draw) for m in ("naive", "cached"))
    assert naive_fed and naive_fed[0][1].dtype == torch.float64, "compare the draws of a float64 model"
    assert_fed_alike(naive_fed, cached_fed, atol=1e-10)
    return naive, cached


def assert_fed_alike(naive_fed: list, cached_fed: list, atol: float, rtol: float = 0.0) -> None:
    """The (channel, outputs) fed to each draw by the naive and the cached path are the same, draw by draw."""
    assert naive_fed and len(naive_fed) == len(cached_fed), f"{len(naive_fed)} naive draws, {len(cached_fed)} cached"
    for i, ((ch, expected), (cached_ch, actual)) in enumerate(zip(naive_fed, cached_fed)):
        assert ch == cached_ch, f"draw {i}: channel {ch} naive, {cached_ch} cached"
        torch.testing.assert_close(
            actual,
            expected,
            rtol=rtol,
            atol=atol,
            msg=lambda m: f"draw {i} of {len(naive_fed)} (channel {ch}), cached vs naive: {m}",
        )


def tiny_binarized_mnist(folder: Path, monkeypatch, size: int = 16) -> Path:
    """A binarized-MNIST data folder of `size` random images per split (the expected split sizes
    patched to match): a whole training run in-process without the real files' seconds of parsing."""
    import numpy as np

    from pixel_lightning.data import BinarizedMNISTDataModule

    rng = np.random.default_rng(0)
    monkeypatch.setattr(BinarizedMNISTDataModule, "expected_sizes", dict.fromkeys(("train", "valid", "test"), size))
    for split in ("train", "valid", "test"):
        rows = rng.integers(0, 2, (size, 28 * 28)).astype(str)
        path = folder / "binarized_mnist" / f"binarized_mnist_{split}.amat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(" ".join(row) + "\n" for row in rows))
    return folder


def wandb_records(run_dir: Path):
    """Decode the records of an offline W&B run file (`run-*.wandb`).

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB
    blocks of chunks, each with a 7-byte header (crc32, length, type) and a piece of one
    protobuf `Record`; type 1 is a whole record, 2/3/4 its first/middle/last piece.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_dir).glob("run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left in the block for a chunk header
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding up to the end of the block
            pos += block - pos % block
            continue
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def wandb_logged(run_dir: Path) -> dict[str, list]:
    """Config keys, history keys, summary values, whether the run exited and its exit code, from its run file.
    A media value is one history key, its logged name: newer wandb versions split it into nested keys
    (samples, filenames), older ones do not."""
    logged = {"config": set(), "history": set(), "summary": {}, "exited": False, "exit_code": None}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            logged["config"] |= {item.key for item in record.config.update}
        elif kind == "history":
            logged["history"] |= {item.key or item.nested_key[0] for item in record.history.item}
        elif kind == "summary":
            for item in record.summary.update:
                logged["summary"][item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "exit":
            logged["exited"], logged["exit_code"] = True, record.exit.exit_code
    return logged

"""The trainer plugins: checkpoints written atomically on a local disk, and remote paths kept remote."""

from __future__ import annotations

import fsspec
import torch

from pixel_lightning.plugins import AtomicCheckpointIO


def test_a_remote_checkpoint_path_is_written_there_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path mistaken for a local one would land here, as a folder named `memory:`
    checkpoint = {"state_dict": {"weight": torch.arange(6.0).reshape(2, 3)}, "global_step": 7}
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint, "memory://runs/a/checkpoints/last.ckpt")
    memory = fsspec.filesystem("memory")
    try:
        assert memory.isfile("/runs/a/checkpoints/last.ckpt") and list(tmp_path.iterdir()) == []
        loaded = io.load_checkpoint("memory://runs/a/checkpoints/last.ckpt", weights_only=True)
        assert loaded["global_step"] == 7 and torch.equal(loaded["state_dict"]["weight"], torch.arange(6.0).view(2, 3))
    finally:
        memory.rm("/runs", recursive=True)


def test_a_local_checkpoint_is_written_atomically(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left beside it

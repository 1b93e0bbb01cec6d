"""Checkpoints: atomic writes, weights-only loading, and clear errors for bad files."""

import pytest
import torch
from support import tiny_model

from pixel_lightning.checkpoint import AtomicCheckpointIO, load_model, read_checkpoint
from pixel_lightning.errors import CheckpointError


def model_checkpoint(model):
    return {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(3, 4, height=3, width=3)
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(model), path)
    loaded = load_model(path)
    x = torch.randint(0, 4, (2, 3, 3, 3))
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_missing_checkpoint_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match=r"No checkpoint file at .*nope\.ckpt.*ckpt_path="):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint(model_checkpoint(tiny_model()), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)
    path.write_bytes(b"not a checkpoint")  # fails inside the weights-only unpickler
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(path)


class Payload:
    """An arbitrary python object: what a malicious pickle would carry."""


def test_checkpoint_with_python_objects_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"payload": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"test_checkpoint.Payload.*trust_checkpoint=true"):
        read_checkpoint(path)
    assert isinstance(read_checkpoint(path, trust=True)["payload"], Payload)


def test_foreign_and_incompatible_checkpoints_are_explained(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a pixel-lightning model checkpoint"):
        load_model(foreign)

    checkpoint = model_checkpoint(tiny_model())
    checkpoint["state_dict"].pop("net.input_conv.weight")
    incompatible = tmp_path / "incompatible.ckpt"
    torch.save(checkpoint, incompatible)
    with pytest.raises(CheckpointError, match="does not fit this version"):
        load_model(incompatible)

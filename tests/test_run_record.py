"""The run record: every field, measured; throughput of training batches only; failed runs.

The record must take any LightningModule that follows its contract, so these tests train a
stand-in without a likelihood (like a GAN): it must get null test NLL/bpd, never a number.
"""

import csv
import json
import subprocess
import time

import pytest
import pytorch_lightning as pl
import torch
from support import REPO, real_data_dir, requires_data
from test_cli import run
from torch import nn
from torch.utils.data import DataLoader

from pixel_lightning.callbacks.run_record import RunRecord
from pixel_lightning.evaluation.fid import SampleQuality
from pixel_lightning.records import RECORD_FIELDS


class IndependentPixels(pl.LightningModule):
    """The record contract without a likelihood: independent Bernoulli pixels, fitted by least
    squares (so it logs no test/nll), sampled independently. `step_seconds` slows each step."""

    def __init__(self, shape=(1, 4, 4), step_seconds: float = 0.0):
        super().__init__()
        self.image_shape, self.levels, self.step_seconds = shape, 2, step_seconds
        self.logit = nn.Parameter(torch.zeros(shape))

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_seconds)
        return ((torch.sigmoid(self.logit) - batch.float()) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def test_step(self, batch, batch_idx):
        self.log("test/mse", ((torch.sigmoid(self.logit) - batch.float()) ** 2).mean())

    def sample(self, n, temperature=1.0, generator=None):
        probs = torch.sigmoid(self.logit / temperature).expand(n, *self.image_shape)
        return torch.bernoulli(probs, generator=generator).long()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class RandomImages(pl.LightningDataModule):
    def __init__(self, count=32, batch_size=8):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 2, (count, 1, 4, 4), dtype=torch.uint8, generator=generator)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.images, batch_size=self.batch_size, shuffle=True)

    val_dataloader = test_dataloader = lambda self: DataLoader(self.images, batch_size=self.batch_size)


class SlowOutsideTraining(pl.Callback):
    """Sleeps in validation and at the end of every epoch: time a throughput must not count."""

    def __init__(self, seconds):
        self.seconds = seconds

    def on_validation_end(self, trainer, pl_module):
        time.sleep(self.seconds)

    def on_train_epoch_end(self, trainer, pl_module):
        time.sleep(self.seconds)


def trainer_for(tmp_path, *callbacks, **settings):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=pl.loggers.CSVLogger(tmp_path, name="csv"),
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **settings,
    )


def test_throughput_counts_training_batches_only(tmp_path):
    step, outside = 0.02, 0.4
    record = RunRecord(str(tmp_path), "stand-in", "random", quality=None, after_test=False)
    trainer = trainer_for(tmp_path, SlowOutsideTraining(outside), record, max_epochs=2, num_sanity_val_steps=0)
    trainer.fit(IndependentPixels(step_seconds=step), datamodule=RandomImages(count=32, batch_size=8))
    saved = json.loads((tmp_path / "record.json").read_text())
    batch_seconds = 64 / saved["train_images_per_s"]  # 2 epochs x 32 images
    assert batch_seconds >= 8 * step  # the 8 steps' own time is counted ...
    # ... but not the first epoch's validation and epoch-end sleeps, inside the training time
    # (the last epoch's come after its last batch, where the training time ends)
    assert saved["train_time_s"] >= 2 * outside + 8 * step
    assert batch_seconds <= saved["train_time_s"] - 2 * outside
    assert saved["steps"] == 8 and saved["epochs"] == pytest.approx(2.0)
    assert saved["status"] == "finished" and saved["test_nll"] is None


@requires_data
def test_record_of_a_model_without_likelihood_has_every_field_and_null_nll(tmp_path):
    from pixel_lightning.data import BinarizedMNISTDataModule

    quality = SampleQuality(
        num_samples=6,
        num_real=300,
        batch_size=3,
        cache_dir=str(tmp_path / "cache"),
        classifier={"epochs": 1, "train_images": 1000},
    )
    record = RunRecord(str(tmp_path), "stand-in", "binarized_mnist", seed=3, overrides=["a=1"], quality=quality)
    datamodule = BinarizedMNISTDataModule(real_data_dir(), batch_size=8)
    trainer = trainer_for(
        tmp_path, record, max_epochs=1, limit_train_batches=3, limit_val_batches=0, limit_test_batches=2
    )
    model = IndependentPixels(shape=(1, 28, 28))
    trainer.fit(model, datamodule=datamodule)
    assert json.loads((tmp_path / "record.json").read_text())["status"] == "running"  # until the test ends
    trainer.test(model, datamodule=datamodule)

    saved = json.loads((tmp_path / "record.json").read_text())
    assert tuple(saved) == RECORD_FIELDS
    assert saved["model"] == "stand-in" and saved["dataset"] == "binarized_mnist" and saved["task"] == "train"
    assert saved["status"] == "finished" and saved["error"] is None
    assert saved["test_nll"] is None and saved["test_bpd"] is None  # no likelihood: null, never a number
    assert saved["params"] == 784 and saved["steps"] == 3
    assert saved["epochs"] == pytest.approx(24 / 50000)
    assert saved["train_time_s"] > 0 and saved["train_images_per_s"] > 0
    assert saved["sample_time_per_image_s"] > 0 and saved["fid"] > 0 and 1 <= saved["classifier_score"] <= 10
    assert saved["fid_label"].startswith("FID (mnist-2level-cnn, test acc ") and saved["fid_label"].endswith("%)")
    assert saved["peak_memory_mb"] >= 0 and saved["peak_memory_kind"] == "cpu_max_rss_growth"
    assert saved["device"] == "cpu" and saved["precision"] == "32-true" and saved["seed"] == 3
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert saved["git_commit"].startswith(head.stdout.strip())
    assert saved["sample_grid"] == "samples/scored.png" and (tmp_path / saved["sample_grid"]).is_file()
    assert saved["overrides"] == ["a=1"] and saved["wandb"] is None

    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as stream:
        logged = set(next(csv.reader(stream)))
    assert {"record/fid", "record/train_images_per_s", "record/model", "record/status"} <= logged
    assert "record/test_nll" not in logged


def test_a_failed_run_leaves_a_record_with_every_field(tmp_path):
    result = run("train.py", "data.batch_size=0", "logger=csv", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    saved = json.loads((tmp_path / "record.json").read_text())
    assert tuple(saved) == RECORD_FIELDS
    assert saved["status"] == "failed" and "data.batch_size must be an integer" in saved["error"]
    assert "\n" not in saved["error"]
    assert saved["model"] == "pixelcnn" and saved["dataset"] == "binarized_mnist" and saved["task"] == "train"
    assert saved["overrides"] == ["data.batch_size=0", "logger=csv"]  # the job's own (not hydra.*)
    assert saved["seed"] == 1234 and saved["test_nll"] is None and saved["params"] is None


def test_the_record_of_a_resumed_run_counts_the_whole_training_and_this_session_apart(tmp_path):
    """Two epochs, then two more resumed from last.ckpt in another folder: every counter is
    cumulative, the session_* fields this session's; a checkpoint without the totals gives null."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(folder, epochs, ckpt_path=None):
        record = RunRecord(str(folder), "stand-in", "random", quality=None, after_test=False)
        saving = ModelCheckpoint(dirpath=folder / "checkpoints", save_last=True)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=[record, saving],
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=epochs,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(IndependentPixels(), datamodule=RandomImages(count=32, batch_size=8), ckpt_path=ckpt_path)
        return json.loads((folder / "record.json").read_text())

    first = fit(tmp_path / "first", 2)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    second = fit(tmp_path / "second", 4, last)
    assert (second["epochs"], second["steps"], second["session_epochs"], second["session_steps"]) == (4, 16, 2, 8)
    assert second["train_time_s"] == pytest.approx(first["train_time_s"] + second["session_train_time_s"])
    seconds = [64 / record["session_train_images_per_s"] for record in (first, second)]  # 64 images each
    assert second["train_images_per_s"] == pytest.approx(128 / sum(seconds))
    assert (first["epochs"], first["session_epochs"], first["train_time_s"]) == (2, 2, first["session_train_time_s"])

    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["callbacks"]["RunRecord"]  # as written before the record kept its totals
    torch.save(checkpoint, last)
    older = fit(tmp_path / "older", 4, last)
    assert (older["epochs"], older["train_time_s"], older["train_images_per_s"]) == (None, None, None)
    assert (older["steps"], older["session_epochs"], older["session_steps"]) == (16, 2, 8)


def test_testing_a_checkpoint_after_training_does_not_count_the_training_twice(tmp_path):
    """train.py tests the best checkpoint after the fit, which restores its callback states, this
    record's totals among them: they count this session already."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    record = RunRecord(str(tmp_path), "stand-in", "random", quality=None)
    saving = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[record, saving],
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    model, data = IndependentPixels(), RandomImages(count=32, batch_size=8)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, ckpt_path="last")
    saved = json.loads((tmp_path / "record.json").read_text())
    assert saved["status"] == "finished" and (saved["epochs"], saved["session_epochs"], saved["steps"]) == (2, 2, 8)
    assert saved["train_time_s"] == saved["session_train_time_s"]


def test_a_record_that_cannot_be_written_leaves_the_earlier_one_intact(monkeypatch, tmp_path):
    """write_record goes through files.atomic_write: fsynced before the rename, and a failed write
    (here a full disk at the fsync) is one OutputError naming the record, with the old file kept."""
    import errno
    import os

    from pixel_lightning.errors import OutputError
    from pixel_lightning.records import read_record, write_record

    path = write_record(tmp_path, {"model": "pixelcnn", "status": "running"})
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    write_record(tmp_path, {"model": "pixelcnn", "status": "finished"})
    assert synced and read_record(path)["status"] == "finished"

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match=r"Could not write the run record .*record\.json: No space left on device"):
        write_record(tmp_path, {"model": "pixelcnn", "status": "failed"})
    assert read_record(path)["status"] == "finished" and [p.name for p in tmp_path.iterdir()] == ["record.json"]

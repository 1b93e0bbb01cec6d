"""A diverging run stops with a message, keeps its last good checkpoint, and never saves NaN weights.

Tiny in-process runs (4x4 binary images, 2 batches an epoch) with a NaN injected at a chosen step,
for the likelihood model and for a module with manual optimisation returning a GAN-style dict.
"""

import re

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from support import tiny_model
from torch.utils.data import DataLoader

from pixel_lightning.callbacks import DivergenceGuard
from pixel_lightning.checkpoint import read_checkpoint
from pixel_lightning.errors import NonFiniteError

BATCHES_PER_EPOCH = 2


def images(n: int = 8) -> DataLoader:
    return DataLoader(torch.randint(0, 2, (n, 1, 4, 4), generator=torch.Generator().manual_seed(0)), batch_size=4)


def fit(model: pl.LightningModule, tmp_path, epochs: int = 3, **trainer) -> None:
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path,
        filename="epoch_{epoch:03d}",
        monitor=trainer.pop("monitor", "val/nll"),
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    pl.Trainer(
        max_epochs=epochs,
        callbacks=[DivergenceGuard(), checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **trainer,
    ).fit(model, images(), images() if "val/nll" in str(checkpoints.monitor) else None)


def saved_steps(tmp_path) -> dict[str, int]:
    """Each checkpoint's global step; every saved weight must be finite."""
    steps = {}
    for path in sorted(tmp_path.glob("*.ckpt")):
        checkpoint = read_checkpoint(path)
        assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values()), f"NaN weights in {path}"
        steps[path.name] = checkpoint["global_step"]
    return steps


class NaNLoss(type(tiny_model())):
    """The likelihood model, whose loss turns NaN at optimizer step `nan_at` (0-based)."""

    nan_at = 3

    def _step(self, batch, metric):  # the loss of a training step, before it is logged and returned
        loss = super()._step(batch, metric)
        return loss * float("nan") if self.training and self.global_step == self.nan_at else loss


class NaNWeights(type(tiny_model())):
    """Its losses stay finite, but the weights turn NaN after the last batch of epoch `nan_epoch`."""

    nan_epoch = 1

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.current_epoch == self.nan_epoch and batch_idx == BATCHES_PER_EPOCH - 1:
            with torch.no_grad():
                next(self.parameters()).fill_(float("nan"))


def rebuilt(cls, **attrs):
    model = tiny_model()
    model.__class__ = cls
    for name, value in attrs.items():
        setattr(model, name, value)
    return model


def test_a_nan_loss_stops_the_run_naming_the_step_the_loss_and_the_fixes(tmp_path):
    with pytest.raises(NonFiniteError) as error:
        fit(rebuilt(NaNLoss), tmp_path, gradient_clip_val=1.0)
    message = str(error.value)
    # No logging step in 6 steps (log_every_n_steps=50): found at the end of training, named where it went bad
    assert "diverged at step 4 (epoch 1, batch 1): the training step returned loss = nan (found at step 6)." in message
    assert "optimizer.lr=0.0001" in message and "trainer.gradient_clip_val=0.5" in message
    assert str(tmp_path / "last.ckpt") in message
    assert saved_steps(tmp_path) == {"epoch_000.ckpt": 2, "last.ckpt": 2}  # epoch 0 kept, nothing after


@pytest.mark.parametrize("log_every_n_steps, found", [(1, ""), (4, " (found at step 4)")])
def test_the_loss_is_checked_at_each_logging_step(log_every_n_steps, found, tmp_path):
    model = rebuilt(NaNLoss, nan_at=2)  # bad at step 3, the first of epoch 1; checked at step 4 or at once
    with pytest.raises(NonFiniteError, match=rf"at step 3 \(epoch 1, batch 0\): .* loss = nan{re.escape(found)}\. "):
        fit(model, tmp_path, epochs=10, log_every_n_steps=log_every_n_steps, monitor=None)


def test_a_bad_loss_is_checked_before_the_next_checkpoint_is_saved(tmp_path):
    model = rebuilt(NaNLoss, nan_at=2)  # bad at step 3; no logging step before the epoch's checkpoint at step 4
    with pytest.raises(NonFiniteError, match=r"at step 3 \(epoch 1, batch 0\): .* loss = nan \(found at step 4\)\. "):
        fit(model, tmp_path, epochs=10, log_every_n_steps=50, monitor=None)
    assert saved_steps(tmp_path) == {"epoch_000.ckpt": 2, "last.ckpt": 2}  # nothing saved after the bad step


@pytest.mark.parametrize(
    "nan_epoch, kept, message",
    [
        # ModelCheckpoint counts a NaN val/nll as +inf, which becomes "best" when nothing is saved yet
        (0, {}, r"by step 2 \(epoch 0\): the weights \(net\.\S+\) are no longer finite.*No checkpoint had been"),
        # not an improvement, so not saved; the next batch's loss is NaN
        (
            1,
            {"epoch_000.ckpt": 2, "last.ckpt": 2},
            r"at step 5 \(epoch 2, batch 0\): the training step returned loss = nan",
        ),
    ],
)
def test_nan_weights_are_never_saved_as_best_or_last(nan_epoch, kept, message, tmp_path):
    with pytest.raises(NonFiniteError, match=message):
        fit(rebuilt(NaNWeights, nan_epoch=nan_epoch), tmp_path)
    assert saved_steps(tmp_path) == kept


class TwoPlayer(pl.LightningModule):
    """Manual optimisation with two optimisers, returning a GAN-style dict of losses."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.automatic_optimization = False
        self.g, self.d = torch.nn.Linear(16, 1), torch.nn.Linear(16, 1)
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        x = batch.flatten(1).float()
        losses = {}
        for name, net, optimizer in zip(("loss_g", "loss_d"), (self.g, self.d), self.optimizers()):
            loss = net(x).pow(2).mean()
            if name == "loss_d" and batch_idx == self.nan_at:
                loss = loss * float("inf")
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            losses[name] = loss.detach()
        return losses

    def configure_optimizers(self):
        return torch.optim.SGD(self.g.parameters(), lr=0.1), torch.optim.SGD(self.d.parameters(), lr=0.1)


def test_any_model_is_guarded_manual_optimisation_and_a_dict_of_losses(tmp_path):
    with pytest.raises(
        NonFiniteError,
        match=r"epoch 0, batch 1\): the training step returned loss_d = inf\. .*"
        r"optimizer\.lr=0\.01.*clip the gradients in the module",
    ):
        fit(TwoPlayer(nan_at=1), tmp_path, monitor=None)


def test_sampling_a_nan_model_gets_the_message_not_a_torch_error():
    for levels, channels in ((2, 1), (4, 3)):
        model = tiny_model(channels, levels)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        with pytest.raises(NonFiniteError, match="outputs are not finite numbers.*lower optimizer.lr"):
            model.sample(2)

"""DCGAN baseline: architecture sized from the data, samples as integer levels (rounding and
binary sampling against known generator outputs), training steps that move both nets, the
divergence stop, checkpoint round trips, and train.py / sample.py end to end."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from support import requires_data
from test_cli import assert_ok, assert_user_error, run
from test_configs import compose_train
from torch.utils.data import DataLoader

from pixel_lightning.callbacks import DivergenceGuard
from pixel_lightning.checkpoint import load_model
from pixel_lightning.errors import NonFiniteError
from pixel_lightning.models import DCGAN
from pixel_lightning.models.dcgan import doublings

BINARY_MNIST = {"channels": 1, "height": 28, "width": 28, "levels": 2}
CIFAR10 = {"channels": 3, "height": 32, "width": 32, "levels": 256}
ADAM = {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": [0.5, 0.999]}


def make(data: dict, **kwargs) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(data, ADAM, **{"latent": 8, "features": 4} | kwargs)


class Constant(torch.nn.Module):
    """A stand-in generator that returns the same image for every z."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.image = image

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(z), *self.image.shape)


@pytest.mark.parametrize("data,base,n", [(BINARY_MNIST, 7, 2), (CIFAR10, 4, 3)])
def test_architecture_is_sized_from_the_data(data, base, n):
    model = make(data)
    assert doublings(data["height"], data["width"]) == n
    first = model.generator[1]  # the reshape of the projected z
    assert first.unflattened_size == (4 << (n - 1), base, base)
    images = model.generator(model.noise(3))
    assert images.shape == (3, data["channels"], data["height"], data["width"])
    assert images.abs().max() < 1  # tanh output
    assert model.discriminator(images).shape == (3,)
    strided = [m for m in model.discriminator if isinstance(m, torch.nn.Conv2d)]
    assert [m.stride for m in strided] == [(2, 2)] * n


def test_image_sides_that_cannot_halve_are_refused():
    with pytest.raises(ValueError, match="halves to >= 4"):
        make({"channels": 1, "height": 7, "width": 7, "levels": 2})


@pytest.mark.parametrize("data", [BINARY_MNIST, CIFAR10])
@pytest.mark.parametrize("binary_sampling", ["bernoulli", "threshold"])
def test_samples_are_integer_levels(data, binary_sampling):
    model = make(data, binary_sampling=binary_sampling)
    samples = model.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, data["channels"], data["height"], data["width"]) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= data["levels"] - 1
    assert model.training  # sampling restores the mode it found


def test_generator_outputs_round_to_the_nearest_level():
    model = make(CIFAR10)
    model.generator = Constant(torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]).view(1, 1, 5))
    # (g + 1) / 2 * 255 = 0, 63.75, 127.5, 191.25, 255; a half rounds to the even level.
    assert model.sample(2)[:, 0, 0].tolist() == [[0, 64, 128, 191, 255]] * 2


def test_binary_sampling_thresholds_or_draws_with_probability_of_g():
    image = torch.tensor([-1.0, -0.5, 0.2, 1.0]).view(1, 1, 4)  # (g + 1) / 2 = 0, 0.25, 0.6, 1
    threshold = make(BINARY_MNIST, binary_sampling="threshold")
    threshold.generator = Constant(image)
    assert threshold.sample(2)[:, 0, 0].tolist() == [[0, 0, 1, 1]] * 2
    bernoulli = make(BINARY_MNIST, binary_sampling="bernoulli")
    bernoulli.generator = Constant(image)
    frequencies = bernoulli.sample(4000, generator=torch.Generator().manual_seed(0)).double().mean(0)[0, 0]
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=torch.float64), atol=0.03, rtol=0)


def test_unknown_binary_sampling_is_refused():
    with pytest.raises(ValueError, match="binary_sampling"):
        make(BINARY_MNIST, binary_sampling="round")


def fit_steps(model: DCGAN, data: dict, steps: int = 1) -> None:
    images = torch.randint(0, data["levels"], (8 * steps, data["channels"], data["height"], data["width"]))
    trainer = pl.Trainer(
        max_steps=2 * steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )  # 2 optimiser steps per batch
    trainer.fit(model, train_dataloaders=DataLoader(images, batch_size=8))


@pytest.mark.parametrize("data", [BINARY_MNIST, CIFAR10])
def test_one_step_changes_the_generator_and_the_discriminator(data):
    model = make(data)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fit_steps(model, data)
    for net in ("generator", "discriminator"):
        changed = [
            name for name, p in model.named_parameters() if name.startswith(net) and not torch.equal(p, before[name])
        ]
        assert len(changed) == sum(1 for name in before if name.startswith(net)), f"{net}: not every weight moved"


def test_a_nan_loss_stops_training_with_a_message():
    model = make(BINARY_MNIST)
    with torch.no_grad():
        model.discriminator[-2].weight.fill_(float("nan"))  # the last linear layer: d_loss is NaN
    trainer = pl.Trainer(
        max_steps=4,
        log_every_n_steps=50,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[DivergenceGuard()],
    )
    images = torch.randint(0, 2, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    # no logging step in 2 batches: found at the end of training, named where it went bad
    with pytest.raises(
        NonFiniteError,
        match=r"diverged at step 1 \(epoch 0, batch 0\): the training step returned "
        r"d_loss = nan \(found at step 2\)\. .*model\.optimizer\.lr=2e-05.*clip the gradients",
    ):
        trainer.fit(model, train_dataloaders=DataLoader(images, batch_size=8))


def test_checkpoint_round_trip_gives_the_same_samples(tmp_path):
    model = make(CIFAR10)
    fit_steps(model, CIFAR10)  # batch norm running statistics away from their initial values
    path = tmp_path / "gan.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    loaded = load_model(path)  # weights only
    assert type(loaded) is DCGAN and loaded.levels == 256 and loaded.image_shape == (3, 32, 32)
    seed = torch.Generator().manual_seed(3)
    assert torch.equal(loaded.sample(4, generator=seed), model.sample(4, generator=torch.Generator().manual_seed(3)))


def test_config_disables_clipping_and_keeps_the_latest_checkpoint(tmp_path):
    cfg = compose_train(["model=dcgan", "data=cifar10"], tmp_path)
    assert cfg.trainer.gradient_clip_val is None
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("step", "max")
    assert cfg.model.optimizer.lr == 2e-4 and list(cfg.model.optimizer.betas) == [0.5, 0.999]
    default = compose_train(["model=pixelcnn"], tmp_path)  # the other models are untouched
    assert default.trainer.gradient_clip_val == 1.0 and default.callbacks.model_checkpoint.monitor == "val/nll"


@requires_data
def test_train_and_sample_through_the_scripts(tmp_path):
    result = run(
        "train.py",
        "model=dcgan",
        "debug=smoke",
        "logger=csv",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        f"hydra.run.dir={tmp_path}/train",
    )
    assert_ok(result)
    assert "Test NLL: none (DCGAN has no likelihood)" in result.stdout
    checkpoints = tmp_path / "train" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_001.ckpt", "last.ckpt"]  # the latest is kept
    header = (tmp_path / "train" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/d_loss", "train/g_loss"} <= set(header) and not any("nll" in k or "bpd" in k for k in header)
    assert (tmp_path / "train" / "samples" / "epoch_001.png").is_file()
    result = run(
        "sample.py",
        f"ckpt_path={checkpoints}/epoch_001.ckpt",
        "num_samples=3",
        "save_npy=true",
        f"hydra.run.dir={tmp_path}/sample",
    )
    assert_ok(result)
    levels = np.load(tmp_path / "sample" / "samples.npy")
    assert levels.shape == (3, 1, 28, 28) and set(np.unique(levels)) <= {0, 1}
    assert_user_error(
        run("sample.py", f"ckpt_path={checkpoints}/last.ckpt", "mode=complete", f"hydra.run.dir={tmp_path}/complete"),
        "a GAN cannot complete images",
        "mode=sample",
    )

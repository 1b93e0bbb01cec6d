"""Likelihood arithmetic against closed forms, normalisation, metric exactness, and sampling."""

import itertools
import math

import pytest
import torch
from support import tiny_model

from pixel_lightning.metrics import NegativeLogLikelihood
from pixel_lightning.models import AutoregressiveImageModel


class ConstantLogits(torch.nn.Module):
    """A 'net' whose logits are the same everywhere: a uniform model when value == 0."""

    def __init__(self, channels: int, levels: int, value: float = 0.0):
        super().__init__()
        self.levels = levels
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x):  # (B, C, H, W)
        shape = x.shape if self.levels == 2 else (x.shape[0], self.levels, *x.shape[1:])
        return self.value * torch.ones(shape, dtype=x.dtype)


def constant_model(channels, levels, height, width):
    return AutoregressiveImageModel(
        net={"_target_": "test_likelihood.ConstantLogits", "channels": channels, "levels": levels},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
        data={"channels": channels, "height": height, "width": width, "levels": levels},
    )


def test_uniform_model_on_binarized_mnist_is_784_ln2_nats():
    model = constant_model(1, 2, 28, 28)
    x = torch.randint(0, 2, (5, 1, 28, 28))
    torch.testing.assert_close(model.log_prob(x), torch.full((5,), -784 * math.log(2)))


def test_uniform_model_on_256_levels_is_exactly_8_bits_per_dim():
    model = constant_model(3, 256, 32, 32)
    metric = NegativeLogLikelihood(dims=3 * 32 * 32)
    metric.update(-model.log_prob(torch.randint(0, 256, (4, 3, 32, 32))))
    values = metric.compute()
    assert values["bpd"].item() == pytest.approx(8.0, abs=1e-5)
    assert values["nll"].item() == pytest.approx(3 * 32 * 32 * math.log(256), rel=1e-6)


def test_bits_per_dim_is_nats_over_dims_ln2():
    metric = NegativeLogLikelihood(dims=784)
    metric.update(torch.tensor([80.0, 82.0]))
    values = metric.compute()
    assert values["nll"].item() == pytest.approx(81.0)
    assert values["bpd"].item() == pytest.approx(81.0 / (784 * math.log(2)))


def test_metric_is_a_sum_not_an_average_of_batch_averages():
    # Batches of unequal size, and two "processes" merged as DDP would: exact per-image mean.
    first, second = NegativeLogLikelihood(dims=10), NegativeLogLikelihood(dims=10)
    first.update(torch.tensor([1.0, 2.0, 3.0]))
    second.update(torch.tensor([10.0]))
    first.merge_state(second)
    assert first.compute()["nll"].item() == pytest.approx(16.0 / 4)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize(
    "arch", ["pixelcnn.PixelCNN", "row_lstm.RowLSTM", "diagonal_bilstm.DiagonalBiLSTM", "spatial_lstm.SpatialLSTM"]
)
@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 2), (1, 3)])
def test_probabilities_of_all_images_sum_to_one(channels, levels, arch, skip):
    # A normalised autoregressive model: sum_x p(x) = 1 over every possible 2x2 image.
    # A mask that leaks the current pixel breaks this, so it is also a causality check.
    torch.manual_seed(0)
    model = tiny_model(channels, levels, height=2, width=2, arch=arch, skip=skip).double()
    dims = channels * 4
    images = torch.tensor(list(itertools.product(range(levels), repeat=dims)))  # (K^dims, dims)
    images = images.view(-1, 2, 2, channels).permute(0, 3, 1, 2)  # raster order, channel last
    total = model.log_prob(images).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-9)


def test_samples_follow_the_model_distribution():
    # 2x2 binary images: 16 outcomes; 4000 samples' frequencies must match exp(log_prob).
    torch.manual_seed(0)
    model = tiny_model(1, 2, height=2, width=2)
    with torch.no_grad():
        for p in model.net.parameters():
            p.mul_(3)  # sharpen the random model so that the distribution is far from uniform
    samples = model.sample(4000, generator=torch.Generator().manual_seed(0))
    codes = (samples.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    empirical = torch.bincount(codes, minlength=16).double() / len(codes)
    images = torch.tensor(list(itertools.product(range(2), repeat=4))).view(16, 1, 2, 2)
    with torch.no_grad():
        expected = model.log_prob(images).double().exp()
    assert 0.5 * (empirical - expected).abs().sum().item() < 0.04  # total variation distance
    assert expected.max() > 0.15  # the test would be weak against a near-uniform model


def test_completion_keeps_observed_rows_and_fills_the_rest_in_range():
    torch.manual_seed(0)
    model = tiny_model(3, 4, height=4, width=3)
    originals = torch.randint(0, 4, (2, 3, 4, 3))
    filled = model.complete(originals, observed_rows=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(filled[:, :, :2], originals[:, :, :2])
    assert filled.shape == originals.shape and filled.min() >= 0 and filled.max() <= 3
    assert model.training  # sampling restores the mode it found


def test_training_step_loss_is_nats_per_dimension():
    model = constant_model(1, 2, 28, 28)
    loss = model.training_step(torch.randint(0, 2, (3, 1, 28, 28)), 0)
    assert loss.item() == pytest.approx(math.log(2))

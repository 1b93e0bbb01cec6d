"""Gated PixelCNN against ground truth: the whole past as its exact dependency field (no blind
spot), normalisation, and cached sampling equal to the full net, logit by logit, with and without
a label."""

from __future__ import annotations

import itertools

import pytest
import torch
from dependency import dependency_matrix
from support import sample_both_ways

from pixel_lightning.models import AutoregressiveImageModel
from pixel_lightning.models.gated_pixelcnn import GatedPixelCNN, VerticalConv

DATA = [(1, 2), (3, 4)]  # (channels, levels): binary, and RGB with a softmax head


class WithLabel(torch.nn.Module):
    """net(x, label=label) as a one-argument module, for dependency_matrix (batch of 2)."""

    def __init__(self, net: torch.nn.Module, label: torch.Tensor):
        super().__init__()
        self.net, self.label = net, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, label=self.label)


def gated_model(channels: int, levels: int, height: int, width: int, condition: str | None = None, **net):
    """A float64 AutoregressiveImageModel of a GatedPixelCNN with large random weights (label
    embeddings included), so that every logit depends strongly on what it reads."""
    torch.manual_seed(0)
    model = AutoregressiveImageModel(
        net={
            "_target_": "pixel_lightning.models.gated_pixelcnn.GatedPixelCNN",
            "channels": channels,
            "levels": levels,
            "hidden": 12,
            "layers": 3,
            "output_hidden": 24,
            **net,
        },
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        data={"channels": channels, "height": height, "width": width, "levels": levels, "classes": 10},
        condition=condition,
    ).double()
    with torch.no_grad():
        for p in model.net.parameters():
            torch.nn.init.normal_(p, std=0.5)
    return model


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels,levels", DATA)
def test_gated_pixelcnn_depends_on_exactly_the_whole_past(channels, levels, conditional):
    # Exact causality and no blind spot: output dim d has a non-zero gradient w.r.t. every input
    # dim e < d (the pixels above-right included, which PixelCNN misses) and w.r.t. nothing else.
    torch.manual_seed(0)
    net = GatedPixelCNN(channels, levels, hidden=12, layers=3, output_hidden=24, classes=10 if conditional else 0)
    if conditional:
        torch.nn.init.normal_(net.label_biases.embeddings[0].weight)
        net = WithLabel(net, torch.tensor([2, 7]))
    deps, cross_batch = dependency_matrix(net, channels, height=5, width=6)
    assert not cross_batch
    whole_past = torch.ones_like(deps).tril(-1)
    assert torch.equal(deps, whole_past), f"field differs at {(deps ^ whole_past).nonzero()[:5].tolist()}"


@pytest.mark.parametrize("channels,levels", [(1, 2), (3, 2), (1, 3)])
def test_probabilities_of_all_2x2_images_sum_to_one(channels, levels):
    model = gated_model(channels, levels, 2, 2)
    images = torch.tensor(list(itertools.product(range(levels), repeat=channels * 4)))
    images = images.view(-1, 2, 2, channels).permute(0, 3, 1, 2)  # raster order, channel last
    assert model.log_prob(images).exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_vertical_conv_row_is_the_convs_row():
    torch.manual_seed(0)
    conv = VerticalConv(3, 4, 5).double()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    full = conv(x)
    for r in range(6):
        torch.testing.assert_close(conv.row(x, r), full[:, :, r], rtol=0, atol=1e-12)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels,levels", DATA)
def test_cached_logits_equal_the_full_nets_at_every_sub_pixel(channels, levels, conditional):
    # A fixed image fed position by position (channel by channel) through the cached sampler: at
    # each sub-pixel, its logits equal the full net's for the same prefix (later inputs are zero
    # in the sampler's input and real in the full net's: a leak would show).
    model = gated_model(channels, levels, 5, 6, condition="class" if conditional else None)
    net, (height, width) = model.net, (5, 6)
    image = torch.rand(3, channels, height, width, dtype=torch.float64)
    label = torch.tensor([0, 4, 9]) if conditional else None
    with torch.no_grad():
        full = model.net_logits(image, label)
        sampler = net.cached_sampler(3, height, width, **({"label": label} if conditional else {}))
        inputs = torch.zeros_like(image)
        for r, c, ch in itertools.product(range(height), range(width), range(channels)):
            logits = sampler(inputs, r, c)  # (B, C) or (B, K, C)
            torch.testing.assert_close(logits[..., ch], full[..., ch, r, c], rtol=0, atol=1e-10)
            inputs[:, ch, r, c] = image[:, ch, r, c]


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("channels,levels", DATA)
def test_cached_sampling_and_completion_return_the_levels_of_naive(channels, levels, conditional):
    model = gated_model(channels, levels, 5, 6, condition="class" if conditional else None)
    label = {"label": torch.tensor([1, 1, 5, 8])} if conditional else {}
    naive, cached = sample_both_ways(model, lambda method, g: model.sample(4, generator=g, method=method, **label))
    assert torch.equal(naive, cached), f"{(naive != cached).sum()} of {naive.numel()} levels differ"
    assert len({tuple(image.flatten().tolist()) for image in cached}) > 1  # not one forced image
    originals = torch.randint(0, levels, (4, channels, 5, 6), generator=torch.Generator().manual_seed(1))
    naive, cached = sample_both_ways(
        model, lambda method, g: model.complete(originals, 2, temperature=0.8, generator=g, method=method, **label)
    )
    assert torch.equal(naive, cached) and torch.equal(cached[:, :, :2], originals[:, :, :2])

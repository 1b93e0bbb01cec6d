"""Sampling against ground truth: at every sub-pixel the cached sampler's logits are the full net's,
cached sampling returns exactly the levels of naive sampling, and sampled frequencies match exactly
enumerated (tempered, conditional) distributions."""

from __future__ import annotations

import itertools

import pytest
import torch
from support import sample_both_ways, tiny_model
from test_likelihood import constant_model

from pixel_lightning.models.cached import ConvAtPosition
from pixel_lightning.models.layers import MaskedConv2d, ResidualNet

ARCHS = ["pixelcnn.PixelCNN", "row_lstm.RowLSTM", "diagonal_bilstm.DiagonalBiLSTM"]
DATA = [(1, 2), (3, 4)]  # (channels, levels): binary, and RGB with a softmax head
MIXTURE = {"kind": "logistic_mixture", "components": 2}
#: Every net with a cached step and its switches, (arch, settings: the net's, and the model's
#: `output`): a new net joins with a line.
NETS = [(arch, {"skip": skip}) for arch in ARCHS for skip in (True, False)] + [
    ("diagonal_bilstm.DiagonalBiLSTM", {"close_blind_spot": False}),
    ("gated_pixelcnn.GatedPixelCNN", {}),
    ("pixelcnn.PixelCNN", {"output": MIXTURE}),
    ("pixelcnn_pp.PixelCNNpp", {"filters": 4, "blocks": 2, "output": MIXTURE}),
    ("pixelsnail.PixelSNAIL", {"resnets": 1, "heads": 2, "key_channels": 4}),
    ("pixelsnail.PixelSNAIL", {"resnets": 1, "output": MIXTURE}),
]
#: (channels, levels, arch, settings): each net on DATA, a mixture on RGB of 256 levels only (it needs >= 32).
CASES = [(*data, arch, net) for arch, net in NETS for data in ([(3, 256)] if "output" in net else DATA)]


def random_model(channels: int, levels: int, arch: str, height: int = 5, width: int = 6, **net):
    """A float64 model with large random weights (and non-zero initial LSTM states), so that
    draws depend strongly on what was drawn before."""
    torch.manual_seed(0)
    model = tiny_model(channels, levels, height=height, width=width, arch=arch, layers=2, **net).double()
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            torch.nn.init.normal_(p) if name.endswith(("h0", "c0")) else p.mul_(2.0)
    return model


@pytest.mark.parametrize("observed_rows", [0, 2], ids=["sample", "complete"])
@pytest.mark.parametrize("channels,levels,arch,net", CASES, ids=lambda v: str(v))
def test_cached_logits_are_the_full_nets_at_every_sub_pixel(channels, levels, arch, net, observed_rows):
    """The cached sampler, fed a fixed image in the order sampling feeds it (`complete`: each
    observed pixel once, whole; then one call per sub-pixel, the channels before it drawn), returns
    at every call the full net's logits at that position for the same inputs, to 1e-10 in float64.
    What is not drawn yet holds noise, which a causal step never reads. Unlike equal levels, equal
    logits cannot come from a lucky draw: every logit of every call is checked."""
    model = random_model(channels, levels, arch, **net).eval()
    batch, height, width = 3, 5, 6
    generator = torch.Generator().manual_seed(1)
    image, noise = (
        model.to_input(torch.randint(0, levels, (batch, channels, height, width), generator=generator))
        for _ in range(2)
    )  # (B, C, H, W) each
    inputs = torch.cat([image[:, :, :observed_rows], noise[:, :, observed_rows:]], dim=2)
    sampler = model.net.cached_sampler(batch, height, width)
    with torch.no_grad():
        for row, col in itertools.product(range(height), range(width)):
            for ch in range(1 if row < observed_rows else channels):
                expected = model.net(inputs)[..., row, col]  # (B, C), (B, K, C) or (B, P)
                torch.testing.assert_close(
                    sampler(inputs, row, col),
                    expected,
                    rtol=0,
                    atol=1e-10,
                    msg=lambda m: f"at row {row}, column {col}, channel {ch}: {m}",
                )
                inputs[:, ch, row, col] = image[:, ch, row, col]  # the draw (observed: already there)


@pytest.mark.parametrize("channels,levels,arch,net", CASES, ids=lambda v: str(v))
def test_cached_sampling_returns_the_levels_of_naive_sampling(channels, levels, arch, net):
    model = random_model(channels, levels, arch, **net)
    naive, cached = sample_both_ways(model, lambda method, g: model.sample(6, generator=g, method=method))
    assert torch.equal(naive, cached), f"{(naive != cached).sum()} of {naive.numel()} levels differ"
    assert len({tuple(image.flatten().tolist()) for image in cached}) == 6  # every image its own draws


@pytest.mark.parametrize("channels,levels,arch,net", CASES, ids=lambda v: str(v))
def test_cached_completion_returns_the_levels_of_naive_completion(channels, levels, arch, net):
    model = random_model(channels, levels, arch, **net)
    originals = torch.randint(0, levels, (4, channels, 5, 6), generator=torch.Generator().manual_seed(1))
    naive, cached = sample_both_ways(
        model, lambda method, g: model.complete(originals, 2, temperature=0.8, generator=g, method=method)
    )
    assert torch.equal(naive, cached), f"{(naive != cached).sum()} of {naive.numel()} levels differ"
    assert torch.equal(cached[:, :, :2], originals[:, :, :2])
    # The observed rows matter: other rows above give other completions from the same draws.
    others = originals.clone()
    others[:, :, :2] = (others[:, :, :2] + 1) % levels
    moved = model.complete(others, 2, temperature=0.8, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(moved[:, :, 2:], cached[:, :, 2:])


@pytest.mark.parametrize(
    "kernel,data_channels,mask_type,bias",
    [(7, 3, "A", True), (3, 1, "B", True), ((1, 3), 1, "B", True), ((3, 1), 3, "B", True), (5, 1, "A", False),
     (1, 3, "B", True)],
)  # fmt: skip
def test_conv_at_position_gives_the_convs_output(kernel, data_channels, mask_type, bias):
    """Called in raster order, with a stale input first at every position (as a pixel's channel
    groups are drawn), the last call at (r, c) returns the conv's output there. The kernels include
    shapes no architecture uses yet: nothing above the centre, nothing beside it, no bias."""
    torch.manual_seed(0)
    conv = MaskedConv2d(6, 9, kernel, data_channels, mask_type, bias=bias).double()
    x = torch.randn(2, 6, 4, 5, dtype=torch.double)  # (B, in, H, W)
    at = ConvAtPosition(conv, 2, 4, 5)
    with torch.no_grad():
        expected = conv(x)
        for r, c in itertools.product(range(4), range(5)):
            at(torch.randn_like(x[:, :, r, c]), r, c)  # overwritten by the next call
            torch.testing.assert_close(at(x[:, :, r, c], r, c), expected[:, :, r, c], rtol=0, atol=1e-12)


def test_a_net_without_a_cached_step_is_sampled_naively():
    model = constant_model(3, 4, 2, 3).double()
    assert not hasattr(model.net, "cached_sampler")
    naive, cached = sample_both_ways(model, lambda method, g: model.sample(5, generator=g, method=method))
    assert torch.equal(naive, cached)

    class NoStep(torch.nn.Module):
        def forward(self, x):
            return x

    net = ResidualNet(1, 2, 4, 2, lambda i: NoStep(), output_hidden=4)
    assert net.cached_sampler(1, 2, 2) is None  # a layer without `cached_step`: naive


def test_unknown_sampling_method_is_an_error():
    with pytest.raises(ValueError, match="method must be"):
        tiny_model().sample(1, method="fast")


# ---- ground truth ------------------------------------------------------------------------------


def total_variation(samples: torch.Tensor, outcomes: torch.Tensor, probs: torch.Tensor) -> float:
    """Between the frequencies of `samples` (N, ...) over `outcomes` (M, ...) and `probs` (M,)."""
    hits = (samples.flatten(1)[:, None] == outcomes.flatten(1)[None]).all(2)  # (N, M)
    assert hits.sum(1).eq(1).all(), "a sample outside the enumerated outcomes"
    return 0.5 * (hits.double().mean(0) - probs).abs().sum().item()


def tempered_probs(model, images: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_T(x) = prod over dimensions of p_T(x_i | x_<i), what sampling at T draws from: softmax(logits / T)
    at x_i, or for binary data sigmoid(logit / T) if x_i = 1 and 1 - that if x_i = 0."""
    with torch.no_grad():
        logits = model.logits(images) / temperature  # (M, C, H, W) binary, (M, K, C, H, W) otherwise
        if model.levels == 2:
            picked = torch.nn.functional.logsigmoid(torch.where(images == 1, logits, -logits))  # (M, C, H, W)
        else:
            picked = logits.log_softmax(1).gather(1, images[:, None]).squeeze(1)  # (M, C, H, W)
    return picked.flatten(1).sum(1).exp()


def most_likely(model, shape: tuple[int, int, int]) -> torch.Tensor:
    """The image (1, C, H, W) of each sub-pixel's most likely level given the ones before it (T -> 0)."""
    channels, height, width = shape
    image = torch.zeros(1, *shape, dtype=torch.long)
    for row, col, ch in itertools.product(range(height), range(width), range(channels)):
        with torch.no_grad():
            logits = model.logits(image)[0, ..., ch, row, col]  # () binary, (K,) otherwise
        image[0, ch, row, col] = (logits > 0).long() if model.levels == 2 else logits.argmax()
    return image


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize(
    "channels,levels,height,width",
    [(3, 3, 1, 1), (1, 2, 1, 3)],  # RGB: one pixel of K = 3 levels, 27 outcomes; binary: 1x3, 8 outcomes
    ids=["rgb", "binary"],
)
def test_temperature_gives_the_tempered_conditionals(channels, levels, height, width, method):
    # Each sub-pixel is conditioned on the ones before: the softmax head (RGB) and the Bernoulli head (binary).
    model = random_model(channels, levels, "pixelcnn.PixelCNN", height=height, width=width)
    with torch.no_grad():  # sharper conditionals, for T to matter
        for p in model.net.output.logits.parameters():
            p.mul_(3.0)
    dims = channels * height * width
    images = torch.tensor(list(itertools.product(range(levels), repeat=dims)))  # raster order, channel last
    images = images.view(-1, height, width, channels).permute(0, 3, 1, 2)  # (levels**dims, C, H, W)
    exact = {t: tempered_probs(model, images, t) for t in (1.0, 0.5)}
    assert exact[1.0].sum().item() == pytest.approx(1.0) and exact[0.5].sum().item() == pytest.approx(1.0)
    assert 0.5 * (exact[1.0] - exact[0.5]).abs().sum() > 0.15  # ignoring T would fail below
    for t, probs in exact.items():
        samples = model.sample(20000, temperature=t, generator=torch.Generator().manual_seed(0), method=method)
        assert total_variation(samples, images, probs) < 0.03, f"T={t}"
    # T -> 0: each sub-pixel its most likely level given the ones before, in every sample.
    greedy = most_likely(model, (channels, height, width))
    cold = model.sample(50, temperature=1e-6, generator=torch.Generator().manual_seed(0), method=method)
    assert torch.equal(cold, greedy.expand_as(cold))


@pytest.mark.parametrize("method", ["cached", "naive"])
@pytest.mark.parametrize("arch", ARCHS)
def test_completion_follows_the_conditional_of_the_unobserved_row(arch, method):
    # 2x2 binary images with row 0 observed: the completions of row 1 must follow p(row 1 | row 0),
    # enumerated from log_prob, and that depends on row 0.
    model = random_model(1, 2, arch, height=2, width=2)
    with torch.no_grad():  # sharper: row 1 depends on row 0 strongly
        for p in model.net.parameters():
            p.mul_(1.5)
    rows = torch.tensor(list(itertools.product(range(2), repeat=2)))  # the 4 values of a row
    conditionals = []
    for row0 in ([0, 0], [1, 1]):
        images = torch.stack([torch.tensor([row0, row1.tolist()]) for row1 in rows])[:, None]  # (4, 1, 2, 2)
        with torch.no_grad():
            joint = model.log_prob(images).exp()
        conditional = joint / joint.sum()
        observed = images[:1].expand(4000, -1, -1, -1)  # row 1 of the input is (0, 0)
        completions = model.complete(observed, 1, generator=torch.Generator().manual_seed(0), method=method)
        assert torch.equal(completions[:, :, 0], observed[:, :, 0])
        if method == "cached":  # every draw fed the naive path's logits: an error too small for the bound fails
            sample_both_ways(model, lambda m, g: model.complete(observed[:16], 1, generator=g, method=m))
        assert total_variation(completions[:, 0, 1], rows, conditional) < 0.04
        conditionals.append(conditional)
    assert 0.5 * (conditionals[0] - conditionals[1]).abs().sum() > 0.3  # a completion ignoring row 0 fails


@pytest.mark.parametrize("method", ["cached", "naive"])
def test_rgb_levels_are_drawn_along_the_level_axis(method):
    # Logits that put one level per channel far above the others: (channel 0, 1, 2) -> level (1, 3, 2).
    # A softmax over channels instead of levels, or the wrong channel's logits, draws other levels.
    model = random_model(3, 4, "pixelcnn.PixelCNN", height=2, width=3)
    wanted = torch.tensor([1, 3, 2])
    with torch.no_grad():
        model.net.output.logits.weight.zero_()
        bias = torch.zeros(3, 4)  # the last conv lays out its maps channel-major: (C, K)
        bias[torch.arange(3), wanted] = 30.0
        model.net.output.logits.bias.copy_(bias.flatten())
    samples = model.sample(8, generator=torch.Generator().manual_seed(0), method=method)
    assert torch.equal(samples, wanted.view(1, 3, 1, 1).expand(8, 3, 2, 3))

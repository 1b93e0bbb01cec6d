"""The discretized logistic mixture against ground truth: normalisation over every value of a pixel,
a float64 reference written from the paper's formulas, stability at extreme parameters, and the
sampler's histogram against the mixture's probabilities."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from pixel_lightning.models import AutoregressiveImageModel
from pixel_lightning.models.outputs import Bernoulli, LogisticMixture, build_output, output_spec


def random_params(mixture: LogisticMixture, count: int = 1, spread: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(count, P) float64 parameters: means spread over [-1, 1], scales around a few levels wide."""
    generator = torch.Generator().manual_seed(seed)
    params = torch.randn(count, mixture.params_per_pixel, generator=generator, dtype=torch.float64) * spread
    m, c = mixture.components, mixture.channels
    params[:, m + c * m : m + 2 * c * m] -= 3.0  # log-scales near -3: a few levels of 256
    return params


def reference_log_prob(mixture: LogisticMixture, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """log p(pixel) from the formulas of Salimans et al. (2017), eq. 2 and section 2.2, one pixel
    at a time: sum_k pi_k prod_c [F(x_c + h) - F(x_c - h)] with F the logistic CDF of mean
    mu_ck + sum_j a_ckj x_j and scale s_ck, F(-inf) = 0 below level 0 and F(inf) = 1 above K-1.
    Above the mean the bin is (1 - F(x - h)) - (1 - F(x + h)): two small numbers, not two near 1."""
    m, c, n = mixture.components, mixture.channels, len(mixture.pairs)
    results = []
    for p, pixel in zip(params.tolist(), levels.tolist()):
        logits = p[:m]
        mu = [p[m + i * m : m + (i + 1) * m] for i in range(c)]
        log_s = [[max(v, -7.0) for v in p[m + c * m + i * m : m + c * m + (i + 1) * m]] for i in range(c)]
        coeff = [[math.tanh(v) for v in p[m + 2 * c * m + i * m : m + 2 * c * m + (i + 1) * m]] for i in range(n)]
        x = [level * 2 / (mixture.levels - 1) - 1 for level in pixel]
        h = 1 / (mixture.levels - 1)
        weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0).tolist()
        total = 0.0
        for k in range(m):
            prob = weights[k]
            for ch in range(c):
                mean = mu[ch][k] + sum(coeff[i][k] * x[j] for i, (to, j) in enumerate(mixture.pairs) if to == ch)
                s = math.exp(log_s[ch][k])
                above = x[ch] > mean  # F (or 1 - F) of the bin's edges, each in (0, 1/2] or at an end
                upper = 1.0 if pixel[ch] == mixture.levels - 1 else 1 / (1 + math.exp(-(x[ch] + h - mean) / s))
                lower = 0.0 if pixel[ch] == 0 else 1 / (1 + math.exp(-(x[ch] - h - mean) / s))
                if above:
                    tail_lower = 1.0 if pixel[ch] == 0 else 1 / (1 + math.exp((x[ch] - h - mean) / s))
                    tail_upper = 0.0 if pixel[ch] == mixture.levels - 1 else 1 / (1 + math.exp((x[ch] + h - mean) / s))
                    prob *= tail_lower - tail_upper
                else:
                    prob *= upper - lower
            total += prob
        results.append(math.log(total))
    return torch.tensor(results, dtype=torch.float64)


def pixel_log_prob(mixture: LogisticMixture, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The mixture's log p of N pixels: params (N, P), levels (N, C) -> (N,)."""
    return mixture.log_prob(params[:, :, None, None], levels[:, :, None, None])[:, 0, 0]


@pytest.mark.parametrize("spread,shift", [(1.0, 0.0), (8.0, 0.0), (1.0, 30.0)], ids=["moderate", "extreme", "far"])
def test_each_channels_256_conditional_probabilities_sum_to_one(spread, shift):
    """p(x_c | x_<c) = p(x_<=c) / p(x_<c) over c's 256 levels, for R alone, G after every R, and
    B after 256 (R, G) pairs (edges included): together the normalisation of all 256^3 values."""
    mixture = LogisticMixture(channels=3, levels=256, components=3)
    params = random_params(mixture, spread=spread, seed=1)
    params[:, 3 : 3 + 9] += shift  # means far outside [-1, 1]: the edge bins hold the mass
    pairs = torch.randint(0, 256, (256, 2), generator=torch.Generator().manual_seed(2))
    pairs[:4] = torch.tensor([[0, 0], [0, 255], [255, 0], [255, 255]])
    before = {0: torch.zeros(1, 0, dtype=torch.long), 1: torch.arange(256)[:, None], 2: pairs}
    for ch, earlier in before.items():
        levels = torch.cat([earlier.repeat_interleave(256, 0), torch.arange(256).repeat(len(earlier))[:, None]], 1)
        joint = marginal_log_prob(mixture, params.expand(len(levels), -1), levels).view(len(earlier), 256)
        conditional = (joint - marginal_log_prob(mixture, params.expand(len(earlier), -1), earlier)[:, None]).exp()
        ones = torch.ones(len(earlier), dtype=torch.float64)
        torch.testing.assert_close(conditional.sum(1), ones, rtol=0, atol=1e-12)


def marginal_log_prob(mixture: LogisticMixture, params: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """log p of a pixel's first channels (N, c) alone, c <= C: the other channels summed out."""
    logits, means, log_scales, coeffs = mixture.split(params)
    padded = torch.cat([first, first.new_zeros(len(first), mixture.channels - first.shape[1])], 1)
    x = mixture.to_unit(padded, params.dtype)
    per_component = mixture.channel_log_probs(x, means, log_scales, coeffs, first.shape[1])
    return torch.logsumexp(torch.log_softmax(logits, 1) + per_component, 1)


def test_probabilities_of_every_value_of_a_32_level_pixel_sum_to_one():
    mixture = LogisticMixture(channels=3, levels=32, components=4)
    params = random_params(mixture, seed=6)
    levels = torch.cartesian_prod(*[torch.arange(32)] * 3)  # (32768, 3)
    total = pixel_log_prob(mixture, params.expand(len(levels), -1), levels).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_log_probs_match_a_float64_reference_at_edge_and_interior_levels():
    mixture = LogisticMixture(channels=3, levels=256, components=4)
    params = random_params(mixture, count=60, seed=2)
    params[:20, 4 : 4 + 12] *= 0.2  # means near 0: interior levels likely
    levels = torch.randint(0, 256, (60, 3), generator=torch.Generator().manual_seed(3))
    levels[::3, 0], levels[1::3, 1], levels[2::3, 2] = 0, 255, 0  # every channel at an edge somewhere
    levels[::5] = torch.tensor([255, 0, 255])
    expected = reference_log_prob(mixture, params, levels)
    torch.testing.assert_close(pixel_log_prob(mixture, params, levels), expected, rtol=1e-10, atol=1e-10)


def test_model_log_prob_is_the_sum_of_the_pixels_reference_log_probs():
    """Through AutoregressiveImageModel: the NLL the metric turns into bits/dim is the sum over pixels."""
    model = AutoregressiveImageModel(
        net={"_target_": "test_logistic_mixture.ConstantParams", "params": 3 * (1 + 6 + 3)},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1},
        data={"channels": 3, "height": 2, "width": 3, "levels": 256},
        output={"kind": "logistic_mixture", "components": 3},
    ).double()
    images = torch.randint(0, 256, (2, 3, 2, 3), generator=torch.Generator().manual_seed(0))
    params = model.net.value.detach()[None].expand(12, -1)
    pixels = images.permute(0, 2, 3, 1).reshape(12, 3)  # (B*H*W, C)
    expected = reference_log_prob(model.output, params, pixels).view(2, 6).sum(1)
    torch.testing.assert_close(model.log_prob(images), expected, rtol=1e-10, atol=1e-10)


class ConstantParams(torch.nn.Module):
    """A 'net' whose mixture parameters are the same at every pixel (random, fixed)."""

    def __init__(self, params: int, output: dict):
        super().__init__()
        self.value = torch.nn.Parameter(torch.randn(params, generator=torch.Generator().manual_seed(5)))

    def forward(self, x):  # (B, C, H, W)
        return self.value[None, :, None, None].expand(len(x), -1, *x.shape[2:])


def test_extreme_parameters_give_finite_log_probs_and_gradients_that_float64_confirms():
    mixture = LogisticMixture(channels=3, levels=256, components=2)
    values = {"log_scale": [-7.0, 7.0, -30.0], "mean": [-1e3, -5.0, 0.0, 5.0, 1e3], "coeff": [-20.0, 20.0]}
    rows = []
    for log_scale, mean, coeff in itertools.product(*values.values()):
        p = torch.zeros(mixture.params_per_pixel, dtype=torch.float64)
        p[:2] = torch.tensor([30.0, -30.0])  # mixture logits far apart
        p[2:8], p[8:14], p[14:] = mean, log_scale, coeff
        rows.append(p)
    params = torch.stack(rows)
    levels = torch.tensor([[0, 255, 128], [255, 0, 1], [17, 254, 0]]).repeat(len(params) // 3 + 1, 1)[: len(params)]
    single = params.float().requires_grad_()
    log_prob = pixel_log_prob(mixture, single, levels)
    log_prob.sum().backward()
    assert torch.isfinite(log_prob).all() and torch.isfinite(single.grad).all()
    exact = pixel_log_prob(mixture, params, levels)
    torch.testing.assert_close(log_prob.double(), exact, rtol=1e-5, atol=1e-4)  # float32 keeps its precision


def test_sampler_histogram_matches_the_mixture_probabilities():
    # Two channels of 32 levels (1024 outcomes), 200k pixels drawn as sampling does; a chi-square
    # test over the outcomes expected 5+ times (the rest pooled) at a fixed seed.
    mixture = LogisticMixture(channels=2, levels=32, components=3)
    params = torch.tensor(
        [[0.3, -0.2, 0.1]  # mixture logits
         + [-0.5, 0.0, 0.6] + [-0.3, 0.2, -0.6]  # R means, G means
         + [-1.2, -1.6, -1.0] + [-1.4, -1.1, -1.8]  # log-scales: a few of the 32 levels wide
         + [1.5, -1.0, 0.5]],  # G's coefficient on R, before tanh
        dtype=torch.float64,
    )  # fmt: skip
    draws = 200_000
    generator = torch.Generator().manual_seed(0)
    pixel = mixture.sample_pixel(params.expand(draws, -1), 1.0, generator)  # (draws, 2)
    counts = torch.bincount(pixel[:, 0] * 32 + pixel[:, 1], minlength=1024).double()
    outcomes = torch.cartesian_prod(torch.arange(32), torch.arange(32))
    expected = pixel_log_prob(mixture, params.expand(1024, -1), outcomes).exp() * draws
    big = expected >= 5
    pooled = expected[~big].sum() >= 5  # the rare outcomes as one cell, if that is expected 5+ times
    observed_cells = torch.cat([counts[big], counts[~big].sum()[None]]) if pooled else counts[big]
    expected_cells = torch.cat([expected[big], expected[~big].sum()[None]]) if pooled else expected[big]
    assert pooled or counts[~big].sum() < 20
    statistic = ((observed_cells - expected_cells) ** 2 / expected_cells).sum().item()
    p_value = stats.chi2.sf(statistic, len(observed_cells) - 1)
    assert p_value > 1e-3, f"chi-square {statistic:.1f} on {len(observed_cells) - 1} degrees of freedom"
    assert big.sum() > 100  # a spread-out distribution: the test has many cells


def test_tempered_draws_follow_the_tempered_mixture():
    # Temperature T divides the logits and multiplies the scales: T = 0.5 concentrates the draws.
    mixture = LogisticMixture(channels=1, levels=32, components=2)
    params = torch.tensor([[1.0, -1.0, -0.5, 0.5, -2.5, -2.5]], dtype=torch.float64)
    tempered = params.clone()
    tempered[:, :2] /= 0.5
    tempered[:, 4:] += math.log(0.5)
    draws = mixture.sample_pixel(params.expand(100_000, -1), 0.5, torch.Generator().manual_seed(1))[:, 0]
    expected = pixel_log_prob(mixture, tempered.expand(32, -1), torch.arange(32)[:, None]).exp()
    empirical = torch.bincount(draws, minlength=32).double() / len(draws)
    assert 0.5 * (empirical - expected).abs().sum().item() < 0.01  # total variation


def test_the_output_setting_in_full_and_where_it_is_refused():
    assert output_spec(None) is None and output_spec("categorical") is None
    assert output_spec({"kind": "categorical"}) is None
    assert output_spec("logistic_mixture") == {"kind": "logistic_mixture", "components": 10}
    assert output_spec({"kind": "logistic_mixture", "components": 3}) == {"kind": "logistic_mixture", "components": 3}
    assert isinstance(build_output("logistic_mixture", 1, 2), Bernoulli)  # binary data keeps the Bernoulli head
    with pytest.raises(ValueError, match="at least 32 levels"):
        build_output("logistic_mixture", 3, 16)
    with pytest.raises(ValueError, match="categorical or logistic_mixture"):
        output_spec("gaussian")
    with pytest.raises(ValueError, match="model.output.scales is not an option"):
        output_spec({"kind": "logistic_mixture", "scales": 3})

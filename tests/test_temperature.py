"""Sampling temperatures down to the smallest a dtype carries: every output distribution draws its
most likely level there (the limit T -> 0), and refuses a smaller one with a message about the
temperature, never blaming the weights and never with a traceback."""

import pytest
import torch

from pixel_lightning.errors import NonFiniteError, UserError
from pixel_lightning.models.outputs import Bernoulli, LogisticMixture, Softmax

SMALLEST = torch.finfo(torch.float32).tiny  # 1.2e-38: logits of a few units divided by it overflow to +-inf


def draw(output, params, ch=0, temperature=SMALLEST):
    """Channel `ch` of a per-channel output's draw; a whole pixel (B, C) of a per-pixel output's."""
    generator = torch.Generator().manual_seed(0)
    if output.per_pixel:
        return output.sample_pixel(params, temperature, generator)
    return output.sample(params, ch, torch.zeros(len(params), 3, dtype=torch.long), temperature, generator)


def test_bernoulli_at_the_smallest_temperature_draws_the_likelier_level():
    logits = torch.tensor([[30.0], [-30.0], [0.5], [-0.01]])  # (B, C); +-30 / SMALLEST overflows
    assert draw(Bernoulli(), logits).tolist() == [1, 0, 1, 0]


def test_softmax_at_the_smallest_temperature_draws_the_most_likely_level():
    logits = torch.randn(64, 16, 3, generator=torch.Generator().manual_seed(1)) * 5  # (B, K, C)
    for ch in range(3):
        assert torch.equal(draw(Softmax(16), logits, ch), logits[:, :, ch].argmax(1))


def test_the_logistic_mixture_at_the_smallest_temperature_draws_its_likeliest_components_mean():
    """T -> 0: the component of the largest logit, and its mean (shifted by the channels drawn
    before) with no spread, rounded to the nearest level."""
    mixture = LogisticMixture(channels=3, levels=256, components=4)
    params = torch.randn(32, mixture.params_per_pixel, generator=torch.Generator().manual_seed(2))
    params[:, :4] *= 10  # mixture logits that overflow when divided by SMALLEST
    logits, means, log_scales, coeffs = mixture.split(params)
    k = logits.argmax(1)  # (B,)
    expected = torch.zeros(32, 3, dtype=torch.long)
    for ch in range(3):
        x = mixture.to_unit(expected, params.dtype)
        mean = mixture.mean(means, coeffs, x, ch)[torch.arange(32), k]
        expected[:, ch] = torch.round((mean + 1) / (2 * mixture.half_bin)).clamp(0, 255).long()
    assert torch.equal(draw(mixture, params), expected)


MIXTURE = LogisticMixture(channels=3, levels=256, components=2)
OUTPUTS = {
    "bernoulli": (Bernoulli(), (2, 3)),
    "softmax": (Softmax(4), (2, 4, 3)),
    "logistic_mixture": (MIXTURE, (2, MIXTURE.params_per_pixel)),
}  # each with the shape of its params


@pytest.mark.parametrize("name", OUTPUTS)
@pytest.mark.parametrize("temperature", [1e-39, 1e-300, 5e-324])
def test_a_temperature_below_what_the_dtype_carries_is_refused_naming_the_temperature(name, temperature):
    output, shape = OUTPUTS[name]
    with pytest.raises(UserError) as error:
        draw(output, torch.zeros(shape), temperature=temperature)
    assert not isinstance(error.value, NonFiniteError) and "broken" not in str(error.value)
    assert str(error.value).startswith(f"The sampling temperature {temperature:g} (temperature=, fid.temperature")
    assert "at least 1.18e-38" in str(error.value)


@pytest.mark.parametrize("name", OUTPUTS)
def test_a_float64_model_samples_at_temperatures_float32_cannot_carry(name):
    output, shape = OUTPUTS[name]
    assert draw(output, torch.randn(shape, dtype=torch.float64), temperature=1e-300).shape[0] == 2

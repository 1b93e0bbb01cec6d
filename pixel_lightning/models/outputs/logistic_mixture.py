"""The discretized logistic mixture of PixelCNN++ (Salimans et al., 2017, sections 2.1-2.2).

Each pixel's C channels share one of M components: with probability pi_k, channel c is a logistic
of mean mu_ck + sum_{j<c} a_ckj x_j (the channels before it, section 2.2's linear dependence of G
on R and of B on R and G) and scale s_ck, discretized to the K levels x in [-1, 1] (bins of width
2/(K-1); the bins of levels 0 and K-1 take the tails, section 2.1). All 1 + 2C + C(C-1)/2
parameters of a component come from earlier pixels only: the net must be causal pixel by pixel.

The log-probability of a bin, log(sigmoid(p) - sigmoid(m)) for the standardised bin edges p > m,
is computed as logsigmoid(p) - softplus(m) + log(1 - exp(m - p)), where m - p = -2h/s is exact:
no difference of close numbers anywhere, so it is accurate for every mean and scale. The reference
code (openai/pixel-cnn) instead subtracts the two sigmoids and, where that difference falls under
1e-5, approximates the bin by the density at its centre; the form above needs no approximation.
The components are combined with log-sum-exp, as there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixel_lightning.errors import UserError
from pixel_lightning.models.outputs.check import check_drawable, check_temperature

MIN_LOG_SCALE = -7.0  # the reference code's floor on log s: a bin can never be much narrower than the scale


def bin_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, half_bin: float) -> torch.Tensor:
    """log P(level) of a logistic(mean, e^log_scale) discretized to bins x +- half_bin on [-1, 1];
    the first and last bins take the tails. All broadcast together."""
    inv_scale = torch.exp(-log_scale)
    plus = inv_scale * (x - mean + half_bin)  # upper bin edge, standardised
    minus = inv_scale * (x - mean - half_bin)  # lower bin edge
    interior = F.logsigmoid(plus) - F.softplus(minus) + torch.log(-torch.expm1(-2 * half_bin * inv_scale))
    first = x < -1 + half_bin  # level 0: everything below the upper edge
    last = x > 1 - half_bin  # level K-1: everything above the lower edge
    return torch.where(first, F.logsigmoid(plus), torch.where(last, F.logsigmoid(-minus), interior))


class LogisticMixture:
    """M components per pixel: params (B, P, ...) with P = M (1 + 2C + C(C-1)/2), laid out as the M
    mixture logits, then the means (C, M), the log-scales (C, M) and the coefficients a_cj (one
    (c, j) pair per j < c, in the order (1,0), (2,0), (2,1), ..., each M) before tanh."""

    per_pixel = True  # one parameter vector per pixel, before any of its channels

    def __init__(self, channels: int, levels: int, components: int = 10):
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:  # 2.5, "five", true
            raise UserError(
                f"model.output.components must be an integer of at least 1 (the logistics of each pixel's mixture), "
                f"but it is {components!r}. Fix the override, e.g. model.output.components=10."
            )
        self.channels, self.levels, self.components = channels, levels, components
        self.pairs = [(c, j) for c in range(channels) for j in range(c)]
        self.params_per_pixel = components * (1 + 2 * channels + len(self.pairs))
        self.half_bin = 1.0 / (levels - 1)

    def params_shape(self, levels_shape: torch.Size) -> tuple[int, ...]:
        return (levels_shape[0], self.params_per_pixel, *levels_shape[2:])

    def layout(self, params: torch.Tensor, channels: int) -> torch.Tensor:
        return params  # the net's maps are the params

    def split(self, params: torch.Tensor, temperature: float = 1.0):
        """(B, P, ...) -> logits (B, M, ...), means, log-scales (B, C, M, ...), coefficients
        (B, pairs, M, ...) in (-1, 1). A temperature T divides the logits and multiplies the scales."""
        m, c = self.components, self.channels
        logits, means, log_scales, coeffs = params.split([m, c * m, c * m, len(self.pairs) * m], dim=1)
        log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
        if temperature != 1.0:
            log_scales = log_scales + math.log(temperature)
        coeffs = torch.tanh(coeffs.unflatten(1, (len(self.pairs), m)))
        if temperature != 1.0:  # shifted to a maximum of 0 first: a small temperature gives -inf, never inf - inf
            logits = (logits - logits.amax(1, keepdim=True)) / temperature
        return logits, means.unflatten(1, (c, m)), log_scales.unflatten(1, (c, m)), coeffs

    def channel_log_probs(self, x, means, log_scales, coeffs, upto: int) -> torch.Tensor:
        """sum over channels c < upto of log p(x_c | component, x_<c), per component: (B, M, ...).
        x (B, C, ...) in [-1, 1]; the rest from `split`."""
        total = 0.0
        for c in range(upto):
            mean = self.mean(means, coeffs, x, c)
            total = total + bin_log_prob(x[:, c : c + 1], mean, log_scales[:, c], self.half_bin)
        return total

    def mean(self, means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor, c: int) -> torch.Tensor:
        """Channel c's mean per component (B, M, ...), shifted by the channels before it."""
        mean = means[:, c]
        for index, (to, j) in enumerate(self.pairs):
            if to == c:
                mean = mean + coeffs[:, index] * x[:, j : j + 1]
        return mean

    def to_unit(self, levels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return levels.to(dtype) * (2 * self.half_bin) - 1.0

    def log_prob(self, params: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """log p of each pixel, (B, P, H, W) and (B, C, H, W) -> (B, H, W)."""
        logits, means, log_scales, coeffs = self.split(params)
        x = self.to_unit(levels, params.dtype)
        joint = F.log_softmax(logits, dim=1) + self.channel_log_probs(x, means, log_scales, coeffs, self.channels)
        return torch.logsumexp(joint, dim=1)  # (B, H, W)

    def sample_pixel(self, params: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        """Levels (B, C) of one pixel from its params (B, P): a component k from the mixture
        weights, then channel by channel a logistic of k by inverting its CDF, rounded to the
        nearest level and clamped to [0, K-1], its mean shifted by the levels drawn before it.
        p(k) p(x_0 | k) p(x_1 | x_0, k) ... is the joint whose marginal `log_prob` scores. Two calls
        to the generator per pixel, whatever the channels, and only the chosen component's
        parameters transformed: sampling's cost is per pixel, a few dozen small ops."""
        check_drawable(params)
        check_temperature(temperature, params.dtype)
        m = self.components
        logits = params[:, :m]
        if temperature != 1.0:  # shifted to a maximum of 0 first: a small temperature gives -inf, never inf - inf
            logits = (logits - logits.amax(1, keepdim=True)) / temperature
        # The component by inverting the CDF at one uniform per image, as Softmax.sample
        cdf = torch.softmax(logits, dim=1).cumsum_(dim=1)  # (B, M)
        u = torch.rand(len(cdf), 1, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[:, -1:]
        k = torch.searchsorted(cdf, u, right=True).clamp_(max=m - 1)  # (B, 1): u * total may round up
        # Its means, log-scales and coefficients, (B, 2C + pairs): one gather from the (B, 2C + pairs, M) rest
        rest = params[:, m:].unflatten(1, (-1, m))
        chosen = rest.gather(2, k[:, None].expand(-1, rest.shape[1], 1))[..., 0]
        means, log_scales, coeffs = chosen.split([self.channels, self.channels, len(self.pairs)], dim=1)
        scales = log_scales.clamp(min=MIN_LOG_SCALE).exp_()
        if temperature != 1.0:
            scales = scales * temperature
        coeffs = torch.tanh(coeffs)
        u = torch.rand(means.shape, dtype=params.dtype, device=params.device, generator=generator)  # (B, C)
        u.clamp_(min=torch.finfo(u.dtype).tiny)  # u = 0 (one draw in 2^24 in float32): -inf, and 0 * -inf when cold
        values = torch.addcmul(means, scales, torch.log(u).sub_(torch.log1p(-u)))  # logistics by inverse CDF
        levels = torch.empty_like(values)  # (B, C), as floats until the end
        to_level = 1 / (2 * self.half_bin)
        for c in range(self.channels):
            value = values[:, c]  # + a_cj x_j for each earlier channel j, x_j = 2h L_j - 1 the level L_j in [-1, 1]
            for index, (to, j) in enumerate(self.pairs):
                if to == c:
                    a = coeffs[:, index]
                    value = torch.addcmul(value, a, levels[:, j], value=2 * self.half_bin).sub_(a)
            levels[:, c] = value.add(1).mul_(to_level).round_().clamp_(0, self.levels - 1)
        return levels.long()

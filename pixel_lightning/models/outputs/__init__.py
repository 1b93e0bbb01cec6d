"""Output distributions: what a net's last maps mean, as probabilities of a pixel's levels.

Each is its own piece that any net can end with (models/layers.py, OutputStack; PixelCNN++): it
owns the number of parameters it needs and `log_prob(params, levels)`. A per-channel output
(Bernoulli, softmax) takes its parameters of channel c from features that may see the pixel's
channels before c, and draws one channel at a time, `sample(params, ch, pixel, temperature,
generator)`; a per-pixel output (the logistic mixture) takes all of a pixel's parameters from
earlier pixels only, and draws the whole pixel, `sample_pixel(params, temperature, generator)`.

The model setting `output` picks one: `categorical` (the default, and what a checkpoint without
the setting holds: Bernoulli for binary data, a softmax over the levels otherwise) or
`logistic_mixture` (with `components`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from pixel_lightning.models.outputs.bernoulli import Bernoulli
from pixel_lightning.models.outputs.check import check_drawable
from pixel_lightning.models.outputs.logistic_mixture import LogisticMixture
from pixel_lightning.models.outputs.softmax import Softmax

__all__ = ["Bernoulli", "LogisticMixture", "Softmax", "build_output", "check_drawable", "output_spec"]

#: The mixture needs levels fine enough that a logistic over them means something (the issue's bits >= 5).
MIN_MIXTURE_LEVELS = 32


def output_spec(output: str | Mapping | None) -> dict | None:
    """The setting `output` in full: None for categorical, else {"kind": ..., option: value}
    with every option of the kind present (its default where not given)."""
    if output is None:
        return None
    spec = {"kind": output} if isinstance(output, str) else dict(output)
    kind = spec.pop("kind", None)
    if kind == "categorical" and not spec:
        return None
    if kind != "logistic_mixture":
        raise ValueError(
            f"model.output must be categorical or logistic_mixture (kind {kind!r} with options {sorted(spec)} was "
            "given). Use model.output=logistic_mixture, or model/output=logistic_mixture model.output.components=5."
        )
    options = {
        name: parameter.default
        for name, parameter in inspect.signature(LogisticMixture).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    unknown = sorted(set(spec) - set(options))
    if unknown:
        raise ValueError(
            f"model.output.{unknown[0]} is not an option of logistic_mixture; its options: {sorted(options)}."
        )
    return {"kind": kind, **options, **spec}


def build_output(output: str | Mapping | None, channels: int, levels: int):
    """The output distribution of setting `output` for images of `channels` channels and `levels` levels."""
    spec = output_spec(output)
    if levels == 2:  # binary data keeps the Bernoulli head, whatever the setting
        return Bernoulli()
    if spec is None:
        return Softmax(levels)
    if levels < MIN_MIXTURE_LEVELS:
        raise ValueError(
            f"model.output=logistic_mixture needs data of at least {MIN_MIXTURE_LEVELS} levels (5 bits), and this "
            f"data has {levels}: a logistic over so few levels is a poor fit. Use model.output=categorical."
        )
    options = {key: value for key, value in spec.items() if key != "kind"}
    return LogisticMixture(channels, levels, **options)

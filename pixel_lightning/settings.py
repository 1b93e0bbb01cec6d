"""Checking user-facing settings up front, so that a mistyped value gets a sentence naming the
setting and a valid example instead of an error from deep inside torch or Lightning."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

from pixel_lightning.errors import UserError

_KINDS = {"integer": (int,), "number": (int, float), "boolean": (bool,)}


def check_setting(
    cfg: DictConfig,
    key: str,
    kind: str,
    example: object,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    above: float | None = None,
    nullable: bool = False,
) -> None:
    """Raise UserError unless `cfg.<key>` is a `kind` ("integer", "number" or "boolean") within
    the bounds, or null where `nullable`. `example` is a valid value for the message."""
    value = OmegaConf.select(cfg, key)
    if value is None and nullable:
        return
    valid = isinstance(value, _KINDS[kind]) and (kind == "boolean" or not isinstance(value, bool))
    if valid and kind != "boolean":
        valid = (
            math.isfinite(value)
            and (at_least is None or value >= at_least)
            and (at_most is None or value <= at_most)
            and (above is None or value > above)
        )
    if not valid:
        wanted = {"integer": "an integer", "number": "a number", "boolean": "true or false"}[kind]
        if at_least is not None and at_most is not None:
            wanted += f" from {at_least} to {at_most}"
        elif at_least is not None:
            wanted += f" of at least {at_least:g}"
        elif at_most is not None:
            wanted += f" of at most {at_most}"
        wanted += f" above {above:g}" if above is not None else ""
        wanted += " (or null)" if nullable else ""
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else value
        raise UserError(f"{key} must be {wanted}, but it is {shown}. Fix the override, e.g. {key}={example}.")


CONDITIONS = (None, "class")


def check_condition(condition: object) -> None:
    """The `model.condition` switch (read by the models and, through the data config, the data
    modules): null (unconditional) or class."""
    if condition not in CONDITIONS:
        raise UserError(
            f"model.condition must be null (unconditional) or class (class-conditional: p(x | y) with the "
            f"dataset's labels), but it is {condition}. Fix the override, e.g. model.condition=class."
        )

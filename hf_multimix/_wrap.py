"""Wrapping a plain model in a `MultiMixHead` for the integrations that accept either one
(`MultiMixTrainer`, `MultiMixTask`): the MultiMix options come as a `MultiMixConfig`, a dict
or keyword arguments, all checked by `MultiMixConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .config import CONFIG_FIELDS, MultiMixConfig
from .head import MultiMixHead

#: The names `MultiMixHead(model, ...)` accepts as keywords: the `MultiMixConfig` options and `adapter`.
HEAD_OPTIONS: tuple[str, ...] = (*CONFIG_FIELDS, "adapter")


def pop_head_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Removes and returns the entries of `kwargs` that are `MultiMixHead` options."""
    return {name: kwargs.pop(name) for name in HEAD_OPTIONS if name in kwargs}


def wrap_model(
    model: nn.Module,
    multimix_args: MultiMixConfig | Mapping[str, Any] | None,
    options: Mapping[str, Any],
    caller: str,
    head_class: type[MultiMixHead] = MultiMixHead,
) -> MultiMixHead:
    """`model` itself when it is a `MultiMixHead` without options, else `MultiMixHead(model, **options)`.

    Args:
        model: a plain classifier or a `MultiMixHead`.
        multimix_args: a `MultiMixConfig`, or MultiMix options as a dict (e.g. `{"n": 500, "alpha": 0.2}`).
        options: MultiMix options given as keyword arguments: they override a `MultiMixConfig`;
            a name given both in a dict and as a keyword is an error.
        caller: the class name used in error messages.
        head_class: `MultiMixHead` or a subclass to build.
    """
    merged: dict[str, Any] = {}
    config = multimix_args if isinstance(multimix_args, MultiMixConfig) else None
    if multimix_args is not None and config is None:
        if not isinstance(multimix_args, Mapping):
            raise TypeError(
                f"{caller}(multimix_args=...) takes a MultiMixConfig or a dict of its options, e.g. "
                f"{{'n': 500, 'alpha': 0.2}}; got {type(multimix_args).__name__}."
            )
        unknown = sorted(set(multimix_args) - set(HEAD_OPTIONS))
        if unknown:
            raise TypeError(
                f"{caller}(multimix_args=...) has unknown MultiMix options {unknown}; "
                f"the options are {list(HEAD_OPTIONS)}."
            )
        twice = sorted(set(multimix_args) & set(options))
        if twice:
            raise TypeError(
                f"{caller} got the MultiMix options {twice} both in multimix_args and as keywords; pass each once."
            )
        merged.update(multimix_args)
    merged.update(options)
    if isinstance(model, MultiMixHead):
        if merged or config is not None:
            raise TypeError(
                f"{caller} got a MultiMixHead and MultiMix options {sorted(merged)}: set them on the head "
                "(MultiMixHead(model, ...)) or pass the plain model with the options, not both."
            )
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller} trains an nn.Module classifier, got {type(model).__name__}.")
    return head_class(model, config, **merged)

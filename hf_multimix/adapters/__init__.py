"""Adapters: one per backbone family, found by `find_adapter`.

Users plug in a model family the adapters do not know with `register_adapter` (or pass
`adapter=` to `MultiMixHead`); see docs/custom_adapters.md.
"""

from __future__ import annotations

import logging

from torch import nn

from .base import BackboneAdapter, Features

_REGISTRY: list[type[BackboneAdapter]] = []
_FALLBACKS: list[type[BackboneAdapter]] = []
logger = logging.getLogger(__name__)


def register_adapter(cls: type[BackboneAdapter]) -> type[BackboneAdapter]:
    """Registers an adapter class; the latest registered is tried first. Usable as a decorator.

    Example:
        >>> @register_adapter
        ... class MyAdapter(BackboneAdapter): ...  # doctest: +SKIP
    """
    if not (isinstance(cls, type) and issubclass(cls, BackboneAdapter)):
        raise TypeError(f"register_adapter takes a BackboneAdapter subclass, got {cls!r}.")
    if cls in _REGISTRY:
        _REGISTRY.remove(cls)
    _REGISTRY.insert(0, cls)
    return cls


def is_fsdp1(module: nn.Module) -> bool:
    """Whether `module` is FSDP1's `FullyShardedDataParallel` wrapper (FSDP2's `fully_shard` keeps the
    module's own class)."""
    return type(module).__name__ == "FullyShardedDataParallel" and type(module).__module__.startswith(
        "torch.distributed.fsdp")


def fsdp1_root(model: nn.Module) -> nn.Module | None:
    """The outermost FSDP1 wrapper among the wrappers `unwrap_model` sees through, else None."""
    for _ in range(8):
        if is_fsdp1(model):
            return model
        inner = unwrap_model(model, levels=1)
        if inner is model:
            return None
        model = inner
    return None


def unwrap_model(model: nn.Module, levels: int = 8) -> nn.Module:
    """The classifier inside the wrappers users put around it: `torch.compile`'s `OptimizedModule`
    (`._orig_mod`), PEFT's `PeftModel` (`.get_base_model()`, whose layers carry the adapters
    in place) and FSDP1's `FullyShardedDataParallel` (`.module`). Adapters read this module;
    `MultiMixHead` still calls the model as given, and the adapters run an FSDP1 wrapper's forward
    (`BackboneAdapter.root`), where it gathers the parameters."""
    for _ in range(levels):  # a compiled PEFT model is two levels deep
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if is_fsdp1(model):
            model = model.module
            continue
        if type(model).__module__.split(".")[0] == "peft" and callable(getattr(model, "get_base_model", None)):
            model = model.get_base_model()
            continue
        break
    return model


def find_adapter(model: nn.Module) -> BackboneAdapter:
    """Returns an adapter instance for `model` (seen through `unwrap_model`), or raises a
    `TypeError` saying how to add one."""
    _load_builtin()
    root = fsdp1_root(model)
    model = unwrap_model(model)
    for cls in _REGISTRY:
        if cls.matches(model):
            adapter = cls(model)
            adapter.root = root
            logger.info("hf_multimix: %s takes %s", cls.__name__, type(model).__name__)
            return adapter
    known = ", ".join(c.__name__ for c in _REGISTRY)
    raise TypeError(
        f"hf_multimix has no adapter for {type(model).__name__} (known: {known}). Subclass "
        "hf_multimix.BackboneAdapter (implement matches, features, classify, classifier) and pass "
        "MultiMixHead(model, adapter=MyAdapter(model)), or decorate it with @hf_multimix.register_adapter; "
        "see docs/custom_adapters.md."
    )


_builtin_loaded = False


def _load_builtin() -> None:
    """Imports the built-in adapters once; they register themselves (lowest priority)."""
    global _builtin_loaded
    if _builtin_loaded:
        return
    _builtin_loaded = True
    from . import hf_generic, hf_vit, timm  # noqa: F401


def register_builtin(cls: type[BackboneAdapter], fallback: bool = False) -> type[BackboneAdapter]:
    """Registers a built-in adapter after (at lower priority than) user adapters; a `fallback`
    (the generic Hugging Face path) comes after every other built-in, whatever the import order."""
    if cls in _REGISTRY:
        return cls
    if fallback:
        _FALLBACKS.append(cls)
        _REGISTRY.append(cls)
    else:
        first = next((i for i, c in enumerate(_REGISTRY) if c in _FALLBACKS), len(_REGISTRY))
        _REGISTRY.insert(first, cls)
    return cls


__all__ = ["BackboneAdapter", "Features", "find_adapter", "register_adapter", "register_builtin", "unwrap_model"]

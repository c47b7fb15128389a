"""Plumbing every adapter shares, written once: hooks on the wrapped model's own forward, batch-norm
freezing during a replay, prefix-token counting, CLS attention and position-mask checks.

Every adapter reads a model by running its root forward (`model(x)` / `model(**inputs)`) with hooks
on the layers it needs, so whatever the ecosystem attached to that forward (FSDP's parameter
gathering, Accelerate's device hooks, PEFT's wrappers) runs as in plain training. Anything computed
from a layer's parameters (a per-position replay of a head, the CLS attention row) is computed inside
the hook, while the forward holds those parameters gathered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextmanager
def _removed_after(handles: list) -> Iterator[None]:
    """Removes the hook `handles` when the context closes."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_hooks(modules: Iterable[nn.Module], record: list) -> AbstractContextManager:
    """Records `(module, input, output)` of each call of `modules`, in the order the calls finish
    (the first positional input; calls without a tensor input or output are not recorded)."""

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            record.append((module, args[0], output))

    return _removed_after([m.register_forward_hook(hook) for m in modules])


def pre_hooks(modules: Iterable[nn.Module], hook: Any) -> AbstractContextManager:
    """`hook(module, args, kwargs)` runs before each call of `modules` (a forward pre-hook with kwargs)."""
    return _removed_after([m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules])


def record_calls(model: nn.Module, calls: list[nn.Module]) -> AbstractContextManager:
    """Appends to `calls` every submodule of `model` that runs while the context is open."""
    return _removed_after([mod.register_forward_pre_hook(lambda module, args: calls.append(module))
                           for mod in model.modules() if mod is not model])


@contextmanager
def replaced_attribute(obj: Any, name: str, value: Any) -> Iterator[None]:
    """`obj.name` is `value` for a while (an instance attribute, shadowing a method); whatever the
    instance held before (an attribute a user set, or nothing) is restored after."""
    had = name in vars(obj)
    before = vars(obj).get(name)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, name, before)
        else:
            object.__delattr__(obj, name)


@contextmanager
def frozen_batch_norms(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Batch norms among `modules` that are training use their running statistics for a while.

    Used whenever a head is replayed on single positions: statistics over replayed positions are not
    those over examples, and the replay must not update the running averages a second time per step.
    """
    norms = [m for m in modules if isinstance(m, _BatchNorm) and m.training]
    for m in norms:
        m.training = False
    try:
        yield
    finally:
        for m in norms:
            m.training = True


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off for a check, each module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


#: Parameters that prepend tokens that are not positions: CLS, distillation and register tokens
#: (timm and Hugging Face names).
PREFIX_PARAMS = ("cls_token", "dist_token", "distillation_token", "reg_token", "register_tokens")


def count_prefix_tokens(holder: Any, names: Iterable[str] = PREFIX_PARAMS) -> int:
    """Tokens the prefix parameters of `holder` prepend: a `[1, k, C]` parameter holds k, a
    parameter of another shape one (old timm models keep `[1, C]` tokens)."""
    count = 0
    for name in names:
        p = getattr(holder, name, None)
        if isinstance(p, Tensor):
            count += int(p.shape[1]) if p.dim() == 3 else 1
    return count


def cls_attention_row(q_cls: Tensor, k: Tensor, scale: float, prefix: int) -> Tensor:
    """The CLS-to-patch attention of one block, heads averaged, renormalised over the patches.

    Args:
        q_cls: the CLS query `[m, heads, 1, dh]`.
        k: the keys `[m, heads, T, dh]`.
        scale: the attention's scale (`dh ** -0.5`).
        prefix: tokens before the patches (CLS, distillation, registers); not positions.

    Returns:
        `[m, T - prefix]`, rows sum to 1.
    """
    scores = (q_cls.float() * scale) @ k.float().transpose(-2, -1)  # [m, heads, 1, T]
    probs = scores.softmax(dim=-1)[:, :, 0, prefix:].mean(dim=1)
    return probs / probs.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def position_mask(mask: Any, length: int | None = None) -> Tensor:
    """A text `attention_mask` as the positions' validity mask `[m, L]` (True for real tokens).

    Raises:
        ValueError: for anything but an `[m, L]` tensor (an expanded 4-d mask, say), or one whose
            length is not the features' `length`.
    """
    problem = None
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        problem = (f"dense MultiMix needs a [m, L] attention_mask (1 = token, 0 = padding), got {shape}; "
                   "pass the tokenizer's attention_mask, not an expanded 4-d mask.")
    elif length is not None and mask.shape[1] != length:
        problem = (f"attention_mask has {mask.shape[1]} positions but the model's features have {length}; pass "
                   "the processor's attention_mask for these inputs.")
    if problem is not None:
        raise ValueError(problem)
    return mask.bool()


def refuse_cls_attention(model: nn.Module) -> ValueError:
    """The error for `attention='cls'` on a model without a CLS token the adapter can read."""
    return ValueError(
        f"cls_attention=True (attention='cls') needs a ViT-like model with a CLS token; {type(model).__name__} "
        "has none the adapter can read. Use attention='pooled', 'cam' or 'uniform'."
    )

"""Input validation shared by the tensor maths. Every check raises before any computation,
with the offending shape or value and what to do about it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numbers

import torch
from torch import Tensor

from .config import check_alpha as _check_alpha

AlphaLike = float | tuple[float, float] | Sequence[float]


#: What each integer size means and what to do when it is not positive.
_SIZE_HINTS = {
    "m": "m is the batch size (examples mixed together); the batch must hold at least one example",
    "n": "n is the number of mixes; use e.g. n=1000",
    "positions": "positions is r, the positions per example; use e.g. positions=49 for a 7x7 map",
}


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        hint = _SIZE_HINTS.get(name, f"use e.g. {name}=1")
        raise ValueError(f"{name} must be a positive integer, got {value!r}: {hint}.")
    return int(value)


def check_batch_size(m: int, name: str = "z") -> None:
    """Refuses an empty batch: MultiMix mixes at least one example."""
    if m < 1:
        raise ValueError(
            f"{name} holds an empty batch (m=0 examples); MultiMix needs at least one example per batch: "
            "skip empty batches."
        )


def check_positions(r: int, name: str = "z") -> None:
    """Refuses features without positions: dense mixing needs at least one."""
    if r < 1:
        raise ValueError(
            f"{name} has no positions (r=0): dense MultiMix mixes per position; pass [m, r, d] with r >= 1, "
            "or use pooled MultiMix on [m, d]."
        )


def _tolerance(dtype: torch.dtype) -> float:
    """How far a sum of probabilities stored in `dtype` may be from 1: each entry carries a
    relative rounding error of at most eps/2, so the sum of a distribution is off by eps/2."""
    return max(1e-3, torch.finfo(dtype).eps)


def check_alpha(alpha: AlphaLike) -> tuple[float, float]:
    """Returns `(lo, hi)`; a single float gives `lo == hi` (the rule is `config.check_alpha`)."""
    value = _check_alpha(alpha)
    return (value, value) if isinstance(value, float) else value


def check_rank(t: Tensor, rank: int, name: str, shape: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}.")
    if t.dim() != rank:
        raise ValueError(f"{name} must have shape {shape} ({rank} dims), got {tuple(t.shape)}.")


def check_targets(
    y: Tensor, m: int, num_classes: int | None = None, *, name: str = "targets", values: bool = True,
    multi_label: bool = False,
) -> None:
    """`y` is `[m]` integer class ids or `[m, c]` probabilities; with `multi_label`, float
    multi-hot `[m, c]`.

    With `values` (one reduction and one host sync) class ids must lie in `[0, num_classes)` and
    probability rows must be non-negative and sum to 1 (multi-hot entries: finite, in `[0, 1]`,
    rows summing to anything); without it only shapes and dtypes are checked (no sync), for
    callers that checked the values already.
    """
    if multi_label:
        _check_multi_hot(y, m, num_classes, name, values)
        return
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ([m] class ids or [m, c] probabilities), got {type(y).__name__}.")
    if y.dim() not in (1, 2):
        raise ValueError(
            f"{name} must be [m] class ids or [m, c] probabilities, got shape {tuple(y.shape)}."
        )
    if y.shape[0] != m:
        raise ValueError(
            f"{name} have batch size {y.shape[0]} but the embeddings have {m}: pass one target per example."
        )
    if y.dim() == 1:
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
            raise TypeError(
                f"1-D {name} must be integer class ids, got dtype {y.dtype}; use {name}.long(), or pass [m, c] "
                "probabilities."
            )
        if values and num_classes is not None and y.numel() > 0:
            lo, hi = torch.stack([y.min(), y.max()]).tolist()
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"label {bad} is outside [0, {num_classes}): the classifier has {num_classes} classes; "
                    f"check the dataset's labels or the model's num_classes ({name})."
                )
    else:
        if not y.dtype.is_floating_point:
            raise TypeError(
                f"2-D {name} must be floating point probabilities, got dtype {y.dtype}; use {name}.float(), or "
                "pass [m] class ids."
            )
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(
                f"{name} have {y.shape[1]} classes but the classifier has {num_classes}; "
                "they must match (check num_classes / num_labels)."
            )
        if values:
            check_distributions(y, 1, name, "probability rows", _targets_fix(name))


def _check_multi_hot(y: Tensor, m: int, num_classes: int | None, name: str, values: bool) -> None:
    shape = f"[m, c] = [{m}, {num_classes if num_classes is not None else 'c'}]"
    if not isinstance(y, Tensor):
        raise TypeError(f"multi-label {name} must be a float multi-hot tensor {shape}, got {type(y).__name__}.")
    if y.dim() != 2 or y.shape[0] != m or (num_classes is not None and y.shape[1] != num_classes):
        raise ValueError(
            f"multi-label {name} must be multi-hot {shape} (one row per example, one column per class), got shape "
            f"{tuple(y.shape)}; e.g. {name} = torch.zeros(m, c); {name}[i, k] = 1 for each class k of example i."
        )
    if not y.dtype.is_floating_point:
        raise TypeError(
            f"multi-label {name} must be floating point multi-hot {shape}, got dtype {y.dtype}; use {name}.float() "
            "(as the Hugging Face examples pass them for problem_type='multi_label_classification')."
        )
    if values:
        check_unit_interval(y, f"multi-label {name}", f"pass multi-hot {name} (1 = the class is present, 0 = absent)")


def check_unit_interval(p: Tensor, name: str, fix: str) -> None:
    """Every entry of `p` is finite and in `[0, 1]` (per-class probabilities, multi-hot targets):
    one reduction and one host sync."""
    if p.numel() == 0:
        return
    bad = ~((p >= 0) & (p <= 1))  # NaN fails both comparisons
    if not bad.any().item():
        return
    at = tuple(bad.nonzero()[0].tolist())
    raise ValueError(f"{name} must hold values in [0, 1], but entry {_index(at)} is {p[at].item():.4g}; {fix}.")


def check_distributions(p: Tensor, dim: int, name: str, what: str, fix: str) -> None:
    """Every slice of `p` along `dim` is non-negative and sums to 1, within the rounding of
    `p.dtype`: one fused reduction and one host sync; the error path may take more.

    Args:
        what: how the error calls the slices (e.g. "rows").
        fix: what the error tells the caller to do.
    """
    if p.numel() == 0:
        return
    acc = torch.promote_types(p.dtype, torch.float32)
    err = (p.sum(dim=dim, dtype=acc) - 1).abs()
    # NaN fails `err <= tol`, so non-finite entries are caught by the same test.
    negative, off = torch.stack([(p < 0).any(), ~(err <= _tolerance(p.dtype)).all()]).tolist()
    if not (negative or off):
        return
    if negative:
        at = tuple((p < 0).nonzero()[0].tolist())
        problem = f"entry {_index(at)} is {p[at].item():.4g}"
    else:
        at = tuple((~(err <= _tolerance(p.dtype))).nonzero()[0].tolist())
        total = p.sum(dim=dim, dtype=acc)[at].item()
        problem = f"{what.split()[-1][:-1]} {_index(at)} sums to {total:.4g}" + (
            "" if math.isfinite(total) else " (it holds NaN or inf)"
        )
    raise ValueError(f"{name} must be non-negative {what} summing to 1, but {problem}; {fix}.")


def _index(at: tuple[int, ...]) -> str:
    return str(at[0]) if len(at) == 1 else str(list(at))


def _targets_fix(name: str) -> str:
    return (
        f"normalise them, e.g. {name} = {name}.clamp_min(0); {name} = {name} / {name}.sum(dim=1, keepdim=True), "
        "or pass [m] class ids"
    )


_LAMBDA_FIX = (
    "sample it with sample_lambda(), or normalise it: lam = lam.clamp_min(0); lam = lam / lam.sum(dim=-2, keepdim=True)"
)


def check_lambda(lam: Tensor, m: int, r: int | None, *, values: bool = True) -> None:
    """`lam` is `[m, n]`, or `[r, m, n]` for dense mixing when `r` is given.

    With `values` (one reduction and one host sync) every column must be non-negative and sum
    to 1, i.e. lie on the simplex the method is defined on; weights from `sample_lambda` do by
    construction, so callers that drew them skip it.
    """
    if not isinstance(lam, Tensor):
        raise TypeError(f"lam must be a torch.Tensor, got {type(lam).__name__}; build it with sample_lambda().")
    if r is None:
        if lam.dim() != 2:
            raise ValueError(f"lam must have shape [m, n], got {tuple(lam.shape)}; build it with sample_lambda(m, n).")
        if lam.shape[0] != m:
            raise ValueError(
                f"lam has {lam.shape[0]} rows but the batch has m={m} examples; sample it with sample_lambda({m}, n)."
            )
    elif lam.dim() == 2:
        if lam.shape[0] != m:
            raise ValueError(
                f"lam has {lam.shape[0]} rows but the batch has m={m} examples; sample it with sample_lambda({m}, n)."
            )
    elif lam.dim() == 3:
        if lam.shape[0] != r or lam.shape[1] != m:
            raise ValueError(
                f"lam has shape {tuple(lam.shape)} but dense mixing of m={m} examples at r={r} positions needs "
                f"[{r}, {m}, n]; sample it with sample_lambda({m}, n, positions={r})."
            )
    else:
        raise ValueError(
            f"lam must have shape [r, m, n] or [m, n] for dense mixing, got {tuple(lam.shape)}."
        )
    if not lam.dtype.is_floating_point:
        raise TypeError(f"lam must be a floating point tensor, got dtype {lam.dtype}; build it with sample_lambda().")
    if lam.shape[-1] == 0:
        raise ValueError(f"lam has shape {tuple(lam.shape)}: no mixes (n=0); sample it with sample_lambda(m, n) and n >= 1.")
    if values:
        check_distributions(lam, -2, "lam", "columns", _LAMBDA_FIX)


def check_mask(mask: Tensor, m: int, r: int) -> None:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor [m, r] (True = a real position), got {got}; use mask.bool().")
    if tuple(mask.shape) != (m, r):
        raise ValueError(f"mask must have shape [m, r] = [{m}, {r}], got {tuple(mask.shape)}.")
    empty = (~mask.any(dim=1)).nonzero().flatten()
    if empty.numel() > 0:
        raise ValueError(
            f"mask hides every position of example(s) {empty.tolist()}: each example needs at least one "
            "real position (True = real, False = padding)."
        )


def check_attention(attn: Tensor, m: int, r: int) -> None:
    if not isinstance(attn, Tensor):
        raise TypeError(f"attention must be a tensor [m, r] or a name, got {type(attn).__name__}.")
    if tuple(attn.shape) != (m, r):
        raise ValueError(f"attention must have shape [m, r] = [{m}, {r}], got {tuple(attn.shape)}.")
    if not torch.isfinite(attn).all() or (attn < 0).any():
        raise ValueError("attention must be finite and non-negative (it weights positions); apply softmax first.")

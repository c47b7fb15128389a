"""Input validation shared by the tensor maths. Every check raises before any computation,
with the offending shape or value and what to do about it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

AlphaLike = float | tuple[float, float] | Sequence[float]


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; use e.g. {name}=1000.")
    return value


def check_alpha(alpha: AlphaLike) -> tuple[float, float]:
    """Returns `(lo, hi)`; a single float gives `lo == hi`."""
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        lo = hi = float(alpha)
    elif isinstance(alpha, Sequence) and len(alpha) == 2:
        lo, hi = float(alpha[0]), float(alpha[1])
    else:
        raise ValueError(
            f"alpha must be a positive float or a (lo, hi) range, got {alpha!r}; e.g. alpha=1.0 or alpha=(0.5, 2.0)."
        )
    if not (lo > 0 and hi > 0):
        raise ValueError(
            f"alpha must be > 0 (Dirichlet concentration), got {alpha!r}; e.g. alpha=1.0 or alpha=(0.5, 2.0)."
        )
    if lo > hi:
        raise ValueError(f"alpha range must have lo <= hi, got {alpha!r}; write it as ({hi}, {lo}).")
    return lo, hi


def check_rank(t: Tensor, rank: int, name: str, shape: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}.")
    if t.dim() != rank:
        raise ValueError(f"{name} must have shape {shape} ({rank} dims), got {tuple(t.shape)}.")


def check_targets(y: Tensor, m: int, num_classes: int | None = None) -> None:
    """`y` is `[m]` integer class ids or `[m, c]` float targets."""
    if not isinstance(y, Tensor):
        raise TypeError(f"targets must be a torch.Tensor ([m] class ids or [m, c] probabilities), got {type(y).__name__}.")
    if y.dim() not in (1, 2):
        raise ValueError(
            f"targets must be [m] class ids or [m, c] probabilities, got shape {tuple(y.shape)}."
        )
    if y.shape[0] != m:
        raise ValueError(
            f"targets have batch size {y.shape[0]} but the embeddings have {m}: pass one target per example."
        )
    if y.dim() == 1:
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(
                f"1-D targets must be integer class ids, got dtype {y.dtype}; use y.long(), or pass [m, c] probabilities."
            )
        if num_classes is not None and y.numel() > 0:
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"label {bad} is outside [0, {num_classes}): the classifier has {num_classes} classes; "
                    "check the dataset's labels or the model's num_classes."
                )
    else:
        if not y.dtype.is_floating_point:
            raise TypeError(f"2-D targets must be floating point probabilities, got dtype {y.dtype}.")
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(
                f"targets have {y.shape[1]} classes but the classifier has {num_classes}; "
                "they must match (check num_classes / num_labels)."
            )


def check_lambda(lam: Tensor, m: int, r: int | None) -> None:
    """`lam` is `[m, n]`, or `[r, m, n]` for dense mixing when `r` is given."""
    if not isinstance(lam, Tensor):
        raise TypeError(f"lam must be a torch.Tensor, got {type(lam).__name__}; build it with sample_lambda().")
    if r is None:
        if lam.dim() != 2:
            raise ValueError(f"lam must have shape [m, n], got {tuple(lam.shape)}; build it with sample_lambda(m, n).")
        if lam.shape[0] != m:
            raise ValueError(
                f"lam has {lam.shape[0]} rows but the batch has m={m} examples; sample it with sample_lambda({m}, n)."
            )
        return
    if lam.dim() == 2:
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

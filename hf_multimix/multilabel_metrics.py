"""Multi-label metrics: mean average precision and micro / macro F1, in torch (no sklearn).

Pure tensor code, as the losses: scores `[m, c]` (logits or probabilities, any monotone
score), targets multi-hot `[m, c]` (entries >= 0.5 count as present).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_average_precision", "multilabel_f1"]


def _check(scores: Tensor, targets: Tensor) -> Tensor:
    if not isinstance(scores, Tensor) or not isinstance(targets, Tensor):
        raise TypeError("scores and targets must be tensors [m, c].")
    if scores.dim() != 2 or tuple(scores.shape) != tuple(targets.shape):
        raise ValueError(
            f"scores and targets must both be [m, c], got {tuple(scores.shape)} and {tuple(targets.shape)}."
        )
    return targets >= 0.5


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Mean over classes of the average precision (area under the precision-recall curve as
    sklearn's `average_precision_score` computes it, ties broken by order); classes with no
    positive example are left out of the mean.

    Example:
        >>> mean_average_precision(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        1.0
    """
    positive = _check(scores, targets)
    order = scores.float().argsort(dim=0, descending=True, stable=True)
    hits = positive.gather(0, order).float()  # [m, c], sorted by score per class
    tp = hits.cumsum(dim=0)
    precision = tp / torch.arange(1, hits.shape[0] + 1, dtype=tp.dtype).unsqueeze(1)
    npos = hits.sum(dim=0)
    ap = (precision * hits).sum(dim=0) / npos.clamp_min(1)
    present = npos > 0
    if not present.any():
        raise ValueError("mean_average_precision needs at least one positive target.")
    return ap[present].mean().item()


def multilabel_f1(scores: Tensor, targets: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Micro and macro F1 of `scores > threshold` (use 0 for logits, 0.5 for probabilities).

    Micro F1 pools every (example, class) decision; macro F1 averages the per-class F1 (a class
    with no positives and no predictions scores 1, nothing to get wrong).

    Example:
        >>> f1 = multilabel_f1(torch.tensor([[2.0, -1.0], [1.0, 3.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.0)
        >>> round(f1["micro_f1"], 4), round(f1["macro_f1"], 4)
        (0.8, 0.8333)
    """
    positive = _check(scores, targets)
    predicted = scores > threshold
    tp = (predicted & positive).sum(dim=0).double()
    fp = (predicted & ~positive).sum(dim=0).double()
    fn = (~predicted & positive).sum(dim=0).double()
    denom = 2 * tp + fp + fn
    per_class = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.ones_like(tp))
    micro_denom = denom.sum()
    micro = (2 * tp.sum() / micro_denom).item() if micro_denom > 0 else 1.0
    return {"micro_f1": micro, "macro_f1": per_class.mean().item()}

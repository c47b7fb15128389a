"""Classification metrics that see every class: balanced accuracy, macro-F1, per-class accuracy.

Plain accuracy hides a class that is never predicted when that class is rare: a model that
predicts only the two largest of eight classes can still score 80%. Balanced accuracy (the mean
of the per-class recalls) and macro-F1 (the mean of the per-class F1 scores) weigh each class
equally, so a collapsed minority class shows. Pure tensor functions over predicted and true
class ids; the training loop, ``hf-multimix evaluate`` and the benchmarks all call these.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "per_class_accuracy", "balanced_accuracy", "macro_f1", "classification_metrics"]


def _check(preds: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    preds, labels = torch.as_tensor(preds), torch.as_tensor(labels)
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(f"preds and labels must be 1-D class ids of the same length, got shapes "
                         f"{tuple(preds.shape)} and {tuple(labels.shape)}; pass logits.argmax(-1) as preds")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, t in (("preds", preds), ("labels", labels)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} must be class ids in [0, {num_classes}), got values from {int(t.min())} "
                             f"to {int(t.max())}; pass num_classes = the classifier's number of classes")
    return preds.long().cpu(), labels.long().cpu()


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts `[num_classes, num_classes]`: row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    preds, labels = _check(preds, labels, num_classes)
    flat = labels * num_classes + preds
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(preds: Tensor, labels: Tensor, num_classes: int) -> list[float | None]:
    """Recall of each class (correct / examples of that class); `None` for a class with no examples.

    Example:
        >>> per_class_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 3)
        [0.5, 1.0, None]
    """
    cm = confusion_matrix(preds, labels, num_classes)
    support = cm.sum(1)
    return [float(cm[c, c] / support[c]) if support[c] else None for c in range(num_classes)]


def balanced_accuracy(preds: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean recall over the classes that have examples in `labels` (sklearn's `balanced_accuracy_score`).

    Example:
        >>> balanced_accuracy(torch.tensor([0, 0, 0, 0, 0]), torch.tensor([0, 0, 0, 0, 1]), 2)
        0.5
    """
    recalls = [r for r in per_class_accuracy(preds, labels, num_classes) if r is not None]
    if not recalls:
        raise ValueError("balanced accuracy needs at least one example")
    return sum(recalls) / len(recalls)


def macro_f1(preds: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes that occur in `labels` or in `preds` (a class that is neither true nor
    predicted anywhere is left out; one that is predicted but never true has F1 0).

    F1 of class c is `2 tp / (2 tp + fp + fn)`.

    Example:
        >>> macro_f1(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]), 2)  # (0.8 + 2/3) / 2
        0.7333333333333334
    """
    cm = confusion_matrix(preds, labels, num_classes).double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    seen = (cm.sum(0) + cm.sum(1)) > 0
    if not seen.any():
        raise ValueError("macro-F1 needs at least one example")
    f1 = 2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])
    return float(f1.mean())


def classification_metrics(preds: Tensor, labels: Tensor, num_classes: int) -> dict[str, object]:
    """`accuracy`, `balanced_accuracy`, `macro_f1` and `per_class_accuracy` (a list, class-id order) in one dict.

    Example:
        >>> m = classification_metrics(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1]), 2)
        >>> m["accuracy"], m["balanced_accuracy"], m["per_class_accuracy"]
        (0.75, 0.75, [1.0, 0.5])
    """
    preds, labels = _check(preds, labels, num_classes)
    if not labels.numel():
        raise ValueError("classification metrics need at least one example")
    return {
        "accuracy": float((preds == labels).double().mean()),
        "balanced_accuracy": balanced_accuracy(preds, labels, num_classes),
        "macro_f1": macro_f1(preds, labels, num_classes),
        "per_class_accuracy": per_class_accuracy(preds, labels, num_classes),
    }

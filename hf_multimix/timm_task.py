"""`MultiMixTask`: MultiMix as a timm training task (`timm.task`), for timm's own `train.py`.

timm's `train.py` trains through a task object that owns the forward pass and the loss, and
that carries EMA, compilation, distributed wrapping and checkpoints. `MultiMixTask` is
`ClassificationTask` with the model wrapped in a `MultiMixHead`: the training loss is the
MultiMix loss, everything else is the task API unchanged. In `train.py` the one change is

    task = ClassificationTask(   ->   task = MultiMixTask(

The trainable module is the head. In eval mode it is exactly the wrapped model (validation
gets the logits tensor), and its state dict is the model's, key for key, so the checkpoints
`train.py` writes (also the EMA ones) load into the plain timm model, e.g. with `validate.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

try:
    from timm.task import ClassificationTask
    from timm.utils.model import unwrap_model
except ImportError as error:  # timm before 1.0.23 has no task API
    import timm

    raise ImportError(
        f"hf_multimix.MultiMixTask is a timm training task and needs timm's task API (the module timm.task, "
        f"timm >= 1.0.23); the installed timm {timm.__version__} has none. Upgrade it: pip install -U 'timm>=1.0.23', "
        "or train with MultiMixHead in your own loop."
    ) from error

from ._wrap import HEAD_OPTIONS, wrap_model
from .adapters.base import logits_of
from .config import MultiMixConfig
from .head import MultiMixHead, MultiMixOutput

__all__ = ["MultiMixTask"]

_PREFIX = "model."


class _TaskHead(MultiMixHead):
    """The head as timm's optimizer factory sees it: the wrapped model's `no_weight_decay()` and
    `group_matcher()` (layer decay), rewritten for the head's parameter names (`model.` + name)."""

    def no_weight_decay(self) -> set[str]:
        names = getattr(self.model, "no_weight_decay", lambda: set())()
        return {_PREFIX + name for name in names}

    def group_matcher(self, coarse: bool = False) -> Any:
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            raise AttributeError(f"{type(self.model).__name__} has no group_matcher")
        return _prefix_matcher(matcher(coarse=coarse))


def _prefix_regex(pattern: str) -> str:
    # timm matches these with re.match (anchored at the start of the name), each alternative
    # optionally written with its own '^'.
    return re.escape(_PREFIX) + "(?:" + re.sub(r"(^|\|)\^", r"\1", pattern) + ")"


def _prefix_matcher(matcher: Any) -> Any:
    if callable(matcher):
        return lambda name: matcher(name[len(_PREFIX):] if name.startswith(_PREFIX) else name)
    prefixed = {}
    for group, spec in matcher.items():
        if spec is None:
            prefixed[group] = None
        elif isinstance(spec, (list, tuple)):
            prefixed[group] = [(_prefix_regex(regex), suffix) for regex, suffix in spec]
        else:
            prefixed[group] = _prefix_regex(spec)
    return prefixed


def _criterion_smoothing(criterion: Any) -> float | None:
    """The label smoothing of a softmax cross-entropy criterion; None for any other loss."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if isinstance(criterion, nn.CrossEntropyLoss):
        if criterion.weight is not None or criterion.ignore_index != -100:
            return None
        return float(criterion.label_smoothing)
    if isinstance(criterion, LabelSmoothingCrossEntropy):
        return float(criterion.smoothing)
    if isinstance(criterion, SoftTargetCrossEntropy):
        return 0.0  # the targets are already soft (timm's Mixup/CutMix applied the smoothing)
    return None


def _bce_smoothing(criterion: Any) -> float | None:
    """The smoothing of class-id targets of a plain binary cross-entropy criterion (timm's
    `--bce-loss`); None for any other loss or one with class weights, thresholds or sums."""
    from timm.loss import BinaryCrossEntropy

    if isinstance(criterion, nn.BCEWithLogitsLoss):
        plain = criterion.weight is None and criterion.pos_weight is None and criterion.reduction == "mean"
        return 0.0 if plain else None
    if isinstance(criterion, BinaryCrossEntropy):
        plain = (criterion.weight is None and criterion.pos_weight is None and criterion.target_threshold is None
                 and criterion.reduction == "mean" and not criterion.sum_classes
                 and not getattr(criterion, "smooth_dense", False))
        return float(criterion.smoothing) if plain else None
    return None


class MultiMixTask(ClassificationTask):
    """timm `ClassificationTask` that trains with (Dense) MultiMix.

    Args:
        model: the timm classifier (plain, not wrapped); the task wraps it in a `MultiMixHead`.
        criterion: the classification criterion `train.py` builds. MultiMix's loss is a soft-target
            cross-entropy, so the criterion must be one too: `nn.CrossEntropyLoss`,
            `LabelSmoothingCrossEntropy` (its smoothing becomes the head's `label_smoothing`) or
            `SoftTargetCrossEntropy` (timm's Mixup/CutMix targets, mixed again by MultiMix). It
            scores the batches when the head is in eval mode.
        criterion_kwargs: arguments of timm's `create_classification_loss` when `criterion` is None
            (timm >= 1.0.31).
        device: device for task tensors, as in `ClassificationTask`.
        dtype: dtype for task tensors, as in `ClassificationTask`.
        verbose: log the set-up.
        multimix_args: a `MultiMixConfig` (e.g. `recipes.noisy_labels("image", from_scratch=True).multimix`),
            or MultiMix options as a dict, e.g. `{"n": 500, "alpha": 0.2}`.
        **multimix_options: MultiMix options as keywords (`n`, `alpha`, `dense`, ... as in
            `MultiMixHead`).

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
        >>> task = MultiMixTask(model, torch.nn.CrossEntropyLoss(), n=100)
        >>> result = task(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
        >>> result["loss"].backward()
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module | Callable | None = None,
        criterion_kwargs: dict[str, Any] | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        verbose: bool = True,
        *,
        multimix_args: MultiMixConfig | Mapping[str, Any] | None = None,
        **multimix_options: Any,
    ) -> None:
        unknown = sorted(set(multimix_options) - set(HEAD_OPTIONS))
        if unknown:
            raise TypeError(
                f"MultiMixTask got unknown arguments {unknown}; the MultiMix options are {list(HEAD_OPTIONS)}."
            )
        if isinstance(model, MultiMixHead):
            raise TypeError(
                "MultiMixTask wraps the model itself: pass the plain timm model and the MultiMix options, "
                "e.g. MultiMixTask(model, criterion, n=1000, alpha=0.2), not a MultiMixHead."
            )
        head = wrap_model(model, multimix_args, multimix_options, "MultiMixTask", head_class=_TaskHead)
        extra = {} if criterion_kwargs is None else {"criterion_kwargs": criterion_kwargs}
        super().__init__(head, criterion, device=device, dtype=dtype, verbose=verbose, **extra)
        multi_label = head.task == "multi_label"
        bce = _bce_smoothing(self.criterion)
        name = getattr(self.criterion, "__name__", None) or type(self.criterion).__name__
        if bce is not None and not multi_label:
            raise ValueError(
                f"MultiMixTask trains a single-label head with softmax cross-entropy, so it cannot use the criterion "
                f"{name}: drop --bce-loss in train.py, or pass task='multi_label' for MultiMix with binary "
                "cross-entropy (as --bce-loss)."
            )
        if multi_label and bce is None:
            raise ValueError(
                f"MultiMixTask(task='multi_label') trains with binary cross-entropy, so it cannot use the criterion "
                f"{name}. Pass nn.BCEWithLogitsLoss() or timm's BinaryCrossEntropy (train.py --bce-loss) without "
                "class weights or thresholds."
            )
        #: Smoothing of class-id targets turned into one-hot ones (timm's BinaryCrossEntropy's rule).
        self._bce_smoothing = bce if multi_label else None
        smoothing = 0.0 if multi_label else _criterion_smoothing(self.criterion)
        if smoothing is None:
            raise ValueError(
                f"MultiMixTask trains with MultiMix's soft-target cross-entropy (no class weights, no "
                f"ignore_index), so it cannot use the criterion {name}. Pass nn.CrossEntropyLoss, "
                "LabelSmoothingCrossEntropy or SoftTargetCrossEntropy (in train.py: drop --bce-loss / "
                "--jsd-loss), or train with ClassificationTask."
            )
        if head.label_smoothing == 0 and smoothing:
            head.multimix_config = head.multimix_config.replace(label_smoothing=smoothing)

    @property
    def head(self) -> MultiMixHead:
        """The `MultiMixHead`, outside any DDP or compile wrapper."""
        return unwrap_model(self.trainable_module)

    def forward(self, input: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The MultiMix loss of a batch (`target`: `[m]` class ids or `[m, c]` probabilities;
        with `task="multi_label"`, float multi-hot `[m, c]`, or class ids that become one-hot
        targets smoothed as timm's `BinaryCrossEntropy` smooths them).

        Returns:
            `{"loss": ..., "output": logits}`; in eval mode the loss is the criterion's.
        """
        labels = target
        if self._bce_smoothing is not None and target.dim() == 1 and not target.dtype.is_floating_point:
            eps, c = self._bce_smoothing, self.head.num_classes
            labels = torch.nn.functional.one_hot(target.long(), c).float() * (1.0 - eps) + eps / c
        out = self.trainable_module(input, labels=labels)
        if isinstance(out, MultiMixOutput):
            return {"loss": out.loss, "output": out.logits}
        logits = logits_of(out)
        return {"loss": self.criterion(logits, target), "output": logits}

    def get_clip_parameters(self, exclude_head: bool = False):
        """The model's parameters (the head's EMA teacher, if any, is not clipped)."""
        params = list(self.head.model.parameters())
        return params[:-2] if exclude_head else params

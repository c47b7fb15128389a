"""MultiMix losses: pooled and dense, with the exact logit-space shortcut, chunking over the
mixes, label smoothing, a clean-batch term and self-distillation (docs/method.md).

Pooled MultiMix is dense MultiMix with a single position, so both go through one code path.
Mixing and the soft-target cross-entropy run in float32 whatever the input dtype or autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from ._checks import (
    check_attention,
    check_batch_size,
    check_distributions,
    check_lambda,
    check_mask,
    check_positions,
    check_rank,
    check_targets,
    check_unit_interval,
)
from .config import MultiMixConfig, resolve_config
from .functional import (
    ATTENTION_KINDS,
    _normalise,
    _position_weights,
    build_attention,
    masked_mean,
    one_hot_targets,
    sample_lambda,
)

#: Mixed tensors of one chunk hold at most this many elements (float32: 256 MB), which bounds
#: peak memory for large `n`, `r`, `c`. Work that fits in one chunk is not recomputed.
DEFAULT_CHUNK_ELEMENTS = 2**26


def is_affine(module: Callable) -> bool:
    """Whether `module` is affine on its last dimension, so that mixing logits equals the logits of
    mixed embeddings (the exact shortcut). Linear, Identity and Dropout, or a Sequential of them.

    A module may declare itself with an attribute `is_affine = True`.
    """
    if isinstance(module, (nn.Linear, nn.Identity, nn.Dropout)):
        return True
    if isinstance(module, nn.Sequential):
        return all(is_affine(child) for child in module)
    return bool(getattr(module, "is_affine", False))


def _wide(t: Tensor) -> Tensor:
    """Half precision goes up to float32; float32 and float64 stay."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with probability targets over the last dim, no reduction, in the logits'
    precision but at least float32 (float64 targets do not turn a float32 model's loss float64).

    Args:
        logits: `[..., c]`.
        targets: `[..., c]`.

    Returns:
        `[...]`, float32 (float64 for float64 logits).
    """
    logits = _wide(logits)
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def distillation_kl(logits: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """`KL(teacher || softmax(logits / T))` over the last dim, at least float32, no reduction."""
    t = _wide(teacher)
    return (torch.xlogy(t, t) - t * F.log_softmax(_wide(logits) / temperature, dim=-1)).sum(dim=-1)


def binary_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the classes (the last dim) as
    `torch.nn.BCEWithLogitsLoss` averages them, at least float32, no other reduction.

    Args:
        logits: `[..., c]`.
        targets: `[..., c]` in `[0, 1]` (multi-hot, mixed or smoothed; rows need not sum to 1).

    Returns:
        `[...]`, float32 (float64 for float64 logits).
    """
    logits = _wide(logits)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none").mean(dim=-1)


def binary_distillation_kl(logits: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Per-class Bernoulli `KL(teacher || sigmoid(logits / T))`, averaged over the classes (the
    last dim), at least float32, no other reduction. `teacher` holds per-class probabilities."""
    t = _wide(teacher)
    entropy = torch.xlogy(t, t) + torch.xlogy(1 - t, 1 - t)
    return (entropy + F.binary_cross_entropy_with_logits(_wide(logits) / temperature, t, reduction="none")).mean(dim=-1)


def is_multi_label(task: str | None) -> bool:
    """Whether a `MultiMixConfig.task` selects the multi-label losses (None: single-label)."""
    return task == "multi_label"


def clean_loss(logits: Tensor, targets: Tensor, num_classes: int, task: str | None = None,
               label_smoothing: float = 0.0) -> Tensor:
    """The unmixed loss of a batch, a float32 scalar: the model's own cross-entropy (single-label)
    or binary cross-entropy (multi-label, mean over examples and classes). Targets are checked
    by the caller.

    Args:
        logits: `[m, c]`.
        targets: `[m]` class ids or `[m, c]` probabilities (single-label), `[m, c]` multi-hot
            (multi-label).
    """
    if is_token_task(task):
        return token_clean_loss(logits, targets, label_smoothing)
    y = _targets(targets, num_classes, label_smoothing, task, validate=False)
    criterion = binary_cross_entropy if is_multi_label(task) else soft_cross_entropy
    return criterion(logits, y).mean()


def is_token_task(task: str | None) -> bool:
    """Whether a `MultiMixConfig.task` selects token classification (one label per position)."""
    return task == "token"


#: The label of positions that carry no tag (special tokens, padding, later word pieces), as in
#: `torch.nn.CrossEntropyLoss(ignore_index=-100)` and the Hugging Face token classifiers.
IGNORE_INDEX = -100


def token_targets(labels: Tensor, num_classes: int, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Per-position targets of token classification.

    Args:
        labels: `[m, r]` class ids, `IGNORE_INDEX` (-100) where a position carries no label.
        num_classes: `c`.
        label_smoothing: `eps`: `(1 - eps) * one_hot + eps / c` at the labelled positions.

    Returns:
        `(y [m, r, c] float32, valid [m, r] bool)`; the rows of ignored positions are zero.
    """
    valid = labels != IGNORE_INDEX
    y = F.one_hot(labels.long().clamp_min(0), num_classes).float()
    if label_smoothing > 0:
        y = y * (1.0 - label_smoothing) + label_smoothing / num_classes
    return y * valid.unsqueeze(-1), valid


def token_clean_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """The token classifier's own loss, a float32 scalar: cross-entropy averaged over the positions
    whose label is not -100, as `CrossEntropyLoss(ignore_index=-100)` on `logits.view(-1, c)` (what
    a Hugging Face `*ForTokenClassification` model computes from its labels).

    Args:
        logits: `[m, r, c]`.
        labels: `[m, r]` class ids, -100 where ignored.
    """
    y, valid = token_targets(labels, logits.shape[-1], label_smoothing)
    return soft_cross_entropy(logits[valid], y[valid]).mean()


#: The `MultiMixConfig` options `token_multimix_loss` takes as keywords.
TOKEN_LOSS_OPTIONS = (
    "n", "alpha", "label_smoothing", "clean_weight", "distill_weight", "temperature", "chunk_size", "per_position",
)


def token_multimix_loss(
    token_logits: Tensor,
    labels: Tensor,
    lam: Tensor | None = None,
    config: MultiMixConfig | None = None,
    *,
    mask: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    validate: bool = True,
    **options: Any,
) -> Tensor:
    """Dense MultiMix with a label at every position (token classification), in logit space.

    Position `j` of mix `k` mixes the examples that carry a label there: with `v[i, j]` true where
    example `i` has a label at `j` (not -100, and inside `mask`), the weights are
    `w[j, i, k] = v[i, j] lam[j, i, k] / sum_i' v[i', j] lam[j, i', k]` (renormalised over the
    valid examples, `functional.dense_weights` with `v` as the mask); the mixed logits are
    `sum_i w[j, i, k] logits[i, j]` (the logits of the mixed features, exactly, when the classifier
    is affine) and the mixed target `sum_i w[j, i, k] onehot(labels[i, j])`. The loss is the
    soft-target cross-entropy averaged over the `(mix, position)` pairs with at least one valid
    example, plus `clean_weight` times `token_clean_loss`. Positions valid in no example are
    dropped before the weights are drawn, so padding a batch further changes nothing.

    The options (`n`, `alpha`, `label_smoothing`, `clean_weight`, `distill_weight`, `temperature`,
    `chunk_size`, `per_position`) come from `config`, with keyword `options` overriding it.

    Args:
        token_logits: the classifier's output at every position `[m, r, c]`.
        labels: `[m, r]` class ids, -100 where a position carries no label.
        lam: `[r, m, n]` or `[m, n]` (shared by positions); sampled when None.
        mask: bool `[m, r]`, True for real positions (the attention mask); None: all real.
        teacher_probs: `[m, r, c]` teacher probabilities for self-distillation (`distill_weight > 0`).
        validate: check the values of `labels` (ids in `[0, c)` or -100) and of a given `lam`.

    Returns:
        Scalar float32 loss.

    Example:
        >>> logits = torch.randn(4, 7, 5)
        >>> labels = torch.randint(0, 5, (4, 7)); labels[:, 0] = -100
        >>> token_multimix_loss(logits, labels, n=50).shape
        torch.Size([])
    """
    cfg = resolve_config(config, options, "token_multimix_loss", TOKEN_LOSS_OPTIONS)
    check_rank(token_logits, 3, "token_logits", "[m, r, c]")
    m, r, c = token_logits.shape
    check_batch_size(m, "token_logits")
    check_token_labels(labels, m, r, c, values=validate)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (m, r):
            raise ValueError(f"mask must be a bool tensor [m, r] = [{m}, {r}] (True = a real position), got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}.")
        labels = labels.masked_fill(~mask, IGNORE_INDEX)
    if lam is not None:
        check_lambda(lam, m, r, values=validate)
    if cfg.distill_weight > 0:
        if teacher_probs is None:
            raise ValueError("distill_weight > 0 needs teacher_probs [m, r, c] (e.g. "
                             "softmax(token_logits.detach() / T)).")
        _check_teacher(teacher_probs, m, r, c)
        if teacher_probs.dim() != 3:
            raise ValueError(f"token classification takes teacher_probs per position, [m, r, c] = [{m}, {r}, {c}]; "
                             f"got {tuple(teacher_probs.shape)}.")
    y, valid = token_targets(labels, c, cfg.label_smoothing)
    if not bool(valid.any()):
        raise ValueError("every label of the batch is -100 (no position carries a tag): nothing to train on; "
                         "skip such batches, or check the label alignment (first word piece of each word).")
    clean = token_clean_loss(token_logits, labels, cfg.label_smoothing) if cfg.clean_weight > 0 else None
    # Positions valid in no example carry no term: drop them before the draw, so that the weights at the
    # labelled positions (and the loss) do not depend on how far the batch was padded.
    keep = valid.any(dim=0)
    if not bool(keep.all()):
        token_logits, y, valid = token_logits[:, keep], y[:, keep], valid[:, keep]
        if lam is not None and lam.dim() == 3:
            lam = lam[keep]
        if teacher_probs is not None:
            teacher_probs = teacher_probs[:, keep]
    r = token_logits.shape[1]
    if lam is None:
        lam = sample_lambda(m, cfg.n, cfg.alpha, positions=r if cfg.per_position and r > 1 else None,
                            device=token_logits.device)
    if lam.dim() == 2:
        lam = lam.unsqueeze(0)
    dtype = torch.promote_types(token_logits.dtype, torch.float32)
    with torch.autocast(device_type=token_logits.device.type, enabled=False):
        teacher = teacher_probs.to(dtype) if (teacher_probs is not None and cfg.distill_weight > 0) else None
        total, count = _chunked_mixed_loss(
            token_logits.to(dtype), True, nn.Identity(), lam.to(dtype), valid.to(dtype), y.to(dtype), teacher,
            cfg.distill_weight, cfg.temperature, cfg.chunk_size,
        )
        loss = total / count.clamp_min(1)
        if clean is not None:
            loss = loss + cfg.clean_weight * clean
    return loss


def check_token_labels(labels: Tensor, m: int, r: int | None, num_classes: int | None, *, values: bool = True,
                       name: str = "labels") -> None:
    """`labels` are `[m, r]` integer class ids in `[0, num_classes)` or -100 (ignored); with `values`
    (one reduction, one host sync) the ids are range-checked."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"token {name} must be a tensor [m, r] of class ids (-100 = ignored), got "
                        f"{type(labels).__name__}.")
    shape = f"[m, r] = [{m}, {r if r is not None else 'r'}]"
    if labels.dim() != 2 or labels.shape[0] != m or (r is not None and labels.shape[1] != r):
        raise ValueError(
            f"token {name} must be {shape}, one class id per position of the inputs (-100 where a position carries no "
            f"label), got shape {tuple(labels.shape)}; pad them with DataCollatorForTokenClassification."
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"token {name} must be integer class ids (-100 = ignored), got dtype {labels.dtype}; use "
                        f"{name}.long().")
    if values and num_classes is not None and labels.numel():
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            at = tuple(bad.nonzero()[0].tolist())
            raise ValueError(
                f"token label {int(labels[at])} at {list(at)} is outside [0, {num_classes}) and is not -100 (ignored): "
                f"the classifier has {num_classes} classes; check the tag ids or the model's num_labels."
            )


def teacher_probabilities(logits: Tensor, temperature: float, task: str | None = None) -> Tensor:
    """Teacher targets of self-distillation, float32: `softmax(logits / T)` over the classes
    (single-label) or per-class `sigmoid(logits / T)` (multi-label)."""
    scaled = logits.float() / temperature
    return torch.sigmoid(scaled) if is_multi_label(task) else torch.softmax(scaled, dim=-1)


def _targets(targets: Tensor, num_classes: int, label_smoothing: float, task: str | None, *,
             validate: bool) -> Tensor:
    """`[m, c]` float targets. Multi-label smoothing is `(1 - eps) y + eps / c` per class, the
    formula of single-label smoothing and of timm's `BinaryCrossEntropy`."""
    if not is_multi_label(task):
        return one_hot_targets(targets, num_classes, label_smoothing, validate=validate)
    # The shape against the classifier's classes always (no sync), the values when asked.
    check_targets(targets, targets.shape[0], num_classes, multi_label=True, values=validate)
    y = targets.to(torch.promote_types(targets.dtype, torch.float32))
    return y * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing > 0 else y


#: The `MultiMixConfig` options the loss functions take as keywords; the others are the head's.
POOLED_LOSS_OPTIONS = (
    "n", "alpha", "label_smoothing", "clean_weight", "distill_weight", "temperature", "chunk_size", "task",
)
DENSE_LOSS_OPTIONS = (*POOLED_LOSS_OPTIONS, "per_position", "detach_attention")


def multimix_loss(
    z: Tensor,
    targets: Tensor,
    classifier: Callable[[Tensor], Tensor],
    lam: Tensor | None = None,
    config: MultiMixConfig | None = None,
    *,
    affine: bool | None = None,
    num_classes: int | None = None,
    clean_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    validate: bool = True,
    **options: Any,
) -> Tensor:
    """MultiMix loss on pooled embeddings: mean soft-target cross-entropy over `n` mixes.

    The options (`n`, `alpha`, `label_smoothing`, `clean_weight`, `distill_weight`,
    `temperature`, `chunk_size`, `task`) come from `config`, with keyword `options` overriding it;
    their defaults and checks are `MultiMixConfig`'s (e.g. `clean_weight=1.0` adds the clean
    batch's cross-entropy; pass `clean_weight=0` for the paper's loss). With
    `task="multi_label"` the targets are multi-hot `[m, c]` mixed with the same weights as the
    embeddings, `y~ = Lambda^T Y`, and each term is the binary cross-entropy with logits (mean
    over classes, as `torch.nn.BCEWithLogitsLoss`); self-distillation then uses per-class
    sigmoid teacher probabilities and a Bernoulli KL.

    Args:
        z: embeddings the classifier sees, `[m, d]`.
        targets: class ids `[m]` or probabilities `[m, c]`; multi-hot `[m, c]` in `[0, 1]` with
            `task="multi_label"`.
        classifier: maps `[..., d]` to `[..., c]` (the model's own head).
        lam: weights `[m, n]`; sampled with the config's `n` and `alpha` when None.
        config: a `MultiMixConfig`; None: the defaults.
        affine: whether `classifier` is affine; None detects it (`is_affine`). Affine heads use
            the exact logit-space shortcut, other heads run on the mixed embeddings.
        num_classes: `c`; inferred from the classifier when None.
        clean_logits: the clean batch's logits `[m, c]` if already computed (clean term).
        teacher_probs: teacher probabilities `[m, c]` for self-distillation: with
            `distill_weight = beta`, the loss is `(1-beta) CE + beta T^2 KL(q_mix || softmax(g(z_mix)/T))`.
        validate: check the values of `targets` (class ids in range, probability rows
            non-negative and summing to 1), of a given `lam` (columns on the simplex) and of
            `teacher_probs`: one reduction and one host sync each. `MultiMixHead` passes False
            for its own weights and labels it checked already.
        **options: `MultiMixConfig` options overriding `config`.

    Returns:
        Scalar float32 loss.

    Example:
        >>> head = torch.nn.Linear(16, 3)
        >>> loss = multimix_loss(torch.randn(8, 16), torch.randint(0, 3, (8,)), head, n=100)
        >>> loss.shape, loss.dtype
        (torch.Size([]), torch.float32)
    """
    cfg = resolve_config(config, options, "multimix_loss", POOLED_LOSS_OPTIONS)
    check_rank(z, 2, "z", "[m, d]")
    m = z.shape[0]
    check_batch_size(m)
    if lam is not None:
        check_lambda(lam, m, None, values=validate)
        lam = lam.unsqueeze(0)
    return _loss(
        z.unsqueeze(1), targets, classifier, lam, cfg, mask=None, attention=None, per_position=False,
        affine=affine, num_classes=num_classes, clean_logits=clean_logits, teacher_probs=teacher_probs,
        validate=validate,
    )


def dense_multimix_loss(
    z: Tensor,
    targets: Tensor,
    classifier: Callable[[Tensor], Tensor],
    lam: Tensor | None = None,
    config: MultiMixConfig | None = None,
    *,
    attention: str | Tensor | None = None,
    pooled: Tensor | None = None,
    mask: Tensor | None = None,
    affine: bool | None = None,
    num_classes: int | None = None,
    clean_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    validate: bool = True,
    **options: Any,
) -> Tensor:
    """Dense MultiMix loss: mixes every position, weighted by attention, and averages the
    soft-target cross-entropy over all valid `(mix, position)` terms.

    The options are `multimix_loss`'s plus `per_position` (draw `lam` per position,
    `[r, m, n]`, or share one) and `detach_attention`, from `config` and keyword `options`.
    The arguments not listed below are as in `multimix_loss`.

    Args:
        z: position embeddings in the classifier's input space, `[m, r, d]`.
        targets: class ids `[m]` or probabilities `[m, c]`.
        classifier: maps `[..., d]` to `[..., c]`, applied at every position.
        lam: `[r, m, n]` or `[m, n]` (shared by positions); sampled when None.
        attention: `"pooled"`, `"cam"`, `"uniform"` or a tensor `[m, r]`; None: the config's
            (default `"uniform"`).
        pooled: pooled embedding `[m, d]` for `"pooled"` attention and the clean term; default:
            mean of the real positions.
        mask: bool `[m, r]`, True for real positions.
        teacher_probs: `[m, c]` (per example) or `[m, r, c]` (per position).

    Returns:
        Scalar float32 loss.

    Example:
        >>> head = torch.nn.Linear(16, 3)
        >>> z, y = torch.randn(4, 9, 16), torch.tensor([0, 2, 1, 1])
        >>> dense_multimix_loss(z, y, head, n=50, attention="cam").shape
        torch.Size([])
    """
    cfg = resolve_config(config, options, "dense_multimix_loss", DENSE_LOSS_OPTIONS)
    if attention is None:
        attention = cfg.attention
    check_rank(z, 3, "z", "[m, r, d]")
    m, r, _ = z.shape
    check_batch_size(m)
    check_positions(r)
    # With one position the attention is not needed (nothing to weigh), but a wrong one is still wrong.
    if isinstance(attention, Tensor):
        if r == 1:  # with more positions build_attention checks it
            check_attention(attention, m, r)
    elif attention not in ATTENTION_KINDS:
        raise ValueError(
            f"unknown attention {attention!r}; choose one of {ATTENTION_KINDS}, or pass a tensor [m, r]"
            + (" ('cls' needs MultiMixHead on a ViT-like model)." if attention == "cls" else ".")
        )
    if lam is not None:
        check_lambda(lam, m, r, values=validate)
    if mask is not None:
        check_mask(mask, m, r)
    return _loss(
        z, targets, classifier, lam, cfg, mask=mask, attention=attention, pooled=pooled,
        per_position=cfg.per_position, affine=affine, num_classes=num_classes, clean_logits=clean_logits,
        teacher_probs=teacher_probs, validate=validate,
    )


def _check_teacher(teacher: Tensor, m: int, r: int, c: int) -> None:
    if teacher.dim() == 2 and tuple(teacher.shape) == (m, c):
        return
    if teacher.dim() == 3 and tuple(teacher.shape) == (m, r, c):
        return
    raise ValueError(
        f"teacher_probs must have shape [m, c] = [{m}, {c}] (or [m, r, c] per position), got {tuple(teacher.shape)}."
    )


def _loss(
    tokens: Tensor,
    targets: Tensor,
    classifier: Callable[[Tensor], Tensor],
    lam: Tensor | None,
    cfg: MultiMixConfig,
    *,
    mask: Tensor | None,
    attention: str | Tensor | None,
    per_position: bool,
    affine: bool | None,
    num_classes: int | None,
    clean_logits: Tensor | None,
    teacher_probs: Tensor | None,
    pooled: Tensor | None = None,
    validate: bool = True,
) -> Tensor:
    n, alpha, label_smoothing, clean_weight = cfg.n, cfg.alpha, cfg.label_smoothing, cfg.clean_weight
    distill_weight, temperature, chunk_size = cfg.distill_weight, cfg.temperature, cfg.chunk_size
    detach_attention = cfg.detach_attention
    m, r, d = tokens.shape
    multi_label = is_multi_label(cfg.task)
    check_targets(targets, m, num_classes, values=validate, multi_label=multi_label)
    # Class ids are range-checked once the classifier's size is known, below.
    checked = validate and (num_classes is not None or targets.dim() == 2)
    if distill_weight > 0 and teacher_probs is None:
        raise ValueError(
            "distill_weight > 0 needs teacher_probs (e.g. teacher_probabilities(clean_logits.detach(), T, task): "
            "softmax, or sigmoid for task='multi_label')."
        )
    if lam is None:
        lam = sample_lambda(m, n, alpha, positions=r if per_position and r > 1 else None, device=tokens.device)
    if lam.dim() == 2:
        lam = lam.unsqueeze(0)
    shortcut = is_affine(classifier) if affine is None else affine
    needs_token_logits = shortcut or (isinstance(attention, str) and attention == "cam")

    # The classifier on clean positions runs in the caller's precision (it is the big matmul);
    # everything after it runs in float32.
    token_logits = classifier(tokens) if needs_token_logits else None
    if num_classes is None:
        if token_logits is not None:
            num_classes = token_logits.shape[-1]
        elif targets.dim() == 2:
            num_classes = targets.shape[1]
        else:
            with torch.no_grad():
                num_classes = classifier(tokens[:1, 0]).shape[-1]
    dtype = torch.promote_types(tokens.dtype, torch.float32)
    y = _targets(targets, num_classes, label_smoothing, cfg.task, validate=validate and not checked).to(dtype)
    if clean_weight > 0 and clean_logits is None:
        clean_logits = classifier(pooled if pooled is not None else masked_mean(tokens, mask))
    if teacher_probs is not None and distill_weight > 0:
        _check_teacher(teacher_probs, m, r, num_classes)
        if validate and multi_label:
            check_unit_interval(teacher_probs, "teacher_probs", "pass per-class probabilities, e.g. sigmoid(teacher_logits / T)")
        elif validate:
            check_distributions(
                teacher_probs, -1, "teacher_probs", "probability rows",
                "pass probabilities, e.g. softmax(teacher_logits / T, dim=-1)",
            )

    with torch.autocast(device_type=tokens.device.type, enabled=False):
        if attention is None or r == 1:
            a = _position_weights(m, r, None, mask, tokens.device).to(dtype)
        else:
            a = build_attention(
                attention, tokens, pooled=pooled, token_logits=token_logits, targets=targets,
                mask=mask, detach=detach_attention,
            )
            if mask is not None:
                a = a * mask.to(a.dtype)
            a = a.to(dtype)
        source = token_logits.to(dtype) if shortcut else tokens
        total, count = _chunked_mixed_loss(
            source, shortcut, classifier, lam.to(dtype), a, y,
            teacher_probs.to(dtype) if (teacher_probs is not None and distill_weight > 0) else None,
            distill_weight, temperature, chunk_size, multi_label,
        )
        loss = total / count.clamp_min(1)
        if clean_weight > 0:
            criterion = binary_cross_entropy if multi_label else soft_cross_entropy
            loss = loss + clean_weight * criterion(clean_logits, y).mean()
    return loss


class _MixedLogSumExp(torch.autograd.Function):
    """`logsumexp(w^T @ logits)` over classes, per position: `wt [r, k, m]`, `logits [r, m, c]`
    -> `[r, k]`.

    The same value and gradients as `torch.logsumexp(torch.bmm(wt, logits), -1)`, in fewer passes
    over the `[r, k, c]` mixed logits, the largest tensor of the loss: they are exponentiated in
    place and kept for the backward instead of the mixed logits plus the autograd intermediates
    of `logsumexp`. Measured: `python bench/loss_speed.py`.
    """

    @staticmethod
    def forward(ctx, wt: Tensor, logits: Tensor) -> Tensor:
        e = torch.bmm(wt, logits)
        top = e.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # +-inf rows as in torch.logsumexp
        e.sub_(top).exp_()
        total = e.sum(dim=-1, keepdim=True)
        ctx.save_for_backward(wt, logits, e, total)
        return (total.log() + top).squeeze(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        wt, logits, e, total = ctx.saved_tensors
        with torch.autocast(device_type=grad.device.type, enabled=False):  # float32, as the forward
            # d/d(mixed) = softmax(mixed) * grad = e * scale, with one scale per (position, mix): it is
            # applied to the [r, k, m] side of each matmul instead of the larger [r, k, c] exponentials,
            # which stay as saved (the graph can be reused).
            scale = grad.unsqueeze(-1) / total  # [r, k, 1]
            grad_wt = torch.bmm(e, logits.transpose(1, 2)).mul_(scale) if ctx.needs_input_grad[0] else None
            grad_logits = torch.bmm((wt * scale).transpose(1, 2), e) if ctx.needs_input_grad[1] else None
        return grad_wt, grad_logits


def _shortcut_ce(w: Tensor, valid: Tensor, logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Soft-target cross-entropy of the mixed logits without materialising the mixed targets.

    With mixed logits `l~ = sum_j w_j l_j` and targets `y~ = sum_i w_i y_i` (per position),
    `CE = sum_c y~[c] * lse(l~) - y~ . l~`, and `y~ . l~ = sum_ij w_i w_j (y_i . l_j)` is a
    quadratic form in the `m x m` matrix `l_j . y_i`: only the log-sum-exp touches the
    `[n, r, c]` mixed logits. Same value as `soft_cross_entropy(l~, y~)`.

    `w [r, m, k]`, `valid [k, r]`, clean logits `[m, r, c]`, targets `y [m, c]` (one per example) or
    `[m, r, c]` (one per position: token classification).
    """
    lse = _MixedLogSumExp.apply(w.transpose(1, 2), logits.transpose(0, 1))  # [r, k] from [r, k, c] mixed logits
    per_position = y.dim() == 3
    gram = torch.einsum("jrc,irc->rji" if per_position else "jrc,ic->rji", logits, y)  # [r, m(logits j), m(targets i)]
    cross = (w * torch.bmm(gram.transpose(1, 2), w)).sum(dim=1)  # [r, k]: sum_ij w_i w_j (y_i . l_j)
    mass = torch.einsum("rmk,mr->rk" if per_position else "rmk,m->rk", w, y.sum(dim=-1))  # 1 for distributions
    term = (lse * mass - cross).t()  # [k, r]
    valid = valid.to(term.dtype)
    return (term * valid).sum(), valid.sum()


def _chunked_mixed_loss(
    source: Tensor,
    shortcut: bool,
    classifier: Callable[[Tensor], Tensor],
    lam: Tensor,
    a: Tensor,
    y: Tensor,
    teacher: Tensor | None,
    beta: float,
    temperature: float,
    chunk_size: int | None,
    multi_label: bool = False,
) -> tuple[Tensor, Tensor]:
    """Sum of loss terms over valid `(mix, position)` pairs and their count.

    `source` is `[m, r, c]` clean logits (shortcut) or `[m, r, d]` embeddings; `y` is `[m, c]` (one
    target per example) or `[m, r, c]` (one per position, token classification). Multi-label
    terms are the binary cross-entropy of the mixed logits against the mixed multi-hot targets
    (no quadratic-form shortcut: the softplus is not a log-sum-exp over classes).
    """
    criterion, kl = (binary_cross_entropy, binary_distillation_kl) if multi_label else \
        (soft_cross_entropy, distillation_kl)
    n = lam.shape[-1]
    r = source.shape[1]
    if chunk_size is None:
        width = source.shape[-1] + (0 if shortcut else y.shape[-1])
        chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // (r * width))
    chunk_size = min(chunk_size, n)
    recompute = chunk_size < n and torch.is_grad_enabled()

    def chunk_loss(lam_c: Tensor, a_: Tensor, source_: Tensor) -> tuple[Tensor, Tensor]:
        w, valid = _normalise(lam_c, a_)  # [r, m, k], [k, r]
        if shortcut and teacher is None and not multi_label:
            return _shortcut_ce(w, valid, source_, y)
        if shortcut:
            logits = torch.einsum("rmk,mrc->krc", w, source_)
        else:
            z_mix = torch.einsum("rmk,mrd->krd", w, source_.to(w.dtype))
            param = next(iter(getattr(classifier, "parameters", lambda: iter(()))()), None)
            logits = _wide(classifier(z_mix if param is None else z_mix.to(param.dtype)))
        y_mix = torch.einsum("rmk,mrc->krc" if y.dim() == 3 else "rmk,mc->krc", w, y)
        term = criterion(logits, y_mix)
        if teacher is not None:
            spec = "rmk,mc->krc" if teacher.dim() == 2 else "rmk,mrc->krc"
            q_mix = torch.einsum(spec, w, teacher)
            term = (1 - beta) * term + beta * temperature**2 * kl(logits, q_mix, temperature)
        valid = valid.to(term.dtype)
        return (term * valid).sum(), valid.sum()

    total = lam.new_zeros(())
    count = lam.new_zeros(())
    for start in range(0, n, chunk_size):
        lam_c = lam[..., start : start + chunk_size]
        if recompute:
            part, cnt = checkpoint(chunk_loss, lam_c, a, source, use_reentrant=False)
        else:
            part, cnt = chunk_loss(lam_c, a, source)
        total = total + part
        count = count + cnt
    return total, count

"""Pure tensor maths of MultiMix: sampling the interpolation weights, mixing embeddings and
targets, and the attention maps of dense mode. Knows nothing about timm or transformers.

Shapes: `m` examples in the batch, `n` mixes, `d` embedding size, `c` classes, `r` positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DEFAULT_ALPHA
from ._checks import (
    AlphaLike,
    check_alpha,
    check_attention,
    check_batch_size,
    check_positions,
    check_lambda,
    check_mask,
    check_positive_int,
    check_rank,
    check_targets,
)

ATTENTION_KINDS = ("pooled", "cam", "uniform")


def sample_lambda(
    m: int,
    n: int,
    alpha: AlphaLike = DEFAULT_ALPHA,
    *,
    positions: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Samples MultiMix interpolation weights.

    Each column is a Dirichlet(`alpha * 1_m`) sample: non-negative, summing to 1 over the `m`
    examples. A `(lo, hi)` range draws one `alpha` uniformly per call. Uses the global torch
    RNG, so `torch.manual_seed` makes it reproducible. The default `alpha` is
    `MultiMixConfig`'s (0.2).

    The Dirichlet is normalised Gamma(`alpha`) draws, computed in log space: for `alpha < 1`,
    `Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha)` (exact), so nothing underflows and a tiny
    `alpha` gives its limit, a random vertex of the simplex. On CPU the Gamma(`a >= 1`) draws
    use Marsaglia and Tsang's exact rejection method on one flat tensor (one normal and one
    uniform per draw, the few rejected draws redrawn): about 2x faster than
    `torch._standard_gamma` at `[196, 32, 1000]` on one CPU thread
    (`python bench/loss_speed.py --sampler`, bench/results/sampler_speed.json).

    Args:
        m: examples in the batch.
        n: number of mixes (interpolation vectors).
        alpha: Dirichlet concentration, a float or a `(lo, hi)` range.
        positions: if given (`r`), draw independently per position: shape `[r, m, n]`.
        device: where to sample.

    Returns:
        float32 tensor `[m, n]`, or `[r, m, n]` with `positions=r`.

    Example:
        >>> lam = sample_lambda(4, 1000, alpha=1.0)
        >>> lam.shape, bool(torch.allclose(lam.sum(0), torch.ones(1000)))
        (torch.Size([4, 1000]), True)
    """
    m = check_positive_int(m, "m")
    n = check_positive_int(n, "n")
    if positions is not None:
        positions = check_positive_int(positions, "positions")
    lo, hi = check_alpha(alpha)
    a = lo if lo == hi else lo + (hi - lo) * torch.rand(()).item()
    shape = (m, n) if positions is None else (positions, m, n)
    if m == 1:
        return torch.ones(shape, device=device)
    device = torch.device("cpu") if device is None else torch.device(device)
    boost = a < 1.0
    log_g = _log_gamma(a + 1.0 if boost else a, shape, device)
    if boost:
        # alpha * log Gamma(alpha) = alpha * log Gamma(alpha + 1) + log U: finite however small alpha is.
        u = torch.rand(shape, device=device).clamp_min_(torch.finfo(torch.float32).tiny)
        log_g = log_g.mul_(a).add_(u.log_())
    # softmax over the examples of log Gamma = Gamma / sum(Gamma); `scale` undoes the `alpha *`
    # above (at most float32's largest, so a tiny alpha gives an exact one-hot, never NaN).
    scale = min(1.0 / a, torch.finfo(torch.float32).max) if boost else 1.0
    log_g = log_g.sub_(log_g.amax(dim=-2, keepdim=True))
    if scale != 1.0:
        log_g = log_g.mul_(scale)
    g = log_g.exp_()
    return g.div_(g.sum(dim=-2, keepdim=True))


#: Largest shape parameter for which the float32 rejection test below is accurate: its
#: terms grow like `d` while their difference stays O(1), so float32 rounding (`d * 6e-8`) must
#: stay small. Larger ones (rare) use `torch._standard_gamma`.
_MT_MAX_SHAPE = 64.0


def _log_gamma(a: float, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """`log` of Gamma(`a`) draws for `a >= 1`, float32 `shape`."""
    if device.type != "cpu" or a > _MT_MAX_SHAPE:
        # GPUs sample Gamma fast and without the host sync of a rejection loop.
        return torch._standard_gamma(torch.full(shape, a, dtype=torch.float32, device=device)).log_()
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    k = math.prod(shape)
    log_v, ok = _marsaglia_tsang(d, c, k)
    redo = (~ok).nonzero().squeeze(1)
    while redo.numel():  # about 2-5% of the draws, then 2-5% of those, ...
        again, ok = _marsaglia_tsang(d, c, redo.numel())
        log_v[redo[ok]] = again[ok]
        redo = redo[~ok]
    return log_v.add_(math.log(d)).view(shape)


def _marsaglia_tsang(d: float, c: float, k: int) -> tuple[Tensor, Tensor]:
    """`k` proposals `log v` of Marsaglia and Tsang (2000), Gamma = `d * v`, and which are accepted.

    `x ~ N(0, 1)`, `v = (1 + c x)^3`, accepted when `log U < x^2 / 2 + d - d v + d log v`
    (never when `1 + c x <= 0`: its log is NaN and every comparison with NaN is False).
    """
    x = torch.randn(k)
    t = x.mul(c).add_(1.0)
    v = t.mul(t).mul_(t)
    log_v = t.log_().mul_(3.0)
    log_u = torch.rand(k).log_()
    bound = x.mul_(x).mul_(0.5).add_(d).sub_(v.mul_(d)).add_(log_v, alpha=d)
    return log_v, log_u < bound


def sample_class_balanced_lambda(
    targets: Tensor,
    n: int,
    alpha: AlphaLike = 0.2,
    *,
    num_classes: int | None = None,
) -> Tensor:
    """MultiMix weights that give every class in the batch the same expected share of the mixes.

    Plain `sample_lambda` draws `Dir(alpha * 1_m)`: each example's expected weight is `1/m`, so a
    class holding a few examples of a long-tailed batch gets a few percent of the mixed target mass,
    and each example's gradient pulls its logits towards the batch's (imbalanced) class histogram:
    with an affine classifier the mixed loss trains example `i` towards `(y_i + A * p) / (A + 1)`,
    where `p` is the batch's class histogram and `A = alpha * m` (6.4 for Dir(0.2) over 32), so a rare
    example's target is mostly the frequent class. Here example `i` of class `c` gets concentration
    `alpha_i = alpha * m / (K * count_c)` (`K` classes present, `count_c` examples of class `c`; the
    same total `alpha * m`), so `E[lam_i] = 1 / (K * count_c)`: each present class gets `1/K` of the
    mass in expectation and the histogram `p` above becomes uniform over the present classes. On a
    balanced batch it is `Dir(alpha * 1_m)`. Soft targets count their class mass: `count = sum_i y_i`
    and example `i`'s count is `y_i . count`.

    Args:
        targets: class ids `[m]` (with `num_classes`, or the largest id + 1) or probabilities `[m, c]`.
        n: number of mixes.
        alpha: the Dirichlet concentration of a balanced batch, a float or a `(lo, hi)` range drawn per call.
        num_classes: `c` for class-id targets.

    Returns:
        float32 `[m, n]`, columns non-negative and summing to 1, on the targets' device.

    Example:
        >>> lam = sample_class_balanced_lambda(torch.tensor([0, 0, 0, 1]), 20000, alpha=0.2)
        >>> lam.shape, round(float(lam[3].mean()), 1)   # the single class-1 example: half the mass
        (torch.Size([4, 20000]), 0.5)
    """
    check_positive_int(n, "n")
    if not isinstance(targets, Tensor) or targets.dim() not in (1, 2):
        raise ValueError(f"targets must be class ids [m] or probabilities [m, c], got "
                         f"{getattr(targets, 'shape', type(targets).__name__)}")
    m = targets.shape[0]
    check_positive_int(m, "m")
    lo, hi = check_alpha(alpha)
    a = lo if lo == hi else lo + (hi - lo) * torch.rand(()).item()
    if targets.dim() == 1:
        c = num_classes if num_classes is not None else int(targets.max()) + 1
        y = F.one_hot(targets.long(), c).float()
    else:
        y = targets.float()
    if m == 1:
        return torch.ones(m, n, device=targets.device)
    counts = y.sum(0)  # [c]
    present = (counts > 0).sum().clamp_min(1)
    # [m]: the size of each example's class; an elementwise sum, not a matmul, so autocast keeps it float32
    own = (y * counts).sum(1).clamp_min(torch.finfo(torch.float32).tiny)
    per_example = (a * m / (present * own)).float()  # [m]
    if torch.allclose(per_example, torch.full_like(per_example, a)):
        return sample_lambda(m, n, a, device=targets.device)  # a balanced batch: exactly Dir(alpha * 1_m)
    conc = per_example.unsqueeze(1).expand(m, n).contiguous()
    g = torch._standard_gamma(conc)
    top = g.amax(dim=0, keepdim=True)
    tiny = torch.finfo(g.dtype).tiny
    g = g / top.clamp_min(tiny)
    # as in sample_lambda: a column whose draws all underflow is a vertex of the simplex, drawn with
    # probability proportional to each example's expected weight
    pick = torch.multinomial(conc[:, 0], n, replacement=True).unsqueeze(0)
    onehot = torch.zeros_like(g).scatter_(0, pick, 1.0)
    g = torch.where(top <= tiny, onehot, g)
    return g / g.sum(dim=0, keepdim=True)


def sample_pair_lambda(m: int, alpha: float = 1.0, *, device: torch.device | str | None = None) -> Tensor:
    """Pairwise (manifold) mixup as interpolation weights: `[m, m]`, column `k` mixes example
    `k` with a random partner, `lam * e_k + (1 - lam) * e_perm(k)`, one `lam ~ Beta(alpha, alpha)`.

    Feeding it to `multimix` / `multimix_loss` gives manifold mixup at the same layer, so the
    baseline differs from MultiMix only in the weights.

    Example:
        >>> lam = sample_pair_lambda(4, alpha=1.0)
        >>> lam.shape, bool(torch.allclose(lam.sum(0), torch.ones(4)))
        (torch.Size([4, 4]), True)
    """
    check_positive_int(m, "m")
    lo, hi = check_alpha(alpha)
    a = torch.tensor(lo if lo == hi else lo + (hi - lo) * torch.rand(()).item())
    lam = torch.distributions.Beta(a, a).sample().item()
    perm = torch.randperm(m, device=device)
    eye = torch.eye(m, device=device)
    return lam * eye + (1.0 - lam) * eye[:, perm]


def one_hot_targets(
    y: Tensor, num_classes: int, label_smoothing: float = 0.0, *, validate: bool = True
) -> Tensor:
    """Turns `[m]` class ids or `[m, c]` probabilities into float32 `[m, c]` targets.

    Label smoothing mixes with the uniform distribution: `(1 - eps) * y + eps / c`.

    Args:
        y: class ids `[m]` in `[0, num_classes)`, or `[m, c]` rows that are non-negative and sum to 1.
        num_classes: `c`.
        label_smoothing: `eps` in `[0, 1)`.
        validate: check the values of `y` (one reduction, one host sync); False for targets
            checked already.

    Example:
        >>> one_hot_targets(torch.tensor([0, 2]), 3, label_smoothing=0.3)
        tensor([[0.8000, 0.1000, 0.1000],
                [0.1000, 0.1000, 0.8000]])
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    check_targets(y, y.shape[0] if isinstance(y, Tensor) and y.dim() else 0, num_classes, values=validate)
    out = F.one_hot(y.long(), num_classes).float() if y.dim() == 1 else y.to(torch.promote_types(y.dtype, torch.float32))
    if label_smoothing > 0:
        out = out * (1.0 - label_smoothing) + label_smoothing / num_classes
    return out


def _targets_2d(y: Tensor, m: int, num_classes: int | None, validate: bool) -> Tensor:
    check_targets(y, m, num_classes, values=validate)
    if y.dim() == 1:
        if num_classes is None:
            raise ValueError("integer targets need num_classes=c to build one-hot vectors; or pass [m, c] targets.")
        return F.one_hot(y.long(), num_classes).float()
    return y


def multimix(
    z: Tensor, y: Tensor, lam: Tensor, *, num_classes: int | None = None, validate: bool = True
) -> tuple[Tensor, Tensor]:
    """Interpolates `n` tuples over the whole batch (MultiMix, pooled).

    Args:
        z: embeddings `[m, d]`.
        y: targets `[m, c]` (one-hot, smoothed or soft: rows non-negative, summing to 1), or
            class ids `[m]` with `num_classes`.
        lam: interpolation weights `[m, n]` (columns non-negative, summing to 1), from `sample_lambda`.
        validate: check the values of `lam` and `y` (one reduction and one host sync each);
            False for weights from `sample_lambda` and targets checked already.

    Returns:
        `(z_mix [n, d], y_mix [n, c])`, in float32 for half-precision inputs.

    Example:
        >>> z, y = torch.randn(8, 16), torch.eye(4)[torch.arange(8) % 4]
        >>> z_mix, y_mix = multimix(z, y, sample_lambda(8, 100))
        >>> z_mix.shape, y_mix.shape
        (torch.Size([100, 16]), torch.Size([100, 4]))
    """
    check_rank(z, 2, "z", "[m, d]")
    m = z.shape[0]
    check_batch_size(m)
    check_lambda(lam, m, None, values=validate)
    y = _targets_2d(y, m, num_classes, validate)
    dtype = torch.promote_types(torch.promote_types(z.dtype, y.dtype), torch.float32)
    lam_t = lam.to(dtype).t()
    return lam_t @ z.to(dtype), lam_t @ y.to(dtype)


def dense_weights(
    lam: Tensor, m: int, r: int, attn: Tensor | None = None, mask: Tensor | None = None, *, validate: bool = True
) -> tuple[Tensor, Tensor]:
    """Per-position interpolation weights of Dense MultiMix (docs/method.md).

    `w[j, i, k] = a[i, j] * lam[j, i, k] / sum_i' a[i', j] * lam[j, i', k]`.

    Args:
        lam: `[r, m, n]`, or `[m, n]` shared by all positions.
        attn: non-negative attention `[m, r]`; None means uniform.
        mask: bool `[m, r]`, True where a position is real.
        validate: check that the columns of `lam` are on the simplex (one reduction, one host
            sync); False for weights from `sample_lambda`.

    Returns:
        `(w [r, m, n], valid [n, r])`: `w` sums to 1 over examples wherever `valid`, and is
        zero (never NaN) elsewhere.
    """
    check_batch_size(m, "lam")
    check_lambda(lam, m, r, values=validate)
    if mask is not None:
        check_mask(mask, m, r)
    if attn is not None:
        check_attention(attn, m, r)
    a = _position_weights(m, r, attn, mask, lam.device)
    return _normalise(lam, a)


def _position_weights(m: int, r: int, attn: Tensor | None, mask: Tensor | None, device) -> Tensor:
    """Attention times mask, `[m, r]` float32."""
    a = torch.ones(m, r, device=device) if attn is None else attn.float()
    if mask is not None:
        a = a * mask.to(a.dtype)
    return a


def _normalise(lam: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """`lam [r, m, k] | [m, k]`, `a [m, r]` -> `(w [r, m, k], valid [k, r])`."""
    lam = lam.to(torch.promote_types(torch.promote_types(lam.dtype, a.dtype), torch.float32))
    w = a.to(lam.dtype).t().unsqueeze(-1) * (lam if lam.dim() == 3 else lam.unsqueeze(0))
    denom = w.sum(dim=1, keepdim=True)
    valid = denom > 0
    w = w / torch.where(valid, denom, torch.ones_like(denom))
    return w, valid.squeeze(1).t()


def dense_multimix(
    z: Tensor,
    y: Tensor,
    lam: Tensor,
    attn: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    num_classes: int | None = None,
    validate: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Dense MultiMix: interpolates every position, weighted by attention.

    Args:
        z: position embeddings `[m, r, d]`.
        y: targets `[m, c]`, or class ids `[m]` with `num_classes`.
        lam: `[r, m, n]` (one draw per position), or `[m, n]` shared by all positions.
        attn: non-negative attention `[m, r]`, None for uniform.
        mask: bool `[m, r]`, True for real positions (padding and prefix tokens are False).
        validate: check the values of `lam` and `y`, as in `multimix`.

    Returns:
        `(z_mix [n, r, d], y_mix [n, r, c], valid [n, r])`; entries that are not `valid` (no
        example has weight at that position) are zeros.

    Example:
        >>> z, y = torch.randn(4, 9, 16), torch.tensor([0, 1, 2, 1])
        >>> lam = sample_lambda(4, 10, positions=9)
        >>> z_mix, y_mix, valid = dense_multimix(z, y, lam, num_classes=3)
        >>> z_mix.shape, y_mix.shape, valid.shape
        (torch.Size([10, 9, 16]), torch.Size([10, 9, 3]), torch.Size([10, 9]))
    """
    check_rank(z, 3, "z", "[m, r, d]")
    m, r, _ = z.shape
    check_batch_size(m)
    check_positions(r)
    y = _targets_2d(y, m, num_classes, validate)
    w, valid = dense_weights(lam, m, r, attn, mask, validate=validate)
    dtype = torch.promote_types(z.dtype, torch.float32)
    w = w.to(torch.promote_types(w.dtype, dtype))
    z_mix = torch.einsum("rmk,mrd->krd", w, z.to(w.dtype))
    y_mix = torch.einsum("rmk,mc->krc", w, y.to(w.dtype))
    return z_mix, y_mix, valid


# ----------------------------------------------------------------------------- attention


def _masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    scores = scores.float()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def attention_pooled(tokens: Tensor, pooled: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """Similarity of each position to the example's pooled embedding, softmax over positions.

    Args:
        tokens: `[m, r, d]`.
        pooled: `[m, d]`; None uses the mean of the real positions.
        mask: bool `[m, r]`.

    Returns:
        `[m, r]`, each row summing to 1 over the real positions.
    """
    if pooled is None:
        pooled = masked_mean(tokens, mask)
    scores = torch.einsum("mrd,md->mr", tokens.float(), pooled.float()) / math.sqrt(tokens.shape[-1])
    return _masked_softmax(scores, mask)


def attention_cam(token_logits: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """Class activation of each position for the example's own label, softmax over positions.

    Args:
        token_logits: classifier applied at every position, `[m, r, c]`.
        y: class ids `[m]` or target probabilities `[m, c]` (activation averaged under them).
        mask: bool `[m, r]`.

    Returns:
        `[m, r]`.
    """
    if y.dim() == 1:
        idx = y.long().view(-1, 1, 1).expand(-1, token_logits.shape[1], 1)
        scores = token_logits.float().gather(-1, idx).squeeze(-1)
    else:
        scores = torch.einsum("mrc,mc->mr", token_logits.float(), y.float())
    return _masked_softmax(scores, mask)


def attention_uniform(m: int, r: int, mask: Tensor | None = None, device=None) -> Tensor:
    """No attention: every real position weighs 1. Returns `[m, r]`."""
    return _position_weights(m, r, None, mask, mask.device if mask is not None else device)


def build_attention(
    kind: str | Tensor,
    tokens: Tensor,
    *,
    pooled: Tensor | None = None,
    token_logits: Tensor | None = None,
    targets: Tensor | None = None,
    mask: Tensor | None = None,
    detach: bool = True,
) -> Tensor:
    """Builds the dense-mode attention `[m, r]` by name, or checks a user tensor.

    Args:
        kind: `"pooled"`, `"cam"`, `"uniform"`, or a tensor `[m, r]`.
        tokens: position embeddings `[m, r, d]`.
        pooled: pooled embedding `[m, d]` for `"pooled"` (default: mean of real positions).
        token_logits: `[m, r, c]`, required for `"cam"`.
        targets: `[m]` ids or `[m, c]` probabilities, required for `"cam"`.
        mask: bool `[m, r]`.
        detach: stop gradients through the attention (the default, as in the method).
    """
    m, r = tokens.shape[:2]
    if isinstance(kind, Tensor):
        check_attention(kind, m, r)
        a = kind.float()
    elif kind == "pooled":
        a = attention_pooled(tokens, pooled, mask)
    elif kind == "cam":
        if token_logits is None or targets is None:
            raise ValueError('attention="cam" needs token_logits [m, r, c] and targets.')
        a = attention_cam(token_logits, targets, mask)
    elif kind == "uniform":
        a = attention_uniform(m, r, mask, tokens.device)
    else:
        raise ValueError(
            f"unknown attention {kind!r}; choose one of {ATTENTION_KINDS}, 'cls' (ViT-like models, through "
            "MultiMixHead), or pass a tensor [m, r]."
        )
    return a.detach() if detach else a


def masked_mean(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the real positions: `[m, r, d]` -> `[m, d]`."""
    if mask is None:
        return tokens.mean(dim=1)
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)

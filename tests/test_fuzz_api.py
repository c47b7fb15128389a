"""Fuzzing the public API: shapes, dtypes, masks, label forms, m, n, r, c and alpha forms, valid
and invalid. Every draw knows whether it is valid: an invalid one must raise a `ValueError` or
`TypeError` naming the argument at fault, a valid one must give finite results (a finite loss
of at least float32 with finite gradients) with the properties of METHOD.md section 4.

The budget comes from the Hypothesis profile (tests/conftest.py): `fast` by default,
`HYPOTHESIS_PROFILE=large` for a long run.
"""

from __future__ import annotations

import copy
import functools
import re
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn

from hf_multimix import (
    MultiMixHead,
    dense_multimix,
    dense_multimix_loss,
    multimix,
    multimix_loss,
    one_hot_targets,
    sample_lambda,
)

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
dtypes = st.sampled_from(DTYPES)


def wide(dtype):
    return torch.promote_types(dtype, torch.float32)


def expect(call, bad):
    """Runs `call`. `bad` is None for a valid draw (then it must succeed) or the names one of
    which an invalid draw's error must contain."""
    event("valid draw" if bad is None else "invalid draw")  # --hypothesis-show-statistics shows the split
    if bad is None:
        return call()
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert any(re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", message) for name in bad), (
        f"the error does not name {bad}: {message}"
    )
    return None


# --------------------------------------------------------------------------- strategies


def kinds(valid, invalid, bad):
    """The kinds of one argument to draw from: its invalid ones when `bad`, else its valid ones."""
    return st.sampled_from(invalid if bad else valid)


@st.composite
def alphas(draw, bad=False):
    """`(alpha, bad names)`."""
    kind = draw(kinds(["float", "range"], ["zero", "negative", "nan", "inf", "reversed", "text", "triple"], bad))
    a = draw(st.floats(0.01, 20.0))
    b = draw(st.floats(0.01, 20.0))
    if kind == "float":
        return a, None
    if kind == "range":
        return (min(a, b), max(a, b)), None
    if kind == "reversed" and a != b:
        return (max(a, b), min(a, b)), ["alpha"]
    bad = {"zero": 0.0, "negative": -a, "nan": float("nan"), "inf": float("inf"), "text": "big",
           "triple": (a, b, a), "reversed": (a, float("inf"))}[kind]
    return bad, ["alpha"]


@st.composite
def targets(draw, m, c, bad=False, batch_known=True):
    """`(y, bad names)`: class ids or `[m, c]` rows for `c` classes (invalid ones when `bad`)."""
    invalid = ["out_of_range", "ignore_index", "float_ids", "bool_ids", "unnormalised", "negative", "nan", "wrong_c",
               "3d", "list", "int_rows"] + (["wrong_m"] if batch_known else [])
    kind = draw(kinds(["ids", "onehot", "soft", "smoothed"], invalid, bad))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    ids = torch.randint(0, c, (m,), generator=g)
    dtype = draw(dtypes)
    if kind == "ids":
        return ids, None
    if kind == "onehot":
        return F.one_hot(ids, c).to(dtype), None
    if kind == "soft":
        return torch.softmax(3 * torch.randn(m, c, generator=g), -1).to(dtype), None
    if kind == "smoothed":
        return (0.9 * F.one_hot(ids, c) + 0.1 / c).to(dtype), None
    if kind == "out_of_range":
        return (ids + c) if m else ids, (["label"] if m else None)
    if kind == "ignore_index":
        return torch.full((m,), -100), (["label"] if m else None)
    if kind == "float_ids":
        return ids.float(), ["targets", "labels"]
    if kind == "bool_ids":
        return ids > 0, ["targets", "labels"]
    if kind == "unnormalised":
        return (torch.rand(m, c, generator=g) + 0.5).to(dtype), (["targets", "labels"] if m else None)
    if kind == "negative":
        y = F.one_hot(ids, c).to(dtype)
        if m:
            y[0, 0] -= 0.5
        return y, (["targets", "labels"] if m else None)
    if kind == "nan":
        y = torch.full((m, c), float("nan"), dtype=dtype)
        return y, (["targets", "labels"] if m else None)
    if kind == "wrong_c":
        return torch.full((m, c + 1), 1.0 / (c + 1), dtype=dtype), ["targets", "labels"]
    if kind == "wrong_m":
        return torch.randint(0, c, (m + 1,), generator=g), ["targets", "labels"]
    if kind == "3d":
        return torch.full((m, 1, c), 1.0 / c), ["targets", "labels"]
    if kind == "list":
        return ids.tolist(), ["targets", "labels"]
    return F.one_hot(ids, c), ["targets", "labels"]  # int_rows: [m, c] integers


@st.composite
def lambdas(draw, m, n, r=None, bad=False):
    """`(lam, bad names)` for `m` examples and `n` mixes (`[r, m, n]` or shared `[m, n]` when `r`)."""
    shared = r is None or draw(st.booleans())
    kind = draw(kinds(["valid"], ["unnormalised", "negative", "nan", "int", "wrong_m", "no_mixes"], bad))
    dtype = draw(dtypes)
    alpha = draw(st.floats(0.05, 5.0))
    lam = sample_lambda(m, n, alpha, positions=None if shared else r).to(dtype)
    if kind == "valid":
        return lam, None
    if kind == "unnormalised":
        return lam * 1.5, ["lam"]
    if kind == "negative":
        lam = lam.clone()
        lam[..., 0, 0] -= 2.0
        return lam, ["lam"]
    if kind == "nan":
        lam = lam.clone()
        lam[..., 0, 0] = float("nan")
        return lam, ["lam"]
    if kind == "int":
        return lam.round().long(), ["lam"]
    if kind == "wrong_m":
        return sample_lambda(m + 1, n, positions=None if shared else r), ["lam"]
    return lam[..., :0], ["lam"]  # no_mixes


@st.composite
def masks(draw, m, r, bad=False):
    """`(mask, bad names)`: None or a bool mask, or an invalid one when `bad`."""
    kind = draw(kinds(["none", "valid"], ["hides_example", "float", "wrong_shape"], bad))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    mask = torch.rand(m, r, generator=g) < 0.6
    mask[torch.arange(m), torch.randint(0, r, (m,), generator=g)] = True
    if kind == "none":
        return None, None
    if kind == "valid":
        return mask, None
    if kind == "hides_example":
        mask[0] = False
        return mask, ["mask"]
    if kind == "float":
        return mask.float(), ["mask"]
    return mask[:, :-1] if r > 1 else mask.t().repeat(1, 2), ["mask"]


@st.composite
def attentions(draw, m, r, bad=False):
    kind = draw(kinds(["uniform", "pooled", "cam", "tensor"], ["unknown", "negative", "nan", "wrong_shape"], bad))
    if kind in ("uniform", "pooled", "cam"):
        return kind, None
    if kind == "unknown":
        return "saliency", ["attention"]
    a = torch.rand(m, r)
    if kind == "tensor":
        return a, None
    if kind == "negative":
        return a - 2, ["attention"]
    if kind == "nan":
        return a * float("nan"), ["attention"]
    return torch.rand(m, r + 1), ["attention"]


def faulty(draw, *parts):
    """Which argument of a draw is invalid: None (a valid draw) half of the time, else one of `parts`."""
    return draw(st.one_of(st.none(), st.sampled_from(parts)), "invalid part")


def all_names(*items):
    names = [name for _, bad in items if bad is not None for name in bad]
    return names or None


# --------------------------------------------------------------------------- sampling


@given(m=st.integers(-1, 6), n=st.integers(-1, 12), positions=st.one_of(st.none(), st.integers(-1, 4)),
       alpha=st.booleans().flatmap(lambda bad: alphas(bad)))
def test_fuzz_sample_lambda(m, n, positions, alpha):
    alpha, alpha_bad = alpha
    bad = (["m"] if m < 1 else None) or (["n"] if n < 1 else None) or (
        ["positions"] if positions is not None and positions < 1 else None) or alpha_bad
    lam = expect(lambda: sample_lambda(m, n, alpha, positions=positions), bad)
    if lam is None:
        return
    assert lam.shape == ((m, n) if positions is None else (positions, m, n)) and lam.dtype == torch.float32
    # Section 4: every column is non-negative and sums to 1; one example mixes with itself only.
    assert torch.isfinite(lam).all() and (lam >= 0).all()
    torch.testing.assert_close(lam.sum(-2), torch.ones_like(lam.sum(-2)))
    if m == 1:
        assert torch.equal(lam, torch.ones_like(lam))


# --------------------------------------------------------------------------- mixing


def check_mixed_targets(y_mix, y, lam, valid=None):
    """Section 4: mixed target rows sum to 1 and lie in the convex hull of the batch targets
    (up to the rounding of half-precision inputs)."""
    half = any(t.dtype in (torch.float16, torch.bfloat16) for t in (y, lam))
    tol = 2e-2 if half else 1e-5
    y = one_hot_targets(y, y_mix.shape[-1]).to(y_mix.dtype) if y.dim() == 1 else y.to(y_mix.dtype)
    rows = y_mix if valid is None else y_mix[valid]
    assert torch.isfinite(rows).all()
    assert ((rows.sum(-1) - 1).abs() <= tol).all()
    assert (rows >= y.min(0).values - tol).all() and (rows <= y.max(0).values + tol).all()
    if valid is not None:
        assert (y_mix[~valid] == 0).all()


@given(data=st.data(), m=st.sampled_from([1, 2, 3, 5, 0]), n=st.integers(1, 8), d=st.integers(1, 4), c=st.integers(1, 4),
       dtype=dtypes)
def test_fuzz_multimix(data, m, n, d, c, dtype):
    z = torch.randn(m, d).to(dtype)
    part = faulty(data.draw, "targets", "lam")
    y, y_bad = data.draw(targets(m, c, part == "targets"), "targets")
    lam, lam_bad = data.draw(lambdas(max(m, 1), n, bad=part == "lam"), "lam")
    bad = (["z"] if m == 0 else None) or lam_bad or y_bad
    out = expect(lambda: multimix(z, y, lam, num_classes=c), bad)
    if out is None:
        return
    z_mix, y_mix = out
    assert z_mix.shape == (n, d) and y_mix.shape == (n, c)
    assert z_mix.dtype == y_mix.dtype and z_mix.dtype in (torch.float32, torch.float64)
    assert torch.isfinite(z_mix).all()
    check_mixed_targets(y_mix, y, lam)
    if m == 1:  # every mix is that example
        torch.testing.assert_close(z_mix, z.to(z_mix.dtype).expand(n, d), rtol=1e-2, atol=1e-2)


@given(data=st.data(), m=st.sampled_from([1, 2, 4, 0]), n=st.integers(1, 6), r=st.sampled_from([1, 2, 4, 0]), d=st.integers(1, 3),
       c=st.integers(1, 4), dtype=dtypes)
def test_fuzz_dense_multimix(data, m, n, r, d, c, dtype):
    z = torch.randn(m, r, d).to(dtype)
    part = faulty(data.draw, "targets", "lam", "mask")
    y, y_bad = data.draw(targets(m, c, part == "targets"), "targets")
    lam, lam_bad = data.draw(lambdas(max(m, 1), n, max(r, 1), part == "lam"), "lam")
    mask, mask_bad = data.draw(masks(max(m, 1), max(r, 1), part == "mask"), "mask")
    attn = torch.rand(max(m, 1), max(r, 1)) if data.draw(st.booleans(), "attn") else None
    bad = (["z"] if m == 0 or r == 0 else None) or y_bad or lam_bad or mask_bad
    out = expect(lambda: dense_multimix(z, y, lam, attn, mask, num_classes=c), bad)
    if out is None:
        return
    z_mix, y_mix, valid = out
    assert z_mix.shape == (n, r, d) and y_mix.shape == (n, r, c) and valid.shape == (n, r)
    assert torch.isfinite(z_mix).all()
    check_mixed_targets(y_mix, y, lam, valid)
    if mask is not None:  # a position valid in no example is skipped, never NaN
        assert torch.equal(valid, mask.any(0).expand(n, r))


@given(data=st.data(), m=st.sampled_from([1, 2, 3, 5, 0]), c=st.integers(1, 5), smoothing=st.floats(-0.5, 1.5))
def test_fuzz_one_hot_targets(data, m, c, smoothing):
    y, y_bad = data.draw(targets(m, c, data.draw(st.booleans()), batch_known=False), "targets")
    bad = (["label_smoothing"] if not 0 <= smoothing < 1 else None) or y_bad
    out = expect(lambda: one_hot_targets(y, c, smoothing), bad)
    if out is None:
        return
    assert out.shape == (m, c) and out.dtype in (torch.float32, torch.float64)
    assert ((out.sum(-1) - 1).abs() <= 2e-2).all() and (out >= 0).all()


# --------------------------------------------------------------------------- losses


def classifier(kind, d, c, dtype):
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(d, c).to(dtype)
    return nn.Sequential(nn.Linear(d, 6), nn.Tanh(), nn.Linear(6, c)).to(dtype)


@given(data=st.data(), dense=st.booleans(), m=st.sampled_from([1, 2, 3, 5, 0]), n=st.integers(1, 12), r=st.sampled_from([1, 2, 3, 0]),
       d=st.integers(1, 4), c=st.integers(1, 4), dtype=dtypes, head_kind=st.sampled_from(["linear", "mlp"]),
       smoothing=st.sampled_from([0.0, 0.1]), clean=st.sampled_from([0.0, 0.5]),
       chunk=st.sampled_from([None, 1, 3]), given_lam=st.booleans())
def test_fuzz_losses(data, dense, m, n, r, d, c, dtype, head_kind, smoothing, clean, chunk, given_lam):
    head = classifier(head_kind, d, c, dtype)
    z = torch.randn(*((m, r, d) if dense else (m, d))).to(dtype).requires_grad_()
    part = faulty(data.draw, "targets", "lam", "alpha", "teacher", "mask", "attention")
    y, y_bad = data.draw(targets(m, c, part == "targets"), "targets")
    items = [((), ["z"] if m == 0 or (dense and r == 0) else None), (y, y_bad)]
    kwargs = dict(n=n, label_smoothing=smoothing, clean_weight=clean, chunk_size=chunk)
    alpha, alpha_bad = data.draw(alphas(part == "alpha"), "alpha")
    if given_lam:
        lam, lam_bad = data.draw(lambdas(max(m, 1), n, max(r, 1) if dense else None, part == "lam"), "lam")
        kwargs["lam"] = lam
        items.insert(1, (lam, lam_bad))
    else:
        kwargs["alpha"] = alpha
        items.append((alpha, alpha_bad))
    if part == "teacher" or data.draw(st.booleans(), "distill"):
        teacher = torch.softmax(torch.randn(max(m, 1), c), -1).to(dtype)
        teacher_bad = None
        if part == "teacher":
            teacher, teacher_bad = teacher * 2, ["teacher_probs"]
        kwargs.update(distill_weight=0.5, teacher_probs=teacher, temperature=data.draw(st.sampled_from([0.5, 2.0])))
        items.append((teacher, teacher_bad))
    if dense:
        mask, mask_bad = data.draw(masks(max(m, 1), max(r, 1), part == "mask"), "mask")
        attention, attention_bad = data.draw(attentions(max(m, 1), max(r, 1), part == "attention"), "attention")
        kwargs.update(mask=mask, attention=attention, per_position=data.draw(st.booleans(), "per_position"))
        items += [(mask, mask_bad), (attention, attention_bad)]
    loss_fn = dense_multimix_loss if dense else multimix_loss
    # Checks run in several places; an invalid draw may be caught by any of its bad parts.
    bad = all_names(*items)
    loss = expect(lambda: loss_fn(z, y, head, **kwargs), bad)
    if loss is None:
        return
    assert loss.dim() == 0 and loss.dtype == wide(dtype) and torch.isfinite(loss)
    loss.backward()
    grads = [z.grad, *(p.grad for p in head.parameters())]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if dtype == torch.float64 and head_kind == "linear":
        # Section 4: the logit shortcut and the embedding path give the same loss.
        kwargs.pop("alpha", None)
        lam = kwargs.pop("lam", None)
        if lam is None:
            lam = sample_lambda(m, n, positions=r if dense else None)
        fast = loss_fn(z, y, head, lam, affine=True, **kwargs)
        slow = loss_fn(z, y, head, lam, affine=False, **kwargs)
        torch.testing.assert_close(fast, slow)


# --------------------------------------------------------------------------- MultiMixHead


@functools.lru_cache(maxsize=None)
def _timm_model(dtype):
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=3).to(dtype)


@given(data=st.data(), m=st.sampled_from([1, 2, 3, 5, 0]), dtype=dtypes, x_dtype=dtypes, x_same=st.integers(0, 3),
       size=st.sampled_from([16, 64]), dense=st.booleans(), mode=st.sampled_from(["train", "train", "eval"]),
       options=st.sampled_from([{}, {"distill_weight": 0.5}, {"distill_weight": 0.5, "teacher": "ema"},
                                {"clean_weight": 1.0}, {"mixing": "pairwise"}, {"prob": 0.0},
                                {"label_smoothing": 0.1}]),
       alpha=st.sampled_from([0.2, (0.5, 2.0)]), n=st.integers(1, 20))
def test_fuzz_head(data, m, dtype, x_dtype, x_same, size, dense, mode, options, alpha, n):
    model = copy.deepcopy(_timm_model(dtype))
    attention = data.draw(st.sampled_from(["uniform", "pooled", "cam"]), "attention") if dense else "uniform"
    head = MultiMixHead(model, n=n, alpha=alpha, dense=dense, attention=attention, **options)
    head.train(mode == "train")
    x = torch.randn(m, 3, size, size).to(dtype if x_same else x_dtype)  # a quarter of the inputs: any dtype
    y, y_bad = data.draw(targets(m, 3, data.draw(st.integers(0, 3), "invalid labels") == 0), "labels")

    # The plain model's own behaviour on this input: the head adds no failure of its own.
    plain = copy.deepcopy(model).train(mode == "train")
    try:
        with torch.no_grad():
            reference = plain(x)
        plain_error = None
    except Exception as err:  # noqa: BLE001 - e.g. torch's own dtype mismatch message
        plain_error = err
    bad = (["batch"] if m == 0 else []) + (y_bad or [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a 1x1 map at 16 px: dense is pooled, said once
            out = head(x, labels=y)
    except Exception as err:  # noqa: BLE001 - sorted out below
        named = isinstance(err, (ValueError, TypeError)) and any(name in str(err) for name in bad)
        as_plain = plain_error is not None and type(err) is type(plain_error) and str(err) == str(plain_error)
        assert named or as_plain, f"{type(err).__name__}: {err} (bad parts {bad}, plain model: {plain_error!r})"
        event("refused" if named else "failed as the plain model")
        return
    event("valid draw")
    assert not bad and plain_error is None, f"accepted an invalid draw (bad parts {bad}, plain: {plain_error!r})"
    if mode == "eval":  # Section 4: in eval mode the logits are the wrapped model's, unchanged
        torch.testing.assert_close(out if isinstance(out, torch.Tensor) else out.logits, reference)
        return
    assert out.loss.dim() == 0 and out.loss.dtype == wide(dtype) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

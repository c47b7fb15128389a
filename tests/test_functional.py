import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_multimix import (
    attention_cam,
    attention_pooled,
    build_attention,
    dense_multimix,
    dense_weights,
    multimix,
    one_hot_targets,
    sample_lambda,
)

FAST = settings(max_examples=25, deadline=None)


@FAST
@given(m=st.integers(1, 9), n=st.integers(1, 40), alpha=st.floats(0.05, 5.0), seed=st.integers(0, 2**16))
def test_lambda_columns_on_simplex(m, n, alpha, seed):
    torch.manual_seed(seed)
    lam = sample_lambda(m, n, alpha)
    assert lam.shape == (m, n) and lam.dtype == torch.float32
    assert (lam >= 0).all()
    torch.testing.assert_close(lam.sum(0), torch.ones(n))


@FAST
@given(m=st.integers(1, 6), n=st.integers(1, 20), r=st.integers(1, 7))
def test_lambda_per_position_independent_draws(m, n, r):
    lam = sample_lambda(m, n, (0.5, 2.0), positions=r)
    assert lam.shape == (r, m, n)
    torch.testing.assert_close(lam.sum(1), torch.ones(r, n))
    if m > 1 and r > 1:
        assert not torch.equal(lam[0], lam[1])


def test_lambda_reproducible_under_manual_seed():
    torch.manual_seed(3)
    a = sample_lambda(5, 100, (0.5, 2.0), positions=3)
    torch.manual_seed(3)
    b = sample_lambda(5, 100, (0.5, 2.0), positions=3)
    torch.manual_seed(4)
    c = sample_lambda(5, 100, (0.5, 2.0), positions=3)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lambda_tiny_alpha_never_nan():
    torch.manual_seed(0)
    lam = sample_lambda(2, 5000, 1e-3)
    assert torch.isfinite(lam).all()
    torch.testing.assert_close(lam.sum(0), torch.ones(5000))


def test_lambda_concentration_follows_alpha():
    # Large alpha concentrates near the centre of the simplex, small alpha near its vertices.
    torch.manual_seed(0)
    near_centre = sample_lambda(4, 4000, 50.0).max(0).values.mean()
    near_vertex = sample_lambda(4, 4000, 0.1).max(0).values.mean()
    assert near_centre < 0.4 < 0.8 < near_vertex


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(m=4, n=0), r"n must be a positive integer, got 0"),
        (dict(m=0, n=10), r"m must be a positive integer, got 0"),
        (dict(m=4, n=10, alpha=0.0), r"alpha must be > 0"),
        (dict(m=4, n=10, alpha=(-1.0, 2.0)), r"alpha must be > 0"),
        (dict(m=4, n=10, alpha=(2.0, 1.0)), r"lo <= hi"),
        (dict(m=4, n=10, alpha="big"), r"alpha must be a positive float or a \(lo, hi\) range"),
        (dict(m=4, n=10, positions=0), r"positions must be a positive integer"),
    ],
)
def test_sample_lambda_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_lambda(**kwargs)


@FAST
@given(m=st.integers(1, 8), n=st.integers(1, 30), c=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_mixed_targets_in_convex_hull(m, n, c, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, 5, generator=g)
    y = torch.softmax(torch.randn(m, c, generator=g), -1)
    lam = sample_lambda(m, n, 1.0)
    z_mix, y_mix = multimix(z, y, lam)
    assert z_mix.shape == (n, 5) and y_mix.shape == (n, c)
    torch.testing.assert_close(y_mix.sum(-1), torch.ones(n))
    # Inside the hull: each coordinate between the batch's min and max.
    assert (y_mix >= y.min(0).values - 1e-6).all() and (y_mix <= y.max(0).values + 1e-6).all()
    torch.testing.assert_close(z_mix, lam.t() @ z)


def test_single_example_mix_is_that_example():
    z, y = torch.randn(1, 6), torch.tensor([2])
    z_mix, y_mix = multimix(z, y, sample_lambda(1, 7), num_classes=4)
    torch.testing.assert_close(z_mix, z.expand(7, 6))
    torch.testing.assert_close(y_mix, torch.eye(4)[2].expand(7, 4))
    zd = torch.randn(1, 5, 6)
    z_mix, y_mix, valid = dense_multimix(zd, y, sample_lambda(1, 7, positions=5), num_classes=4)
    torch.testing.assert_close(z_mix, zd.expand(7, 5, 6))
    assert valid.all() and torch.isfinite(y_mix).all()


def test_multimix_half_inputs_mix_in_float32():
    z = torch.randn(5, 8).to(torch.bfloat16)
    z_mix, y_mix = multimix(z, torch.arange(5) % 3, sample_lambda(5, 11), num_classes=3)
    assert z_mix.dtype == torch.float32 and y_mix.dtype == torch.float32


@FAST
@given(m=st.integers(1, 6), r=st.integers(1, 6), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_dense_weights_sum_to_one_per_position(m, r, n, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(m, r, generator=g) > 0.4
    mask[:, 0] = True
    attn = torch.rand(m, r, generator=g)
    w, valid = dense_weights(sample_lambda(m, n, positions=r), m, r, attn, mask)
    assert w.shape == (r, m, n) and valid.shape == (n, r)
    sums = w.sum(1).t()  # [n, r]
    torch.testing.assert_close(sums[valid], torch.ones(int(valid.sum())))
    assert (sums[~valid] == 0).all()
    # A position that is padding in every example is never valid.
    assert not valid[:, ~mask.any(0)].any()
    assert (w.permute(1, 0, 2)[~mask] == 0).all()


def test_dense_multimix_shapes_and_targets():
    m, r, d, c, n = 4, 6, 5, 3, 9
    z, y = torch.randn(m, r, d), torch.tensor([0, 1, 2, 0])
    mask = torch.ones(m, r, dtype=torch.bool)
    mask[1, 3:] = False
    z_mix, y_mix, valid = dense_multimix(z, y, sample_lambda(m, n, positions=r), torch.rand(m, r), mask, num_classes=c)
    assert z_mix.shape == (n, r, d) and y_mix.shape == (n, r, c) and valid.all()
    torch.testing.assert_close(y_mix.sum(-1), torch.ones(n, r))


def test_dense_shared_lambda_equals_broadcast_per_position():
    m, r, n = 3, 4, 5
    z, y = torch.randn(m, r, 2), torch.tensor([0, 1, 1])
    lam = sample_lambda(m, n)
    a = dense_multimix(z, y, lam, num_classes=2)
    b = dense_multimix(z, y, lam.expand(r, m, n), num_classes=2)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_dense_invalid_positions_are_zero_not_nan():
    m, r, n = 2, 3, 4
    attn = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 0.5]])  # position 1 has no weight anywhere
    z_mix, y_mix, valid = dense_multimix(torch.randn(m, r, 2), torch.tensor([0, 1]), sample_lambda(m, n, positions=r), attn, num_classes=2)
    assert not valid[:, 1].any() and valid[:, [0, 2]].all()
    assert torch.isfinite(z_mix).all() and (z_mix[:, 1] == 0).all() and (y_mix[:, 1] == 0).all()


def test_dense_padding_content_does_not_matter():
    m, r, n = 3, 5, 8
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    z = torch.randn(m, r, 4)
    z2 = z.clone()
    z2[~mask] = 1e4 * torch.randn(int((~mask).sum()), 4)
    lam = sample_lambda(m, n, positions=r)
    a1 = attention_pooled(z, mask=mask)
    a2 = attention_pooled(z2, mask=mask)
    torch.testing.assert_close(a1, a2)
    out1 = dense_multimix(z, torch.tensor([0, 1, 2]), lam, a1, mask, num_classes=3)
    out2 = dense_multimix(z2, torch.tensor([0, 1, 2]), lam, a2, mask, num_classes=3)
    for u, v in zip(out1, out2):
        torch.testing.assert_close(u, v)


def test_attention_builders():
    m, r, d, c = 3, 4, 6, 5
    tokens, mask = torch.randn(m, r, d, requires_grad=True), torch.ones(m, r, dtype=torch.bool)
    mask[0, 2:] = False
    for kind in ("pooled", "uniform"):
        a = build_attention(kind, tokens, mask=mask)
        assert a.shape == (m, r) and (a[~mask] == 0).all() and not a.requires_grad
    logits = torch.randn(m, r, c)
    labels = torch.tensor([1, 4, 0])
    cam = attention_cam(logits, labels, mask)
    torch.testing.assert_close(cam.sum(-1), torch.ones(m))
    # The position where the own class is most active weighs most.
    assert cam[1].argmax() == logits[1, :, 4].argmax()
    torch.testing.assert_close(attention_cam(logits, torch.eye(c)[labels], mask), cam)
    assert build_attention("pooled", tokens, mask=mask, detach=False).requires_grad
    user = torch.rand(m, r)
    torch.testing.assert_close(build_attention(user, tokens), user)


def test_one_hot_targets_label_smoothing():
    y = one_hot_targets(torch.tensor([0, 2]), 4, label_smoothing=0.2)
    torch.testing.assert_close(y[0], torch.tensor([0.85, 0.05, 0.05, 0.05]))
    torch.testing.assert_close(y.sum(-1), torch.ones(2))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: multimix(torch.randn(4, 3), torch.randn(5, 2), sample_lambda(4, 2)), ValueError,
         r"targets have batch size 5 but the embeddings have 4"),
        (lambda: multimix(torch.randn(4, 3), torch.eye(2)[[0, 1, 0, 1]], sample_lambda(3, 2)), ValueError,
         r"lam has 3 rows but the batch has m=4"),
        (lambda: multimix(torch.randn(4, 3, 2), torch.eye(2)[[0, 1, 0, 1]], sample_lambda(4, 2)), ValueError,
         r"z must have shape \[m, d\] \(2 dims\), got \(4, 3, 2\)"),
        (lambda: multimix(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), sample_lambda(4, 2), num_classes=3), ValueError,
         r"label 3 is outside \[0, 3\)"),
        (lambda: multimix(torch.randn(2, 3), torch.tensor([-1, 0]), sample_lambda(2, 2), num_classes=3), ValueError,
         r"label -1 is outside \[0, 3\)"),
        (lambda: multimix(torch.randn(2, 3), torch.tensor([0, 1]), sample_lambda(2, 2)), ValueError,
         r"integer targets need num_classes"),
        (lambda: multimix(torch.randn(2, 3), torch.tensor([0.0, 1.0]), sample_lambda(2, 2)), TypeError,
         r"1-D targets must be integer class ids"),
        (lambda: dense_multimix(torch.randn(2, 3, 4), torch.tensor([0, 1]), sample_lambda(2, 5, positions=4), num_classes=2),
         ValueError, r"lam has shape \(4, 2, 5\) but dense mixing of m=2 examples at r=3 positions needs \[3, 2, n\]"),
        (lambda: dense_multimix(torch.randn(2, 3, 4), torch.tensor([0, 1]), sample_lambda(2, 5), mask=torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool), num_classes=2),
         ValueError, r"mask hides every position of example\(s\) \[1\]"),
        (lambda: dense_multimix(torch.randn(2, 3, 4), torch.tensor([0, 1]), sample_lambda(2, 5), mask=torch.ones(2, 3), num_classes=2),
         TypeError, r"mask must be a bool tensor"),
        (lambda: dense_multimix(torch.randn(2, 3, 4), torch.tensor([0, 1]), sample_lambda(2, 5), attn=-torch.ones(2, 3), num_classes=2),
         ValueError, r"attention must be finite and non-negative"),
        (lambda: dense_multimix(torch.randn(2, 3, 4), torch.tensor([0, 1]), sample_lambda(2, 5), attn=torch.ones(3, 2), num_classes=2),
         ValueError, r"attention must have shape \[m, r\] = \[2, 3\], got \(3, 2\)"),
        (lambda: build_attention("gradcam", torch.randn(2, 3, 4)), ValueError, r"unknown attention 'gradcam'"),
    ],
)
def test_errors_are_clear(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("m", [1, 3, 7])
def test_odd_and_single_batches_work(m):
    z_mix, y_mix = multimix(torch.randn(m, 4), torch.arange(m) % 2, sample_lambda(m, 10), num_classes=2)
    assert torch.isfinite(z_mix).all() and torch.isfinite(y_mix).all()


def test_pair_lambda_is_manifold_mixup():
    torch.manual_seed(0)
    from hf_multimix import sample_pair_lambda

    lam = sample_pair_lambda(6, alpha=1.0)
    torch.testing.assert_close(lam.sum(0), torch.ones(6))
    # Each column mixes at most two examples, with one shared scalar.
    assert ((lam > 0).sum(0) <= 2).all()
    weights = {round(float(v), 5) for v in lam[lam > 0]}
    assert len(weights) <= 3  # lam, 1 - lam, and 1 where an example is paired with itself
    with pytest.raises(ValueError, match=r"alpha must be > 0"):
        sample_pair_lambda(4, alpha=0.0)


def test_tiny_alpha_gives_vertices_not_the_centre():
    # torch's gamma sampler returns the smallest normal number when a draw underflows; a
    # column of those is the Dirichlet's limit, a vertex, not the uniform mix.
    torch.manual_seed(0)
    lam = sample_lambda(4, 200, alpha=1e-3)
    top = lam.max(0).values
    assert (top > 0.3).all() and top.mean() > 0.95  # a uniform column would have 0.25
    torch.testing.assert_close(lam.sum(0), torch.ones(200))


def test_huge_alpha_gives_the_centre_not_nan():
    lam = sample_lambda(4, 20, alpha=3e38)
    torch.testing.assert_close(lam, torch.full((4, 20), 0.25))


_Y = torch.tensor([0, 1, 2])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sample_lambda(0, 10), ValueError, r"m must be a positive integer, got 0: m is the batch size"),
        (lambda: sample_lambda(4, 10, alpha=float("inf")), ValueError, r"alpha must be finite"),
        (lambda: sample_lambda(4, 10, alpha=(1.0, float("nan"))), ValueError, r"alpha must be > 0"),
        (lambda: multimix(torch.randn(0, 4), _Y[:0], torch.ones(0, 5), num_classes=3), ValueError,
         r"z holds an empty batch \(m=0 examples\)"),
        (lambda: dense_multimix(torch.randn(3, 0, 4), _Y, torch.ones(3, 5) / 3, num_classes=3), ValueError,
         r"z has no positions \(r=0\)"),
        (lambda: multimix(torch.randn(3, 4), _Y, torch.rand(3, 5) + 0.1, num_classes=3), ValueError,
         r"lam must be non-negative columns summing to 1, but column 0 sums to .*; sample it with sample_lambda\(\)"),
        (lambda: multimix(torch.randn(3, 4), _Y, torch.tensor([[1.5], [-0.5], [0.0]]), num_classes=3), ValueError,
         r"lam must be non-negative columns summing to 1, but entry \[1, 0\] is -0\.5"),
        (lambda: multimix(torch.randn(3, 4), _Y, torch.full((3, 2), float("nan")), num_classes=3), ValueError,
         r"column 0 sums to nan \(it holds NaN or inf\)"),
        (lambda: multimix(torch.randn(3, 4), _Y, torch.ones(3, 2, dtype=torch.long), num_classes=3), TypeError,
         r"lam must be a floating point tensor"),
        (lambda: multimix(torch.randn(3, 4), _Y, torch.ones(3, 0), num_classes=3), ValueError, r"no mixes \(n=0\)"),
        (lambda: dense_multimix(torch.randn(3, 2, 4), _Y, torch.rand(2, 3, 5), num_classes=3), ValueError,
         r"lam must be non-negative columns summing to 1, but column \[0, 0\] sums to"),
        (lambda: multimix(torch.randn(3, 4), torch.rand(3, 5), sample_lambda(3, 4)), ValueError,
         r"targets must be non-negative probability rows summing to 1, but row 0 sums to .*; normalise them, "
         r"e\.g\. targets = targets\.clamp_min\(0\); targets = targets / targets\.sum\(dim=1, keepdim=True\)"),
        (lambda: multimix(torch.randn(2, 4), torch.tensor([[1.2, -0.2], [0.5, 0.5]]), sample_lambda(2, 4)), ValueError,
         r"targets must be non-negative probability rows summing to 1, but entry \[0, 1\] is -0\.2"),
        (lambda: one_hot_targets(torch.tensor([[0.5, float("nan")]]), 2), ValueError, r"row 0 sums to nan"),
        (lambda: one_hot_targets(torch.tensor([0, 3]), 3), ValueError, r"label 3 is outside \[0, 3\)"),
    ],
)
def test_values_are_checked(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_rounded_distributions_pass(dtype):
    # Probabilities stored in half precision sum to 1 only up to their rounding.
    y = torch.softmax(torch.randn(6, 7), -1).to(dtype)
    lam = sample_lambda(6, 50).to(dtype)
    z_mix, y_mix = multimix(torch.randn(6, 3, dtype=dtype), y, lam)
    torch.testing.assert_close(y_mix.sum(-1), torch.ones(50, dtype=y_mix.dtype), atol=1e-2, rtol=0)


def test_validate_false_skips_only_the_value_checks():
    z_mix, _ = multimix(torch.randn(3, 4), _Y, torch.full((3, 2), 0.5), num_classes=3, validate=False)
    assert z_mix.shape == (2, 4)
    with pytest.raises(ValueError, match=r"lam has 2 rows but the batch has m=3"):
        multimix(torch.randn(3, 4), _Y, torch.full((2, 2), 0.5), num_classes=3, validate=False)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0, 100.0])
def test_lambda_has_the_dirichlet_moments_and_independent_positions(alpha):
    # Dir(alpha 1_m): mean 1/m, variance (m-1) / (m^2 (m alpha + 1)), covariance -1 / (m^2 (m alpha + 1))
    # within a column; different positions and mixes are independent. 4 * 50,000 columns: the
    # standard error of the variance estimate is below 2% of it.
    torch.manual_seed(0)
    m, n, r = 5, 50_000, 4
    lam = sample_lambda(m, n, alpha, positions=r).double()
    var = (m - 1) / (m**2 * (m * alpha + 1))
    cov = -1 / (m**2 * (m * alpha + 1))
    cols = lam.permute(0, 2, 1).reshape(-1, m)  # [r * n, m]
    torch.testing.assert_close(cols.mean(0), torch.full((m,), 1 / m, dtype=torch.float64), atol=4 * var**0.5 / 400, rtol=0)
    torch.testing.assert_close(cols.var(0), torch.full((m,), var, dtype=torch.float64), rtol=0.06, atol=0)
    c = torch.cov(cols.t())
    torch.testing.assert_close(c[0, 1:], torch.full((m - 1,), cov, dtype=torch.float64), rtol=0.1, atol=0)
    # independence across positions: the weight of example 0 at position 0 and at position 1 do not correlate
    corr = torch.corrcoef(torch.stack([lam[0, 0], lam[1, 0]]))[0, 1]
    assert abs(corr) < 4 / n**0.5
    # a third moment too (a scheme with the right mean and variance but the wrong shape fails here): each
    # weight is Beta(alpha, (m - 1) alpha)
    a, b = alpha, (m - 1) * alpha
    third = a * (a + 1) * (a + 2) / ((a + b) * (a + b + 1) * (a + b + 2))
    torch.testing.assert_close(cols.pow(3).mean(0), torch.full((m,), third, dtype=torch.float64), rtol=0.05, atol=0)

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hf_multimix import dense_multimix_loss, is_affine, multimix_loss, sample_lambda
from hf_multimix.functional import dense_multimix

FAST = settings(max_examples=15, deadline=None)


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


def reference_pooled_loss(z, y, head, lam, c):
    """Straight from METHOD.md section 1: mix embeddings, classify, soft-target CE."""
    z_mix = lam.t() @ z
    y_mix = lam.t() @ F.one_hot(y, c).to(z.dtype)
    return -(y_mix * F.log_softmax(head(z_mix), -1)).sum(-1).mean()


@FAST
@given(m=st.integers(1, 7), n=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_pooled_loss_matches_reference(m, n, seed):
    torch.manual_seed(seed)
    d, c = 5, 4
    head = nn.Linear(d, c).double()
    z, y = torch.randn(m, d, dtype=torch.float64), torch.randint(0, c, (m,))
    lam = sample_lambda(m, n).double()
    torch.testing.assert_close(multimix_loss(z, y, head, lam, clean_weight=0), reference_pooled_loss(z, y, head, lam, c))


def test_single_example_loss_is_plain_cross_entropy():
    head = nn.Linear(6, 3)
    z, y = torch.randn(1, 6), torch.tensor([2])
    expected = F.cross_entropy(head(z), y)
    torch.testing.assert_close(multimix_loss(z, y, head, n=17, clean_weight=0), expected)
    torch.testing.assert_close(dense_multimix_loss(z.unsqueeze(1).expand(1, 4, 6), y, head, n=17, clean_weight=0), expected)


def _mlp_head(d, c):
    return nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, c))


@pytest.mark.parametrize("distill", [0.0, 0.4])
@pytest.mark.parametrize("attention", ["pooled", "cam", "uniform", None])
def test_shortcut_equals_embedding_path_value_and_gradient(attention, distill):
    torch.manual_seed(0)
    m, r, d, c, n = 5, 6, 8, 4, 40
    head = nn.Linear(d, c).double()
    y = torch.randint(0, c, (m,))
    teacher = torch.softmax(torch.randn(m, c, dtype=torch.float64), -1)
    opts = dict(label_smoothing=0.1, clean_weight=0.3, teacher_probs=teacher, distill_weight=distill, temperature=2.0)
    if attention is None:
        z = torch.randn(m, d, dtype=torch.float64, requires_grad=True)
        lam = sample_lambda(m, n).double()
        fn = lambda affine: multimix_loss(z, y, head, lam, affine=affine, **opts)  # noqa: E731
    else:
        z = torch.randn(m, r, d, dtype=torch.float64, requires_grad=True)
        mask = torch.ones(m, r, dtype=torch.bool)
        mask[2, 4:] = False
        lam = sample_lambda(m, n, positions=r).double()
        fn = lambda affine: dense_multimix_loss(  # noqa: E731
            z, y, head, lam, attention=attention, mask=mask, affine=affine, **opts
        )
    fast, slow = fn(True), fn(False)
    torch.testing.assert_close(fast, slow)
    params = (z, head.weight, head.bias)
    for g_fast, g_slow in zip(_grads(fast, *params), _grads(slow, *params)):
        torch.testing.assert_close(g_fast, g_slow)


def test_fused_mixed_logsumexp_matches_torch_value_and_gradient():
    from hf_multimix.losses import _MixedLogSumExp

    torch.manual_seed(0)
    wt = torch.rand(3, 7, 4, dtype=torch.float64, requires_grad=True)  # [r, k, m]
    logits = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)  # [r, m, c]
    assert torch.autograd.gradcheck(_MixedLogSumExp.apply, (wt, logits))
    # large logits: no overflow, same value as torch.logsumexp; the graph can be reused
    big = (logits.detach() * 1e4).requires_grad_()
    out = _MixedLogSumExp.apply(wt, big)
    torch.testing.assert_close(out, torch.logsumexp(torch.bmm(wt, big), -1))
    first = torch.autograd.grad(out.sum(), (wt, big), retain_graph=True)
    second = torch.autograd.grad(out.sum(), (wt, big))
    for a, b in zip(first, second):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    # infinite logits (an fp16 overflow upstream) give what torch.logsumexp gives, not NaN
    edge = torch.tensor([[[float("inf"), 0.0], [0.0, 0.0]], [[float("-inf"), float("-inf")], [float("-inf"), float("-inf")]]])
    half = torch.full((2, 1, 2), 0.5)  # [r, k, m]: one even mix per position
    out = _MixedLogSumExp.apply(half, edge)
    torch.testing.assert_close(out, torch.logsumexp(torch.bmm(half, edge), -1))
    assert out.flatten().tolist() == [float("inf"), float("-inf")]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("head_kind", ["linear", "mlp"])
def test_chunked_equals_unchunked(dense, head_kind):
    torch.manual_seed(1)
    m, r, d, c, n = 6, 5, 8, 3, 37
    head = (nn.Linear(d, c) if head_kind == "linear" else _mlp_head(d, c)).double()
    y = torch.randint(0, c, (m,))
    z = torch.randn(m, r, d, dtype=torch.float64, requires_grad=True) if dense else torch.randn(m, d, dtype=torch.float64, requires_grad=True)
    lam = sample_lambda(m, n, positions=r if dense else None).double()
    fn = dense_multimix_loss if dense else multimix_loss
    whole = fn(z, y, head, lam)
    chunked = fn(z, y, head, lam, chunk_size=4)
    torch.testing.assert_close(whole, chunked)
    params = (z, *head.parameters())
    for a, b in zip(_grads(whole, *params), _grads(chunked, *params)):
        torch.testing.assert_close(a, b)


def test_nonlinear_head_uses_embedding_path():
    torch.manual_seed(2)
    head = _mlp_head(6, 3).double()
    assert not is_affine(head)
    z, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    lam = sample_lambda(4, 25).double()
    torch.testing.assert_close(multimix_loss(z, y, head, lam, clean_weight=0), reference_pooled_loss(z, y, head, lam, 3))
    # Forcing the shortcut on a non-linear head changes the result: the paths are really different.
    assert not torch.allclose(multimix_loss(z, y, head, lam, affine=True), multimix_loss(z, y, head, lam))


def test_is_affine():
    assert is_affine(nn.Linear(3, 2)) and is_affine(nn.Sequential(nn.Dropout(0.1), nn.Linear(3, 2)))
    assert is_affine(nn.Identity())
    assert not is_affine(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)))


def test_dense_reference_and_valid_terms():
    torch.manual_seed(3)
    m, r, d, c, n = 3, 4, 5, 3, 11
    head = nn.Linear(d, c).double()
    z, y = torch.randn(m, r, d, dtype=torch.float64), torch.tensor([0, 2, 1])
    attn = torch.rand(m, r, dtype=torch.float64)
    attn[:, 3] = 0  # no example attends to position 3: its terms are not counted
    lam = sample_lambda(m, n, positions=r).double()
    z_mix, y_mix, valid = dense_multimix(z, y, lam, attn, num_classes=c)
    ce = -(y_mix * F.log_softmax(head(z_mix), -1)).sum(-1)
    expected = ce[valid].mean()
    torch.testing.assert_close(dense_multimix_loss(z, y, head, lam, attention=attn, clean_weight=0), expected)


def test_dense_with_one_position_equals_pooled():
    torch.manual_seed(4)
    head = nn.Linear(6, 3)
    z, y, lam = torch.randn(5, 6), torch.randint(0, 3, (5,)), sample_lambda(5, 30)
    torch.testing.assert_close(dense_multimix_loss(z.unsqueeze(1), y, head, lam), multimix_loss(z, y, head, lam))


@pytest.mark.parametrize("attention", ["pooled", "cam", "uniform"])
def test_dense_loss_padding_invariance(attention):
    torch.manual_seed(5)
    m, r, d, c = 4, 7, 6, 3
    head = nn.Linear(d, c)
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2, [1] + [0] * 6], dtype=torch.bool)
    z = torch.randn(m, r, d)
    z2 = z.clone()
    z2[~mask] = 100 * torch.randn(int((~mask).sum()), d)
    y, lam = torch.randint(0, c, (m,)), sample_lambda(m, 20, positions=r)
    a = dense_multimix_loss(z, y, head, lam, attention=attention, mask=mask, clean_weight=0.5)
    b = dense_multimix_loss(z2, y, head, lam, attention=attention, mask=mask, clean_weight=0.5)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dense", [False, True])
def test_half_precision_inputs_give_finite_float32_loss(dtype, dense):
    torch.manual_seed(6)
    head = nn.Linear(16, 10).to(dtype)
    z = (torch.randn(8, 5, 16) if dense else torch.randn(8, 16)).mul(30).to(dtype).requires_grad_()
    y = torch.randint(0, 10, (8,))
    fn = dense_multimix_loss if dense else multimix_loss
    loss = fn(z, y, head, n=200, teacher_probs=torch.softmax(torch.randn(8, 10), -1), distill_weight=0.5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad.float()).all()


def test_mixing_runs_in_float32_under_autocast():
    torch.manual_seed(7)
    head = nn.Linear(16, 5)
    z, y = torch.randn(6, 4, 16), torch.randint(0, 5, (6,))
    lam = sample_lambda(6, 50, positions=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dense_multimix_loss(z, y, head, lam)
    assert loss.dtype == torch.float32
    # Only the clean classifier call is in bf16; the result stays close to full float32.
    torch.testing.assert_close(loss, dense_multimix_loss(z, y, head, lam), rtol=2e-2, atol=2e-2)


def test_gradients_reach_embeddings_and_head():
    head = nn.Linear(6, 3)
    z = torch.randn(5, 4, 6, requires_grad=True)
    dense_multimix_loss(z, torch.tensor([0, 1, 2, 0, 1]), head, n=30).backward()
    assert z.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


def test_distillation_term_matches_formula():
    torch.manual_seed(8)
    m, d, c, n, beta, t = 4, 5, 3, 9, 0.3, 2.0
    head = nn.Linear(d, c).double()
    z, y = torch.randn(m, d, dtype=torch.float64), torch.tensor([0, 1, 2, 2])
    q = torch.softmax(torch.randn(m, c, dtype=torch.float64), -1)
    lam = sample_lambda(m, n).double()
    logits = head(lam.t() @ z)
    y_mix, q_mix = lam.t() @ F.one_hot(y, c).double(), lam.t() @ q
    ce = -(y_mix * F.log_softmax(logits, -1)).sum(-1)
    kl = (q_mix * (q_mix.log() - F.log_softmax(logits / t, -1))).sum(-1)
    expected = ((1 - beta) * ce + beta * t * t * kl).mean()
    got = multimix_loss(z, y, head, lam, teacher_probs=q, distill_weight=beta, temperature=t, clean_weight=0)
    torch.testing.assert_close(got, expected)


def test_clean_weight_adds_clean_cross_entropy():
    head = nn.Linear(5, 3)
    z, y, lam = torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), sample_lambda(4, 10)
    base = multimix_loss(z, y, head, lam, clean_weight=0)
    torch.testing.assert_close(multimix_loss(z, y, head, lam, clean_weight=0.5), base + 0.5 * F.cross_entropy(head(z), y))


def test_soft_targets_accepted():
    head = nn.Linear(5, 3)
    z, y, lam = torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), sample_lambda(4, 10)
    torch.testing.assert_close(multimix_loss(z, F.one_hot(y, 3).float(), head, lam), multimix_loss(z, y, head, lam))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(distill_weight=0.5), ValueError, r"distill_weight > 0 needs teacher_probs"),
        (dict(distill_weight=1.5, teacher_probs=torch.ones(4, 3) / 3), ValueError, r"distill_weight must be in \[0, 1\]"),
        (dict(distill_weight=0.5, teacher_probs=torch.ones(4, 2) / 2), ValueError, r"teacher_probs must have shape \[m, c\] = \[4, 3\]"),
        (dict(temperature=0.0), ValueError, r"temperature must be > 0"),
        (dict(label_smoothing=1.0), ValueError, r"label_smoothing must be in \[0, 1\)"),
        (dict(n=0), ValueError, r"n must be a positive integer, got 0"),
        (dict(alpha=-1.0), ValueError, r"alpha must be > 0"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be a positive integer"),
        (dict(clean_weight=-1.0), ValueError, r"clean_weight must be >= 0"),
    ],
)
def test_loss_option_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        multimix_loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), nn.Linear(5, 3), **kwargs)


def test_loss_label_range_error_names_classifier_size():
    with pytest.raises(ValueError, match=r"label 5 is outside \[0, 3\)"):
        multimix_loss(torch.randn(2, 5), torch.tensor([0, 5]), nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"targets have 4 classes but the classifier has 3"):
        multimix_loss(torch.randn(2, 5), torch.ones(2, 4) / 4, nn.Linear(5, 3))
    with pytest.raises(ValueError, match=r"mask hides every position of example\(s\) \[0\]"):
        dense_multimix_loss(torch.randn(2, 3, 5), torch.tensor([0, 1]), nn.Linear(5, 3), mask=torch.tensor([[0, 0, 0], [1, 1, 0]], dtype=torch.bool))


def test_shortcut_equals_embedding_path_for_soft_targets_dense():
    # The shortcut never builds mixed targets (log-sum-exp minus a quadratic form): check it
    # against the embedding path for arbitrary probability targets, chunked and not.
    torch.manual_seed(1)
    m, r, d, c, n = 6, 5, 8, 7, 30
    head = nn.Linear(d, c).double()
    z = torch.randn(m, r, d, dtype=torch.float64, requires_grad=True)
    y = torch.softmax(3 * torch.randn(m, c, dtype=torch.float64), -1)
    lam = sample_lambda(m, n, positions=r).double()
    slow = dense_multimix_loss(z, y, head, lam, affine=False)
    slow_grads = _grads(slow, z, head.weight)
    for chunk in (None, 7):
        fast = dense_multimix_loss(z, y, head, lam, affine=True, chunk_size=chunk)
        torch.testing.assert_close(fast, slow)
        for g_fast, g_slow in zip(_grads(fast, z, head.weight), slow_grads):
            torch.testing.assert_close(g_fast, g_slow)


@pytest.mark.parametrize("loss_fn, z", [(multimix_loss, torch.randn(4, 5)), (dense_multimix_loss, torch.randn(4, 3, 5))])
def test_loss_values_are_checked(loss_fn, z):
    head, y = nn.Linear(5, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"targets must be non-negative probability rows summing to 1, but row 0"):
        loss_fn(z, torch.full((4, 3), 0.5), head, n=10)
    with pytest.raises(ValueError, match=r"lam must be non-negative columns summing to 1"):
        loss_fn(z, y, head, torch.full((4, 10), 0.5))
    with pytest.raises(ValueError, match=r"teacher_probs must be non-negative probability rows summing to 1.*softmax"):
        loss_fn(z, y, head, n=10, distill_weight=0.5, teacher_probs=torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"z holds an empty batch"):
        loss_fn(z[:0], y[:0], head, n=10)
    # validate=False: the caller vouches for the values (no host sync); shapes are still checked.
    assert torch.isfinite(loss_fn(z, y, head, torch.full((4, 10), 0.25), validate=False))
    with pytest.raises(ValueError, match=r"lam has 3 rows but the batch has m=4"):
        loss_fn(z, y, head, torch.full((3, 10), 0.25), validate=False)


def test_head_checks_values_once_per_step(monkeypatch):
    # The head's own weights and teacher probabilities are valid by construction: the labels'
    # check is the only value check (and host sync) of a training step.
    import timm

    import hf_multimix.losses
    from hf_multimix import MultiMixHead, _checks

    calls = []
    original = _checks.check_distributions
    spy = lambda p, *a, **k: (calls.append(a[1]), original(p, *a, **k))  # noqa: E731
    monkeypatch.setattr(_checks, "check_distributions", spy)
    monkeypatch.setattr(hf_multimix.losses, "check_distributions", spy)
    head = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=10, mixing="pairwise",
                        distill_weight=0.5)
    head(torch.randn(4, 3, 32, 32), labels=torch.softmax(torch.randn(4, 3), -1)).loss.backward()
    assert calls == ["labels"]

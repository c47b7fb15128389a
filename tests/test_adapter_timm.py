"""Tests of the timm adapters (hf_multimix/adapters/timm.py) on tiny, randomly initialised models."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import pytest
import timm
import torch
from torch import nn

from hf_multimix.adapters.timm import TimmAdapter, TimmWrapperAdapter
from hf_multimix.losses import dense_multimix_loss, multimix_loss, soft_cross_entropy

C = 5  # classes


@dataclass(frozen=True)
class Arch:
    """One architecture under test.

    Attributes:
        name: timm model name.
        kwargs: extra `create_model` kwargs that make it tiny.
        size: image side in pixels.
        r: positions of the last feature map / patch tokens at that size.
        mean_is_pooled: the head is `average pool -> fc`, so the mean of the tokens is `pooled`.
        cls: ViT-like with a CLS token (cls attention available).
    """

    name: str
    kwargs: dict = field(default_factory=dict, hash=False)
    size: int = 64
    r: int = 4
    mean_is_pooled: bool = True
    cls: bool = False


VIT = dict(img_size=32, patch_size=8, depth=2)
ARCHS = {
    "resnet10t": Arch("resnet10t"),
    "vit_token": Arch("vit_tiny_patch16_224", VIT, size=32, r=16, mean_is_pooled=False, cls=True),
    # Registers are prefix tokens; 'avg' pooling with the final norm in forward_features.
    "vit_reg_avg": Arch(
        "vit_tiny_patch16_224", dict(VIT, reg_tokens=4, global_pool="avg", fc_norm=False), size=32, r=16, cls=True
    ),
    # 'avg' pooling with fc_norm after pooling: the norm runs per token, so mean != pooled.
    "vit_avg_fcnorm": Arch(
        "vit_tiny_patch16_224", dict(VIT, global_pool="avg"), size=32, r=16, mean_is_pooled=False, cls=True
    ),
    "deit_distilled": Arch("deit_tiny_distilled_patch16_224", VIT, size=32, r=16, mean_is_pooled=False, cls=True),
    "convnext_atto": Arch("convnext_atto", mean_is_pooled=False),
    "swin": Arch(
        "swin_tiny_patch4_window7_224",
        dict(img_size=64, window_size=4, embed_dim=24, depths=(1, 1), num_heads=(2, 2)),
        r=64,
    ),
    "mobilenetv3": Arch("mobilenetv3_small_050", mean_is_pooled=False),
    "efficientnet_lite": Arch("tf_efficientnet_lite0"),
    "regnet": Arch("regnetx_002"),
    # Distilled, two heads on the same pooled vector; NormLinear (BatchNorm1d + Linear) is not affine.
    "levit": Arch("levit_128s", dict(img_size=128), size=128),
}
CNN_ONE_CELL = ["resnet10t", "convnext_atto", "mobilenetv3", "efficientnet_lite", "regnet"]


@functools.lru_cache(maxsize=None)
def _cached(key: str) -> nn.Module:
    arch = ARCHS[key]
    torch.manual_seed(0)
    return timm.create_model(arch.name, pretrained=False, num_classes=C, **arch.kwargs)


def build(key: str, train: bool = False) -> nn.Module:
    model = _cached(key)
    model.zero_grad(set_to_none=True)
    return model.train(train)


def images(key: str, m: int = 3, size: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    s = size or ARCHS[key].size
    return torch.randn(m, 3, s, s, generator=g)


def first_param(model: nn.Module) -> nn.Parameter:
    """The first trainable parameter (stem / patch embedding): a gradient here crossed the whole backbone."""
    return next(p for p in model.parameters() if p.requires_grad)


def assert_grads(model: nn.Module, adapter: TimmAdapter) -> None:
    stem = first_param(model)
    assert stem.grad is not None and stem.grad.abs().sum() > 0, "no gradient reached the backbone's stem"
    for p in adapter.classifier.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), "no gradient reached the classifier"
    assert any(p.grad.abs().sum() > 0 for p in adapter.classifier.parameters() if p.grad is not None)


# --------------------------------------------------------------------------- pooled


@pytest.mark.parametrize("key", ARCHS)
def test_pooled_is_what_the_classifier_sees(key: str) -> None:
    model = build(key)
    adapter = TimmAdapter(model)
    assert TimmAdapter.matches(model)
    x = images(key)
    with torch.no_grad():
        feats = adapter.features({"x": x})
        ref = model(x)
        assert feats.tokens is None and feats.mask is None and feats.cls_attention is None
        assert feats.pooled.dim() == 2 and feats.pooled.shape[0] == 3
        torch.testing.assert_close(adapter.classify(feats.pooled), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(adapter.logits({"x": x}), ref, atol=0, rtol=0)
    assert adapter.num_classes == C
    assert adapter.batch_size({"x": x}) == 3
    assert adapter.affine == (key != "levit")


# ---------------------------------------------------------------------------- dense


@pytest.mark.parametrize("key", ARCHS)
def test_tokens_are_positions_in_classifier_space(key: str) -> None:
    arch = ARCHS[key]
    model = build(key)
    adapter = TimmAdapter(model)
    assert adapter.supports_tokens
    with torch.no_grad():
        feats = adapter.features({"x": images(key)}, tokens=True)
        tokens = feats.tokens
        assert feats.mask is None
        assert tokens.shape == (3, arch.r, feats.pooled.shape[-1])
        assert adapter.classify(tokens).shape == (3, arch.r, C)
        if arch.mean_is_pooled:
            torch.testing.assert_close(tokens.mean(dim=1), feats.pooled, atol=1e-5, rtol=1e-5)
        else:
            # Non-linear per-position head (or CLS pooling): the mean of the tokens is not pooled.
            gap = (tokens.mean(dim=1) - feats.pooled).abs().max()
            assert gap > 1e-3 * feats.pooled.abs().max()


@pytest.mark.parametrize("key", CNN_ONE_CELL)
def test_one_cell_map_token_is_pooled(key: str) -> None:
    """With a 1x1 final map the only position is the pooled embedding, whatever the head does
    after pooling (ConvNeXt's norm, MobileNetV3's conv_head + act)."""
    model = build(key)
    adapter = TimmAdapter(model)
    with torch.no_grad():
        feats = adapter.features({"x": images(key, size=32)}, tokens=True)
    assert feats.tokens.shape[1] == 1
    torch.testing.assert_close(feats.tokens[:, 0], feats.pooled, atol=1e-5, rtol=1e-5)


def test_vit_fc_norm_runs_per_token_and_prefix_tokens_are_dropped() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=C, **VIT, reg_tokens=4, global_pool="avg"
    ).eval()
    adapter = TimmAdapter(model)
    x = images("vit_token")
    with torch.no_grad():
        tokens = adapter.features({"x": x}, tokens=True).tokens
        seq = model.forward_features(x)
    assert model.num_prefix_tokens == 5 and seq.shape[1] == 5 + 16
    torch.testing.assert_close(tokens, model.fc_norm(seq[:, 5:]), atol=1e-5, rtol=1e-5)


def test_distilled_deit_pooled_keeps_both_tokens() -> None:
    model = build("deit_distilled")
    adapter = TimmAdapter(model)
    x = images("deit_distilled")
    with torch.no_grad():
        seq = model.forward_features(x)
        feats = adapter.features({"x": x}, tokens=True)
    torch.testing.assert_close(feats.pooled, torch.cat([seq[:, 0], seq[:, 1]], dim=-1))
    d = model.embed_dim
    torch.testing.assert_close(feats.tokens[..., :d], feats.tokens[..., d:])
    torch.testing.assert_close(feats.tokens[..., :d], seq[:, 2:])
    assert isinstance(adapter.classifier, nn.ModuleList) and len(adapter.classifier) == 2


def test_mobilenetv3_conv_head_runs_per_position() -> None:
    model = build("mobilenetv3")
    adapter = TimmAdapter(model)
    x = images("mobilenetv3")
    with torch.no_grad():
        fmap = model.forward_features(x)  # [B, 288, 2, 2], before conv_head
        tokens = adapter.features({"x": x}, tokens=True).tokens
        expected = model.act2(model.norm_head(model.conv_head(fmap))).flatten(2).transpose(1, 2)
    assert tokens.shape[-1] == model.conv_head.out_channels
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def _losses_backward(key: str, m: int) -> None:
    """Pooled and dense MultiMix losses from one forward pass: finite, and one backward of their
    sum reaches the backbone's stem and the classifier."""
    model = build(key, train=True)
    adapter = TimmAdapter(model)
    y = torch.tensor([2, 0, 4])[:m]
    feats = adapter.features({"x": images(key, m=m)}, tokens=True)
    # the mixing terms alone (clean_weight=0): a clean term on one example cannot run LeViT's BatchNorm head in training
    pooled = multimix_loss(feats.pooled, y, adapter.classify, n=40, affine=adapter.affine, num_classes=C, clean_weight=0)
    dense = dense_multimix_loss(
        feats.tokens, y, adapter.classify, n=30, affine=adapter.affine, num_classes=C, mask=feats.mask,
        attention="pooled", pooled=feats.pooled, clean_weight=0,
    )
    assert torch.isfinite(pooled) and torch.isfinite(dense)
    (pooled + dense).backward()
    assert_grads(model, adapter)


@pytest.mark.parametrize("key", ARCHS)
def test_losses_reach_backbone_and_classifier(key: str) -> None:
    _losses_backward(key, m=3)


# Not LeViT: its classifier is BatchNorm1d + Linear, which cannot train on one example (the plain
# model's training forward fails the same way, and the adapter runs that very forward).
@pytest.mark.parametrize("key", ["resnet10t", "vit_reg_avg", "deit_distilled", "swin", "mobilenetv3"])
def test_losses_with_one_example(key: str) -> None:
    _losses_backward(key, m=1)


@pytest.mark.parametrize("key", ["resnet10t", "vit_token", "levit"])
def test_one_example_pooled_loss_is_its_cross_entropy(key: str) -> None:
    model = build(key)
    adapter = TimmAdapter(model)
    y = torch.tensor([1])
    with torch.no_grad():
        feats = adapter.features({"x": images(key, m=1)})
        loss = multimix_loss(feats.pooled, y, adapter.classify, n=20, affine=adapter.affine, clean_weight=0)
        ce = soft_cross_entropy(adapter.classify(feats.pooled), torch.eye(C)[y]).mean()
    torch.testing.assert_close(loss, ce, atol=1e-5, rtol=1e-5)


def test_head_batch_norm_uses_running_stats_per_position() -> None:
    """Running statistics of a BN in the head are updated once per step, as in the plain model."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=C, head_norm=True).train()
    twin = copy.deepcopy(model)
    x = images("mobilenetv3")
    TimmAdapter(model).features({"x": x}, tokens=True)
    TimmAdapter(twin).features({"x": x}, tokens=False)
    torch.testing.assert_close(model.norm_head.running_mean, twin.norm_head.running_mean)
    assert model.norm_head.training


# ------------------------------------------------------------------- cls attention


@pytest.mark.parametrize("key", [k for k, a in ARCHS.items() if a.cls])
@pytest.mark.parametrize("m", [1, 3])
def test_cls_attention_matches_unfused_attention(key: str, m: int) -> None:
    model = build(key)
    adapter = TimmAdapter(model)
    assert adapter.supports_cls_attention
    x = images(key, m=m)
    with torch.no_grad():
        feats = adapter.features({"x": x}, tokens=True, cls_attention=True)
    a = feats.cls_attention
    assert a.shape == (m, ARCHS[key].r)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(m))

    # Reference: timm's own unfused path hands the softmaxed attention to attn_drop.
    attn = model.blocks[-1].attn
    seen = []
    handle = attn.attn_drop.register_forward_hook(lambda mod, inp, out: seen.append(out))
    attn.fused_attn = False
    try:
        with torch.no_grad():
            model(x)
    finally:
        attn.fused_attn = True
        handle.remove()
    ref = seen[0][:, :, 0, model.num_prefix_tokens:].mean(dim=1)
    torch.testing.assert_close(a, ref / ref.sum(dim=1, keepdim=True), atol=1e-5, rtol=1e-4)


def test_cls_attention_keeps_graph_when_grad_enabled() -> None:
    model = build("vit_token", train=True)
    feats = TimmAdapter(model).features({"x": images("vit_token")}, cls_attention=True)
    assert feats.cls_attention.requires_grad


# -------------------------------------------------------------------------- errors


def test_cls_attention_on_cnn_is_refused() -> None:
    model = build("resnet10t")
    adapter = TimmAdapter(model)
    assert not adapter.supports_cls_attention
    with pytest.raises(ValueError, match="CLS token.*attention='pooled'"):
        adapter.features({"x": images("resnet10t")}, tokens=True, cls_attention=True)


def test_model_without_classifier_is_refused() -> None:
    model = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    adapter = TimmAdapter(model)
    x = images("resnet10t")
    for get in (lambda: adapter.num_classes, lambda: adapter.classifier, lambda: adapter.features({"x": x})):
        with pytest.raises(ValueError, match=r"no classifier.*num_classes=C.*reset_classifier\(C\)"):
            get()


def test_attention_pool_head_refuses_dense_but_pools() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=C, **VIT, global_pool="map").eval()
    adapter = TimmAdapter(model)
    x = images("vit_token")
    assert not adapter.supports_tokens
    with pytest.raises(ValueError, match="dense mode is not available.*AttentionPoolLatent.*dense=False"):
        adapter.features({"x": x}, tokens=True)
    with torch.no_grad():
        torch.testing.assert_close(adapter.classify(adapter.features({"x": x}).pooled), model(x), atol=1e-5, rtol=1e-5)


class _SpatialConvHead(nn.Module):
    """timm-style toy model whose pre-logits layer is a 3x3 convolution (not position-wise)."""

    num_classes = C

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4)
        self.pre = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, C)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre(x).mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def test_spatial_conv_head_refuses_dense() -> None:
    model = _SpatialConvHead()
    adapter = TimmAdapter(model)
    assert TimmAdapter.matches(model)
    with pytest.raises(ValueError, match=r"dense mode is not available.*\(3, 3\) convolution"):
        adapter.features({"x": torch.randn(2, 3, 32, 32)}, tokens=True)
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(adapter.classify(adapter.features({"x": x}).pooled), model(x))


def test_unpooled_head_is_refused() -> None:
    model = timm.create_model("resnet10t", pretrained=False, num_classes=C, global_pool="")
    with pytest.raises(ValueError, match="not a pooled.*global_pool='avg'"):
        TimmAdapter(model).features({"x": images("resnet10t")})


def test_one_by_one_conv_classifier() -> None:
    model = timm.create_model("resnet10t", pretrained=False, num_classes=C)
    model.fc = nn.Conv2d(model.num_features, C, 1)  # what ClassifierHead(use_conv=True) builds
    model.forward_head = lambda x, pre_logits=False: (
        x.mean(dim=(2, 3)) if pre_logits else model.fc(x.mean(dim=(2, 3), keepdim=True)).flatten(1)
    )
    adapter = TimmAdapter(model.eval())
    x = images("resnet10t")
    with torch.no_grad():
        feats = adapter.features({"x": x}, tokens=True)
        torch.testing.assert_close(adapter.classify(feats.pooled), model(x), atol=1e-5, rtol=1e-5)
    assert adapter.affine
    assert adapter.classify(feats.tokens).shape == (3, 4, C)


# -------------------------------------------------------------------------- inputs


def test_normalize_inputs() -> None:
    adapter = TimmAdapter(build("resnet10t"))
    x = images("resnet10t")
    for args, kwargs in (((x,), {}), ((), {"x": x}), ((), {"pixel_values": x})):
        inputs = adapter.normalize_inputs(args, kwargs)
        assert list(inputs) == ["x"] and inputs["x"] is x
    with pytest.raises(TypeError, match="exactly once"):
        adapter.normalize_inputs((x,), {"pixel_values": x})
    with pytest.raises(TypeError, match="unexpected keyword"):
        adapter.normalize_inputs((x,), {"attention_mask": x})
    with pytest.raises(TypeError, match="exactly once"):
        adapter.normalize_inputs((), {})


def test_matches() -> None:
    assert not TimmAdapter.matches(nn.Linear(3, 4))
    assert not TimmWrapperAdapter.matches(build("resnet10t"))


# ---------------------------------------------------------------- transformers' TimmWrapper


@functools.lru_cache(maxsize=None)
def _wrapper(architecture: str, **model_args) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.TimmWrapperConfig(architecture=architecture, num_labels=C, model_args=model_args or None)
    return transformers.TimmWrapperForImageClassification(config)


@pytest.mark.parametrize("arch, kwargs, size", [("resnet10t", {}, 64), ("vit_tiny_patch16_224", VIT, 32)])
def test_timm_wrapper(arch: str, kwargs: dict, size: int) -> None:
    model = _wrapper(arch, **kwargs).eval()
    model.zero_grad(set_to_none=True)
    assert TimmWrapperAdapter.matches(model) and not TimmAdapter.matches(model)
    adapter = TimmWrapperAdapter(model)
    x = torch.randn(3, 3, size, size)
    inputs = adapter.normalize_inputs((), {"pixel_values": x})
    assert adapter.normalize_inputs((x,), {}) == inputs and adapter.batch_size(inputs) == 3
    with torch.no_grad():
        feats = adapter.features(inputs, tokens=True)
        ref = model(pixel_values=x).logits
        torch.testing.assert_close(adapter.classify(feats.pooled), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(adapter.logits(inputs), ref, atol=0, rtol=0)
    assert adapter.num_classes == C and adapter.affine
    model.train()
    feats = adapter.features(inputs, tokens=True, cls_attention=adapter.supports_cls_attention)
    loss = dense_multimix_loss(feats.tokens, torch.tensor([0, 1, 2]), adapter.classify, n=20, pooled=feats.pooled)
    loss.backward()
    assert first_param(model).grad is not None and first_param(model).grad.abs().sum() > 0


# -------------------------------------------------------------------- MultiMixHead


def _head_module():
    from hf_multimix import head

    return head


HEAD_CASES = [
    ("resnet10t", False, "pooled"),
    ("resnet10t", True, "pooled"),
    ("vit_token", True, "cls"),
    ("deit_distilled", True, "cam"),
    ("convnext_atto", True, "pooled"),
    ("swin", False, "pooled"),
    ("mobilenetv3", True, "cls_error"),
    ("levit", True, "pooled"),
]


@pytest.mark.parametrize("key, dense, attention", HEAD_CASES)
def test_multimix_head(key: str, dense: bool, attention: str) -> None:
    head_mod = _head_module()
    model = build(key)
    if attention == "cls_error":
        with pytest.raises(ValueError, match="CLS token"):
            head_mod.MultiMixHead(model, n=50, dense=True, attention="cls", adapter=TimmAdapter(model))
        return
    head = head_mod.MultiMixHead(model, n=50, dense=dense, attention=attention, adapter=TimmAdapter(model))
    x = images(key)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(x), model(x), atol=0, rtol=0)
    head.train()
    out = head(x, labels=torch.tensor([1, 0, 4]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert_grads(model, head.adapter)


def test_find_adapter_picks_timm_adapters() -> None:
    _head_module()
    from hf_multimix.adapters import find_adapter

    assert type(find_adapter(build("resnet10t"))) is TimmAdapter
    assert type(find_adapter(_wrapper("resnet10t"))) is TimmWrapperAdapter


def test_multimix_head_on_timm_wrapper_hf_style() -> None:
    head_mod = _head_module()
    model = _wrapper("resnet10t")
    model.zero_grad(set_to_none=True)
    head = head_mod.MultiMixHead(model, n=50, dense=True, adapter=TimmWrapperAdapter(model))
    x = torch.randn(3, 3, 64, 64)
    head.eval()
    with torch.no_grad():
        torch.testing.assert_close(head(pixel_values=x).logits, model(pixel_values=x).logits, atol=0, rtol=0)
    head.train()
    out = head(pixel_values=x, labels=torch.tensor([4, 4, 0]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert first_param(model).grad is not None and first_param(model).grad.abs().sum() > 0

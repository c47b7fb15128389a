"""Hugging Face adapters (hf_generic, and hf_vit for ViT / DeiT) on tiny randomly initialised models.

Every model is built from a small config (no hub access); each test builds its own model
so tests stay independent.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import transformers as tf
from torch import Tensor, nn

from hf_multimix import dense_multimix_loss, multimix_loss, sample_lambda
from hf_multimix.adapters.base import BackboneAdapter
from hf_multimix.adapters.hf_generic import HFGenericAdapter
from hf_multimix.adapters.hf_vit import ViTAdapter

C = 5  # classes
IMG = 32
SEQ = 9
VOCAB = 100
PAD = 0  # pad id of the tiny BERT / DistilBERT / DeBERTa configs; RoBERTa uses 1
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_labels=C)
TEXT = dict(vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=PAD)


@dataclass(frozen=True)
class Family:
    """How to build one tiny model and what its adapter should report."""

    name: str
    model_cls: type
    config: Any
    adapter_cls: type[BackboneAdapter]
    embedding: str  # name of the input-embedding parameter gradients must reach
    positions: int  # r
    affine: bool

    @property
    def text(self) -> bool:
        return self.embedding.endswith("word_embeddings.weight")


FAMILIES = [
    Family("vit", tf.ViTForImageClassification, tf.ViTConfig(image_size=IMG, patch_size=8, **TINY), ViTAdapter,
           "vit.embeddings.patch_embeddings.projection.weight", 16, True),
    Family("deit", tf.DeiTForImageClassification, tf.DeiTConfig(image_size=IMG, patch_size=8, **TINY), ViTAdapter,
           "deit.embeddings.patch_embeddings.projection.weight", 16, True),
    Family("swin", tf.SwinForImageClassification,
           tf.SwinConfig(image_size=IMG, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4,
                         num_labels=C),
           HFGenericAdapter, "swin.embeddings.patch_embeddings.projection.weight", 16, True),
    Family("convnext", tf.ConvNextForImageClassification,
           tf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C), HFGenericAdapter,
           "convnext.embeddings.patch_embeddings.weight", 16, True),
    Family("resnet", tf.ResNetForImageClassification,
           tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C), HFGenericAdapter,
           "resnet.embedder.embedder.convolution.weight", 16, True),
    Family("bert", tf.BertForSequenceClassification, tf.BertConfig(**TEXT, **TINY), HFGenericAdapter,
           "bert.embeddings.word_embeddings.weight", SEQ, True),
    # MiniLM checkpoints are BertConfig models: another width and head count, same adapter.
    Family("minilm", tf.BertForSequenceClassification,
           tf.BertConfig(**TEXT, **{**TINY, "hidden_size": 24, "num_attention_heads": 4}), HFGenericAdapter,
           "bert.embeddings.word_embeddings.weight", SEQ, True),
    Family("roberta", tf.RobertaForSequenceClassification,
           tf.RobertaConfig(**{**TEXT, "pad_token_id": 1}, **TINY), HFGenericAdapter,
           "roberta.embeddings.word_embeddings.weight", SEQ, True),
    Family("distilbert", tf.DistilBertForSequenceClassification,
           tf.DistilBertConfig(**TEXT, dim=32, n_layers=2, n_heads=2, hidden_dim=37, num_labels=C), HFGenericAdapter,
           "distilbert.embeddings.word_embeddings.weight", SEQ, True),
    Family("deberta-v2", tf.DebertaV2ForSequenceClassification,
           tf.DebertaV2Config(**TEXT, **TINY, relative_attention=True, pos_att_type=["c2p", "p2c"], position_buckets=16),
           HFGenericAdapter, "deberta.embeddings.word_embeddings.weight", SEQ, True),
]
BY_NAME = {f.name: f for f in FAMILIES}
TEXT_FAMILIES = [f for f in FAMILIES if f.text]
VIT_LIKE = [BY_NAME["vit"], BY_NAME["deit"]]
ids = lambda fams: [f.name for f in fams]  # noqa: E731


def build(fam: Family, seed: int = 0, **config_overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    config = copy.deepcopy(fam.config)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return fam.model_cls(config).eval()


def pad_id(fam: Family) -> int:
    return fam.config.pad_token_id


def make_inputs(fam: Family, m: int, seed: int = 1, mask: bool = True) -> dict[str, Tensor]:
    """Images `[m, 3, 32, 32]`, or right-padded ids `[m, SEQ]` with an attention mask."""
    g = torch.Generator().manual_seed(seed)
    if not fam.text:
        return {"pixel_values": torch.randn(m, 3, IMG, IMG, generator=g)}
    input_ids = torch.randint(3, VOCAB, (m, SEQ), generator=g)
    lengths = [SEQ - (i % 3) * 2 for i in range(m)]  # 9, 7, 5, 9, ...: some rows padded
    attention_mask = torch.zeros(m, SEQ, dtype=torch.long)
    for i, length in enumerate(lengths):
        attention_mask[i, :length] = 1
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_id(fam))
    if not mask:
        return {"input_ids": input_ids}
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("fam", FAMILIES, ids=ids(FAMILIES))
def test_classify_pooled_equals_model_logits(fam: Family) -> None:
    model = build(fam)
    adapter = fam.adapter_cls(model)
    inputs = make_inputs(fam, 3)
    with torch.no_grad():
        feats = adapter.features(inputs)
        expected = model(**inputs).logits
        torch.testing.assert_close(adapter.classify(feats.pooled), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(adapter.logits(inputs), expected, atol=0, rtol=0)
    assert feats.tokens is None and feats.cls_attention is None
    assert adapter.num_classes == C
    assert adapter.main_input_name == ("input_ids" if fam.text else "pixel_values")


@pytest.mark.parametrize("fam", FAMILIES, ids=ids(FAMILIES))
def test_tokens_shape_mask_and_classifier_space(fam: Family) -> None:
    model = build(fam)
    adapter = fam.adapter_cls(model)
    m = 3
    inputs = make_inputs(fam, m)
    with torch.no_grad():
        feats = adapter.features(inputs, tokens=True)
        d = feats.pooled.shape[-1]
        assert feats.tokens.shape == (m, fam.positions, d)
        # The classifier applies at every position: [m, r, d] -> [m, r, c].
        assert adapter.classify(feats.tokens).shape == (m, fam.positions, C)
    if fam.text:
        torch.testing.assert_close(feats.mask, inputs["attention_mask"].bool())
        # Positions live where pooled lives: the first token's feature is the pooled embedding.
        torch.testing.assert_close(feats.tokens[:, 0], feats.pooled, atol=1e-6, rtol=0)
    else:
        assert feats.mask is None


def test_vit_tokens_exclude_prefix_and_are_after_layernorm() -> None:
    for fam in VIT_LIKE:
        model = build(fam)
        inputs = make_inputs(fam, 2)
        with torch.no_grad():
            feats = fam.adapter_cls(model).features(inputs, tokens=True)
            hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]  # before the final layernorm
            base = model.base_model
            prefix = 1 if fam.name == "vit" else 2
            torch.testing.assert_close(feats.tokens, base.layernorm(hidden)[:, prefix:])
            torch.testing.assert_close(feats.pooled, base.layernorm(hidden)[:, 0])


def test_convnext_tokens_are_layernormed_cells() -> None:
    fam = BY_NAME["convnext"]
    model = build(fam)
    inputs = make_inputs(fam, 2)
    with torch.no_grad():
        feats = fam.adapter_cls(model).features(inputs, tokens=True)
        last = model.convnext(**inputs).last_hidden_state  # [m, C, h, w]
        cells = last.flatten(2).transpose(1, 2)
        torch.testing.assert_close(feats.tokens, model.convnext.layernorm(cells))
        # pooled is LayerNorm(mean), what the classifier sees, not the mean of the positions.
        torch.testing.assert_close(feats.pooled, model.convnext.layernorm(cells.mean(1)))


def test_resnet_classifier_skips_flatten() -> None:
    model = build(BY_NAME["resnet"])
    adapter = HFGenericAdapter(model)
    assert adapter.classifier is model.classifier[1]
    assert isinstance(model.classifier[0], nn.Flatten)


@pytest.mark.parametrize("fam", FAMILIES, ids=ids(FAMILIES))
def test_affine_flag(fam: Family) -> None:
    assert fam.adapter_cls(build(fam)).affine is fam.affine


def test_bert_and_deberta_tokens_are_pooler_outputs() -> None:
    for fam, pooler in ((BY_NAME["bert"], lambda mdl: mdl.bert.pooler), (BY_NAME["deberta-v2"], lambda mdl: mdl.pooler)):
        model = build(fam)
        inputs = make_inputs(fam, 2)
        with torch.no_grad():
            feats = fam.adapter_cls(model).features(inputs, tokens=True)
            hidden = model.base_model(**inputs).last_hidden_state
            j = 4
            torch.testing.assert_close(feats.tokens[:, j], pooler(model)(hidden[:, j:j + 1]))


@pytest.mark.parametrize("name", ["roberta", "distilbert"])
def test_mlp_heads_mix_at_the_input_of_their_last_linear(name: str) -> None:
    """One architecture, one method: RoBERTa's head (dense, tanh, out_proj) and DistilBERT's
    (pre_classifier, ReLU, classifier) mix where XLM-R / CamemBERT do, the input of the last Linear,
    so the logit shortcut is exact."""
    fam = BY_NAME[name]
    model = build(fam)
    adapter = HFGenericAdapter(model)
    inputs = make_inputs(fam, 3)
    with torch.no_grad():
        feats = adapter.features(inputs)
        h = model.base_model(**inputs).last_hidden_state[:, 0]
        if name == "roberta":
            expected = model.classifier.dense(h).tanh()
        else:
            expected = model.pre_classifier(h).relu()
    assert adapter.affine and adapter.final_layer_name == ("classifier.out_proj" if name == "roberta" else "classifier")
    torch.testing.assert_close(feats.pooled, expected)


# ------------------------------------------------------------------------------------------- losses


def _loss(adapter: BackboneAdapter, inputs: dict[str, Tensor], labels: Tensor, dense: bool, **kw: Any) -> Tensor:
    feats = adapter.features(inputs, tokens=dense)
    if dense:
        return dense_multimix_loss(
            feats.tokens, labels, adapter.classify, n=50, affine=adapter.affine, mask=feats.mask,
            pooled=feats.pooled, **kw,
        )
    return multimix_loss(feats.pooled, labels, adapter.classify, n=50, affine=adapter.affine, **kw)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dense", [False, True], ids=["pooled", "dense"])
@pytest.mark.parametrize("fam", FAMILIES, ids=ids(FAMILIES))
def test_losses_finite_and_reach_embeddings_and_classifier(fam: Family, dense: bool, m: int) -> None:
    model = build(fam).train()
    adapter = fam.adapter_cls(model)
    loss = _loss(adapter, make_inputs(fam, m), torch.arange(m) % C, dense)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    emb = params[fam.embedding].grad
    assert emb is not None and emb.abs().sum() > 0, fam.embedding
    for name, p in adapter.classifier.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("fam", TEXT_FAMILIES, ids=ids(TEXT_FAMILIES))
def test_text_without_attention_mask_means_all_positions_real(fam: Family) -> None:
    model = build(fam)
    adapter = fam.adapter_cls(model)
    inputs = make_inputs(fam, 3, mask=False)
    feats = adapter.features(inputs, tokens=True)
    assert feats.mask is None and feats.tokens.shape == (3, SEQ, feats.pooled.shape[-1])
    assert torch.isfinite(_loss(adapter, inputs, torch.tensor([0, 1, 2]), dense=True))


# -------------------------------------------------------------------------------- padding invariance


@pytest.mark.parametrize("fam", TEXT_FAMILIES, ids=ids(TEXT_FAMILIES))
def test_padded_ids_change_nothing(fam: Family) -> None:
    model = build(fam)
    adapter = fam.adapter_cls(model)
    inputs = make_inputs(fam, 4)
    pad = inputs["attention_mask"] == 0
    assert pad.any()
    other = dict(inputs)
    other["input_ids"] = inputs["input_ids"].masked_fill(pad, 42)  # any non-pad id in padded slots
    assert (other["input_ids"] != inputs["input_ids"]).any()
    a = adapter.features(inputs, tokens=True)
    b = adapter.features(other, tokens=True)
    real = a.mask
    # The model masks padded keys, so real positions are (here bit-for-bit) unchanged.
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.tokens[real], b.tokens[real], atol=1e-6, rtol=0)

    labels = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(3)
    lam = sample_lambda(4, 40, positions=SEQ)  # [r, m, n], shared by both runs
    for attention in ("pooled", "cam", "uniform"):
        for affine in {adapter.affine, False}:  # shortcut (where affine) and embedding path
            losses = [
                dense_multimix_loss(
                    f.tokens, labels, adapter.classify, lam, attention=attention, pooled=f.pooled, mask=f.mask,
                    affine=affine,
                )
                for f in (a, b)
            ]
            torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    if not torch.equal(a.tokens[~real], b.tokens[~real]):  # DeBERTa zeroes padded embeddings itself
        # Control: without the mask the padded slots do leak into the loss, so the test has power.
        unmasked = [dense_multimix_loss(f.tokens, labels, adapter.classify, lam, pooled=f.pooled) for f in (a, b)]
        assert (unmasked[0] - unmasked[1]).abs() > 1e-6


# ----------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("fam", VIT_LIKE, ids=ids(VIT_LIKE))
def test_cls_attention_matches_eager_attentions(fam: Family) -> None:
    model = build(fam)
    adapter = fam.adapter_cls(model)
    implementation = model.config._attn_implementation
    inputs = make_inputs(fam, 3)
    with torch.no_grad():
        feats = adapter.features(inputs, cls_attention=True)
    att = feats.cls_attention
    assert att.shape == (3, fam.positions)
    assert (att >= 0).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(3))
    assert model.config._attn_implementation == implementation  # the user's model is untouched

    # Reference: Hugging Face's own eager attention weights of the last layer.
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        weights = eager(**inputs, output_attentions=True).attentions[-1]  # [m, h, T, T]
    prefix = 1 if fam.name == "vit" else 2
    row = weights[:, :, 0, prefix:].mean(1)
    torch.testing.assert_close(att, row / row.sum(-1, keepdim=True), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fam", VIT_LIKE, ids=ids(VIT_LIKE))
def test_cls_attention_in_dense_loss_with_odd_and_single_batches(fam: Family) -> None:
    for m in (1, 3):
        model = build(fam).train()
        adapter = fam.adapter_cls(model)
        feats = adapter.features(make_inputs(fam, m), tokens=True, cls_attention=True)
        torch.testing.assert_close(feats.cls_attention.sum(-1), torch.ones(m))
        loss = dense_multimix_loss(
            feats.tokens, torch.arange(m) % C, adapter.classify, n=50, attention=feats.cls_attention,
            pooled=feats.pooled, affine=adapter.affine,
        )
        loss.backward()
        assert torch.isfinite(loss)
        assert dict(model.named_parameters())[fam.embedding].grad is not None


@pytest.mark.parametrize("name", ["swin", "convnext", "resnet", "bert", "roberta"])
def test_cls_attention_refused_without_cls_token(name: str) -> None:
    fam = BY_NAME[name]
    adapter = fam.adapter_cls(build(fam))
    assert adapter.supports_cls_attention is False
    with pytest.raises(ValueError, match="cls_attention=True"):
        adapter.features(make_inputs(fam, 2), tokens=True, cls_attention=True)


def test_cls_attention_refuses_image_attention_mask() -> None:
    fam = BY_NAME["vit"]
    inputs = {**make_inputs(fam, 2), "attention_mask": torch.ones(2, 17)}
    with pytest.raises(ValueError, match="image attention_mask"):
        fam.adapter_cls(build(fam)).features(inputs, cls_attention=True)


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "model_fn, adapter_cls, match",
    [
        (lambda: tf.BertModel(BY_NAME["bert"].config), HFGenericAdapter,
         "use transformers.BertForSequenceClassification"),
        (lambda: tf.RobertaModel(BY_NAME["roberta"].config), HFGenericAdapter, "RobertaForSequenceClassification"),
        (lambda: tf.DistilBertModel(BY_NAME["distilbert"].config), HFGenericAdapter,
         "DistilBertForSequenceClassification"),
        (lambda: tf.DebertaV2Model(BY_NAME["deberta-v2"].config), HFGenericAdapter,
         "DebertaV2ForSequenceClassification"),
        (lambda: tf.ViTModel(BY_NAME["vit"].config), ViTAdapter, "use transformers.ViTForImageClassification"),
        (lambda: tf.DeiTForImageClassificationWithTeacher(BY_NAME["deit"].config), ViTAdapter,
         "fine-tune transformers.DeiTForImageClassification"),
        (lambda: tf.SwinModel(BY_NAME["swin"].config), HFGenericAdapter, "SwinForImageClassification"),
        (lambda: tf.ConvNextModel(BY_NAME["convnext"].config), HFGenericAdapter, "ConvNextForImageClassification"),
        (lambda: tf.ResNetModel(BY_NAME["resnet"].config), HFGenericAdapter, "ResNetForImageClassification"),
    ],
)
def test_model_without_classification_head_is_refused(model_fn: Any, adapter_cls: type, match: str) -> None:
    model = model_fn()
    assert adapter_cls.matches(model)  # matched, so the user gets this message, not "no adapter"
    with pytest.raises(TypeError, match=match):
        adapter_cls(model)


def test_matches_only_its_family() -> None:
    models = {f.name: build(f) for f in (BY_NAME["vit"], BY_NAME["deit"], BY_NAME["bert"], BY_NAME["resnet"])}
    assert ViTAdapter.matches(models["vit"]) and ViTAdapter.matches(models["deit"])
    assert not ViTAdapter.matches(models["bert"]) and not ViTAdapter.matches(models["resnet"])
    assert all(HFGenericAdapter.matches(model) for model in models.values())
    assert not ViTAdapter.matches(nn.Linear(3, 4)) and not HFGenericAdapter.matches(nn.Linear(3, 4))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"num_labels": 1}, r"config.num_labels=1"),
        ({"problem_type": "regression"}, r"problem_type='regression'"),
    ],
)
@pytest.mark.parametrize("name", ["bert", "vit"])
def test_regression_heads_are_refused(name: str, overrides: dict, match: str) -> None:
    fam = BY_NAME[name]
    with pytest.raises(ValueError, match=match):
        fam.adapter_cls(build(fam, **overrides))


@pytest.mark.parametrize("name", ["bert", "resnet"])
def test_labels_never_reach_the_model(name: str) -> None:
    fam = BY_NAME[name]
    adapter = fam.adapter_cls(build(fam))
    inputs = {**make_inputs(fam, 2), "labels": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="pass labels to MultiMixHead"):
        adapter.features(inputs)
    with pytest.raises(ValueError, match="pass labels to MultiMixHead"):
        adapter.logits(inputs)


def test_text_mask_must_be_two_dimensional() -> None:
    fam = BY_NAME["bert"]
    inputs = make_inputs(fam, 2)
    inputs["attention_mask"] = inputs["attention_mask"][:, None, None, :]
    with pytest.raises(ValueError, match=r"needs a \[m, L\] attention_mask"):
        HFGenericAdapter(build(fam)).features(inputs, tokens=True)


def test_text_batch_size_from_ids_or_embeddings() -> None:
    adapter = HFGenericAdapter(build(BY_NAME["bert"]))
    assert adapter.batch_size({"input_ids": torch.zeros(3, 5, dtype=torch.long)}) == 3
    assert adapter.batch_size({"inputs_embeds": torch.zeros(4, 5, 32)}) == 4
    with pytest.raises(TypeError, match="expects a tensor 'input_ids'"):
        adapter.batch_size({})


def test_token_type_ids_pass_through() -> None:
    fam = BY_NAME["bert"]
    model = build(fam, type_vocab_size=2)
    inputs = make_inputs(fam, 2)
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    inputs["token_type_ids"][:, 4:] = 1
    with torch.no_grad():
        adapter = HFGenericAdapter(model)
        pooled = adapter.features(inputs).pooled
        torch.testing.assert_close(adapter.classify(pooled), model(**inputs).logits, atol=1e-5, rtol=0)
        without = adapter.features({k: v for k, v in inputs.items() if k != "token_type_ids"}).pooled
    assert not torch.allclose(pooled, without)


# ------------------------------------------------------------------------------------ registry / head

def test_find_adapter_picks_the_family() -> None:
    from hf_multimix.adapters import find_adapter

    for fam in FAMILIES:
        assert type(find_adapter(build(fam))) is fam.adapter_cls
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        find_adapter(tf.BertModel(BY_NAME["bert"].config))


def _record_model_kwargs(model: nn.Module) -> list[dict[str, Any]]:
    """Records the keyword arguments of every forward of the model and of its base model."""
    calls: list[dict[str, Any]] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(dict(kwargs))

    for module in (model, model.base_model):
        module.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


HEAD_CASES = [(f, False, "pooled") for f in FAMILIES] + [(f, True, "pooled") for f in FAMILIES] + [
    (f, True, "cls") for f in VIT_LIKE
]


@pytest.mark.parametrize(
    "fam, dense, attention", HEAD_CASES, ids=[f"{f.name}-{'dense' if d else 'pooled'}-{a}" for f, d, a in HEAD_CASES]
)
def test_multimix_head(fam: Family, dense: bool, attention: str) -> None:
    from hf_multimix.head import MultiMixHead

    model = build(fam)
    calls = _record_model_kwargs(model)
    head = MultiMixHead(model, n=50, dense=dense, attention=attention, adapter=fam.adapter_cls(model))
    inputs = make_inputs(fam, 3)
    labels = torch.tensor([0, 3, 1])

    head.train()
    out = head(**inputs, labels=labels)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert dict(model.named_parameters())[fam.embedding].grad is not None
    # The model trains on soft targets only through the head: it never sees labels.
    assert calls and all("labels" not in kwargs for kwargs in calls)

    head.eval()
    with torch.no_grad():
        got = head(**inputs, labels=labels).logits
        torch.testing.assert_close(got, model(**inputs).logits, atol=0, rtol=0)
    assert all("labels" not in kwargs for kwargs in calls)

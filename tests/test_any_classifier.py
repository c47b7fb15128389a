"""Any Hugging Face classifier: every family of tests/hf_families.py, pooled and dense, plus PEFT
and torch.compile, with no adapter code.

What a user relies on, per family: the head takes the model as it is; in eval mode (and without
labels) it is exactly the model; on a batch of one example repeated, every mix is that example, so
the pooled MultiMix loss is the model's own cross-entropy; gradients reach every parameter that
plain cross-entropy reaches; dense text losses ignore what sits in padded slots.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers as tf  # noqa: E402
from torch import nn  # noqa: E402

from hf_families import BY_NAME, C, FAMILIES, FINAL_LAYERS, Family, build, make_inputs, repeat_first  # noqa: E402
from hf_multimix import MultiMixHead  # noqa: E402

ids = [f.name for f in FAMILIES]
LABELS = torch.tensor([0, 1, 2, 0])
#: Families whose models number positions by counting non-padding ids (RoBERTa's scheme): with left
#: padding, other ids in the padded slots move every real token, in the plain model too. Their
#: tokenizers pad on the right, where padded content changes nothing (tested).
POSITIONS_FROM_PAD_IDS = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "mpnet"}


def _nonzero_grads(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("fam", FAMILIES, ids=ids)
def test_taken_as_is_and_exactly_the_model_in_eval(fam: Family) -> None:
    model = build(fam)
    head = MultiMixHead(model, n=20).eval()
    assert type(head.adapter).__name__ == fam.adapter
    inputs = make_inputs(fam, 4)
    with torch.no_grad():
        ref = model(**inputs)
        out = head(**inputs)
        labelled = head(**inputs, labels=LABELS)
    assert type(out) is type(ref) and torch.equal(out.logits, ref.logits)
    assert type(labelled) is type(ref) and torch.equal(labelled.logits, ref.logits)
    torch.testing.assert_close(labelled.loss, F.cross_entropy(ref.logits, LABELS))
    assert model.config.problem_type is None  # the labels never reached the model


@pytest.mark.parametrize("fam", FAMILIES, ids=ids)
def test_identical_examples_pooled_loss_is_the_models_cross_entropy(fam: Family) -> None:
    model = build(fam)
    model.eval()  # dropout off; the heads still mix (they train)
    inputs = repeat_first(make_inputs(fam, 4), 4)
    y = torch.full((4,), 2)
    with torch.no_grad():
        ref = F.cross_entropy(model(**inputs).logits, y)
    for clean_weight in (0.0, 1.0):  # the paper's loss, then the default's added clean-batch term
        head = MultiMixHead(model, n=50, clean_weight=clean_weight)
        head.train()
        model.eval()
        loss = head(**inputs, labels=y).loss
        torch.testing.assert_close(loss.detach(), (1 + clean_weight) * ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dense", [False, True], ids=["pooled", "dense"])
@pytest.mark.parametrize("fam", FAMILIES, ids=ids)
def test_trains_and_gradients_reach_what_cross_entropy_reaches(fam: Family, dense: bool) -> None:
    model = build(fam)
    inputs = make_inputs(fam, 4)
    F.cross_entropy(model(**inputs).logits, LABELS).backward()
    reached = _nonzero_grads(model)
    model.zero_grad(set_to_none=True)
    if dense and fam.dense is not True:
        with pytest.raises(ValueError, match=fam.dense):
            MultiMixHead(model, n=50, dense=True).train()(**inputs, labels=LABELS)
        return
    head = MultiMixHead(model, n=50, dense=dense)
    head.train()
    model.eval()
    loss = head(**inputs, labels=LABELS).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    # mixed at the input of the layer that computes the logits, whichever adapter serves the family
    assert head.adapter.final_layer_name == FINAL_LAYERS[fam.name]
    assert head.adapter.per_token == (fam.kind == "decoder")
    missing = reached - _nonzero_grads(model)
    assert not missing, f"cross-entropy reaches {sorted(missing)[:5]}, MultiMix does not"


TEXT_CASES = [(f, side) for f in FAMILIES if f.text for side in ("right", "left")
              if not (side == "left" and f.name in POSITIONS_FROM_PAD_IDS)]


@pytest.mark.parametrize("fam, side", TEXT_CASES, ids=[f"{f.name}-{s}" for f, s in TEXT_CASES])
def test_dense_text_loss_ignores_padded_content(fam: Family, side: str) -> None:
    model = build(fam)
    # The dense MultiMix loss alone: the default's clean-batch term is the model's own cross-entropy,
    # which reads whatever token the model pools (a padded slot, for a left-padded encoder).
    head = MultiMixHead(model, n=50, dense=True, clean_weight=0.0)
    head.train()
    model.eval()
    losses = []
    for fill in (None, 7, 42):  # the pad id, then other ids in the padded slots
        torch.manual_seed(0)
        losses.append(head(**make_inputs(fam, 4, padding_side=side, pad_fill=fill), labels=LABELS).loss.detach())
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses[2], losses[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------- PEFT, compile


@pytest.mark.parametrize("name", ["bert", "electra"])
@pytest.mark.parametrize("dense", [False, True], ids=["pooled", "dense"])
def test_peft_lora_trains_only_the_adapter_and_saves_it(name: str, dense: bool, tmp_path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    fam = BY_NAME[name]
    peft_model = get_peft_model(build(fam), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    head = MultiMixHead(peft_model, n=50, dense=dense)
    inputs = make_inputs(fam, 4)
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # after one step LoRA's B is no longer zero, so A gets gradients too
        opt.zero_grad()
        head(**inputs, labels=LABELS).loss.backward()
        opt.step()
    grads = _nonzero_grads(peft_model)
    assert grads and grads <= trainable
    assert any("lora_A" in n for n in grads) and any("lora_B" in n for n in grads)
    assert any("classifier" in n for n in grads)  # PEFT's modules_to_save copy of the head trains
    head.eval()
    with torch.no_grad():
        ref = peft_model(**inputs)
        assert type(head(**inputs)) is type(ref) and torch.equal(head(**inputs).logits, ref.logits)
    head.save_pretrained(str(tmp_path))
    assert (tmp_path / "adapter_model.safetensors").exists()
    loaded = PeftModel.from_pretrained(build(fam), str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, ref.logits)


@pytest.mark.parametrize("name", ["electra", "gpt2"])
@pytest.mark.parametrize("dense", [False, True], ids=["pooled", "dense"])
def test_compiled_model_trains_and_evaluates_as_compiled(name: str, dense: bool) -> None:
    fam = BY_NAME[name]
    model = build(fam)
    compiled = torch.compile(model, backend="eager")
    head = MultiMixHead(compiled, n=50, dense=dense)
    inputs = make_inputs(fam, 4)
    head.train()
    loss = head(**inputs, labels=LABELS).loss
    loss.backward()
    assert torch.isfinite(loss) and _nonzero_grads(model)
    head.eval()
    with torch.no_grad():
        assert torch.equal(head(**inputs).logits, compiled(**inputs).logits)


# ----------------------------------------------------------------------------------------- bad input


class _ScaledForSequenceClassification(tf.BertPreTrainedModel):
    """A classifier whose logits are its Linear's output times 2 (changed after the last layer)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = tf.BertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return tf.modeling_outputs.SequenceClassifierOutput(logits=2.0 * self.classifier(h[:, 0]))


class _BilinearForSequenceClassification(tf.BertPreTrainedModel):
    """A classifier with no Linear layer producing the logits."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = tf.BertModel(config)
        self.classifier = nn.Bilinear(config.hidden_size, config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return tf.modeling_outputs.SequenceClassifierOutput(logits=self.classifier(h, h))


def _bert_config(**kw):
    return BY_NAME["bert"].config().__class__(**{**BY_NAME["bert"].config().to_dict(), **kw})


def test_logits_changed_after_the_last_linear_are_refused_at_the_first_step() -> None:
    head = MultiMixHead(_ScaledForSequenceClassification(_bert_config()), n=10)
    with pytest.raises(TypeError, match=r"not the output of a linear layer.*adapter=MyAdapter"):
        head(**make_inputs(BY_NAME["bert"], 4), labels=LABELS)


def test_model_without_a_discoverable_classifier_is_refused() -> None:
    with pytest.raises(TypeError, match=r"cannot find _BilinearForSequenceClassification's classifier.*adapter="):
        MultiMixHead(_BilinearForSequenceClassification(_bert_config()))


def test_num_labels_of_config_and_head_must_agree() -> None:
    model = build(BY_NAME["electra"])
    model.config.num_labels = 5  # the head still has 3 outputs
    with pytest.raises(ValueError, match=r"config.num_labels is 5, but its last layer has 3 outputs"):
        MultiMixHead(model)


@pytest.mark.parametrize("name", ["electra", "gpt2", "beit"])
def test_regression_models_are_refused(name: str) -> None:
    model = build(BY_NAME[name])
    model.config.problem_type = "regression"
    with pytest.raises(ValueError, match=r"problem_type='regression'.*single_label_classification"):
        MultiMixHead(model)


@pytest.mark.parametrize("name", ["electra", "gpt2", "beit"])
def test_multi_label_models_select_the_multi_label_task(name: str) -> None:
    model = build(BY_NAME[name])
    model.config.problem_type = "multi_label_classification"
    assert MultiMixHead(model).multimix_config.task == "multi_label"


@pytest.mark.parametrize("name", ["electra", "bert"])
def test_unsupported_input_key_is_named(name: str) -> None:
    head = MultiMixHead(build(BY_NAME[name]), n=10)
    for mode in (head.train, head.eval):
        mode()
        with pytest.raises(TypeError, match=r"takes no input named \['pixel_values'\].*input_ids"):
            head(input_ids=torch.randint(3, 50, (2, 5)), pixel_values=torch.randn(2, 3, 8, 8), labels=LABELS[:2])


def test_base_model_is_refused_with_the_class_to_use_and_token_classifiers_take_the_token_task() -> None:
    config = tf.ElectraConfig(vocab_size=100, embedding_size=32, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=37, num_labels=C)
    with pytest.raises(TypeError, match="ForSequenceClassification"):
        MultiMixHead(tf.ElectraModel(config))
    # token classifiers are trained with per-token labels (tests/test_token_classification.py)
    assert MultiMixHead(tf.ElectraForTokenClassification(config)).multimix_config.task == "token"
    assert MultiMixHead(tf.BertForTokenClassification(BY_NAME["bert"].config())).multimix_config.task == "token"


class _FlatForSequenceClassification(tf.PreTrainedModel):
    """A classifier with no base model and no positions: a Linear on feature vectors."""

    config_class = tf.BertConfig

    def __init__(self, config):
        super().__init__(config)
        self.classifier = nn.Linear(8, config.num_labels)
        self.post_init()

    def forward(self, input_features=None):
        return tf.modeling_outputs.SequenceClassifierOutput(logits=self.classifier(input_features))


def test_model_without_positions_trains_pooled_and_refuses_dense() -> None:
    model = _FlatForSequenceClassification(_bert_config())
    head = MultiMixHead(model, n=20)
    x = torch.randn(4, 8)
    loss = head(input_features=x, labels=LABELS).loss
    loss.backward()
    assert model.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="has no positions.*dense=False"):
        MultiMixHead(model, dense=True)


def test_support_matrix_page_is_up_to_date() -> None:
    import support_matrix

    assert support_matrix.PAGE.read_text(encoding="utf-8") == support_matrix.render(), (
        "docs/support.md is stale: run python tests/support_matrix.py"
    )


@pytest.mark.parametrize("name", ["electra", "albert", "dinov2", "convnextv2", "wav2vec2"])
def test_dense_positions_batched_or_one_by_one_are_the_same(name: str, monkeypatch) -> None:
    from hf_multimix.adapters import hf_generic

    fam = BY_NAME[name]
    model = build(fam)
    inputs = make_inputs(fam, 4)
    tokens = []
    for chunk_bytes in (1, 2**30):  # one position per call of the head, then all in one call
        monkeypatch.setattr(hf_generic, "REPLAY_CHUNK_BYTES", chunk_bytes)
        head = MultiMixHead(model, n=10, dense=True)
        head.train()
        model.eval()
        tokens.append(head.adapter.features(inputs, tokens=True).tokens)
    assert tokens[0].shape[1] > 1
    torch.testing.assert_close(tokens[1], tokens[0], atol=1e-5, rtol=1e-5)


def test_dense_replay_leaves_batch_norm_statistics_to_the_real_batch() -> None:
    """LeViT's head is BatchNorm1d + Linear: replayed positions use, and never update, its running
    statistics, so a dense step moves them exactly as the model's own forward on the batch does."""
    config = tf.LevitConfig(image_size=64, patch_size=16, hidden_sizes=[16, 24, 32], num_attention_heads=[1, 2, 2],
                            depths=[1, 1, 1], key_dim=[8, 8, 8], down_ops=[["Subsample", 8, 1, 4, 2, 2]] * 2,
                            num_labels=C)
    torch.manual_seed(0)
    model = tf.LevitForImageClassification(config)
    x = torch.randn(4, 3, 64, 64)
    twin = tf.LevitForImageClassification(config)
    twin.load_state_dict(model.state_dict())
    twin.train()
    twin(pixel_values=x)  # one plain training forward
    head = MultiMixHead(model, n=10, dense=True)
    head.train()
    head(pixel_values=x, labels=LABELS).loss.backward()
    norms = [(n, b) for n, b in model.named_buffers() if n.startswith("classifier.batch_norm")]
    assert len(norms) == 3  # running mean, running variance, batches tracked
    for name, buf in norms:
        torch.testing.assert_close(buf, dict(twin.named_buffers())[name])


@pytest.mark.parametrize("name, replay", [("bert", "single"), ("dinov2", "single"), ("convnextv2", "single"),
                                          ("wav2vec2", "full")])
def test_dense_fast_path_is_the_full_replay_or_is_not_taken(name: str, replay: str, monkeypatch) -> None:
    """The fast path (each position through the head alone) is taken only where, on the first dense
    batch, it gives what full-length copies give: DINOv2's [CLS, mean of patches] head reads a
    position p as [p, p] either way; wav2vec2's head pools frames with the processor's sample mask,
    which a single frame does not fit, so the full-length replay stays."""
    from hf_multimix.adapters import hf_generic

    fam = BY_NAME[name]
    model = build(fam)
    inputs = make_inputs(fam, 4)
    head = MultiMixHead(model, n=10, dense=True)
    head.train()
    model.eval()
    fast = head.adapter.features(inputs, tokens=True).tokens
    assert head.adapter.dense_replay == replay
    monkeypatch.setattr(hf_generic.HFGenericAdapter, "_check_fast", lambda self, *args: False)
    slow_head = MultiMixHead(model, n=10, dense=True)
    slow_head.train()
    model.eval()
    slow = slow_head.adapter.features(inputs, tokens=True).tokens
    assert slow_head.adapter.dense_replay == "full"
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_adapter_and_final_layer_are_logged(caplog) -> None:
    import logging

    fam = BY_NAME["electra"]
    with caplog.at_level(logging.INFO, logger="hf_multimix"):
        head = MultiMixHead(build(fam), n=10, dense=True)
        head.train()
        head(**make_inputs(fam, 4), labels=LABELS)
    text = caplog.text
    assert "HFGenericAdapter takes ElectraForSequenceClassification" in text
    assert "mixes the input of its layer 'classifier.out_proj'" in text
    assert "single positions (fast path)" in text

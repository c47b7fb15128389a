"""MultiMixHead behaviour users rely on, independent of the backbone family (the adapter
test files cover each family)."""

import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from hf_multimix import BackboneAdapter, Features, MultiMixHead, MultiMixOutput, register_adapter


def tiny_timm(num_classes=5):
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)


def tiny_bert(num_labels=3):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, num_labels=num_labels)
    return BertForSequenceClassification(cfg)


def images(m=4, size=32):
    return torch.randn(m, 3, size, size)


def test_output_is_typed_and_dict_like():
    head = MultiMixHead(tiny_timm(), n=20)
    out = head(images(), labels=torch.tensor([0, 1, 2, 3]))
    assert isinstance(out, MultiMixOutput)
    assert out["loss"] is out.loss and out.loss.dim() == 0 and out.logits.shape == (4, 5)
    assert set(out.keys()) == {"loss", "logits"}


def test_eval_and_unlabelled_calls_are_exactly_the_model():
    model = tiny_timm().eval()
    head = MultiMixHead(model, n=20).eval()
    x = images()
    out = head(x)
    assert type(out) is torch.Tensor and torch.equal(out, model(x))  # what timm returns: a tensor
    head.train()
    model.train()
    torch.manual_seed(1)
    a = head(x)  # train mode without labels: the model's own forward, no mixing
    torch.manual_seed(1)
    assert type(a) is torch.Tensor and torch.equal(a, model(x))


def test_hf_model_never_sees_labels_and_config_is_untouched():
    model = tiny_bert()
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(set(kwargs))
        return original(*args, **kwargs)

    model.forward = spy
    head = MultiMixHead(model, n=20)
    ids = torch.randint(5, 100, (4, 7))
    out = head(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    soft = F.softmax(torch.randn(4, 3), -1)
    head(input_ids=ids, labels=soft).loss.backward()
    head.eval()
    head(input_ids=ids)
    assert all("labels" not in kw for kw in seen)
    assert model.config.problem_type is None


def test_state_dict_is_the_plain_models_and_round_trips(tmp_path):
    model = tiny_timm()
    head = MultiMixHead(model, n=20, distill_weight=0.5, teacher="ema")
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    head(images(), labels=torch.tensor([0, 1, 2, 3])).loss.backward()
    opt.step()
    state = head.state_dict()
    assert list(state) == list(model.state_dict())  # no "model." prefix, no teacher
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    plain = timm.create_model("resnet10t", pretrained=False, num_classes=5)
    plain.load_state_dict(load_file(str(tmp_path / "model.safetensors")))  # strict, without hf_multimix
    x = images()
    assert torch.equal(plain.eval()(x), model.eval()(x))
    # And back into a head.
    other = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=5), n=20)
    other.load_state_dict(state)
    assert torch.equal(other.eval()(x), plain(x))


def test_hf_save_pretrained_loads_into_plain_model(tmp_path):
    model = tiny_bert()
    head = MultiMixHead(model, n=20, dense=True)
    ids = torch.randint(5, 100, (3, 6))
    head(input_ids=ids, labels=torch.tensor([0, 2, 1])).loss.backward()
    head.save_pretrained(str(tmp_path))
    plain = BertForSequenceClassification.from_pretrained(str(tmp_path), local_files_only=True).eval()
    assert torch.allclose(plain(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert plain.config.problem_type is None


def test_ema_teacher_follows_the_model():
    model = tiny_timm()
    head = MultiMixHead(model, n=20, distill_weight=0.5, teacher="ema", ema_decay=0.5)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = next(head.teacher_model.parameters()).detach().clone()
    for _ in range(3):
        head(images(), labels=torch.tensor([0, 1, 2, 3])).loss.backward()
        opt.step()
        opt.zero_grad()
    teacher_w = next(head.teacher_model.parameters())
    model_w = next(model.parameters())
    assert not teacher_w.requires_grad and not head.teacher_model.training
    assert not torch.equal(teacher_w, first)  # it moved ...
    assert not torch.equal(teacher_w, model_w)  # ... but lags behind the model
    # One explicit update with decay 0.5 is the midpoint.
    before = teacher_w.detach().clone()
    head.update_teacher()
    torch.testing.assert_close(teacher_w, 0.5 * before + 0.5 * model_w.detach())


def test_self_distillation_changes_the_loss():
    model = tiny_timm()
    x, y = images(), torch.tensor([0, 1, 2, 3])
    losses = []
    for beta in (0.0, 0.7):
        torch.manual_seed(0)
        losses.append(MultiMixHead(model, n=50, distill_weight=beta, temperature=2.0)(x, labels=y).loss)
    assert torch.isfinite(losses[1]) and not torch.allclose(losses[0], losses[1])


def test_prob_zero_is_plain_cross_entropy():
    model = tiny_timm().eval()  # eval-mode BN inside a training head keeps the check exact
    head = MultiMixHead(model, prob=0.0, label_smoothing=0.1)
    head.train()
    model.eval()
    x, y = images(), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(head(x, labels=y).loss, F.cross_entropy(model(x), y, label_smoothing=0.1))


def test_pairwise_mixing_runs():
    head = MultiMixHead(tiny_timm(), mixing="pairwise", alpha=1.0)
    loss = head(images(5), labels=torch.tensor([0, 1, 2, 3, 4])).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dense", [False, True])
def test_single_and_odd_batches(m, dense):
    head = MultiMixHead(tiny_timm(), n=30, dense=dense)
    # 64 px keeps a 2x2 final map: BatchNorm cannot train on a single value per channel.
    out = head(images(m, size=64), labels=torch.arange(m) % 5)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_dense_on_a_single_position_warns_once_that_it_is_pooled_multimix():
    # resnet10t on 32 px images ends in a 1x1 map: nothing to mix per position
    head = MultiMixHead(tiny_timm(), n=20, dense=True)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.warns(UserWarning, match=r"single position .* Dense MultiMix here is pooled MultiMix"):
        head(images(size=32), labels=y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head(images(size=32), labels=y)  # once per head, not every step
        MultiMixHead(tiny_timm(), n=20, dense=True)(images(size=64), labels=y)  # a 2x2 map: no warning


def test_label_errors():
    head = MultiMixHead(tiny_timm(), n=10)
    with pytest.raises(ValueError, match=r"labels have batch size 3 but the inputs have 4"):
        head(images(), labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"label 7 is outside \[0, 5\)"):
        head(images(), labels=torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match=r"labels have 4 classes but the classifier has 5"):
        head(images(), labels=torch.ones(4, 4) / 4)
    with pytest.raises(ValueError, match=r"labels must be non-negative probability rows summing to 1, but row 0 "
                                         r"sums to 3\.5; normalise them, e\.g\. labels = labels\.clamp_min\(0\)"):
        head(images(), labels=torch.full((4, 5), 0.7))
    with pytest.raises(ValueError, match=r"the batch is empty \(m=0 examples\)"):
        head(images()[:0], labels=torch.zeros(0, dtype=torch.long))


def test_option_errors():
    model = tiny_timm()
    with pytest.raises(ValueError, match=r"n must be a positive integer, got 0"):
        MultiMixHead(model, n=0)
    with pytest.raises(ValueError, match=r"alpha must be > 0"):
        MultiMixHead(model, alpha=0.0)
    with pytest.raises(ValueError, match=r"unknown attention 'saliency'"):
        MultiMixHead(model, attention="saliency")
    with pytest.raises(ValueError, match=r"unknown teacher 'mean'"):
        MultiMixHead(model, teacher="mean")
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\], got 2"):
        MultiMixHead(model, distill_weight=2.0)
    with pytest.raises(ValueError, match=r"attention='cls' needs a ViT-like model"):
        MultiMixHead(model, dense=True, attention="cls")
    with pytest.raises(ValueError, match=r"update_teacher\(\) needs"):
        MultiMixHead(model).update_teacher()


def test_model_without_classifier_is_refused():
    with pytest.raises(ValueError, match=r"no classifier"):
        MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=0))


class TinyNet(nn.Module):
    """A model no built-in adapter knows."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def test_unknown_model_error_says_how_to_plug_in():
    with pytest.raises(TypeError, match=r"no adapter for TinyNet.*adapter=MyAdapter\(model\).*register_adapter"):
        MultiMixHead(TinyNet())


def test_custom_adapter():
    class TinyNetAdapter(BackboneAdapter):
        @classmethod
        def matches(cls, model):
            return isinstance(model, TinyNet)

        def features(self, inputs, *, tokens=False, cls_attention=False):
            fmap = self.model.body(inputs["pixel_values"])
            pos = fmap.flatten(2).transpose(1, 2)
            return Features(pooled=pos.mean(1), tokens=pos if tokens else None)

        def classify(self, z):
            return self.model.fc(z)

        @property
        def classifier(self):
            return self.model.fc

    net = TinyNet()
    x, y = images(), torch.tensor([0, 1, 2, 3])
    for head in (MultiMixHead(net, n=10, adapter=TinyNetAdapter(net)), MultiMixHead(net, n=10, dense=True,
                 adapter=TinyNetAdapter(net))):
        head(x, labels=y).loss.backward()
        assert net.fc.weight.grad is not None and net.body.weight.grad is not None
        assert torch.equal(head.eval()(x), net(x))
    register_adapter(TinyNetAdapter)
    try:
        assert isinstance(MultiMixHead(TinyNet()).adapter, TinyNetAdapter)
    finally:
        from hf_multimix.adapters import _REGISTRY

        _REGISTRY.remove(TinyNetAdapter)


def test_eval_with_labels_is_exactly_the_model():
    # timm: the logits tensor, as the model returns it (a validation loop computes its own loss).
    model = tiny_timm().eval()
    head = MultiMixHead(model, n=20).eval()
    x, y = images(), torch.tensor([0, 1, 2, 3])
    out = head(x, labels=y)
    assert type(out) is torch.Tensor and torch.equal(out, model(x))
    # Hugging Face: the model's own output class, with the cross-entropy as its loss; the labels never
    # reach the model, so its config is not changed.
    bert = tiny_bert().eval()
    head = MultiMixHead(bert, n=20).eval()
    ids, y = torch.randint(5, 100, (3, 6)), torch.tensor([0, 2, 1])
    out = head(input_ids=ids, labels=y)
    ref = bert(input_ids=ids)
    assert type(out) is type(ref) and torch.equal(out.logits, ref.logits)
    torch.testing.assert_close(out.loss, F.cross_entropy(ref.logits, y))
    assert out[0] is out.loss and bert.config.problem_type is None
    assert type(head(input_ids=ids)) is type(ref) and head(input_ids=ids).loss is None
    # return_dict=False: a tuple, with the loss first as the model would put it.
    out = head(input_ids=ids, labels=y, return_dict=False)
    assert isinstance(out, tuple) and torch.equal(out[1], ref.logits)
    torch.testing.assert_close(out[0], F.cross_entropy(ref.logits, y))


@pytest.mark.parametrize("family", ["timm", "hf"])
@pytest.mark.parametrize("dense", [False, True])
def test_training_step_runs_the_classifier_only_inside_the_forward(family, dense):
    """The clean logits are the forward's output and the positions' logits are computed inside it;
    the loss mixes logits, so nothing calls the classifier after the forward (FSDP1 has resharded
    its parameters by then)."""
    if family == "timm":
        model = tiny_timm()
        inputs = {"x": images()}
    else:
        model = tiny_bert()
        inputs = {"input_ids": torch.randint(3, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long)}
    head = MultiMixHead(model, n=20, dense=dense, attention="pooled", clean_weight=0.0)
    head(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss  # the first step finds the generic path's layer
    classifier = head.adapter.classifier
    depth, outside = [], []
    model.register_forward_pre_hook(lambda module, args: depth.append(1))
    model.register_forward_hook(lambda module, args, out: depth.pop() and None)
    classifier.register_forward_pre_hook(lambda module, args: None if depth else outside.append(module))
    loss = head(**inputs, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    assert torch.isfinite(loss) and not outside
    assert classifier.weight.grad is not None and classifier.weight.grad.abs().sum() > 0

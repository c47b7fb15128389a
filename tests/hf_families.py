"""The Hugging Face classifiers `MultiMixHead` is tested on: one tiny model per family.

This table is the test parametrisation of tests/test_any_classifier.py and the source of the
support matrix in docs/support.md (`python tests/support_matrix.py` writes it; a test checks that
the page is up to date). Each row says how to build the model and its inputs, and what the tests
must find: which adapter takes it, and whether Dense MultiMix works or is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import transformers as tf
from torch import Tensor

C = 3  # classes
SEQ = 8
VOCAB = 100
IMG = 32
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, num_labels=C)
TEXT = dict(vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0)
DECODER = dict(vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@dataclass(frozen=True)
class Family:
    """One tiny model and what the tests must find for it.

    Attributes:
        name: the family (`config.model_type` in words).
        model_cls: the transformers class.
        config: a function returning its tiny config.
        kind: "text" (encoder), "decoder" (reads the last non-padding token), "image", "audio"
            (raw waveform) or "spectrogram".
        adapter: the adapter class that must take it ("HFGenericAdapter" for the generic path).
        dense: True when Dense MultiMix runs, else the start of the error it must raise.
        padding_side: where the family's tokenizers pad ("right" or "left").
        note: one line for the support matrix.
    """

    name: str
    model_cls: type
    config: Callable[[], Any]
    kind: str
    adapter: str = "HFGenericAdapter"
    dense: bool | str = True
    padding_side: str = "right"
    note: str = ""
    image_size: int = 32

    @property
    def text(self) -> bool:
        return self.kind in ("text", "decoder")


def _text(config_cls: type, **kw: Any) -> Callable[[], Any]:
    return lambda: config_cls(**{**TEXT, **TINY, **kw})


def _decoder(config_cls: type, **kw: Any) -> Callable[[], Any]:
    return lambda: config_cls(**{**DECODER, **TINY, **kw})


FAMILIES: list[Family] = [
    # Text encoders.
    Family("bert", tf.BertForSequenceClassification, _text(tf.BertConfig), "text"),
    Family("roberta", tf.RobertaForSequenceClassification, _text(tf.RobertaConfig, pad_token_id=1), "text"),
    Family("distilbert", tf.DistilBertForSequenceClassification,
           lambda: tf.DistilBertConfig(**TEXT, dim=32, n_layers=2, n_heads=2, hidden_dim=37, num_labels=C), "text"),
    Family("deberta-v2", tf.DebertaV2ForSequenceClassification,
           _text(tf.DebertaV2Config, relative_attention=True, pos_att_type=["c2p", "p2c"], position_buckets=16),
           "text"),
    Family("electra", tf.ElectraForSequenceClassification, _text(tf.ElectraConfig, embedding_size=32), "text"),
    Family("xlm-roberta", tf.XLMRobertaForSequenceClassification, _text(tf.XLMRobertaConfig, pad_token_id=1), "text"),
    Family("albert", tf.AlbertForSequenceClassification, _text(tf.AlbertConfig, embedding_size=16), "text"),
    Family("mpnet", tf.MPNetForSequenceClassification, _text(tf.MPNetConfig, pad_token_id=1), "text"),
    Family("modernbert", tf.ModernBertForSequenceClassification,
           _text(tf.ModernBertConfig, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2), "text"),
    Family("camembert", tf.CamembertForSequenceClassification, _text(tf.CamembertConfig, pad_token_id=1), "text"),
    Family("data2vec-text", tf.Data2VecTextForSequenceClassification, _text(tf.Data2VecTextConfig, pad_token_id=1),
           "text"),
    # Decoder classifiers: the score layer runs on every token; the model reads the last non-padding one.
    Family("gpt2", tf.GPT2ForSequenceClassification,
           lambda: tf.GPT2Config(**{k: v for k, v in DECODER.items() if k != "max_position_embeddings"},
                                 n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=C), "decoder"),
    Family("llama", tf.LlamaForSequenceClassification, _decoder(tf.LlamaConfig, num_key_value_heads=2), "decoder",
           padding_side="left"),
    Family("qwen2", tf.Qwen2ForSequenceClassification, _decoder(tf.Qwen2Config, num_key_value_heads=2), "decoder",
           padding_side="left"),
    Family("mistral", tf.MistralForSequenceClassification, _decoder(tf.MistralConfig, num_key_value_heads=2),
           "decoder", padding_side="left"),
    # Vision. ViT and DeiT: the generic path plus CLS attention (hf_vit.py).
    Family("vit", tf.ViTForImageClassification, lambda: tf.ViTConfig(image_size=IMG, patch_size=8, **TINY), "image",
           "ViTAdapter"),
    Family("deit", tf.DeiTForImageClassification, lambda: tf.DeiTConfig(image_size=IMG, patch_size=8, **TINY),
           "image", "ViTAdapter"),
    Family("swin", tf.SwinForImageClassification,
           lambda: tf.SwinConfig(image_size=IMG, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                 window_size=4, num_labels=C), "image"),
    Family("convnext", tf.ConvNextForImageClassification,
           lambda: tf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C), "image"),
    Family("resnet", tf.ResNetForImageClassification,
           lambda: tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C), "image"),
    Family("beit", tf.BeitForImageClassification, lambda: tf.BeitConfig(image_size=IMG, patch_size=8, **TINY),
           "image"),
    Family("dinov2", tf.Dinov2ForImageClassification, lambda: tf.Dinov2Config(image_size=IMG, patch_size=8, **TINY),
           "image", note="the classifier reads [CLS, mean of patches]; a position p is read as [p, p]"),
    Family("convnextv2", tf.ConvNextV2ForImageClassification,
           lambda: tf.ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C), "image"),
    Family("regnet", tf.RegNetForImageClassification,
           lambda: tf.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8,
                                   num_labels=C), "image"),
    Family("efficientnet", tf.EfficientNetForImageClassification,
           lambda: tf.EfficientNetConfig(image_size=64, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128,
                                         num_labels=C), "image", image_size=64),
    Family("mobilevit", tf.MobileViTForImageClassification,
           lambda: tf.MobileViTConfig(image_size=64, hidden_sizes=[8, 8, 8], neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
                                      num_attention_heads=2, mlp_ratio=1.0, num_labels=C), "image", image_size=64),
    # Audio.
    Family("wav2vec2", tf.Wav2Vec2ForSequenceClassification,
           lambda: tf.Wav2Vec2Config(vocab_size=32, conv_dim=(8, 8), conv_stride=(4, 4), conv_kernel=(8, 8),
                                     num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                                     classifier_proj_size=16, **TINY), "audio",
           note="positions are audio frames; the processor's sample mask becomes a frame mask"),
    Family("hubert", tf.HubertForSequenceClassification,
           lambda: tf.HubertConfig(vocab_size=32, conv_dim=(8, 8), conv_stride=(4, 4), conv_kernel=(8, 8),
                                   num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                                   classifier_proj_size=16, **TINY), "audio"),
    Family("ast", tf.ASTForAudioClassification,
           lambda: tf.ASTConfig(num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8, time_stride=8,
                                **TINY), "spectrogram",
           note="the head is LayerNorm then Linear on the mean of the CLS and distillation tokens"),
]
BY_NAME = {f.name: f for f in FAMILIES}

#: The layer whose output is the logits; MultiMix mixes its input (tested). One architecture, one
#: mixing point: RoBERTa, XLM-R, CamemBERT and Data2Vec-text share a head and mix at `out_proj`'s input.
FINAL_LAYERS = {
    "bert": "classifier", "roberta": "classifier.out_proj", "distilbert": "classifier", "deberta-v2": "classifier",
    "electra": "classifier.out_proj", "xlm-roberta": "classifier.out_proj", "albert": "classifier",
    "mpnet": "classifier.out_proj", "modernbert": "classifier", "camembert": "classifier.out_proj",
    "data2vec-text": "classifier.out_proj", "gpt2": "score", "llama": "score", "qwen2": "score", "mistral": "score",
    "vit": "classifier", "deit": "classifier", "swin": "classifier", "convnext": "classifier",
    "resnet": "classifier.1", "beit": "classifier", "dinov2": "classifier", "convnextv2": "classifier",
    "regnet": "classifier.1", "efficientnet": "classifier", "mobilevit": "classifier", "wav2vec2": "classifier",
    "hubert": "classifier", "ast": "classifier.dense",
}


def build(fam: Family, seed: int = 0) -> torch.nn.Module:
    """The tiny model, in eval mode (dropout off)."""
    torch.manual_seed(seed)
    return fam.model_cls(fam.config()).eval()


def pad_id(fam: Family) -> int:
    return int(fam.config().pad_token_id)


def make_inputs(fam: Family, m: int, seed: int = 1, padding_side: str | None = None, pad_fill: int | None = None
                ) -> dict[str, Tensor]:
    """A batch of `m` examples. Text rows have lengths 8, 6, 4, 8, ... padded on `padding_side` (the
    family's own by default) with `pad_fill` (the pad id by default) and an attention mask."""
    g = torch.Generator().manual_seed(seed)
    if fam.kind == "image":
        return {"pixel_values": torch.randn(m, 3, fam.image_size, fam.image_size, generator=g)}
    if fam.kind == "audio":  # waveforms of 400, 320, 240, 400, ... samples, zero-padded, with the sample mask
        mask = torch.zeros(m, 400, dtype=torch.long)
        for i in range(m):
            mask[i, : 400 - (i % 3) * 80] = 1
        return {"input_values": torch.randn(m, 400, generator=g) * mask, "attention_mask": mask}
    if fam.kind == "spectrogram":
        return {"input_values": torch.randn(m, 32, 16, generator=g)}
    side = padding_side or fam.padding_side
    ids = torch.randint(3, VOCAB, (m, SEQ), generator=g)
    mask = torch.zeros(m, SEQ, dtype=torch.long)
    for i in range(m):
        length = SEQ - (i % 3) * 2
        if side == "right":
            mask[i, :length] = 1
        else:
            mask[i, SEQ - length:] = 1
    ids = ids.masked_fill(mask == 0, pad_id(fam) if pad_fill is None else pad_fill)
    return {"input_ids": ids, "attention_mask": mask}


def repeat_first(inputs: dict[str, Tensor], m: int) -> dict[str, Tensor]:
    """A batch of `m` copies of the first example."""
    return {k: v[:1].expand(m, *v.shape[1:]).clone() for k, v in inputs.items()}

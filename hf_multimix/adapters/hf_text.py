"""Adapters for Hugging Face sequence classifiers: BERT (and MiniLM, a BERT config), RoBERTa,
DistilBERT and DeBERTa-v2.

MultiMix mixes at the last layer before the classifier (docs/method.md). Where the model's head is
a pooler followed by a Linear, the mixing point is the pooler's output and the classifier is
affine (exact logit shortcut); where the head is itself non-linear, the mixing point is the
first-token hidden state and the head runs on mixed embeddings:

* BERT: pooled = the pooler output `tanh(dense(h_CLS))`; tokens = the same pooler on every
  token; classifier = `dropout -> Linear` (affine).
* DeBERTa-v2: pooled = the `ContextPooler` output `act(dense(dropout(h_CLS)))`; tokens = the
  ContextPooler on every token; classifier = `dropout -> Linear` (affine).
* RoBERTa: pooled = the `<s>` hidden state; tokens = the last hidden states; classifier = the
  `RobertaClassificationHead` (dropout, dense, tanh, dropout, out_proj) on every `[..., d]`
  vector (not affine: embedding path).
* DistilBERT: pooled = the `[CLS]` hidden state; tokens = the last hidden states; classifier =
  `pre_classifier -> ReLU -> dropout -> classifier` (not affine: embedding path).

Shapes: pooled `[m, d]`, tokens `[m, L, d]`, mask `[m, L]`. In eval mode
`classify(features(inputs).pooled)` is exactly `model(**inputs).logits`. The base model
(`model.bert`, ...) is called directly and never receives `labels`.

Positions: every non-padding token is a position, `[CLS]`/`<s>` and `[SEP]`/`</s>` included,
so `tokens` has the input's length `L` and `Features.mask` is `attention_mask.bool()` as is (no
attention mask: every token is real). Unlike the ViT CLS token, the first token here is what the
classifier reads, so keeping it makes the pooled mix one of the dense terms; `[SEP]` is a real
input token. Padding is never a position. The model masks padded keys in attention, so with
right padding (the tokenizers' default) the ids in padded slots change nothing in the features
of real positions, nor in the dense loss. (With left padding the same holds as long as padded
slots hold `pad_token_id`: RoBERTa derives its position ids from which ids are padding.)

Pooler-per-token (BERT, DeBERTa-v2): the pooler is the last layer before the Linear, and its
output is the space the classifier was trained on, so positions are sent through it too; the
first position then equals `pooled` (in eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from . import register_builtin
from .base import Features
from .hf_vision import HFClassifierAdapter


def _per_token(first_token_module: nn.Module, hidden: Tensor) -> Tensor:
    """Applies a module that reads `x[:, 0]` (a pooler or a classification head) to every vector.

    `[..., d]` is viewed as `[N, 1, d]` so the module's own forward runs (hooks, adapters such as
    LoRA included) on each vector as if it were a first token.

    Args:
        first_token_module: maps `[N, L, d]` to `[N, d']` by reading position 0.
        hidden: `[..., d]`.

    Returns:
        `[..., d']`.
    """
    lead = hidden.shape[:-1]
    out = first_token_module(hidden.reshape(-1, 1, hidden.shape[-1]))
    return out.reshape(*lead, out.shape[-1])


class HFTextAdapter(HFClassifierAdapter):
    """Hugging Face sequence classifiers; a family overrides `_pooled`, `_tokens` and `classifier`.

    Inputs are passed through as given (`input_ids`, `attention_mask`, `token_type_ids`,
    `position_ids`, `inputs_embeds`, ...), without labels.
    """

    main_input_name: ClassVar[str] = "input_ids"

    def features(
        self, inputs: Mapping[str, Any], *, tokens: bool = False, cls_attention: bool = False
    ) -> Features:
        """Runs the base model once.

        Args:
            inputs: the model's keyword inputs (`input_ids` `[m, L]`, `attention_mask` `[m, L]`, ...).
            tokens: also return every token `[m, L, d]` and its validity mask `[m, L]`.
            cls_attention: not available for text classifiers (raises).

        Returns:
            `Features` with `pooled` `[m, d]`, and with `tokens=True` the tokens and
            `mask = attention_mask.bool()` (None without an attention mask: every token is real).
        """
        if cls_attention:
            raise ValueError(
                f"cls_attention=True is for ViT-like image models; {type(self.model).__name__} is a text "
                "classifier. Use attention='pooled', 'cam' or 'uniform'."
            )
        kwargs = self._model_inputs(inputs)
        mask = self._mask(kwargs) if tokens else None  # checked before the forward
        out = self.base(**kwargs)
        hidden = out.last_hidden_state
        if mask is not None and tuple(mask.shape) != tuple(hidden.shape[:2]):
            raise ValueError(
                f"attention_mask has shape {tuple(mask.shape)} but the model returned {tuple(hidden.shape[:2])} "
                "tokens; pass the tokenizer's [m, L] attention_mask."
            )
        return Features(pooled=self._pooled(out), tokens=self._tokens(out) if tokens else None, mask=mask)

    def classify(self, z: Tensor) -> Tensor:
        """The model's classifier on `[..., d]`, returning `[..., c]`."""
        return self.classifier(z)

    def batch_size(self, inputs: Mapping[str, Any]) -> int:
        """Examples in the batch, read from `input_ids` or else `inputs_embeds`."""
        for key in ("input_ids", "inputs_embeds"):
            x = inputs.get(key)
            if isinstance(x, Tensor):
                return x.shape[0]
        raise TypeError(
            f"{type(self).__name__} expects a tensor 'input_ids' or 'inputs_embeds' (got keys {sorted(inputs)})."
        )

    def _mask(self, inputs: Mapping[str, Any]) -> Tensor | None:
        mask = inputs.get("attention_mask")
        if mask is None:
            return None
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"dense MultiMix needs a [m, L] attention_mask (1 = token, 0 = padding), got {shape}; "
                "pass the tokenizer's attention_mask, not an expanded 4-d mask."
            )
        return mask.bool()

    def _pooled(self, out: Any) -> Tensor:
        """What the classifier reads, `[m, d]`: by default the first token's hidden state."""
        return out.last_hidden_state[:, 0]

    def _tokens(self, out: Any) -> Tensor:
        """Every token in the classifier's input space, `[m, L, d]`."""
        return out.last_hidden_state


@register_builtin
class BertAdapter(HFTextAdapter):
    """`BertForSequenceClassification` (also MiniLM and other BERT configs).

    pooled: BertModel's pooler output `tanh(dense(h_CLS))`; tokens: the same pooler on every
    token; classifier: `dropout -> Linear` (affine).
    """

    model_types = ("bert",)
    head_class = "BertForSequenceClassification"
    base_attr = "bert"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if getattr(self.base, "pooler", None) is None:
            raise ValueError(
                f"{type(model).__name__}.bert has no pooler (add_pooling_layer=False), but its classifier reads "
                "the pooler output; build the model with the pooler."
            )
        self._classifier = nn.Sequential(model.dropout, model.classifier)

    @property
    def classifier(self) -> nn.Module:
        return self._classifier

    def _pooled(self, out: Any) -> Tensor:
        return out.pooler_output

    def _tokens(self, out: Any) -> Tensor:
        return _per_token(self.base.pooler, out.last_hidden_state)


@register_builtin
class DebertaV2Adapter(HFTextAdapter):
    """`DebertaV2ForSequenceClassification` (DeBERTa-v3 checkpoints use it too).

    Same shape as BERT, with the pooler outside the base model: `ContextPooler` is
    `act(dense(dropout(h_CLS)))`, then `dropout -> Linear`. The mixing point is the pooler's
    output, consistently with BERT, which keeps the classifier affine (exact shortcut);
    tokens are the ContextPooler applied to every token.
    """

    model_types = ("deberta-v2",)
    head_class = "DebertaV2ForSequenceClassification"
    base_attr = "deberta"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._classifier = nn.Sequential(model.dropout, model.classifier)

    @property
    def classifier(self) -> nn.Module:
        return self._classifier

    def _pooled(self, out: Any) -> Tensor:
        return self.model.pooler(out.last_hidden_state)

    def _tokens(self, out: Any) -> Tensor:
        return _per_token(self.model.pooler, out.last_hidden_state)


@register_builtin
class RobertaAdapter(HFTextAdapter):
    """`RobertaForSequenceClassification`.

    Its `RobertaClassificationHead` (dropout, dense, tanh, dropout, out_proj on `<s>`) is the
    classifier, so pooled is the `<s>` hidden state, tokens are all hidden states, and the head
    runs on every vector of `[..., d]` (non-affine: MultiMix takes the embedding path).
    """

    model_types = ("roberta",)
    head_class = "RobertaForSequenceClassification"
    base_attr = "roberta"

    @property
    def classifier(self) -> nn.Module:
        return self.model.classifier

    def classify(self, z: Tensor) -> Tensor:
        # The head reads features[:, 0, :]; viewed as [N, 1, d] it runs on every vector.
        return _per_token(self.model.classifier, z)


@register_builtin
class DistilBertAdapter(HFTextAdapter):
    """`DistilBertForSequenceClassification`.

    pooled: the `[CLS]` hidden state; tokens: all hidden states; classifier:
    `pre_classifier -> ReLU -> dropout -> classifier` (non-affine: embedding path).
    """

    model_types = ("distilbert",)
    head_class = "DistilBertForSequenceClassification"
    base_attr = "distilbert"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        # The model applies ReLU functionally; a fresh nn.ReLU has no state, so this is the same map.
        self._classifier = nn.Sequential(model.pre_classifier, nn.ReLU(), model.dropout, model.classifier)

    @property
    def classifier(self) -> nn.Module:
        return self._classifier


__all__ = ["BertAdapter", "DebertaV2Adapter", "DistilBertAdapter", "HFTextAdapter", "RobertaAdapter"]

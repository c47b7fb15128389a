"""Adapters for Hugging Face image classifiers: ViT, DeiT, Swin, ConvNeXt and ResNet.

All five share one implementation (`HFImageAdapter`); a family only says how to read the
pooled embedding, the positions and the classifier from its base model's output. For every
family `classify(features(x).pooled)` is exactly `model(pixel_values=x).logits`:

=========  ===================================  ==========================================  ======
family     pooled `[m, d]`                      tokens `[m, r, d]`                          affine
=========  ===================================  ==========================================  ======
ViT        final-layernorm CLS token            patch tokens after the final layernorm      yes
DeiT       final-layernorm CLS token            patch tokens (CLS + distillation dropped)   yes
Swin       avg-pooled final-layernorm sequence  final-layernorm sequence (before the pool)  yes
ConvNeXt   layernorm(mean of the last map)      layernorm of every cell of the last map     yes
ResNet     avg-pooled last map                  every cell of the last map                  yes
=========  ===================================  ==========================================  ======

The base model (`model.base_model`, e.g. `model.vit`) is called directly so the classifier runs
once per batch, on what MultiMix mixes. The model never receives `labels`.

This module also holds `HFClassifierAdapter`, the checks shared with the text adapters
(`hf_text.py`): a base model without a head, a regression or multi-label head, labels in
the inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from . import register_builtin
from .base import (
    BackboneAdapter,
    Features,
    check_input_names,
    check_single_label_config,
    has_class,
    refuse_labels,
    tokens_from_map,
)


class HFClassifierAdapter(BackboneAdapter):
    """Shared part of the Hugging Face adapters: matching, head checks, inputs and `num_classes`.

    A subclass names the `config.model_type` values it knows and the class with the head
    (`head_class`). `matches` accepts every model of those types so that a base model, or one
    with another head, gets an error that names the right class instead of "no adapter".

    Attributes:
        model_types: `config.model_type` values of the family.
        head_class: the `...ForImageClassification` / `...ForSequenceClassification` class name.
        base_attr: attribute of the head class holding the base model (`model.vit`, `model.bert`).
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    head_class: ClassVar[str] = ""
    base_attr: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        if not has_class(model, self.head_class):
            raise TypeError(
                f"{type(model).__name__} has no classification head that MultiMix can train: use "
                f"transformers.{self.head_class} (e.g. {self.head_class}.from_pretrained(name, num_labels=c) "
                f"or {self.head_class}(config)), which wraps the same backbone."
            )
        check_single_label_config(model)
        self.base: nn.Module = getattr(model, self.base_attr)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """The family's classifier, or its base model (which then gets an error naming the class to
        use); any other classifier of the family's config is left to the generic adapter."""
        if getattr(getattr(model, "config", None), "model_type", None) not in cls.model_types:
            return False
        return has_class(model, cls.head_class) or not type(model).__name__.endswith("Classification")

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def _model_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs for the base model: labels refused, outputs as a dataclass."""
        refuse_labels(self, inputs)
        kwargs = dict(inputs)
        kwargs["return_dict"] = True
        return kwargs

    def normalize_inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        inputs = super().normalize_inputs(args, kwargs)
        check_input_names(self.model, inputs)
        return inputs

    def forward_model(self, inputs: Mapping[str, Any], module: nn.Module | None = None) -> Any:
        """Exactly `model(**inputs)`, labels refused (the model would compute its own loss)."""
        self._model_inputs(inputs)  # refuses labels
        return (self.model if module is None else module)(**inputs)


class HFImageAdapter(HFClassifierAdapter):
    """Hugging Face image classifiers; a family overrides `_pooled`, `_tokens` and maybe `classifier`.

    Positions are patch tokens (ViT, DeiT, Swin) or feature-map cells (ConvNeXt, ResNet),
    mapped into the classifier's input space; prefix tokens are never positions.
    """

    main_input_name: ClassVar[str] = "pixel_values"

    def features(
        self, inputs: Mapping[str, Any], *, tokens: bool = False, cls_attention: bool = False
    ) -> Features:
        """Runs the base model once.

        Args:
            inputs: the model's keyword inputs (`pixel_values` `[m, 3, H, W]`, ...), without labels.
            tokens: also return the positions `[m, r, d]`.
            cls_attention: also return the last block's CLS-to-patch attention `[m, r]` (ViT, DeiT).

        Returns:
            `Features` with `pooled` `[m, d]`, and `tokens` / `cls_attention` when asked; `mask` is
            None (every position of an image is real).
        """
        if cls_attention and not self.supports_cls_attention:
            raise ValueError(
                f"cls_attention=True needs a ViT-like model with a CLS token; {type(self.model).__name__} has none. "
                "Use attention='pooled' or 'cam'."
            )
        kwargs = self._model_inputs(inputs)
        if cls_attention:
            out, attention = self._run_with_cls_attention(kwargs)
        else:
            out, attention = self.base(**kwargs), None
        return Features(
            pooled=self._pooled(out),
            tokens=self._tokens(out) if tokens else None,
            cls_attention=attention,
        )

    @property
    def classifier(self) -> nn.Module:
        return self.model.classifier

    def classify(self, z: Tensor) -> Tensor:
        """The model's classifier on `[..., d]`, returning `[..., c]`."""
        return self.classifier(z)

    def _pooled(self, out: Any) -> Tensor:
        """What the head feeds its classifier, `[m, d]`."""
        return out.pooler_output

    def _tokens(self, out: Any) -> Tensor:
        """Positions in the classifier's input space, `[m, r, d]`."""
        return out.last_hidden_state

    def _run_with_cls_attention(self, kwargs: dict[str, Any]) -> tuple[Any, Tensor]:
        raise NotImplementedError  # only the ViT-like families set supports_cls_attention


@register_builtin
class ViTAdapter(HFImageAdapter):
    """`ViTForImageClassification`: the classifier reads the final-layernorm CLS token.

    CLS attention: the last block's attention input is captured with a hook and the CLS row of
    `softmax(q k^T / sqrt(d_head))` is recomputed from its own `q_proj` / `k_proj`. This gives the
    same weights as `output_attentions=True` under eager attention (tested), but works with SDPA
    or flash attention (which return no weights), leaves the model's attention implementation
    alone and costs one `[m, heads, T]` row instead of every layer's `T x T` maps. It is taken
    before attention dropout.
    """

    model_types = ("vit",)
    head_class = "ViTForImageClassification"
    base_attr = "vit"
    supports_cls_attention = True
    #: Tokens before the patches: CLS.
    prefix_tokens: ClassVar[int] = 1

    def _pooled(self, out: Any) -> Tensor:
        return out.last_hidden_state[:, 0]

    def _tokens(self, out: Any) -> Tensor:
        return out.last_hidden_state[:, self.prefix_tokens :]

    def _last_attention(self) -> nn.Module:
        layers = getattr(self.base, "layers", None)
        attention = getattr(layers[-1], "attention", None) if layers else None
        if attention is None or not all(hasattr(attention, a) for a in ("q_proj", "k_proj", "head_dim", "scaling")):
            raise TypeError(
                f"cls_attention: cannot find the last block's attention (q_proj, k_proj) in {type(self.model).__name__}; "
                "this transformers version lays the model out differently. Use attention='pooled' or 'cam'."
            )
        return attention

    def _run_with_cls_attention(self, kwargs: dict[str, Any]) -> tuple[Any, Tensor]:
        if kwargs.get("attention_mask") is not None:
            raise ValueError(
                "cls_attention with an image attention_mask is not supported; drop the mask or use attention='pooled'."
            )
        attention = self._last_attention()
        captured: list[Tensor] = []

        def grab(module: nn.Module, args: tuple, hook_kwargs: dict) -> None:
            captured.append(args[0] if args else hook_kwargs["hidden_states"])

        handle = attention.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            out = self.base(**kwargs)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"cls_attention: the last attention block of {type(self.model).__name__} never ran.")
        hidden = captured[0]  # [m, T, D], the block's input after its layernorm
        m, length, _ = hidden.shape
        head_dim = attention.head_dim
        q = attention.q_proj(hidden[:, :1]).view(m, 1, -1, head_dim).transpose(1, 2)  # [m, h, 1, dh]
        k = attention.k_proj(hidden).view(m, length, -1, head_dim).transpose(1, 2)  # [m, h, T, dh]
        scores = (q.float() @ k.float().transpose(-1, -2)) * attention.scaling  # [m, h, 1, T]
        cls_row = scores.softmax(dim=-1).mean(dim=1)[:, 0]  # [m, T], heads averaged
        patches = cls_row[:, self.prefix_tokens :]
        # Renormalised over patches: the CLS (and distillation) token is not a position.
        return out, patches / patches.sum(dim=-1, keepdim=True)


@register_builtin
class DeiTAdapter(ViTAdapter):
    """`DeiTForImageClassification`: as ViT, but the sequence starts with CLS and distillation tokens.

    `DeiTForImageClassificationWithTeacher` (two heads on two tokens, inference only) is refused:
    fine-tune `DeiTForImageClassification`.
    """

    model_types = ("deit",)
    head_class = "DeiTForImageClassification"
    base_attr = "deit"
    #: Tokens before the patches: CLS, distillation.
    prefix_tokens = 2

    def __init__(self, model: nn.Module) -> None:
        if has_class(model, "DeiTForImageClassificationWithTeacher"):
            raise TypeError(
                "DeiTForImageClassificationWithTeacher averages two heads and is for inference only; fine-tune "
                "transformers.DeiTForImageClassification (e.g. .from_pretrained(name, num_labels=c)) instead."
            )
        super().__init__(model)


@register_builtin
class SwinAdapter(HFImageAdapter):
    """`SwinForImageClassification`: the classifier reads the average of the final-layernorm
    sequence; the positions are that sequence before the average (last stage's windows merged)."""

    model_types = ("swin",)
    head_class = "SwinForImageClassification"
    base_attr = "swin"


@register_builtin
class ConvNextAdapter(HFImageAdapter):
    """`ConvNextForImageClassification`: the classifier reads `layernorm(mean over cells)`; the
    positions are the last map's cells with the same LayerNorm applied to each, so they live in
    the classifier's input space (their mean is close to, not equal to, the pooled embedding)."""

    model_types = ("convnext",)
    head_class = "ConvNextForImageClassification"
    base_attr = "convnext"

    def _tokens(self, out: Any) -> Tensor:
        return self.base.layernorm(tokens_from_map(out.last_hidden_state))


@register_builtin
class ResNetAdapter(HFImageAdapter):
    """`ResNetForImageClassification`: the classifier is `Sequential(Flatten, Linear)` on the
    average-pooled last map; `classify` runs the Linear alone so it applies on `[..., d]`."""

    model_types = ("resnet",)
    head_class = "ResNetForImageClassification"
    base_attr = "resnet"

    @property
    def classifier(self) -> nn.Module:
        # The Flatten turns the [m, d, 1, 1] pool output into [m, d]; on [m, r, d] it would merge
        # positions and channels, so classify runs what follows it.
        head = self.model.classifier
        if isinstance(head, nn.Sequential) and len(head) > 1 and isinstance(head[0], nn.Flatten):
            rest = head[1:]
            return rest[0] if len(rest) == 1 else rest
        return head

    def _pooled(self, out: Any) -> Tensor:
        return out.pooler_output.flatten(1)

    def _tokens(self, out: Any) -> Tensor:
        return tokens_from_map(out.last_hidden_state)


__all__ = [
    "ConvNextAdapter",
    "DeiTAdapter",
    "HFClassifierAdapter",
    "HFImageAdapter",
    "ResNetAdapter",
    "SwinAdapter",
    "ViTAdapter",
]

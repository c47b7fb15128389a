"""Hugging Face ViT and DeiT: the generic path plus the CLS attention, which the generic path cannot read.

Why this file exists: `attention='cls'` weights the positions by the last block's CLS-to-patch
attention, and finding that attention needs to know the family's layout (`vit.layers[-1].attention`
with `q_proj` / `k_proj`). Everything else (the mixing point, the positions, dense replay) is the
generic adapter's (hf_generic.py): the model's own forward runs, the classifier's input is caught by
a hook. The CLS row is computed inside a forward pre-hook on the last attention, while the forward
holds its weights (FSDP), as `softmax(q_CLS k^T * scaling)`, heads averaged, renormalised over the
patches. This gives the weights `output_attentions=True` gives under eager attention (tested), but
works under SDPA or flash attention (which return no weights), leaves the model's attention
implementation alone and costs one `[m, heads, T]` row; it is taken before attention dropout.

`DeiTForImageClassificationWithTeacher` (two heads on two tokens, inference only) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from torch import Tensor, nn

from . import register_builtin
from ._hooks import cls_attention_row, count_prefix_tokens, pre_hooks
from .base import has_class
from .hf_generic import HFGenericAdapter


@register_builtin
class ViTAdapter(HFGenericAdapter):
    """`ViTForImageClassification` and `DeiTForImageClassification`: the generic path, with CLS attention.

    The classifier reads the final-layernorm CLS token; the positions are the patch tokens after
    the final layernorm (CLS and distillation tokens are not positions).
    """

    model_types: ClassVar[tuple[str, ...]] = ("vit", "deit")
    supports_cls_attention: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        if has_class(model, "DeiTForImageClassificationWithTeacher"):
            raise TypeError(
                "DeiTForImageClassificationWithTeacher averages two heads and is for inference only; fine-tune "
                "transformers.DeiTForImageClassification (e.g. .from_pretrained(name, num_labels=c)) instead."
            )
        super().__init__(model)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (getattr(getattr(model, "config", None), "model_type", None) in cls.model_types
                and has_class(model, "PreTrainedModel"))

    def _last_attention(self) -> nn.Module:
        base = getattr(self.model, "base_model", self.model)
        layers = getattr(base, "layers", None)
        attention = getattr(layers[-1], "attention", None) if layers else None
        if attention is None or not all(hasattr(attention, a) for a in ("q_proj", "k_proj", "head_dim", "scaling")):
            raise TypeError(
                f"cls_attention: cannot find the last block's attention (q_proj, k_proj) in {type(self.model).__name__}; "
                "this transformers version lays the model out differently. Use attention='pooled' or 'cam'."
            )
        return attention

    def _cls_attention_hook(self, inputs: Mapping[str, Any], out: dict[str, Tensor]) -> AbstractContextManager:
        if inputs.get("attention_mask") is not None:
            raise ValueError(
                "cls_attention with an image attention_mask is not supported; drop the mask or use attention='pooled'."
            )
        attention = self._last_attention()
        prefix = count_prefix_tokens(getattr(self.model.base_model, "embeddings", None))

        def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if "cls_attention" in out:
                return
            hidden = args[0] if args else kwargs["hidden_states"]  # [m, T, D], after the block's layernorm
            m, length, _ = hidden.shape
            q = module.q_proj(hidden[:, :1]).view(m, 1, -1, module.head_dim).transpose(1, 2)  # [m, h, 1, dh]
            k = module.k_proj(hidden).view(m, length, -1, module.head_dim).transpose(1, 2)  # [m, h, T, dh]
            out["cls_attention"] = cls_attention_row(q, k, module.scaling, prefix)

        return pre_hooks([attention], grab)


__all__ = ["ViTAdapter"]

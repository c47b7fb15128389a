"""The adapter contract: how `MultiMixHead` sees a backbone family.

An adapter knows one family of models and nothing about the MultiMix maths. For a batch it
returns the pooled embedding the classifier sees, optionally the per-position features in
the same space (so the classifier applies at every position), a validity mask, and for
ViT-like models the last block's CLS-to-patch attention. It also exposes the classifier as
a function on `[..., d]` and says whether it is affine (then the exact logit shortcut holds).
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..losses import is_affine


@dataclass
class Features:
    """What an adapter extracts from one forward pass of the backbone.

    Attributes:
        pooled: the embedding the classifier sees, `[m, d]`.
        tokens: per-position features in the classifier's input space, `[m, r, d]`, when asked
            for; prefix tokens (CLS, distillation, registers) are not positions.
        mask: bool `[m, r]`, True for real positions (False for padding); None means all real.
        cls_attention: `[m, r]` CLS-to-position attention of the last block (ViT-like models),
            when asked for and available.
        logits: the model's own logits `[m, c]`, read from the output of the forward that gave the
            features (`logits_of`); None for adapters that do not set it (the head then applies the
            classifier to `pooled`).
        token_logits: the classifier at every position `[m, r, c]`, computed inside the forward
            (where FSDP holds the classifier's parameters), when `tokens` are asked for and the
            classifier is affine; None otherwise.
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    cls_attention: Tensor | None = None
    logits: Tensor | None = None
    token_logits: Tensor | None = None


class BackboneAdapter(ABC):
    """Base class of all adapters. Subclass it to plug in a model family (docs/custom_adapters.md).

    Subclasses implement `matches`, `features`, `classify` and `classifier`; the defaults of
    the rest fit most models.

    Attributes:
        supports_tokens: whether `features(..., tokens=True)` can return positions.
        supports_cls_attention: whether `features(..., cls_attention=True)` works.
    """

    supports_tokens: ClassVar[bool] = True
    supports_cls_attention: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def root(self) -> nn.Module:
        """The module whose forward the adapter runs: the model itself, or the FSDP1 wrapper around it
        (`FullyShardedDataParallel`, whose forward gathers the parameters), as `find_adapter` sets it."""
        return self.__dict__.get("_root") or self.model

    @root.setter
    def root(self, module: nn.Module | None) -> None:
        self.__dict__["_root"] = module

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter knows `model`."""

    @abstractmethod
    def features(
        self, inputs: Mapping[str, Any], *, tokens: bool = False, cls_attention: bool = False
    ) -> Features:
        """Runs the backbone on `inputs` (the model's keyword inputs, without labels)."""

    @abstractmethod
    def classify(self, z: Tensor) -> Tensor:
        """The model's classifier on `[..., d]` embeddings, returning `[..., c]` logits."""

    @property
    @abstractmethod
    def classifier(self) -> nn.Module:
        """The module(s) `classify` runs; used to tell if the head is affine and its dtype."""

    @property
    def affine(self) -> bool:
        """Whether `classify` is affine in `z` (the exact logit shortcut then holds)."""
        return classifier_is_affine(self.classifier)

    @property
    def num_classes(self) -> int:
        """Number of classes `c` the classifier predicts."""
        out = getattr(self.classifier, "out_features", None)
        if out is None:
            linears = [mod for mod in self.classifier.modules() if isinstance(mod, nn.Linear)]
            if not linears:
                raise ValueError(f"cannot tell the number of classes of {type(self.model).__name__}'s classifier.")
            out = linears[-1].out_features
        return int(out)

    def normalize_inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Turns the head's call arguments into the model's keyword inputs.

        The default maps one positional tensor to `pixel_values` (images) and keeps keywords.
        """
        inputs = dict(kwargs)
        if args:
            if len(args) > 1:
                raise TypeError(f"pass at most one positional input (the batch), got {len(args)}.")
            inputs.setdefault(self.main_input_name, args[0])
        return inputs

    main_input_name: ClassVar[str] = "pixel_values"

    def forward_model(self, inputs: Mapping[str, Any], module: nn.Module | None = None) -> Any:
        """Exactly what calling the model returns (a tensor, a `ModelOutput`, a tuple).

        The main input goes positionally (timm and plain torch models take `model(x)`,
        Hugging Face models take it as their first argument), the rest as keywords.

        Args:
            inputs: the model's keyword inputs, without labels.
            module: the module to call with them, by default `self.root`; `MultiMixHead` passes the
                model as the user gave it (compiled or PEFT-wrapped) when the adapter sees its inside.
        """
        module = self.root if module is None else module
        rest = dict(inputs)
        return module(rest.pop(self.main_input_name), **rest) if self.main_input_name in rest else module(**rest)

    def logits(self, inputs: Mapping[str, Any]) -> Tensor:
        """The wrapped model's own logits `[m, c]`, read from `forward_model`'s output."""
        return logits_of(self.forward_model(inputs))

    def main_input(self, inputs: Mapping[str, Any]) -> Tensor:
        """The main input tensor (`main_input_name`), or a `TypeError` naming the keys given."""
        x = inputs.get(self.main_input_name)
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{type(self).__name__} expects a tensor '{self.main_input_name}' (got keys {sorted(inputs)})."
            )
        return x

    def batch_size(self, inputs: Mapping[str, Any]) -> int:
        """Examples in the batch, read from the main input."""
        return self.main_input(inputs).shape[0]


def is_pointwise_conv(module: nn.Module) -> bool:
    """A 1x1 (or 1-tap), stride-1, unpadded, ungrouped convolution: a Linear over channels."""
    return (
        isinstance(module, _ConvNd)
        and not isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
        and all(k == 1 for k in module.kernel_size)
        and all(s == 1 for s in module.stride)
        and (module.padding in ("valid", "same") or all(p == 0 for p in module.padding))
        and module.groups == 1
    )


def is_affine_layer(module: nn.Module) -> bool:
    """Whether `module` is one affine map on its last (channel) dimension: `nn.Linear`, a pointwise
    convolution (`is_pointwise_conv`), or PEFT's LoRA / `modules_to_save` wrapper around one (a LoRA
    update `B A x` is linear too). The one test of an affine layer for every adapter."""
    if isinstance(module, nn.Linear) or is_pointwise_conv(module):
        return True
    base = getattr(module, "base_layer", None)  # PEFT LoRA (and other tuner) layers
    if isinstance(base, nn.Module) and base is not module and hasattr(module, "lora_A"):
        return is_affine_layer(base)
    original = getattr(module, "original_module", None)  # PEFT ModulesToSaveWrapper
    saved = getattr(module, "modules_to_save", None)
    if isinstance(original, nn.Module) and isinstance(saved, nn.ModuleDict):
        return is_affine_layer(original) and all(is_affine_layer(m) for m in saved.values())
    return False


def _out_features(module: nn.Module) -> int | None:
    for attr in ("out_features", "out_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    for attr in ("base_layer", "original_module"):
        inner = getattr(module, attr, None)
        if isinstance(inner, nn.Module) and inner is not module:
            return _out_features(inner)
    return None


def classifier_is_affine(module: nn.Module) -> bool:
    """`losses.is_affine`, also knowing the affine layers of model access (1x1 convolutions, PEFT
    wrappers) inside a `Sequential`."""
    if is_affine(module) or is_affine_layer(module):
        return True
    return isinstance(module, nn.Sequential) and all(classifier_is_affine(child) for child in module)


def check_single_label_config(model: nn.Module) -> int:
    """The number of classes of a Hugging Face classifier, refusing regression heads
    (`config.problem_type="regression"`, `num_labels < 2`) with an error that says what to set.
    Single-label and multi-label classifiers pass (the head reads `problem_type` for its task)."""
    name, config = type(model).__name__, model.config
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        raise ValueError(
            f"{name} has config.problem_type={problem!r}; MultiMix trains classifiers (single-label with "
            "soft-target cross-entropy, multi-label with binary cross-entropy). Set config.problem_type="
            "'single_label_classification' or 'multi_label_classification'."
        )
    c = int(getattr(config, "num_labels", 0) or 0)
    if c < 2:
        raise ValueError(
            f"{name} has config.num_labels={c}; MultiMix needs a classifier over at least 2 classes "
            "(num_labels=1 is regression). Build the model with num_labels=c."
        )
    return c


#: Keyword inputs every Hugging Face forward accepts besides its named parameters.
_COMMON_HF_KWARGS = frozenset({"return_dict", "output_attentions", "output_hidden_states"})


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    """The named parameters of a model class's `forward` (read once per class: this runs every step)."""
    signature = inspect.signature(cls.forward)
    return frozenset(name for name, p in signature.parameters.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self")


def has_class(model: nn.Module, name: str) -> bool:
    """Whether `model` is an instance of a class called `name` (or of a subclass of it).

    Matching by name keeps the adapters from importing the transformers modelling files.
    """
    return any(klass.__name__ == name for klass in type(model).__mro__)


def refuse_labels(adapter: BackboneAdapter, inputs: Mapping[str, Any]) -> None:
    """Labels never reach a Hugging Face model: it would compute its own loss, possibly on soft
    (mixed) targets, and write `problem_type` into its config."""
    if "labels" in inputs:
        raise ValueError(
            f"{type(adapter).__name__} got 'labels' among the model inputs; pass labels to MultiMixHead "
            "(head(..., labels=y)), never to the wrapped model."
        )


def check_input_names(model: nn.Module, inputs: Mapping[str, Any]) -> None:
    """Raises a `TypeError` naming the inputs a Hugging Face model's forward does not take."""
    params = _forward_params(type(model))  # the class's interface, not a patched instance
    if not params:
        return
    unknown = sorted(k for k in inputs if k not in params and k not in _COMMON_HF_KWARGS and k != "labels")
    if unknown:
        raise TypeError(
            f"{type(model).__name__} takes no input named {unknown}; its inputs are {sorted(params - {'labels'})}. "
            "Rename the batch's keys (the tokenizer's or processor's output keys are the model's input names)."
        )


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, `output.logits`, or a tuple's first entry."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple):  # Hugging Face models under return_dict=False
        return output[0]
    logits = getattr(output, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(f"cannot find the logits in a {type(output).__name__}; expected a tensor or an output with .logits.")
    return logits


def tokens_from_map(feature_map: Tensor) -> Tensor:
    """NCHW feature map `[m, d, h, w]` -> positions `[m, h*w, d]`."""
    return feature_map.flatten(2).transpose(1, 2)


def head_dtype(classifier: nn.Module) -> torch.dtype | None:
    """dtype of the classifier's first parameter, or None if it has none."""
    param = next(classifier.parameters(), None)
    return None if param is None else param.dtype

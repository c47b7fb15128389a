"""Adapters for timm classifiers and transformers' `TimmWrapperForImageClassification`.

Every timm classifier splits into `forward_features` (the backbone), `forward_head(x,
pre_logits=True)` (pooling plus whatever the head does before its last layer) and
`get_classifier()` (the last layer). MultiMix interpolates the input of `get_classifier()`, which
is what `forward_head(pre_logits=True)` returns, so `classify(features(x).pooled)` is exactly
`model(x)` in eval mode.

The adapter never calls those parts itself: it runs the model's own forward, `model(x)`, and reads
it with hooks (adapters/_hooks.py), so FSDP, Accelerate and PEFT hooks on the model run as in plain
training. A forward pre-hook on each classifier catches its input (the pooled embedding); for dense
mode, timm's own seam `forward_head`, which `model.forward` calls on the output of
`forward_features`, is shadowed for the duration of the call to read that output and to replay the
head on single positions there, inside the forward, where FSDP holds the head's parameters.

Dense mode, one rule for all architectures. The positions are the cells of the last feature
map (`[B, C, H, W]` or NHWC `[B, H, W, C]`) or the non-prefix tokens of a token sequence
(`[B, N, C]`; CLS, distillation and register tokens are not positions). A position's feature
is `forward_head(pre_logits=True)` run on that position alone: a `1 x 1` map, or a sequence in
which every slot holds that token. Global pooling of a single position (avg, max, avgmax,
catavgmax, CLS token) is that position itself, so what follows the pooling in the head is
applied per position, exactly as the classifier then is (a `1 x 1` convolution with the head's
weights, as in the paper). What this means per family:

* ResNet, RegNet, EfficientNet, Swin (NHWC): the head is `pool -> fc`, so the tokens are the
  feature-map cells and their mean is the pooled embedding.
* ConvNeXt, MaxViT (`NormMlpClassifierHead`: `pool -> norm -> [fc + act]`): the norm and the
  pre-logits MLP run on every cell. These are non-linear, so the mean of the tokens is not the
  pooled embedding (pooled mode stays exact: norm of the mean).
* MobileNetV3 (`pool -> conv_head (1x1) -> act`): the 1x1 `conv_head` and activation run on
  every cell of the map before pooling, giving tokens of the classifier's width; the pooled
  embedding is, as in the model, `act(conv_head(mean))`, not the mean of the tokens.
* ViT / DeiT / ViT with registers: the patch tokens after the final norm, with the head's
  `fc_norm` applied per token when the model pools by averaging. With CLS pooling the pooled
  embedding is the CLS token.
* Distilled DeiT (CLS and distillation tokens, two heads averaged): the pooled embedding is
  `[cls, dist]` concatenated (`2d`) and `classify` averages `head(cls)` and `head_dist(dist)`,
  which equals the model's output; a patch token `t` becomes `[t, t]`, i.e. both heads are
  applied to it and averaged.

Heads that are not "pooling followed by position-wise layers" cannot be run per position:
attention pooling (`global_pool='map'`, attention-pool heads) and heads with spatial
convolutions (e.g. VGG's 7x7 `pre_logits`). Dense mode raises a `ValueError` for them; pooled
mode works for every model.

Batch norm layers inside a head use their running statistics when run per position during
training (statistics over positions are not those over pooled vectors, and updating the
running averages a second time per step would corrupt them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from . import register_builtin
from ._hooks import (
    cls_attention_row,
    count_prefix_tokens,
    frozen_batch_norms,
    pre_hooks,
    record_calls,
    refuse_cls_attention,
    replaced_attribute,
)
from .base import BackboneAdapter, Features, classifier_is_affine, is_pointwise_conv

logger = logging.getLogger(__name__)

#: Classes of attention-based pooling heads (timm's AttentionPoolLatent, AttentionPool2d,
#: RotAttentionPool2d, AttentionPoolPrr, SimPool): seen anywhere in a model, dense mode is refused.
_ATTENTION_POOL = re.compile(r"AttentionPool|AttnPool|SimPool|MlDecoder")
#: Inside a head (modules that forward_head runs), anything attention-like mixes positions.
_HEAD_MIXES_POSITIONS = re.compile(r"Attention|Attn|SimPool|MlDecoder")


def _is_transformers_model(model: nn.Module) -> bool:
    """Whether `model` is a transformers `PreTrainedModel`, without importing transformers."""
    return any(cls.__module__.startswith("transformers.") for cls in type(model).__mro__)


def _is_timm_like(model: nn.Module) -> bool:
    return all(callable(getattr(model, name, None)) for name in ("forward_features", "forward_head", "get_classifier"))


def _apply_on_last_dim(module: nn.Module, z: Tensor) -> Tensor:
    """Runs a classifier layer on `[..., d]`, giving `[..., c]`.

    Linear works on the last dim as is; a 1x1 convolution is the same Linear; any other
    module (e.g. LeViT's BatchNorm1d + Linear) gets the leading dims flattened to `[N, d]`.
    """
    if isinstance(module, nn.Linear):
        return module(z)
    if is_pointwise_conv(module):
        return F.linear(z, module.weight.flatten(1), module.bias)
    lead = z.shape[:-1]
    out = module(z.reshape(-1, z.shape[-1]))
    return out.reshape(*lead, out.shape[-1])


def _in_width(module: nn.Module) -> int | None:
    """Input width of a classifier layer: its (first) Linear or convolution."""
    for mod in module.modules():
        if isinstance(mod, nn.Linear):
            return mod.in_features
        if isinstance(mod, _ConvNd):
            return mod.in_channels
    return None


@register_builtin
class TimmAdapter(BackboneAdapter):
    """Adapter for timm classifiers (anything with `forward_features`, `forward_head` and
    `get_classifier`). See the module docstring for what dense mode means per architecture.

    Inputs are timm style: `head(x)`, or the keywords `x=` / `pixel_values=`, all mapped to `x`.

    Args:
        model: a timm model built with a classifier (`num_classes > 0`).
    """

    main_input_name = "x"
    _input_aliases: tuple[str, ...] = ("x", "pixel_values")

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._head_checked = False
        self._head_batch_norms: list[nn.Module] | None = None
        self._logged = False

    @property
    def timm_model(self) -> nn.Module:
        """The timm model whose parts the adapter runs (the wrapped model itself here)."""
        return self.model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return _is_timm_like(model) and not _is_transformers_model(model)

    # ------------------------------------------------------------------ inputs
    def normalize_inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """`head(x)`, `head(x=x)` or `head(pixel_values=x)` -> `{main_input_name: x}`."""
        if len(args) > 1:
            raise TypeError(f"pass at most one positional input (the image batch), got {len(args)}.")
        given = {name: kwargs[name] for name in self._input_aliases if name in kwargs}
        unknown = sorted(set(kwargs) - set(self._input_aliases))
        if unknown:
            raise TypeError(
                f"{type(self.model).__name__} takes only an image batch; got unexpected keyword(s) {unknown}. "
                f"Call head(images) or head({self.main_input_name}=images, labels=...)."
            )
        if args:
            given["positional"] = args[0]
        if len(given) != 1:
            raise TypeError(
                f"pass the image batch exactly once (positionally, or as one of {self._input_aliases}); "
                f"got {sorted(given) or 'none'}."
            )
        return {self.main_input_name: next(iter(given.values()))}

    def forward_model(self, inputs: Mapping[str, Any], module: nn.Module | None = None) -> Any:
        """Exactly `model(x)`."""
        return (self.root if module is None else module)(self.main_input(inputs))

    # ------------------------------------------------------------- classifier
    def _heads(self) -> tuple[nn.Module, ...]:
        """The classifier layer(s); distilled models (DeiT, LeViT, EfficientFormer) have two,
        CrossViT one per branch."""
        model = self.timm_model
        heads = model.get_classifier()
        heads = tuple(heads) if isinstance(heads, (tuple, list, nn.ModuleList)) else (heads,)
        # A few models (Sequencer, SAM ViT) return their whole head, pooling included; what
        # forward_head(pre_logits=True) feeds is its final layer.
        heads = tuple(
            h.fc if hasattr(h, "global_pool") and isinstance(getattr(h, "fc", None), nn.Module) else h for h in heads
        )
        if getattr(model, "num_classes", None) == 0 or any(isinstance(h, nn.Identity) for h in heads):
            raise ValueError(
                f"{type(model).__name__} has no classifier (num_classes=0), so there is nothing to train with "
                "MultiMix: build it with num_classes=C (timm.create_model(..., num_classes=C)) or call "
                "model.reset_classifier(C)."
            )
        return heads

    @property
    def classifier(self) -> nn.Module:
        """`model.get_classifier()`; a `ModuleList` for models with a distillation head."""
        heads = self._heads()
        return heads[0] if len(heads) == 1 else nn.ModuleList(heads)

    @property
    def affine(self) -> bool:
        """Linear, 1x1 convolution or a Sequential of affine layers (each head for two heads)."""
        return all(classifier_is_affine(h) for h in self._heads())

    @property
    def num_classes(self) -> int:
        self._heads()  # raises the helpful error for num_classes=0
        return int(self.timm_model.num_classes)

    def _two_token_head(self) -> bool:
        """DeiT-distilled style: two heads reading two different tokens (CLS and distillation)."""
        model = self.timm_model
        return (
            len(self._heads()) == 2
            and getattr(model, "global_pool", None) == "token"
            and self._num_prefix_tokens() >= 2
        )

    def classify(self, z: Tensor) -> Tensor:
        """The classifier on `[..., d]` embeddings -> `[..., c]` logits.

        Several heads are averaged, as the model does at inference. They all read `z` when it
        has each head's width (LeViT, EfficientFormer); when `z` is the concatenation of their
        inputs (DeiT-distilled `[cls, dist]`, CrossViT's branches) each head reads its slice.
        """
        heads = self._heads()
        if len(heads) == 1:
            return _apply_on_last_dim(heads[0], z)
        widths = [_in_width(h) for h in heads]
        d = z.shape[-1]
        if all(w in (d, None) for w in widths):
            return sum(_apply_on_last_dim(h, z) for h in heads) / len(heads)
        if None not in widths and sum(widths) == d:
            parts = z.split(widths, dim=-1)
            return sum(_apply_on_last_dim(h, part) for h, part in zip(heads, parts)) / len(heads)
        raise ValueError(
            f"embeddings of width {d} fit neither each of the {len(heads)} classifier heads of "
            f"{type(self.timm_model).__name__} (input widths {widths}) nor their concatenation."
        )

    # ------------------------------------------------------------ cls attention
    def _cls_attention_module(self) -> nn.Module | None:
        """The last block's timm `Attention` when the model has a CLS token at index 0."""
        model = self.timm_model
        if getattr(model, "cls_token", None) is None or getattr(model, "num_prefix_tokens", 0) < 1:
            return None
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
            return None
        attn = getattr(blocks[-1], "attn", None)
        try:
            from timm.layers import Attention
        except ImportError:  # pragma: no cover - timm is there if a timm model is
            return None
        # Only timm's plain Attention: its weights are softmax(q k^T * scale) from `qkv`; other
        # kinds (rotary embeddings, relative position bias) would need their own maths.
        return attn if type(attn) is Attention else None

    @property
    def supports_cls_attention(self) -> bool:  # type: ignore[override]
        """True for ViT-like models (timm `VisionTransformer`, DeiT) with a CLS token."""
        return self._cls_attention_module() is not None

    def _cls_attention(self, x: Tensor) -> Tensor:
        """CLS-to-patch attention of the last block, mean over heads, renormalised over patches.

        Args:
            x: the last block's attention input `[B, N, C]` (after its norm).

        Returns:
            `[B, r]`, rows sum to 1, r = N - num_prefix_tokens.
        """
        attn = self._cls_attention_module()
        b, n, _ = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, _ = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        # timm computes this inside fused SDPA; only the CLS row is needed.
        return cls_attention_row(q[:, :, :1], k, attn.scale, self.timm_model.num_prefix_tokens)

    # ------------------------------------------------------------------ features
    def features(
        self, inputs: Mapping[str, Any], *, tokens: bool = False, cls_attention: bool = False
    ) -> Features:
        """One pass of the model's own forward (`forward_model`), read by hooks.

        The classifier's input is caught by forward pre-hooks on `get_classifier()` (each head of a
        distilled model); the output of `forward_features` by timm's own seam, `forward_head`,
        which the root forward calls with it. Per-position features and the CLS attention row are
        computed in those hooks, inside the forward (where FSDP holds the parameters gathered), and so
        is the classifier on every position (`token_logits`) when it is affine.

        Returns:
            `Features` with `pooled` `[B, d]` (what the classifier sees) and `logits` `[B, c]` (the
            model's output), and when asked `tokens` `[B, r, d]` (positions, classifier's input space;
            mask None: all real) with `token_logits` `[B, r, c]`, and `cls_attention` `[B, r]`.
        """
        model = self.timm_model
        self.main_input(inputs)
        if cls_attention and not self.supports_cls_attention:
            raise refuse_cls_attention(model)
        if tokens:
            self._check_tokens_possible()
        heads = self._heads()  # fails early on a model without a classifier
        if getattr(model, "aux_head", None) is not None:
            # VOLO's token-labelling head adds max-over-tokens logits of every patch to the CLS
            # head's: the model's logits are not the classifier applied to one embedding.
            raise ValueError(
                f"{type(model).__name__} adds an auxiliary per-token head (aux_head) to its logits, so they are "
                "not a classifier of one pooled embedding; build it with use_aux_head=False to use MultiMix."
            )
        seen: dict[int, Tensor] = {}
        out: dict[str, Tensor] = {}
        replaying = []  # non-empty while a per-position replay runs (its classifier calls are not the batch's)

        def on_head(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if replaying:
                return
            index = next(i for i, h in enumerate(heads) if h is module)
            seen.setdefault(index, self._pooled_input(args[0] if args else next(iter(kwargs.values()))))

        original = model.forward_head

        def forward_head(feats: Any, *args: Any, **kwargs: Any) -> Any:
            if tokens and "tokens" not in out:
                replaying.append(True)
                try:
                    out["tokens"] = self._tokens(feats, original)
                    if affine:  # the classifier at every position, while the forward holds its weights
                        out["token_logits"] = self.classify(out["tokens"])
                finally:
                    replaying.pop()
            return original(feats, *args, **kwargs)

        def on_attention(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if "cls_attention" not in out:
                out["cls_attention"] = self._cls_attention(args[0] if args else kwargs["x"])

        attention = [self._cls_attention_module()] if cls_attention else []
        affine = tokens and self.affine
        with pre_hooks(dict.fromkeys(heads), on_head), pre_hooks(attention, on_attention), \
                replaced_attribute(model, "forward_head", forward_head):
            output = self.forward_model(inputs)
        if len(seen) != len(heads):
            raise RuntimeError(
                f"{type(model).__name__}'s forward ran {len(seen)} of its {len(heads)} classifier head(s); MultiMix "
                "reads the input of each. Pass MultiMixHead(model, adapter=MyAdapter(model)) "
                "(docs/custom_adapters.md)."
            )
        if tokens and "tokens" not in out:
            raise self._dense_refusal("its forward does not call forward_head(forward_features(x))")
        if not self._logged:
            self._logged = True
            names = {id(m): n for n, m in model.named_modules()}
            logger.info("hf_multimix: %s mixes the input of %s%s", type(model).__name__,
                        " and ".join(repr(names.get(id(h), type(h).__name__)) for h in heads),
                        "; positions from forward_head's input" if tokens else "")
        inputs_seen = [seen[i] for i in range(len(heads))]
        # One input read by every head (LeViT, EfficientFormer) is the pooled embedding; different
        # inputs (DeiT-distilled's CLS and distillation tokens, CrossViT's branches) are concatenated
        # so that classify(pooled) is the model's average of its heads.
        same = all(z is inputs_seen[0] for z in inputs_seen)
        pooled = inputs_seen[0] if same else torch.cat(inputs_seen, dim=-1)
        return Features(pooled=pooled, tokens=out.get("tokens"), cls_attention=out.get("cls_attention"),
                        logits=self._logits_of(output, pooled), token_logits=out.get("token_logits"))

    def _logits_of(self, output: Any, pooled: Tensor) -> Tensor | None:
        """The model's logits `[B, c]` from its output; None when the output is not one logits tensor
        (a distilled model trained with `set_distilled_training(True)` returns both heads' logits)."""
        logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
        if isinstance(logits, Tensor) and logits.dim() == 2 and logits.shape == (pooled.shape[0], self.num_classes):
            return logits
        return None

    def _pooled_input(self, z: Tensor) -> Tensor:
        """A classifier's input as `[B, d]` (a 1x1 convolution classifier reads `[B, d, 1, 1]`)."""
        if z.dim() == 4 and z.shape[-2:] == (1, 1):
            z = z.flatten(1)
        if z.dim() != 2:
            raise ValueError(
                f"{type(self.timm_model).__name__}'s classifier reads {tuple(z.shape)}, not a pooled [B, d] "
                "embedding (forward_head(x, pre_logits=True) gives no pooled vector); build the model with a "
                "global pool (e.g. global_pool='avg') instead of global_pool=''."
            )
        return z

    # -------------------------------------------------------------------- dense
    def _dense_refusal(self, why: str) -> ValueError:
        return ValueError(
            f"dense mode is not available for {type(self.timm_model).__name__}: {why}. "
            "Pooled MultiMix works for it: use MultiMixHead(model, dense=False)."
        )

    def _check_tokens_possible(self) -> None:
        for mod in self.timm_model.modules():
            if _ATTENTION_POOL.search(type(mod).__name__):
                raise self._dense_refusal(
                    f"its head pools with attention ({type(mod).__name__}), which mixes positions"
                )

    @property
    def supports_tokens(self) -> bool:  # type: ignore[override]
        """False when a head is known not to work per position (attention pooling)."""
        try:
            self._check_tokens_possible()
        except ValueError:
            return False
        return True

    def _feature_format(self, feats: Tensor) -> str:
        """'NCHW', 'NHWC' or 'NLC' for the output of `forward_features`."""
        model = self.timm_model
        fmt = getattr(model, "output_fmt", None)
        if fmt is None:
            pool = getattr(getattr(model, "head", None), "global_pool", None)
            fmt = getattr(pool, "input_fmt", None)
        fmt = getattr(fmt, "value", fmt)  # timm's Format is a str Enum
        if feats.dim() == 3:
            if fmt not in (None, "NLC"):
                raise self._dense_refusal(f"its features are {fmt} {tuple(feats.shape)}, expected [B, N, C]")
            return "NLC"
        if feats.dim() == 4:
            if fmt in ("NCHW", "NHWC"):
                return fmt
            # No declared format: the channel dim is the one of size num_features.
            width = getattr(model, "num_features", None)
            if feats.shape[1] != width and feats.shape[-1] == width:
                return "NHWC"
            return "NCHW"
        raise self._dense_refusal(
            f"forward_features gave {tuple(feats.shape)}; positions need a [B, C, H, W], [B, H, W, C] "
            "or [B, N, C] tensor"
        )

    def _tokens(self, feats: Tensor, forward_head: Any) -> Tensor:
        """Per-position features `[B, r, d]`: `forward_head(pre_logits=True)` on each position alone.

        Runs inside the model's forward (from the `forward_head` seam), with the model's own
        `forward_head` as `forward_head`."""
        model = self.timm_model
        if not isinstance(feats, Tensor):
            raise self._dense_refusal(f"forward_features returned {type(feats).__name__}, not a tensor")
        fmt = self._feature_format(feats)
        b = feats.shape[0]
        if fmt == "NCHW":
            c = feats.shape[1]
            single = feats.permute(0, 2, 3, 1).reshape(-1, c, 1, 1)
        elif fmt == "NHWC":
            c = feats.shape[-1]
            single = feats.reshape(-1, 1, 1, c)
        else:
            npt = self._num_prefix_tokens()
            if feats.shape[1] <= npt:
                raise self._dense_refusal(
                    f"forward_features gives {feats.shape[1]} token(s), all prefix tokens (CLS/distillation), "
                    "no patch positions"
                )
            patches = feats[:, npt:]
            c = feats.shape[-1]
            # Every slot (prefix and patch) holds the same token: token pooling, average pooling
            # and max pooling of this sequence all return that token.
            single = patches.reshape(-1, 1, c).expand(-1, npt + 1, c)
        r = single.shape[0] // b

        calls: list[nn.Module] = []
        first = not self._head_checked
        batch_norms = list(model.modules()) if self._head_batch_norms is None else self._head_batch_norms
        try:
            with frozen_batch_norms(batch_norms), (record_calls(model, calls) if first else nullcontext()):
                out = forward_head(single, pre_logits=True)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError, AssertionError, IndexError) as err:
            # A head that needs the whole map (a fixed-size pool, a flatten + Linear) fails here.
            raise self._dense_refusal(
                f"its head does not run on a single position ({type(err).__name__}: {err})"
            ) from err
        if first:
            self._check_head_modules(calls)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != single.shape[0]:
            raise self._dense_refusal(
                f"its head on single positions gave {getattr(out, 'shape', type(out).__name__)}, "
                f"expected [{single.shape[0]}, d]"
            )
        out = out.reshape(b, r, out.shape[-1])
        if self._two_token_head():
            out = torch.cat([out, out], dim=-1)  # both heads see the position
        return out

    def _check_head_modules(self, calls: list[nn.Module]) -> None:
        """Refuses heads that mix positions; remembers the head's batch norms."""
        for mod in calls:
            name = type(mod).__name__
            if _HEAD_MIXES_POSITIONS.search(name):
                raise self._dense_refusal(f"its head runs {name}, which mixes positions")
            if isinstance(mod, _ConvNd) and not all(k == 1 for k in mod.kernel_size):
                raise self._dense_refusal(
                    f"its head runs a {tuple(mod.kernel_size)} convolution ({name}), which is not position-wise"
                )
        self._head_batch_norms = [mod for mod in dict.fromkeys(calls) if isinstance(mod, _BatchNorm)]
        self._head_checked = True

    def _num_prefix_tokens(self) -> int:
        model = self.timm_model
        npt = getattr(model, "num_prefix_tokens", None)
        if npt is None:
            # Older models (PiT, ...) only hold the prefix parameters, `[1, k, C]` each.
            npt = count_prefix_tokens(model)
            if not npt:
                # Multi-stage models (CoaT) hold one CLS token per stage; the output has the last's.
                staged = sorted(
                    (int(match.group(1)), name)
                    for name, _ in model.named_parameters(recurse=False)
                    if (match := re.fullmatch(r"cls_token(\d+)", name))
                )
                npt = count_prefix_tokens(model, [staged[-1][1]]) if staged else 0
        return int(npt)


@register_builtin
class TimmWrapperAdapter(TimmAdapter):
    """Adapter for transformers' `TimmWrapperForImageClassification` (a timm model in
    `.timm_model`). The wrapper's own forward runs (it casts and moves the pixel values, then runs
    the timm model), read by `TimmAdapter`'s hooks on the timm model; logits are the wrapper's
    `model(pixel_values=x).logits`.

    Inputs are Hugging Face style: `head(pixel_values=x)` (or `head(x)`).
    """

    main_input_name = "pixel_values"
    _input_aliases = ("pixel_values",)

    @property
    def timm_model(self) -> nn.Module:
        return self.model.timm_model

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            type(model).__name__ == "TimmWrapperForImageClassification"
            and _is_transformers_model(model)
            and isinstance(getattr(model, "timm_model", None), nn.Module)
            and _is_timm_like(model.timm_model)
        )

    def forward_model(self, inputs: Mapping[str, Any], module: nn.Module | None = None) -> Any:
        """Exactly `model(pixel_values=x)`."""
        return (self.root if module is None else module)(pixel_values=self.main_input(inputs))

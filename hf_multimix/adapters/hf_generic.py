"""One adapter for every Hugging Face classifier: the generic path.

MultiMix mixes at the last layer before the classifier (docs/method.md). When that last layer is
affine (`W z + b`, true of every `*ForSequenceClassification`, `*ForImageClassification` and
`*ForAudioClassification` head in transformers), the logits of a mix are the same mix of the
clean logits, so pooled MultiMix needs two things from a model: the layer whose output *is* the
model's logits, and that layer's input `z`. Both are found by looking, not by a family list:

* **The final layer.** On the first batch, forward hooks sit on every affine layer with
  `config.num_labels` outputs (`nn.Linear`, a 1x1 convolution, and PEFT's LoRA and
  `modules_to_save` wrappers around them). The layer that ran last and whose output equals the
  logits the model returned is the final layer; from then on only it is hooked. Its output is
  either the logits `[m, c]` (encoders, vision, audio: the mixing point is its input `z`,
  `[m, d]`) or one row per token `[m, L, c]` from which the model picks one (decoder classifiers
  such as GPT-2, Llama and Qwen2, which read the last non-padding token). A model whose logits
  are not the output of an affine layer (a rescaling after it, say) gets a clear error at once.
* **Pooled MultiMix** mixes `z`, exact by construction: `classify` is that very layer.
* **Dense MultiMix** needs per-position features in the classifier's input space:
  * decoders: the final layer already runs on every token; the positions are its inputs,
    padding excluded (`attention_mask`, else the ids equal to `pad_token_id`);
  * other models: the positions are the base model's last hidden state (tokens, patches,
    audio frames, feature-map cells; CLS, distillation and register tokens are not positions).
    A position is sent through the rest of the model exactly as the model treats a sequence
    in which every slot holds that position (timm's rule, docs/timm.md): the model's own forward
    runs with the base model's output replaced (many positions per call, batched), so whatever
    the head does (a pooler, a dense
    layer and tanh, a mean over frames, a concatenation of CLS and patch mean) is what the
    position goes through. This is checked once, on the first dense batch: replaying the real
    hidden state must give back the real `z`; where it does not (a head reading hidden states
    the base model computes apart from its output), `dense=True` gets a clear error and pooled
    MultiMix still works.

PEFT (`get_peft_model(..., task_type="SEQ_CLS")`) and `torch.compile` models are seen through
(`unwrap_model`); the adapters' layers are the model's own, so only what PEFT trains is trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from . import register_builtin
from .base import (
    BackboneAdapter,
    Features,
    _out_features,
    check_input_names,
    check_single_label_config,
    has_class,
    is_affine_layer,
    logits_of,
    refuse_labels,
)

#: Bytes of replayed hidden states (and repeated inputs) the dense generic path sends through the
#: model's head in one call.
REPLAY_CHUNK_BYTES = 64 * 2**20
#: Embedding parameters that prepend tokens that are not positions (CLS, distillation, registers).
_PREFIX_PARAMS = ("cls_token", "distillation_token", "dist_token", "register_tokens")


@contextmanager
def _hooks(modules: list[nn.Module], record: list) -> Iterator[None]:
    """Records `(module, input, output)` of each call of `modules`, in the order they finish."""

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
            record.append((module, args[0], output))

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _replaced_forward(module: nn.Module, output: Any) -> Iterator[None]:
    """`module(...)` returns `output` without running."""
    module.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        del module.forward


@contextmanager
def _batch_norms_frozen(model: nn.Module) -> Iterator[None]:
    """Batch norms use their running statistics during a replay: statistics over replayed positions
    are not those over examples, and the replay must not update the running averages (the timm
    adapter's rule for heads run per position)."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    for m in norms:
        m.training = False
    try:
        yield
    finally:
        for m in norms:
            m.training = True


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off for a check, each module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@register_builtin
class HFGenericAdapter(BackboneAdapter):
    """Any Hugging Face `*ForSequenceClassification`, `*ForImageClassification` or
    `*ForAudioClassification` model whose logits come from an affine last layer (module docstring).

    Registered last: the hand-written adapters (BERT, ViT, ...) take the families they know, which
    they read in one batched pass (no per-position replay) and, for ViT, with CLS attention.
    """

    supports_cls_attention: ClassVar[bool] = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        name = type(model).__name__
        if not name.endswith("Classification") or "For" not in name:
            raise TypeError(
                f"{name} has no classification head that MultiMix can train: use the model's "
                "...ForSequenceClassification, ...ForImageClassification or ...ForAudioClassification class "
                "(e.g. AutoModelForSequenceClassification.from_pretrained(name, num_labels=c)), which wraps the "
                "same backbone."
            )
        if name.endswith("TokenClassification"):
            raise TypeError(
                f"{name} labels every token; MultiMix trains one label per example. Use a "
                "...ForSequenceClassification model."
            )
        c = check_single_label_config(model)
        affine = [m for m in model.modules() if is_affine_layer(m)]
        self._candidates = [m for m in affine if _out_features(m) == c]
        if not self._candidates:
            leaves = [m for m in model.modules() if next(m.children(), None) is None]
            last = _out_features(leaves[-1]) if leaves and is_affine_layer(leaves[-1]) else None
            if last is not None:
                raise ValueError(
                    f"{name}.config.num_labels is {c}, but its last layer has {last} outputs and no layer has {c}; "
                    "the config and the head disagree. Rebuild the head, e.g. from_pretrained(name, num_labels=c, "
                    "ignore_mismatched_sizes=True)."
                )
            raise TypeError(
                f"cannot find {name}'s classifier: no nn.Linear or 1x1 convolution with config.num_labels={c} "
                "outputs. Pass MultiMixHead(model, adapter=MyAdapter(model)); see docs/custom_adapters.md."
            )
        self.main_input_name = getattr(model, "main_input_name", "input_ids")
        self._final: nn.Module | None = None
        self._per_token: bool = False  # the final layer runs on every token (decoder classifiers)
        self._pooler: str | None = None  # how a replayed hidden state gets its pooler_output
        self._replay_ok: bool | None = None

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return has_class(model, "PreTrainedModel") and hasattr(model, "config")

    # ----------------------------------------------------------------- contract
    @property
    def supports_tokens(self) -> bool:  # type: ignore[override]
        return self._per_token or getattr(self.model, "base_model", self.model) is not self.model

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def classifier(self) -> nn.Module:
        return self._final if self._final is not None else self._candidates[-1]

    @property
    def affine(self) -> bool:
        return True  # the mixing point is the input of an affine layer, by construction

    @property
    def final_layer_name(self) -> str | None:
        """Name of the layer whose output is the logits (MultiMix mixes its input); None before the
        first training step has found it."""
        if self._final is None:
            return None
        return next((n for n, m in self.model.named_modules() if m is self._final), type(self._final).__name__)

    @property
    def per_token(self) -> bool:
        """Whether the final layer runs on every token (decoder classifiers)."""
        return self._per_token

    def normalize_inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        inputs = super().normalize_inputs(args, kwargs)
        check_input_names(self.model, inputs)
        return inputs

    def forward_model(self, inputs: Mapping[str, Any], module: nn.Module | None = None) -> Any:
        """Exactly `model(**inputs)`; labels are refused (the model would compute its own loss)."""
        refuse_labels(self, inputs)
        return (self.model if module is None else module)(**inputs)

    def batch_size(self, inputs: Mapping[str, Any]) -> int:
        x = inputs.get(self.main_input_name)
        if not isinstance(x, Tensor):
            x = next((v for v in inputs.values() if isinstance(v, Tensor) and v.dim() > 0), None)
        if x is None:
            raise TypeError(
                f"{type(self.model).__name__} expects a tensor '{self.main_input_name}' (got keys {sorted(inputs)})."
            )
        return x.shape[0]

    def classify(self, z: Tensor) -> Tensor:
        layer = self.classifier
        conv = _conv_of(layer)
        if conv is None:
            return layer(z)
        lead, d = z.shape[:-1], z.shape[-1]
        shape = (-1, d) + (1,) * (conv.weight.dim() - 2)
        return layer(z.reshape(shape)).reshape(*lead, -1)

    # ----------------------------------------------------------------- features
    def features(
        self, inputs: Mapping[str, Any], *, tokens: bool = False, cls_attention: bool = False
    ) -> Features:
        if cls_attention:
            raise ValueError(
                f"attention='cls' needs a ViT-like model with a hand-written adapter; {type(self.model).__name__} "
                "takes the generic path. Use attention='uniform', 'pooled' or 'cam'."
            )
        refuse_labels(self, inputs)
        base = getattr(self.model, "base_model", self.model)
        base_out: list[Any] = []
        grab = base.register_forward_hook(lambda mod, args, out: base_out.append(out)) if tokens and not self._per_token \
            and base is not self.model else None
        record: list = []
        try:
            with _hooks(self._candidates if self._final is None else [self._final], record):
                out = self.model(**inputs)
        finally:
            if grab is not None:
                grab.remove()
        logits = logits_of(out)
        if self._final is None:
            self._discover(record, logits)
        _, z, y = next(r for r in reversed(record) if r[0] is self._final)
        if self._per_token:
            z = z.reshape(z.shape[0], -1, z.shape[-1])
            y = y.reshape(y.shape[0], -1, y.shape[-1])
            index = _row_index(y, logits)
            pooled = z[torch.arange(z.shape[0], device=z.device), index]
            if not tokens:
                return Features(pooled=pooled)
            return Features(pooled=pooled, tokens=z, mask=self._token_mask(inputs, z.shape[1]))
        pooled = z.reshape(z.shape[0], -1)
        if not tokens:
            return Features(pooled=pooled)
        if not base_out:
            raise ValueError(
                f"dense=True needs positions, but {type(self.model).__name__} has no base model to read them from; "
                "use dense=False (pooled MultiMix)."
            )
        return self._dense(inputs, base_out[-1], pooled)

    def _discover(self, record: list, logits: Tensor) -> None:
        """The last affine layer with `num_labels` outputs whose output is the logits (or holds them
        as one row per token)."""
        m, c = logits.shape[0], logits.shape[-1]
        for module, _, y in reversed(record):
            if y.shape[0] != m:
                continue
            if y.numel() == logits.numel() and torch.equal(y.reshape(logits.shape), logits):
                self._final, self._per_token = module, False
                return
            if y.dim() == 3 and y.shape[-1] == c and _row_index(y, logits, strict=False) is not None:
                self._final, self._per_token = module, True
                return
        raise TypeError(
            f"{type(self.model).__name__}'s logits are not the output of a linear layer (they are changed after its "
            "last nn.Linear, e.g. rescaled or capped), so the generic path cannot mix them exactly. Pass "
            "MultiMixHead(model, adapter=MyAdapter(model)); see docs/custom_adapters.md."
        )

    def _token_mask(self, inputs: Mapping[str, Any], length: int) -> Tensor | None:
        mask = inputs.get("attention_mask")
        if isinstance(mask, Tensor):
            if mask.dim() != 2:
                raise ValueError(
                    f"dense MultiMix needs a [m, L] attention_mask (1 = token, 0 = padding), got {tuple(mask.shape)}; "
                    "pass the tokenizer's attention_mask, not an expanded 4-d mask."
                )
            if mask.shape[1] == length:
                return mask.bool()
            to_frames = getattr(self.model, "_get_feature_vector_attention_mask", None)  # audio: samples -> frames
            if callable(to_frames):
                return to_frames(length, mask).bool()
            raise ValueError(
                f"attention_mask has {mask.shape[1]} positions but the model's features have {length}; pass the "
                "processor's attention_mask for these inputs."
            )
        ids, pad = inputs.get("input_ids"), getattr(self.model.config, "pad_token_id", None)
        if isinstance(ids, Tensor) and ids.shape[-1] == length and pad is not None and self._per_token:
            return ids != pad
        return None

    # ------------------------------------------------------------- dense replay
    def _dense(self, inputs: Mapping[str, Any], base_out: Any, pooled: Tensor) -> Features:
        hidden = base_out[0] if isinstance(base_out, tuple) else getattr(base_out, "last_hidden_state", None)
        if not isinstance(hidden, Tensor) or hidden.dim() not in (3, 4):
            raise ValueError(
                f"dense=True needs positions, but {type(self.model).__name__}'s base model returns no sequence or "
                "feature map; use dense=False (pooled MultiMix)."
            )
        if self._replay_ok is None:
            self._check_replay(inputs)
        if not self._replay_ok:
            raise ValueError(
                f"dense=True: {type(self.model).__name__}'s head reads more than its base model's last hidden state, "
                "so its positions cannot be mapped into the classifier's input space exactly. Use dense=False "
                "(pooled MultiMix), or a custom adapter (docs/custom_adapters.md)."
            )
        if hidden.dim() == 4:  # [m, C, h, w] feature map: every cell is a position
            m, ch, h, w = hidden.shape
            cells = [(a, b) for a in range(h) for b in range(w)]
            zs = self._replay_many(inputs, base_out, [hidden[:, :, a : a + 1, b : b + 1].expand_as(hidden)
                                                      for a, b in cells])
            mask = None
        else:
            prefix = self._prefix_tokens()
            length = hidden.shape[1]
            mask = self._token_mask(inputs, length)
            positions = range(prefix, length)
            zs = self._replay_many(inputs, base_out, [hidden[:, j : j + 1].expand_as(hidden) for j in positions])
            if mask is not None:
                mask = mask[:, prefix:]
        tokens = torch.stack(zs, dim=1)
        return Features(pooled=pooled, tokens=tokens, mask=mask)

    def _prefix_tokens(self) -> int:
        embeddings = getattr(getattr(self.model, "base_model", None), "embeddings", None)
        count = 0
        for name in _PREFIX_PARAMS:
            p = getattr(embeddings, name, None)
            if isinstance(p, Tensor) and p.dim() == 3:
                count += p.shape[1]
        return count

    def _replay_many(self, inputs: Mapping[str, Any], base_out: Any, hiddens: list[Tensor]) -> list[Tensor]:
        """`_replay` of several hidden states, batched in chunks of about `REPLAY_CHUNK_BYTES` (the
        inputs are repeated along the batch for each chunk): one call of the model's head per chunk."""
        m = hiddens[0].shape[0]
        per_position = hiddens[0].numel() * hiddens[0].element_size() + sum(
            v.numel() * v.element_size() for v in inputs.values() if _batched(v, m))
        k = max(1, min(len(hiddens), REPLAY_CHUNK_BYTES // max(1, per_position)))
        out: list[Tensor] = []
        for start in range(0, len(hiddens), k):
            chunk = hiddens[start : start + k]
            batch = inputs if len(chunk) == 1 else _repeat_batch(inputs, len(chunk), m)
            out.extend(self._replay(batch, base_out, torch.cat(chunk) if len(chunk) > 1 else chunk[0]).split(m))
        return out

    def _replay(self, inputs: Mapping[str, Any], base_out: Any, hidden: Tensor) -> Tensor:
        """The final layer's input when the base model returns `hidden` as its last hidden state."""
        fields = {"last_hidden_state": hidden}
        if self._pooler is not None:
            fields["pooler_output"] = self._pool(hidden, base_out)
        stub = type(base_out)(**fields) if not isinstance(base_out, tuple) else (hidden,)
        record: list = []
        with _replaced_forward(self.model.base_model, stub), _hooks([self._final], record), \
                _batch_norms_frozen(self.model):
            self.model(**inputs)
        z = record[-1][1]
        return z.reshape(z.shape[0], -1)

    def _pool(self, hidden: Tensor, base_out: Any) -> Tensor:
        ref = base_out.pooler_output
        base = self.model.base_model
        if self._pooler == "module":  # a pooler module reading the sequence (BERT, BEiT, ...)
            out = base.pooler(hidden)
        elif self._pooler == "module-first":  # a pooler layer on the first token, then its activation (ALBERT)
            out = base.pooler(hidden[:, 0])
            act = getattr(base, "pooler_activation", None)
            out = act(out) if isinstance(act, nn.Module) else out
        elif self._pooler == "norm-mean":  # a norm after the mean over positions (ConvNeXt V2, ...)
            out = _final_norm(base)(hidden.mean(dim=(-2, -1)) if hidden.dim() == 4 else hidden.mean(dim=1))
        elif self._pooler == "first":
            out = hidden[:, 0]
        else:  # "mean" over positions
            out = hidden.mean(dim=(-2, -1)) if hidden.dim() == 4 else hidden.mean(dim=1)
        return out.reshape(hidden.shape[0], *ref.shape[1:])

    def _check_replay(self, inputs: Mapping[str, Any]) -> None:
        """Replaying the real hidden state must give back the real final-layer input (dropout off)."""
        base = self.model.base_model
        with torch.no_grad(), _eval_mode(self.model):
            seen: list[Any] = []
            grab = base.register_forward_hook(lambda mod, args, out: seen.append(out))
            record: list = []
            try:
                with _hooks([self._final], record):
                    self.model(**inputs)
            finally:
                grab.remove()
            base_out, z = seen[-1], record[-1][1].reshape(record[-1][1].shape[0], -1)
            hidden = base_out[0] if isinstance(base_out, tuple) else base_out.last_hidden_state
            self._pooler = None
            ref = None if isinstance(base_out, tuple) else getattr(base_out, "pooler_output", None)
            if isinstance(ref, Tensor):
                for kind in ("module", "module-first", "first", "mean", "norm-mean"):
                    if kind.startswith("module") and not isinstance(getattr(base, "pooler", None), nn.Module):
                        continue
                    if kind == "norm-mean" and _final_norm(base) is None:
                        continue
                    if kind == "first" and hidden.dim() != 3:
                        continue
                    self._pooler = kind
                    try:
                        if torch.allclose(self._pool(hidden, base_out), ref, atol=1e-5, rtol=1e-4):
                            break
                    except (RuntimeError, TypeError, ValueError):
                        pass
                    self._pooler = None
            try:  # one position at a time, and two batched as `_replay_many` batches them
                again = self._replay(inputs, base_out, hidden)
                twice = self._replay(_repeat_batch(inputs, 2, z.shape[0]), base_out, torch.cat([hidden, hidden]))
                self._replay_ok = again.shape == z.shape and twice.shape == (2 * z.shape[0], *z.shape[1:]) and (
                    torch.allclose(again, z, atol=1e-5, rtol=1e-4) and torch.allclose(twice, z.repeat(2, 1), atol=1e-5,
                                                                                      rtol=1e-4))
            except (RuntimeError, TypeError, ValueError, IndexError, AttributeError):
                self._replay_ok = False


def _batched(value: Any, m: int) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == m


def _repeat_batch(inputs: Mapping[str, Any], k: int, m: int) -> dict[str, Any]:
    """The inputs with every batched tensor repeated `k` times along the batch."""
    return {key: v.repeat(k, *([1] * (v.dim() - 1))) if _batched(v, m) else v for key, v in inputs.items()}


def _final_norm(base: nn.Module) -> nn.Module | None:
    """The base model's final norm layer, for pooled outputs computed as `norm(mean(positions))`."""
    for name in ("layernorm", "norm", "final_layernorm", "post_layernorm"):
        module = getattr(base, name, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _conv_of(layer: nn.Module) -> nn.Module | None:
    """The convolution inside `layer` (itself, or the layer a PEFT wrapper holds), else None."""
    while layer is not None:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            return layer
        layer = getattr(layer, "base_layer", None) or getattr(layer, "original_module", None)
    return None


def _row_index(rows: Tensor, logits: Tensor, strict: bool = True) -> Tensor | None:
    """For `[m, L, c]` per-token outputs, the token each row of `logits` `[m, c]` was read from
    (the last match: decoders read the last non-padding token)."""
    hit = (rows == logits[:, None, :]).all(dim=-1)  # [m, L]
    found = hit.any(dim=1)
    if not bool(found.all()):
        if strict:
            raise RuntimeError("the model's logits are no longer one row of its final layer's output per example.")
        return None
    positions = torch.arange(rows.shape[1], device=rows.device)
    return (hit * positions).argmax(dim=1)


__all__ = ["HFGenericAdapter"]

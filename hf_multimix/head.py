"""`MultiMixHead`: wraps a timm or Hugging Face classifier and trains it with MultiMix.

The head composes an adapter (which finds the model's features and classifier) with the
losses. In eval mode, or without labels, it is exactly the wrapped model.
"""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.utils import ModelOutput

from ._checks import AlphaLike, check_alpha, check_positive_int, check_targets
from .adapters import BackboneAdapter, find_adapter, unwrap_model
from .adapters.base import Features, head_dtype, logits_of
from .distributed import gather_batch, is_distributed
from .functional import ATTENTION_KINDS, one_hot_targets, sample_class_balanced_lambda, sample_pair_lambda
from .losses import dense_multimix_loss, multimix_loss, soft_cross_entropy

TEACHERS = ("self", "ema")
MIXINGS = ("multimix", "pairwise", "class-balanced")


@dataclass
class MultiMixOutput(ModelOutput):
    """Output of `MultiMixHead`, usable as a dataclass, a dict or a tuple.

    Attributes:
        loss: the MultiMix loss (scalar), when training with labels.
        logits: the clean batch's logits `[m, c]`.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None


class MultiMixHead(nn.Module):
    """Trains any timm or Hugging Face classifier with (Dense) MultiMix.

    Args:
        model: the classifier to wrap; it is left untouched.
        n: number of mixes per batch.
        alpha: Dirichlet concentration, a float or a `(lo, hi)` range drawn per step. The
            default 0.2 won the project's alpha ablation (fine-tuning, batch 32; see the
            results page); `(0.5, 2.0)` is the setting of the known re-implementation.
        dense: mix every position (token / feature-map cell) instead of pooled embeddings.
        attention: dense-mode weighting of positions: `"uniform"`, `"pooled"`, `"cam"`, or
            `"cls"` (ViT-like models). The default `"uniform"` won the project's attention
            ablation (fine-tuning a CNN on a 2x2 map; see the results page).
        distill_weight: `beta` of the self-distillation term (0 disables it).
        temperature: `T` of the distillation term.
        teacher: `"self"` (the model's detached clean predictions) or `"ema"` (an EMA copy).
        prob: probability to apply MultiMix at a step; otherwise plain cross-entropy.
        clean_weight: weight of an added cross-entropy on the clean batch. The default 1.0 comes
            from the project's recipe study (docs/results.md, 5 seeds paired with ERM): where the
            paper's loss (0, mixed examples only) lost to ERM when fine-tuning pretrained models,
            1.0 won or tied, and from scratch it tied ERM and manifold mixup and beat mixup and
            CutMix. With noisy labels on images pass 0 (the clean term fits the wrong labels);
            from scratch also `prob=0.5` with CutMix of the inputs on the other steps
            (`TrainingConfig(other_steps="cutmix")`): with 40% flipped labels that beat ERM by 15.8
            points and tied CutMix. Text fine-tunes keep 1.0 (see the results page).
        label_smoothing: smoothing of the targets before mixing.
        per_position: dense mode draws one interpolation vector per position (the paper);
            False shares one across positions.
        chunk_size: mixes per chunk of the loss (None: automatic, bounded memory).
        ema_decay: decay of the EMA teacher.
        ema_auto_update: update the EMA teacher at the start of each training forward with
            labels; set False and call `update_teacher()` after `optimizer.step()` instead.
        detach_attention: stop gradients through the dense-mode attention.
        mixing: `"multimix"` (Dirichlet weights over the whole batch) or `"pairwise"`
            (manifold mixup at the same layer, `alpha` then parametrises a Beta; a baseline), or
            `"class-balanced"` (Dirichlet weights whose concentration gives every class of the batch
            the same expected share of the mixes, `functional.sample_class_balanced_lambda`; for
            long-tailed data; in dense mode one weight per example, shared by its positions).
        mix_across_processes: in multi-process training, gather every process's embeddings
            and targets (with autograd) so each mix spans the global batch (beyond the paper,
            which mixes per GPU). Each process still draws its own `n` mixes.
        adapter: an adapter instance for models the built-in adapters do not know.

    Example:
        >>> import timm
        >>> model = timm.create_model("resnet18", pretrained=False, num_classes=10)
        >>> head = MultiMixHead(model, n=1000)
        >>> out = head(torch.randn(4, 3, 64, 64), labels=torch.tensor([0, 1, 2, 3]))
        >>> out.loss.backward()
    """

    # The loss is a mean over mixes, not a sum over tokens: Trainer must scale it for
    # gradient accumulation itself and not pass `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(
        self,
        model: nn.Module,
        n: int = 1000,
        alpha: AlphaLike = 0.2,
        dense: bool = False,
        attention: str = "uniform",
        distill_weight: float = 0.0,
        temperature: float = 1.0,
        teacher: str = "self",
        *,
        prob: float = 1.0,
        clean_weight: float = 1.0,
        label_smoothing: float = 0.0,
        per_position: bool = True,
        chunk_size: int | None = None,
        ema_decay: float = 0.999,
        ema_auto_update: bool = True,
        detach_attention: bool = True,
        mixing: str = "multimix",
        mix_across_processes: bool = False,
        adapter: BackboneAdapter | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"MultiMixHead wraps an nn.Module classifier, got {type(model).__name__}.")
        self.adapter = adapter if adapter is not None else find_adapter(model)
        if unwrap_model(self.adapter.model) is not unwrap_model(model):
            raise ValueError("adapter was built for another model: pass adapter=MyAdapter(model) with this model.")
        self.model = model
        check_positive_int(n, "n")
        check_alpha(alpha)
        if attention not in (*ATTENTION_KINDS, "cls"):
            raise ValueError(f"unknown attention {attention!r}; choose one of {(*ATTENTION_KINDS, 'cls')}.")
        if mixing not in MIXINGS:
            raise ValueError(f"unknown mixing {mixing!r}; choose one of {MIXINGS}.")
        if teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {teacher!r}; choose 'self' or 'ema'.")
        for name, value, lo, hi in (
            ("distill_weight", distill_weight, 0.0, 1.0),
            ("prob", prob, 0.0, 1.0),
            ("label_smoothing", label_smoothing, 0.0, 0.999),
            ("ema_decay", ema_decay, 0.0, 1.0),
        ):
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if clean_weight < 0:
            raise ValueError(f"clean_weight must be >= 0, got {clean_weight}.")
        if dense and not self.adapter.supports_tokens:
            raise ValueError(
                f"dense=True needs per-position features, but {type(model).__name__} has no positions "
                f"({type(self.adapter).__name__}); use dense=False (pooled MultiMix)."
            )
        if dense and attention == "cls" and not self.adapter.supports_cls_attention:
            raise ValueError(
                f"attention='cls' needs a ViT-like model with a CLS token; {type(model).__name__} has none. "
                "Use attention='pooled' or 'cam'."
            )
        self.adapter.num_classes  # noqa: B018 - fails early on a model without a classifier
        self.n, self.alpha, self.dense, self.attention = n, alpha, dense, attention
        self._warned_single_position = False
        self.distill_weight, self.temperature, self.teacher = distill_weight, temperature, teacher
        self.prob, self.clean_weight, self.label_smoothing = prob, clean_weight, label_smoothing
        self.per_position, self.chunk_size, self.detach_attention = per_position, chunk_size, detach_attention
        self.ema_decay, self.ema_auto_update, self.mixing = ema_decay, ema_auto_update, mixing
        self.mix_across_processes = mix_across_processes
        self._ema_forwards = 0
        if teacher == "ema" and distill_weight > 0:
            self.teacher_model = copy.deepcopy(self.adapter.model).requires_grad_(False).eval()
            self._teacher_adapter = type(self.adapter)(self.teacher_model)
        else:
            self.teacher_model = None
        # Checkpoints stay plain: the head's state dict is the wrapped model's, key for key.
        self.register_state_dict_post_hook(_plain_state_dict)
        self.register_load_state_dict_pre_hook(_prefix_model_keys)

    @property
    def config(self) -> Any:
        """The wrapped model's configuration (Hugging Face models), else None."""
        return getattr(self.model, "config", None)

    @property
    def main_input_name(self) -> str:
        return getattr(self.model, "main_input_name", self.adapter.main_input_name)

    @property
    def num_classes(self) -> int:
        """Classes the wrapped classifier predicts."""
        return self.adapter.num_classes

    def train(self, mode: bool = True) -> MultiMixHead:
        super().train(mode)
        if self.teacher_model is not None:
            self.teacher_model.eval()
        return self

    @torch.no_grad()
    def update_teacher(self) -> None:
        """One EMA step of the teacher towards the current weights: `t = decay * t + (1 - decay) * w`."""
        if self.teacher_model is None:
            raise ValueError("update_teacher() needs MultiMixHead(..., teacher='ema', distill_weight > 0).")
        for t, w in zip(self.teacher_model.parameters(), self.model.parameters()):
            t.lerp_(w.detach().to(t.dtype), 1.0 - self.ema_decay)
        for t, w in zip(self.teacher_model.buffers(), self.model.buffers()):
            t.copy_(w)

    def forward(self, *args: Any, labels: Tensor | None = None, **kwargs: Any) -> Any:
        """timm style `head(x, labels=y)` or Hugging Face style `head(pixel_values=x, labels=y)`.

        Returns:
            In training mode with labels, a `MultiMixOutput` with the MultiMix `loss` and the clean
            batch's `logits`. Otherwise exactly what the wrapped model returns for the same call: a
            tensor for timm and plain torch models, the model's own output class for Hugging Face
            models. In eval mode with labels a Hugging Face output also carries the cross-entropy
            as `loss` (computed here: the labels never reach the model); a tensor stays a tensor.
        """
        inputs = self.adapter.normalize_inputs(args, kwargs)
        if not self.training or labels is None:
            out = self.adapter.forward_model(inputs, module=self.model)
            if labels is None:
                return out
            logits = logits_of(out)
            self._check_labels(labels, logits.shape[0])
            y = one_hot_targets(labels, self.num_classes, validate=False)
            return _with_loss(out, soft_cross_entropy(logits, y).mean())
        m = self.adapter.batch_size(inputs)
        self._check_labels(labels, m)
        # prob 0 and 1 draw nothing, so they leave Python's random stream to the training loop
        mix = self.prob >= 1.0 or (self.prob > 0.0 and random.random() < self.prob)
        feats = self.adapter.features(
            inputs, tokens=self.dense and mix, cls_attention=mix and self.dense and self.attention == "cls"
        )
        classify = self._classify
        clean_logits = classify(feats.pooled)
        if not mix:
            y = one_hot_targets(labels, self.num_classes, self.label_smoothing, validate=False)
            return MultiMixOutput(loss=soft_cross_entropy(clean_logits, y).mean(), logits=clean_logits)
        teacher_probs = self._teacher_probs(inputs, clean_logits)
        mix_logits = clean_logits
        if self.mix_across_processes and is_distributed():
            feats, labels, mix_logits, teacher_probs = self._gather(feats, labels, clean_logits, teacher_probs)
            m = labels.shape[0]
        common = dict(
            n=self.n, alpha=self.alpha, affine=self.adapter.affine, num_classes=self.num_classes,
            label_smoothing=self.label_smoothing, clean_weight=self.clean_weight, clean_logits=mix_logits,
            teacher_probs=teacher_probs, distill_weight=self.distill_weight,
            temperature=self.temperature, chunk_size=self.chunk_size,
            validate=False,  # labels checked above; weights and teacher probabilities valid by construction
        )
        if self.mixing == "pairwise":
            common["lam"] = sample_pair_lambda(m, self.alpha, device=feats.pooled.device)
        elif self.mixing == "class-balanced":
            common["lam"] = sample_class_balanced_lambda(labels, self.n, self.alpha, num_classes=self.num_classes)
        if self.dense:
            self._warn_single_position(feats.tokens)
            attention = feats.cls_attention if self.attention == "cls" else self.attention
            loss = dense_multimix_loss(
                feats.tokens, labels, classify, common.pop("lam", None), per_position=self.per_position, attention=attention,
                pooled=feats.pooled, mask=feats.mask, detach_attention=self.detach_attention, **common,
            )
        else:
            loss = multimix_loss(feats.pooled, labels, classify, common.pop("lam", None), **common)
        return MultiMixOutput(loss=loss, logits=clean_logits)

    @staticmethod
    def _gather(feats: Features, labels: Tensor, logits: Tensor, teacher: Tensor | None):
        """The global batch: every process's features, labels, logits and teacher outputs."""
        mask = feats.mask
        if feats.tokens is not None and mask is None:
            mask = torch.ones(feats.tokens.shape[:2], dtype=torch.bool, device=feats.tokens.device)
        gathered = Features(
            pooled=gather_batch(feats.pooled), tokens=gather_batch(feats.tokens),
            mask=gather_batch(mask, grad=False, pad_value=False),
            cls_attention=gather_batch(feats.cls_attention, grad=False),
        )
        return gathered, gather_batch(labels, grad=False), gather_batch(logits), gather_batch(teacher, grad=False)

    def _warn_single_position(self, tokens: Tensor) -> None:
        if tokens.shape[1] == 1 and not self._warned_single_position:
            self._warned_single_position = True
            warnings.warn(
                "dense=True, but the backbone's features have a single position (e.g. a 1x1 feature map from "
                "small images), so Dense MultiMix here is pooled MultiMix. Use larger inputs for a spatial "
                "map, or dense=False.", UserWarning, stacklevel=3,
            )

    def _classify(self, z: Tensor) -> Tensor:
        # Mixed embeddings are float32; a classifier kept in half precision gets its own dtype.
        dtype = head_dtype(self.adapter.classifier)
        return self.adapter.classify(z if dtype is None or torch.is_autocast_enabled() else z.to(dtype))

    def _check_labels(self, labels: Tensor, m: int) -> None:
        """Shapes, dtypes and values of the labels: the one host sync of a training step."""
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a tensor ([m] class ids or [m, c] probabilities), got {type(labels).__name__}.")
        if m == 0:
            raise ValueError(
                "the batch is empty (m=0 examples); MultiMix needs at least one example per batch: skip empty "
                "batches."
            )
        if labels.dim() == 0 or labels.shape[0] != m:
            raise ValueError(
                f"labels have batch size {labels.shape[0] if labels.dim() else 0} but the inputs have {m}: "
                "pass one label per example."
            )
        check_targets(labels, m, self.num_classes, name="labels")

    def _teacher_probs(self, inputs: dict[str, Any], clean_logits: Tensor) -> Tensor | None:
        if self.distill_weight <= 0:
            return None
        if self.teacher == "self":
            logits = clean_logits.detach()
        else:
            if self.ema_auto_update:
                if self._ema_forwards > 0:
                    self.update_teacher()
                self._ema_forwards += 1
            with torch.no_grad():
                logits = self._teacher_adapter.logits(inputs)
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def save_pretrained(self, path: str, **kwargs: Any) -> None:
        """Saves the wrapped model, plain: Hugging Face models with their own `save_pretrained`,
        others as `model.safetensors` loadable with `load_state_dict`."""
        if hasattr(self.model, "save_pretrained"):
            self.model.save_pretrained(path, **kwargs)
            return
        import os

        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, os.path.join(path, "model.safetensors"))


def _with_loss(output: Any, loss: Tensor) -> Any:
    """The model's own output with `loss` set, as the model itself returns it when given labels."""
    if isinstance(output, ModelOutput):
        fields = {key: value for key, value in output.items() if key != "loss"}
        try:
            return type(output)(loss=loss, **fields)
        except TypeError:  # an output class without a `loss` field
            return output
    if isinstance(output, tuple):
        return (loss, *output)
    return output


def _plain_state_dict(module: MultiMixHead, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """Drops the teacher and the `model.` level so the head's state dict is the model's."""
    inner = prefix + "model."
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        value = state_dict.pop(key)
        if key.startswith(inner):
            state_dict[prefix + key[len(inner):]] = value


def _prefix_model_keys(module: MultiMixHead, state_dict: dict, prefix: str, *args: Any) -> None:
    """Accepts a plain model state dict (as `state_dict()` returns) by re-adding `model.`."""
    for key in list(state_dict):
        if key.startswith(prefix) and not key.startswith(prefix + "model."):
            state_dict[prefix + "model." + key[len(prefix):]] = state_dict.pop(key)
    if module.teacher_model is not None:
        # The teacher is not saved: it restarts from the loaded weights.
        for key, value in module.model.state_dict().items():
            state_dict.setdefault(prefix + "teacher_model." + key, state_dict.get(prefix + "model." + key, value))

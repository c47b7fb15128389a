"""`MultiMixHead`: wraps a timm or Hugging Face classifier and trains it with MultiMix.

The head composes an adapter (which finds the model's features and classifier) with the
losses. In eval mode, or without labels, it is exactly the wrapped model.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers.utils import ModelOutput

from ._checks import check_targets
from ._trainer_model import TrainerModelMixin
from .adapters import BackboneAdapter, find_adapter, fsdp1_root, unwrap_model
from .adapters.base import Features, head_dtype, logits_of
from .distributed import gather_batch, is_distributed
from .config import CONFIG_FIELDS, MIXINGS, TEACHERS, MultiMixConfig, resolve_config, resolve_mixing
from .functional import build_attention, sample_class_balanced_lambda, sample_pair_lambda
from .losses import (
    check_token_labels,
    clean_loss,
    dense_multimix_loss,
    multimix_loss,
    teacher_probabilities,
    token_multimix_loss,
)

logger = logging.getLogger(__name__)

__all__ = ["MIXINGS", "TEACHERS", "MultiMixHead", "MultiMixOutput"]


@dataclass
class MultiMixOutput(ModelOutput):
    """Output of `MultiMixHead`, usable as a dataclass, a dict or a tuple.

    Attributes:
        loss: the MultiMix loss (scalar), when training with labels.
        logits: the clean batch's logits `[m, c]` (token classification: `[m, L, c]`).
    """

    loss: Tensor | None = None
    logits: Tensor | None = None


class MultiMixHead(TrainerModelMixin, nn.Module):
    """Trains any timm or Hugging Face classifier with (Dense) MultiMix.

    The options are one `MultiMixConfig` (`n`, `alpha`, `dense`, `attention`, `prob`,
    `clean_weight`, ...; see its reference for each default and its evidence), given as
    `config`, as keywords, or both (keywords override the config). The head keeps it as
    `head.multimix_config` (`head.config` is the wrapped model's own, for Hugging Face
    models) and reads each option as an attribute (`head.n`, `head.prob`, ...); to change
    one, assign a new config: `head.multimix_config = head.multimix_config.replace(prob=0.5)`.

    Switches, as timm's `Mixup.mixup_enabled`:

    * `head.mixing_enabled = False` turns mixing off: training forwards compute the plain
      (label-smoothed) cross-entropy of the clean batch and draw no random numbers.
    * `head.mix_next = True / False` decides the next training forward (then it returns to
      None: a draw with probability `prob`); the training loop uses it to share the steps
      between MultiMix and input mixing (`TrainingConfig(other_steps=...)`).

    With `mix_across_processes=True` every process takes the same mix / no-mix decision at
    each step: it is drawn from a generator seeded from process 0 at the first step.

    The EMA teacher (`teacher="ema"`, `distill_weight > 0`) steps once per optimizer step:
    call `head.update_teacher()` after `optimizer.step()` (the training loop and
    `MultiMixTrainer` do). In your own loop, `ema_auto_update=True` (the default) does it for
    you: a training forward steps the teacher first when the weights changed since its last
    step, so gradient accumulation does not change the teacher's rate.

    Args:
        model: the classifier to wrap; it is left untouched.
        config: a `MultiMixConfig`, a dict of its options, or None for the defaults.
        adapter: an adapter instance for models the built-in adapters do not know.
        **overrides: `MultiMixConfig` options overriding `config` (`n=500`, `dense=True`, ...).

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
        config: MultiMixConfig | Mapping[str, Any] | None = None,
        *,
        adapter: BackboneAdapter | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"MultiMixHead wraps an nn.Module classifier, got {type(model).__name__}.")
        if isinstance(model, MultiMixHead):
            raise TypeError(
                "MultiMixHead(MultiMixHead(model)): the model is wrapped already; use the head you have, or wrap "
                "the plain model (head.model)."
            )
        cfg = _resolve_mixing(_resolve_task(resolve_config(config, overrides, "MultiMixHead"), model))
        self.adapter = adapter if adapter is not None else find_adapter(model)
        if unwrap_model(self.adapter.model) is not unwrap_model(model):
            raise ValueError("adapter was built for another model: pass adapter=MyAdapter(model) with this model.")
        fsdp1 = fsdp1_root(model)
        self._fsdp1 = fsdp1 is not None
        if self._fsdp1:
            self.adapter.root = fsdp1  # a given adapter too runs the FSDP1 wrapper's forward
        self.model = model
        if self._fsdp1 and not self.adapter.affine:
            self._refuse_fsdp1_classifier_call()
        if cfg.dense and not self.adapter.supports_tokens:
            raise ValueError(
                f"dense=True needs per-position features, but {type(model).__name__} has no positions "
                f"({type(self.adapter).__name__}); use dense=False (pooled MultiMix)."
            )
        if cfg.dense and cfg.attention == "cls" and not self.adapter.supports_cls_attention:
            raise ValueError(
                f"attention='cls' needs a ViT-like model with a CLS token; {type(model).__name__} has none. "
                "Use attention='pooled' or 'cam'."
            )
        self.adapter.num_classes  # noqa: B018 - fails early on a model without a classifier
        if cfg.task == "token" and not getattr(self.adapter, "token_classifier", False):
            raise ValueError(
                f"task='token' needs a model that labels every token (a Hugging Face *ForTokenClassification model, "
                f"on the generic path); {type(self.adapter).__name__} on {type(model).__name__} gives one label per "
                "example. Use AutoModelForTokenClassification, or task=None."
            )
        self._config = cfg
        #: The on/off switch (timm's `Mixup.mixup_enabled`): False trains with plain cross-entropy.
        self.mixing_enabled = True
        #: The decision of the next training forward (True / False), or None: drawn with `prob`.
        self.mix_next: bool | None = None
        self._warned_single_position = False
        self._decisions: torch.Generator | None = None
        if cfg.teacher == "ema" and cfg.distill_weight > 0:
            if self._fsdp1:
                raise ValueError(
                    "teacher='ema' under FSDP1 (FullyShardedDataParallel): the teacher is a copy of the sharded "
                    "model. Use teacher='self', or shard with FSDP2 (torch.distributed.fsdp.fully_shard)."
                )
            self.teacher_model = copy.deepcopy(self.adapter.model).requires_grad_(False).eval()
            self._teacher_adapter = type(self.adapter)(self.teacher_model)
        else:
            self.teacher_model = None
        self._teacher_versions = self._weight_versions()
        logger.info("MultiMixHead: %s with %s; %s", type(model).__name__, type(self.adapter).__name__, cfg)
        # Checkpoints stay plain: the head's state dict is the wrapped model's, key for key.
        self.register_state_dict_post_hook(_plain_state_dict)
        self.register_load_state_dict_pre_hook(_prefix_model_keys)

    @property
    def multimix_config(self) -> MultiMixConfig:
        """The head's `MultiMixConfig`. Assign a new one to change options between steps; the
        options that decide what the head built (`dense`, `attention`, `teacher`,
        `distill_weight` with an EMA teacher) are fixed at construction."""
        return self._config

    @multimix_config.setter
    def multimix_config(self, config: MultiMixConfig) -> None:
        if not isinstance(config, MultiMixConfig):
            raise TypeError(f"multimix_config must be a MultiMixConfig, got {type(config).__name__}.")
        if config.task is None or _same_task(config.task, self._config.task):
            config = config.replace(task=self._config.task)  # None: the model's, as at construction
        fixed = ["dense", "attention", "teacher", "task"] + (["distill_weight"] if self.teacher_model is not None else [])
        changed = [name for name in fixed if getattr(config, name) != getattr(self._config, name)]
        if changed:
            raise ValueError(
                f"{changed} decide what MultiMixHead builds and cannot change after construction; build a new "
                f"head: MultiMixHead(head.model, head.multimix_config.replace(...))."
            )
        self._config = _resolve_mixing(config)

    def save_pretrained(self, path: str, **kwargs: Any) -> None:
        """Saves the wrapped model, plain (Hugging Face models with their own `save_pretrained`,
        others as `model.safetensors` loadable with `load_state_dict`), and the head's
        `multimix_config.json` beside it (`MultiMixConfig.from_pretrained(path)` reads it)."""
        if hasattr(self.model, "save_pretrained"):
            self.model.save_pretrained(path, **kwargs)
        else:
            from safetensors.torch import save_file

            os.makedirs(path, exist_ok=True)
            state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, os.path.join(path, "model.safetensors"))
        self._config.save_pretrained(path)

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
        """One EMA step of the teacher towards the current weights: `t = decay * t + (1 - decay) * w`.

        Call it after each `optimizer.step()` (the training loop and `MultiMixTrainer` do)."""
        if self.teacher_model is None:
            raise ValueError("update_teacher() needs MultiMixHead(..., teacher='ema', distill_weight > 0).")
        for t, w in zip(self.teacher_model.parameters(), self.model.parameters()):
            t.lerp_(w.detach().to(t.dtype), 1.0 - self.ema_decay)
        for t, w in zip(self.teacher_model.buffers(), self.model.buffers()):
            t.copy_(w)
        self._teacher_versions = self._weight_versions()

    def load_teacher(self, state: dict[str, Tensor]) -> None:
        """Loads the EMA teacher's weights (a resumed run's `teacher.safetensors`), as stepped for the
        current weights: the next training forward does not step it again."""
        if self.teacher_model is None:
            raise ValueError("load_teacher() needs MultiMixHead(..., teacher='ema', distill_weight > 0).")
        self.teacher_model.load_state_dict(state)
        self._teacher_versions = self._weight_versions()

    def _weight_versions(self) -> tuple[int, ...] | None:
        """The in-place version counters of the weights: an optimizer step bumps them, a forward,
        a backward and `zero_grad` do not."""
        if self.teacher_model is None:
            return None
        return tuple(p._version for p in self.model.parameters())

    def decide_mixing(self) -> bool:
        """Whether a training step mixes: False while `mixing_enabled` is off, else a draw with
        probability `prob` (0 and 1 draw nothing). With `mix_across_processes` in a multi-process
        run every process draws the same decision, from a generator seeded from process 0 at
        the first call; otherwise Python's `random` draws it, so `random.seed` reproduces it."""
        if not self.mixing_enabled:
            return False
        prob = self._config.prob
        if prob >= 1.0 or prob <= 0.0:
            return prob >= 1.0
        if self._config.mix_across_processes and is_distributed():
            if self._decisions is None:
                import torch.distributed as dist

                seed = [random.getrandbits(63)]
                dist.broadcast_object_list(seed, src=0)
                self._decisions = torch.Generator().manual_seed(seed[0])
                logger.info("MultiMixHead: mixing decisions shared by all processes (seed %d from process 0)", seed[0])
            return torch.rand((), generator=self._decisions).item() < prob
        return random.random() < prob

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
            self._check_labels(labels, logits.shape[0], logits.shape[1] if logits.dim() == 3 else None)
            return _with_loss(out, clean_loss(logits, labels, self.num_classes, self._config.task))
        m = self.adapter.batch_size(inputs)
        self._check_labels(labels, m)
        cfg = self._config
        mix = self.mix_next if self.mix_next is not None and self.mixing_enabled else self.decide_mixing()
        self.mix_next = None
        if cfg.task == "token":
            return self._token_forward(inputs, labels, mix)
        feats = self.adapter.features(
            inputs, tokens=cfg.dense and mix, cls_attention=mix and cfg.dense and cfg.attention == "cls"
        )
        # The clean logits are the model's own output; for an affine classifier the mixed logits follow
        # exactly from the clean ones (and the positions' logits, computed inside the forward), so no
        # classifier runs after the forward: under FSDP1 its parameters are resharded by then.
        logit_space = self.adapter.affine and feats.logits is not None and (
            not (cfg.dense and mix) or feats.token_logits is not None)
        if feats.logits is None or not logit_space and mix:
            self._refuse_fsdp1_classifier_call()
        clean_logits = feats.logits if feats.logits is not None else self._classify(feats.pooled)
        if not mix:
            loss = clean_loss(clean_logits, labels, self.num_classes, cfg.task, cfg.label_smoothing)
            return MultiMixOutput(loss=loss, logits=clean_logits)
        teacher_probs = self._teacher_probs(inputs, clean_logits)
        mix_logits = clean_logits
        if cfg.mix_across_processes and is_distributed():
            feats, labels, mix_logits, teacher_probs = self._gather(feats, labels, clean_logits, teacher_probs)
            m = labels.shape[0]
        lam = None  # "multimix": the losses draw Dir(alpha) weights
        if cfg.mixing == "pairwise":
            lam = sample_pair_lambda(m, cfg.alpha, device=feats.pooled.device)
        elif cfg.mixing == "class-balanced":
            lam = sample_class_balanced_lambda(labels, cfg.n, cfg.alpha, num_classes=self.num_classes)
        classify = self._classify
        attention = feats.cls_attention if cfg.attention == "cls" else cfg.attention
        if logit_space:
            # MultiMix in logit space (METHOD.md s1): the loss mixes the logits the forward computed, with
            # the identity as classifier; an attention read from the embeddings is built from them first.
            if cfg.dense and attention == "pooled":
                attention = build_attention("pooled", feats.tokens, pooled=feats.pooled, mask=feats.mask,
                                            detach=cfg.detach_attention)
            feats = Features(pooled=mix_logits, tokens=feats.token_logits, mask=feats.mask)
            classify = _IDENTITY
        common = dict(
            affine=self.adapter.affine, num_classes=self.num_classes, clean_logits=mix_logits,
            teacher_probs=teacher_probs,
            validate=False,  # labels checked above; weights and teacher probabilities valid by construction
        )
        if cfg.dense:
            self._warn_single_position(feats.tokens)
            loss = dense_multimix_loss(
                feats.tokens, labels, classify, lam, cfg, attention=attention, pooled=feats.pooled, mask=feats.mask,
                **common,
            )
        else:
            loss = multimix_loss(feats.pooled, labels, classify, lam, cfg, **common)
        if cfg.clean_weight == 0 and self._fsdp1:
            # FSDP1 starts its backward (the root's pre-backward hook) from the gradient of the forward's
            # output; without the clean term a dense loss reads only tensors the hooks caught.
            loss = loss + 0.0 * clean_logits.sum()
        return MultiMixOutput(loss=loss, logits=clean_logits)

    def _token_forward(self, inputs: dict[str, Any], labels: Tensor, mix: bool) -> MultiMixOutput:
        """Token classification: the model's logits `[m, L, c]` are the classifier (an affine layer, found
        by the adapter) at every token, so each position is mixed in logit space, exactly, over the
        examples labelled there (`losses.token_multimix_loss`); the clean term is the model's own token
        cross-entropy."""
        cfg = self._config
        feats = self.adapter.features(inputs, tokens=True)
        logits = feats.token_logits
        check_token_labels(labels, logits.shape[0], logits.shape[1], None, values=False)
        if not mix:
            loss = clean_loss(logits, labels, self.num_classes, cfg.task, cfg.label_smoothing)
            return MultiMixOutput(loss=loss, logits=logits)
        lam = sample_pair_lambda(logits.shape[0], cfg.alpha, device=logits.device) if cfg.mixing == "pairwise" else None
        loss = token_multimix_loss(logits, labels, lam, cfg, mask=feats.mask,
                                   teacher_probs=self._teacher_probs(inputs, logits), validate=False)
        return MultiMixOutput(loss=loss, logits=logits)

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
            token_logits=gather_batch(feats.token_logits),  # the logits are gathered once, as `logits` below
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

    def _refuse_fsdp1_classifier_call(self) -> None:
        """FSDP1 reshards the root's parameters after the forward, where the head would run the classifier."""
        if self._fsdp1:
            why = ("its classifier is not affine, so the mixed embeddings go through it after the forward"
                   if not self.adapter.affine else
                   f"{type(self.adapter).__name__} gives no logits from the forward (Features.logits / token_logits)")
            raise ValueError(
                f"MultiMixHead under FSDP1 (FullyShardedDataParallel): {why}, when FSDP1 has resharded the "
                "classifier's parameters. Shard with FSDP2 (torch.distributed.fsdp.fully_shard) instead."
            )

    def _classify(self, z: Tensor) -> Tensor:
        # Mixed embeddings are float32; a classifier kept in half precision gets its own dtype.
        dtype = head_dtype(self.adapter.classifier)
        return self.adapter.classify(z if dtype is None or torch.is_autocast_enabled() else z.to(dtype))

    def _check_labels(self, labels: Tensor, m: int, positions: int | None = None) -> None:
        """Shapes, dtypes and values of the labels: the one host sync of a training step (`positions`:
        the token classifier's `L`, when known)."""
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
        if self._config.task == "token":
            check_token_labels(labels, m, positions, self.num_classes)
            return
        check_targets(labels, m, self.num_classes, name="labels", multi_label=self._config.task == "multi_label")

    def _teacher_probs(self, inputs: dict[str, Any], clean_logits: Tensor) -> Tensor | None:
        if self.distill_weight <= 0:
            return None
        if self.teacher == "self":
            logits = clean_logits.detach()
        else:
            if self.ema_auto_update and self._weight_versions() != self._teacher_versions:
                self.update_teacher()  # the weights moved (an optimizer step) since the teacher's last step
            with torch.no_grad():
                logits = self._teacher_adapter.logits(inputs)
        return teacher_probabilities(logits, self.temperature, self.task)


#: Hugging Face `config.problem_type` values and the `MultiMixConfig.task` they select.
_PROBLEM_TASKS = {"single_label_classification": "single_label", "multi_label_classification": "multi_label"}


def _same_task(a: str | None, b: str | None) -> bool:
    """Whether two `MultiMixConfig.task` values train the same way (None is single-label)."""
    return (a or "single_label") == (b or "single_label")


def _resolve_mixing(cfg: MultiMixConfig) -> MultiMixConfig:
    """`mixing="auto"` resolved for the head's task (`config.resolve_mixing`), and logged."""
    resolved = resolve_mixing(cfg)
    if resolved.mixing != cfg.mixing:
        logger.info("MultiMixHead: mixing='auto' -> %r (%s)", resolved.mixing,
                    "pooled, one label per example" if resolved.mixing == "class-balanced" else
                    "dense, multi-label or token classification")
    return resolved


def _resolve_task(cfg: MultiMixConfig, model: nn.Module) -> MultiMixConfig:
    """`cfg` with the model's task: `task=None` becomes `"token"` for a `*ForTokenClassification`
    model, `"multi_label"` for a model with `config.problem_type="multi_label_classification"`, and
    stays None (single-label) otherwise, so a single-label head keeps the config it was given; a
    task that contradicts the model's is refused."""
    name = type(unwrap_model(model)).__name__
    if name.endswith("ForTokenClassification"):
        if cfg.task is None:
            logger.info("MultiMixHead: task='token' (%s labels every token)", name)
            return cfg.replace(task="token")
        if cfg.task != "token":
            raise ValueError(
                f"task={cfg.task!r} but {name} labels every token; leave task=None (token classification) or use "
                "a ...ForSequenceClassification model."
            )
        return cfg
    if cfg.task == "token":
        raise ValueError(
            f"task='token' needs a model that labels every token (a Hugging Face *ForTokenClassification model); "
            f"{name} gives one label per example. Use AutoModelForTokenClassification, or task=None."
        )
    problem = getattr(getattr(model, "config", None), "problem_type", None)
    model_task = _PROBLEM_TASKS.get(problem) if isinstance(problem, str) else None
    if cfg.task is None:
        if model_task != "multi_label":
            return cfg
        logger.info("MultiMixHead: task='multi_label' (from config.problem_type=%r)", problem)
        return cfg.replace(task="multi_label")
    if model_task is not None and model_task != cfg.task:  # (None is single-label, checked above)
        raise ValueError(
            f"task={cfg.task!r} contradicts the model's config.problem_type={problem!r}; leave task=None to "
            f"follow the model, or set model.config.problem_type to match."
        )
    return cfg


#: The classifier of MultiMix in logit space: the logits are mixed as they are.
_IDENTITY = nn.Identity()


def _config_option(name: str) -> property:
    def get(self: MultiMixHead) -> Any:
        return getattr(self._config, name)

    def set_(self: MultiMixHead, value: Any) -> None:
        raise AttributeError(
            f"MultiMixHead.{name} reads the head's config; change it with "
            f"head.multimix_config = head.multimix_config.replace({name}=...)."
        )

    return property(get, set_, doc=f"`multimix_config.{name}` (see `MultiMixConfig`).")


for _name in CONFIG_FIELDS:
    setattr(MultiMixHead, _name, _config_option(_name))


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

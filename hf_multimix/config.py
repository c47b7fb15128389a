"""`MultiMixConfig`: every MultiMix option once, validated once, with one set of defaults.

`MultiMixHead`, `multimix_loss` / `dense_multimix_loss`, `sample_lambda`, the CLI,
`MultiMixTrainer` and `MultiMixTask` all read their defaults from here, so a default cannot
differ between layers. The config is saved beside every checkpoint as `multimix_config.json`
(`save_pretrained` / `from_pretrained`), as transformers saves a model's `config.json`.

Each default names its evidence: the tables of `docs/results.md` (the recipe study, 5 seeds
paired with ERM, and the 3-seed ablations).

This module is pure Python (no torch): the maths modules import it, not the other way round.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: File name of the config in a checkpoint folder (beside `config.json` / `model.safetensors`).
CONFIG_NAME = "multimix_config.json"

ATTENTIONS = ("uniform", "pooled", "cam", "cls")
TEACHERS = ("self", "ema")
MIXINGS = ("auto", "multimix", "pairwise", "class-balanced")
#: What the classifier predicts: one class per example (softmax cross-entropy), several
#: (multi-hot targets, per-class binary cross-entropy with logits), or one class per token
#: (token classification: per-position labels, -100 ignored; docs/token_classification.md).
TASKS = ("single_label", "multi_label", "token")

#: Dirichlet concentration of the interpolation weights. 0.2 won the alpha ablation
#: (docs/results.md, "Dirichlet alpha": fine-tuning, batch 32, best best-epoch accuracy;
#: 0.1 within noise; `(0.5, 2.0)`, the known re-implementation's range, trailed ERM by 10 points).
DEFAULT_ALPHA = 0.2


@dataclass
class MultiMixConfig:
    """The options of (Dense) MultiMix, checked when the config is built.

    Every layer that mixes (the head, the losses, the sampler, the CLI, the Trainer and the
    timm task) takes its defaults from this class. Numbers are checked for type (numpy
    integers and floats are accepted and stored as Python numbers), finiteness and range,
    names against their choices; a bad value raises a `ValueError` / `TypeError` that names
    the option, the value and the fix.

    Attributes:
        n: mixes per batch. 1000: more mixes helped up to 1000 and 10,000 was within noise of
            it at a higher cost (docs/results.md, "Number of mixes n").
        alpha: Dirichlet concentration of the weights, a float or a `(lo, hi)` range drawn
            per step. 0.2 won the alpha ablation (docs/results.md, "Dirichlet alpha").
            With `mixing="pairwise"` it parametrises manifold mixup's Beta instead.
        dense: mix every position (token / feature-map cell) instead of pooled embeddings.
        attention: dense-mode weighting of positions: `"uniform"`, `"pooled"`, `"cam"`, or
            `"cls"` (ViT-like models, through `MultiMixHead`). `"uniform"` beat `"pooled"` on
            each of three seeds and `"cam"` on average (docs/results.md, "Dense attention").
        per_position: dense mode draws one weight vector per position (the paper); False
            shares one. True was ahead on average and steadier across seeds (docs/results.md,
            "One interpolation vector per position").
        detach_attention: stop gradients through the dense-mode attention (the method's choice).
        mixing: `"multimix"` (Dir(alpha) weights over the whole batch), `"pairwise"`
            (manifold mixup at the same layer; a baseline), `"class-balanced"` (Dirichlet
            weights whose concentration gives every class of the batch the same expected share
            of the mixes, `functional.sample_class_balanced_lambda`; in dense mode one weight per
            example, shared by its positions), or `"auto"` (the default): `"class-balanced"` for
            pooled MultiMix with one label per example, `"multimix"` for dense, multi-label and
            token classification (`resolve_mixing`; `MultiMixHead` resolves it once it knows the
            task and logs it). Class-balanced weights keep the small classes of long-tailed data
            that Dir(alpha) weights wipe out (a news CSV of 8 long-tailed topics); on balanced sets
            they tie or beat ERM (20 Newsgroups, tweets, 8x8 digits, MNIST), though 0.83 points
            behind Dir(alpha) on the balanced 8x8 digits (docs/results.md, "The CLI's defaults
            against ERM" and "Imbalanced data"); the other tasks were measured with `"multimix"`
            only.
        prob: probability to mix at a training step; other steps train with plain
            cross-entropy. 1.0: mixing on half the steps was 0.62 points behind it
            (docs/results.md, "What the study says"); with class-balanced weights it tied 1.0 on
            20 Newsgroups, the news CSV and the long-tailed digits ("Text fine-tunes", "Imbalanced
            data").
        clean_weight: weight of an added cross-entropy on the clean batch. 1.0 from the
            recipe study (docs/results.md, "The default recipe against the baselines"):
            the paper's loss (0, mixed examples only) trailed ERM in three of four fine-tunes
            of pretrained models, 1.0 won or tied. With noisy labels on images use 0
            (`recipes.noisy_labels`).
        label_smoothing: smoothing of the targets before mixing, in `[0, 1)`. 0: not studied.
        distill_weight: `beta` of the self-distillation term, in `[0, 1]` (0 disables it).
            0: the `multimix+sd` row tied the default without beating it (docs/results.md).
        temperature: `T` of the distillation term, > 0.
        teacher: `"self"` (the model's detached clean predictions) or `"ema"` (an EMA copy).
        ema_decay: decay of the EMA teacher, in `[0, 1]`.
        ema_auto_update: with an EMA teacher, a training forward first steps the teacher if
            the weights changed since its last step, so the teacher steps once per optimizer
            step whatever the gradient accumulation (for your own loops). The training loop
            and `MultiMixTrainer` call `head.update_teacher()` after each `optimizer.step()`
            themselves. False: only explicit `update_teacher()` calls step it.
        chunk_size: mixes per chunk of the loss (None: automatic, bounded memory).
        mix_across_processes: in multi-process training, gather every process's embeddings
            and targets (with autograd) so each mix spans the global batch (beyond the paper,
            which mixes per GPU). Every process then takes the same mix / no-mix decision.
        task: `"single_label"` (soft-target cross-entropy), `"multi_label"` (float multi-hot
            targets `[m, c]` mixed with the same weights, binary cross-entropy with logits, as
            `torch.nn.BCEWithLogitsLoss` and timm's `--bce-loss`), or None: the model's own
            (`MultiMixHead` reads a Hugging Face `config.problem_type`; anything else is
            single-label). The losses read None as `"single_label"`. `"token"`: a label per
            token (`*ForTokenClassification` models select it): every position is mixed with
            its own weights over the examples labelled there (Dense MultiMix with per-token
            targets), so `dense` is implied; it takes `attention="uniform"`, `mixing="multimix"`
            (what `"auto"` resolves to) or `"pairwise"`, and no `mix_across_processes`
            (docs/token_classification.md).

    Example:
        >>> config = MultiMixConfig(n=500, clean_weight=0.0)
        >>> config.alpha, config.replace(alpha=(0.5, 2.0)).alpha
        (0.2, (0.5, 2.0))
    """

    n: int = 1000
    alpha: float | tuple[float, float] = DEFAULT_ALPHA
    dense: bool = False
    attention: str = "uniform"
    per_position: bool = True
    detach_attention: bool = True
    mixing: str = "auto"
    prob: float = 1.0
    clean_weight: float = 1.0
    label_smoothing: float = 0.0
    distill_weight: float = 0.0
    temperature: float = 1.0
    teacher: str = "self"
    ema_decay: float = 0.999
    ema_auto_update: bool = True
    chunk_size: int | None = None
    mix_across_processes: bool = False
    task: str | None = None

    def __post_init__(self) -> None:
        self.n = _int(self.n, "n", "the number of mixes per batch, e.g. n=1000")
        self.alpha = check_alpha(self.alpha)
        for name in ("dense", "per_position", "detach_attention", "ema_auto_update", "mix_across_processes"):
            setattr(self, name, _bool(getattr(self, name), name))
        self.attention = _choice(self.attention, "attention", ATTENTIONS)
        self.mixing = _choice(self.mixing, "mixing", MIXINGS)
        self.teacher = _choice(self.teacher, "teacher", TEACHERS)
        if self.task is not None:
            self.task = _choice(self.task, "task", TASKS)
        self.prob = _float(self.prob, "prob", 0.0, 1.0, "the probability to mix at a step, e.g. prob=1.0")
        self.clean_weight = _float(self.clean_weight, "clean_weight", 0.0, math.inf,
                                   "e.g. clean_weight=1.0 (the default) or 0 (mixed examples only)")
        self.label_smoothing = _float(self.label_smoothing, "label_smoothing", 0.0, 1.0,
                                      "e.g. label_smoothing=0.1", hi_open=True)
        self.distill_weight = _float(self.distill_weight, "distill_weight", 0.0, 1.0,
                                     "the weight beta of self-distillation, e.g. distill_weight=0.5")
        self.temperature = _float(self.temperature, "temperature", 0.0, math.inf, "e.g. temperature=1.0",
                                  lo_open=True)
        self.ema_decay = _float(self.ema_decay, "ema_decay", 0.0, 1.0, "e.g. ema_decay=0.999")
        if self.chunk_size is not None:
            self.chunk_size = _int(self.chunk_size, "chunk_size", "mixes per chunk of the loss, or None (automatic)")
        if self.task == "token":
            _check_token_options(self)

    def replace(self, **changes: Any) -> MultiMixConfig:
        """A copy with `changes` applied and checked; unknown names are refused."""
        _check_names(changes, "MultiMixConfig.replace")
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The options that differ from the defaults, e.g. `"n=500, clean_weight=0.0"` (`"defaults"` if none)."""
        base = MultiMixConfig()
        auto = resolve_mixing(base.replace(dense=self.dense, task=self.task)).mixing  # what "auto" resolves to here
        changed = [f"{f}={getattr(self, f)!r}" for f in CONFIG_FIELDS if getattr(self, f) != getattr(base, f)
                   and not (f == "mixing" and self.mixing == auto)]
        return ", ".join(changed) or "defaults"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; `alpha` ranges become lists."""
        out = dataclasses.asdict(self)
        if isinstance(out["alpha"], tuple):
            out["alpha"] = list(out["alpha"])
        return out

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> MultiMixConfig:
        """The config of `options` (as `to_dict` writes them); unknown keys are refused."""
        if not isinstance(options, Mapping):
            raise TypeError(f"MultiMixConfig.from_dict takes a dict of options, got {type(options).__name__}.")
        _check_names(options, "MultiMixConfig.from_dict")
        return cls(**options)

    def save_pretrained(self, folder: str | os.PathLike) -> str:
        """Writes `folder/multimix_config.json`; returns its path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CONFIG_NAME)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> MultiMixConfig:
        """Reads `folder/multimix_config.json` (or that file itself)."""
        path = os.fspath(folder)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no {CONFIG_NAME} in {os.fspath(folder)!r}: pass a checkpoint folder written by hf_multimix "
                "(train(), MultiMixTrainer, hf-multimix train) or by MultiMixConfig.save_pretrained."
            )
        try:
            with open(path) as f:
                options = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); write it with MultiMixConfig.save_pretrained.") from None
        try:
            return cls.from_dict(options)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{path}: {e}") from None


#: The option names, in order.
CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MultiMixConfig))


def resolve_config(config: MultiMixConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any],
                   caller: str, allowed: tuple[str, ...] = CONFIG_FIELDS) -> MultiMixConfig:
    """`config` (a `MultiMixConfig`, a dict of options or None for the defaults) with the
    keyword `overrides` applied: the one place where options given to the head, the losses and
    the integrations become a checked config.

    Args:
        allowed: the option names `caller` takes as keywords (a loss takes fewer than the head).
    """
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(
            f"{caller} got unknown MultiMix option(s) {unknown}; the options it takes are {list(allowed)} "
            "(see MultiMixConfig)."
        )
    if config is None:
        return MultiMixConfig(**overrides)
    if isinstance(config, Mapping):
        return MultiMixConfig.from_dict({**config, **overrides})
    if not isinstance(config, MultiMixConfig):
        raise TypeError(
            f"{caller}: config must be a MultiMixConfig (or a dict of its options), got {type(config).__name__}; "
            "e.g. MultiMixConfig(n=500)."
        )
    return dataclasses.replace(config, **overrides) if overrides else config


def resolve_mixing(config: MultiMixConfig) -> MultiMixConfig:
    """`config` with `mixing="auto"` resolved: `"class-balanced"` for pooled MultiMix with one label per
    example (`task` None or `"single_label"`, `dense=False`), else `"multimix"`; other values unchanged.

    Example:
        >>> resolve_mixing(MultiMixConfig()).mixing, resolve_mixing(MultiMixConfig(dense=True)).mixing
        ('class-balanced', 'multimix')
    """
    if config.mixing != "auto":
        return config
    balanced = not config.dense and config.task in (None, "single_label")
    return config.replace(mixing="class-balanced" if balanced else "multimix")


def _check_token_options(config: MultiMixConfig) -> None:
    """Token classification mixes each position over the examples labelled there; the options that
    weigh or pick examples by a label per example do not apply."""
    if config.attention != "uniform":
        raise ValueError(
            f"task='token' takes attention='uniform' (each position is mixed over the examples labelled there); "
            f"attention={config.attention!r} weighs positions by a label per example. Drop attention."
        )
    if config.mixing == "class-balanced":
        raise ValueError(
            "task='token' cannot use mixing='class-balanced' (it balances one label per example; tokens have many). "
            "Use mixing='multimix' (or 'pairwise')."
        )
    if config.mix_across_processes:
        raise ValueError(
            "task='token' does not gather sequences across processes (their lengths differ per process); use "
            "mix_across_processes=False."
        )


def check_alpha(alpha: Any) -> float | tuple[float, float]:
    """`alpha` as a float or a `(lo, hi)` tuple of floats, checked: positive, finite, `lo <= hi`."""
    hint = "e.g. alpha=0.2 or alpha=(0.5, 2.0)"
    if _is_number(alpha):
        values = [float(alpha)]
    elif isinstance(alpha, (list, tuple)) and len(alpha) == 2 and all(_is_number(a) for a in alpha):
        values = [float(a) for a in alpha]
    else:
        raise ValueError(f"alpha must be a positive float or a (lo, hi) range, got {alpha!r}; {hint}.")
    if not all(v > 0 for v in values):  # NaN fails too
        raise ValueError(f"alpha must be > 0 (Dirichlet concentration), got {alpha!r}; {hint}.")
    if not all(v <= _ALPHA_MAX for v in values):
        raise ValueError(
            f"alpha must be finite (at most {_ALPHA_MAX:.3g}, float32's largest), got {alpha!r}; {hint}."
        )
    if len(values) == 1:
        return values[0]
    lo, hi = values
    if lo > hi:
        raise ValueError(f"alpha range must have lo <= hi, got {alpha!r}; write it as ({hi}, {lo}).")
    return lo, hi


_ALPHA_MAX = 3.4028234663852886e38  # float32's largest: the sampler draws in float32


def _check_names(options: Mapping[str, Any], caller: str) -> None:
    unknown = sorted(set(options) - set(CONFIG_FIELDS))
    if unknown:
        raise TypeError(f"{caller}: unknown MultiMix option(s) {unknown}; the options are {list(CONFIG_FIELDS)}.")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_numpy_bool(value)


def _is_numpy_bool(value: Any) -> bool:
    np = sys.modules.get("numpy")  # no numpy imported: the value cannot be a numpy bool
    return np is not None and isinstance(value, np.bool_)


def _int(value: Any, name: str, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or _is_numpy_bool(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__}): {what}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}: {what}.")
    return int(value)


def _float(value: Any, name: str, lo: float, hi: float, fix: str, *, lo_open: bool = False,
           hi_open: bool = False) -> float:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}); {fix}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}; {fix}.")
    low_ok = value > lo if lo_open else value >= lo
    high_ok = value < hi if hi_open else value <= hi
    if not (low_ok and high_ok):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        bound = f"> {lo:g}" if hi == math.inf and lo_open else f">= {lo:g}" if hi == math.inf else \
            f"in {left}{lo:g}, {hi:g}{right}"
        raise ValueError(f"{name} must be {bound}, got {value:g}; {fix}.")
    return value


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool) or _is_numpy_bool(value):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        extra = " (or None: the model's own)" if name == "task" else ""
        raise ValueError(f"unknown {name} {value!r}; choose one of {choices}{extra}.")
    return value

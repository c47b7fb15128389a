"""Recipes: which MultiMix options (and the few training-loop options they imply) to train with,
as library functions returning configs, usable from Python, `MultiMixTrainer`, `MultiMixTask`
and the CLI alike.

Each choice is the one the accuracy study measured (docs/results.md); each resolution is
logged (`logging.getLogger("hf_multimix.recipes")`) with its reason.

Example:
    >>> from hf_multimix import recipes
    >>> r = recipes.noisy_labels("image", from_scratch=True)
    >>> r.multimix.clean_weight, r.multimix.prob, r.other_steps
    (0.0, 0.5, 'cutmix')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .config import MultiMixConfig

logger = logging.getLogger(__name__)

#: The methods the CLI trains and compares; all go through `MultiMixHead` and one training loop.
METHODS = ("erm", "mixup", "cutmix", "manifold-mixup", "multimix", "dense-multimix")
#: The MultiMix methods: the recipes apply to them.
MULTIMIX_METHODS = ("multimix", "dense-multimix")
#: The methods that mix at the last layer (the head mixes): `prob` and `other_steps` apply.
LAST_LAYER_METHODS = (*MULTIMIX_METHODS, "manifold-mixup")
#: Input mixing baselines (timm's `Mixup` on the images).
INPUT_MIX_METHODS = ("mixup", "cutmix")
MODALITIES = ("image", "text")

#: Beta alpha of the mixup baselines (input mixup, CutMix, manifold mixup): Beta(1, 1), their papers' default.
BASELINE_ALPHA = 1.0

#: What the noisy-label recipe sets for an image model trained from scratch (the label-noise rows
#: of docs/results.md: with 40% flipped labels it beat ERM by 14.6 points and tied CutMix).
NOISY_LABELS_FROM_SCRATCH = {"clean_weight": 0.0, "prob": 0.5, "other_steps": "cutmix"}
#: ... and for a pretrained image model (the noisy fine-tune: mixed examples only won, CutMix was behind).
NOISY_LABELS_PRETRAINED = {"clean_weight": 0.0}


@dataclass(frozen=True)
class Recipe:
    """A `MultiMixConfig` and the training-loop options it implies.

    Attributes:
        multimix: the head's options (`MultiMixHead(model, recipe.multimix)`).
        other_steps: `TrainingConfig.other_steps`: what the steps the head does not mix
            train with (`"ce"`, or `"mixup"` / `"cutmix"` of the input images).
        lr: the peak learning rate (AdamW) the recipe was measured with.
        reason: one line saying why these options (logged, printed by the CLI).
    """

    multimix: MultiMixConfig = field(default_factory=MultiMixConfig)
    other_steps: str = "ce"
    lr: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"multimix": self.multimix.to_dict(), "other_steps": self.other_steps, "lr": self.lr,
                "reason": self.reason}


#: Epochs of an image run: the recipe study's budget (docs/results.md, "Settings").
IMAGE_EPOCHS = 5
#: A text fine-tune trains for at least this many optimiser steps, in `TEXT_EPOCHS` (fewest, most) epochs.
#: On a few hundred documents 5 epochs at lr 5e-5 (the defaults until 2026-12) is about 70 steps and left
#: ERM underfit: on 20 Newsgroups (600 posts) 49.9% against 67.1% at 10 epochs and lr 1e-4, every seed
#: (docs/results.md, "Text fine-tunes: the budget of the defaults"; record text_budget_news.json). 200 steps
#: is what 10 epochs give on those 600 posts; at least 3 epochs is the transformers example scripts' default
#: (a large corpus was not measured here).
TEXT_MIN_STEPS = 200
TEXT_EPOCHS = (3, 10)


def default_lr(modality: str) -> float:
    """AdamW's peak learning rate: 1e-3 for images (the recipe study), 1e-4 for text (fine-tuning a
    transformer: the study's text settings and the text budget study; docs/results.md)."""
    _check_modality(modality)
    return 1e-3 if modality == "image" else 1e-4


def default_epochs(modality: str, steps_per_epoch: int | None = None) -> int:
    """Epochs of a run: `IMAGE_EPOCHS` for images; for text, enough epochs for `TEXT_MIN_STEPS`
    optimiser steps, at least 3 and at most 10 (`TEXT_EPOCHS`).

    Args:
        modality: `"image"` or `"text"`.
        steps_per_epoch: optimiser steps an epoch takes (after gradient accumulation); None: the most epochs.

    Example:
        >>> default_epochs("text", steps_per_epoch=19), default_epochs("text", steps_per_epoch=500)
        (10, 3)
    """
    _check_modality(modality)
    if modality == "image":
        return IMAGE_EPOCHS
    fewest, most = TEXT_EPOCHS
    if steps_per_epoch is None:
        return most
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}.")
    return min(most, max(fewest, -(-TEXT_MIN_STEPS // steps_per_epoch)))


def method_alpha(method: str, alpha: float | tuple[float, float] | None = None) -> float | tuple[float, float]:
    """`alpha`, or its default for `method`: the config's Dir(0.2) for MultiMix, Beta(1, 1) for the
    mixup baselines."""
    _check_method(method)
    if alpha is not None:
        return alpha
    return MultiMixConfig.alpha if method in MULTIMIX_METHODS else BASELINE_ALPHA


def method_config(method: str, config: MultiMixConfig | None = None, **options: Any) -> MultiMixConfig:
    """The head's config that trains with `method` (the baselines included), from `config` and `options`.

    * `erm`, `mixup`, `cutmix`: the head never mixes (`prob=0`; input mixing is the training
      loop's), only `label_smoothing` carries over.
    * `manifold-mixup`: pairwise mixing at the same layer, Beta(`alpha`, default 1), mixed pairs only
      (`clean_weight=0`: the clean term is MultiMix's recipe, not manifold mixup's).
    * `multimix`, `dense-multimix`: the config, `dense` set by the method.
    """
    _check_method(method)
    base = (config or MultiMixConfig()).replace(**options)
    if method in ("erm", *INPUT_MIX_METHODS):
        return MultiMixConfig(prob=0.0, label_smoothing=base.label_smoothing)
    if method == "manifold-mixup":
        alpha = options.get("alpha", BASELINE_ALPHA)  # a config's alpha is MultiMix's Dirichlet, not this Beta
        return MultiMixConfig(alpha=alpha, mixing="pairwise", label_smoothing=base.label_smoothing, prob=base.prob,
                              clean_weight=0.0)
    return base.replace(dense=method == "dense-multimix")


def default(modality: str | None = None, method: str = "multimix", **options: Any) -> Recipe:
    """The default recipe: Dir(0.2) weights plus the clean batch's cross-entropy
    (`clean_weight=1.0`), mixing every step. It won or tied ERM on every clean-label setting of
    the recipe study and beat the mixing baselines when fine-tuning (docs/results.md, "The
    default recipe against the baselines"). The weights are class-balanced for pooled MultiMix
    with one label per example (`mixing="auto"`): Dir(0.2) over a long-tailed batch wiped out
    the small classes (docs/results.md, "The CLI's defaults against ERM").

    Args:
        modality: `"image"` or `"text"` (sets the learning rate), or None.
        method: one of `METHODS`.
        **options: `MultiMixConfig` options overriding the recipe's.
    """
    if modality is not None:
        _check_modality(modality)
    lr = default_lr(modality) if modality is not None else None
    recipe = Recipe(method_config(method, **options), "ce", lr, "the default recipe")
    logger.info("recipe: %s -> %s, lr=%s", recipe.reason, recipe.multimix, recipe.lr)
    return recipe


def noisy_labels(modality: str, from_scratch: bool, method: str = "multimix", **options: Any) -> Recipe:
    """The recipe for noisy training labels (web, crowd or weak labels), by modality and regime,
    as the label-noise rows of docs/results.md measured:

    * images, from scratch: mixed examples only (`clean_weight=0`, the clean term fits the wrong
      labels) and CutMix of the inputs on half the steps (`prob=0.5`, `other_steps="cutmix"`);
    * images, pretrained: mixed examples only (in the noisy fine-tune CutMix was behind);
    * text: the default recipe (mixed examples only were far behind ERM when fine-tuning MiniLM);
    * baselines (`erm`, `mixup`, ...): unchanged.

    Args:
        modality: `"image"` or `"text"`.
        from_scratch: whether the model starts from random weights.
        method: one of `METHODS`.
        **options: further `MultiMixConfig` options; those the recipe sets are refused.
    """
    _check_modality(modality)
    if not isinstance(from_scratch, bool):
        raise TypeError(f"from_scratch must be True or False, got {from_scratch!r}.")
    chosen = NOISY_LABELS_FROM_SCRATCH if from_scratch else NOISY_LABELS_PRETRAINED
    if method not in MULTIMIX_METHODS:
        reason = f"noisy labels: --method {method} is a baseline and keeps its recipe"
        recipe = Recipe(method_config(method, **options), "ce", default_lr(modality), reason)
    elif modality != "image":
        reason = ("noisy labels: text keeps the default recipe (with 40% flipped labels, mixed examples only were far "
                  "behind ERM when fine-tuning MiniLM; docs/results.md)")
        recipe = Recipe(method_config(method, **options), "ce", default_lr(modality), reason)
    else:
        clash = sorted(set(options) & set(chosen))
        if clash:
            raise ValueError(f"the noisy-label recipe sets {clash} itself; drop them, or build the config yourself.")
        multimix = {k: v for k, v in chosen.items() if k != "other_steps"}
        regime = "from scratch: mixed examples only and CutMix of the inputs on half the steps" if from_scratch else \
            "pretrained: mixed examples only"
        recipe = Recipe(method_config(method, **{**options, **multimix}), chosen.get("other_steps", "ce"),
                        default_lr(modality), f"noisy labels, images {regime} (docs/results.md)")
    logger.info("recipe: %s -> %s, other_steps=%s, lr=%s", recipe.reason, recipe.multimix, recipe.other_steps,
                recipe.lr)
    return recipe


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose one of {MODALITIES}.")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")

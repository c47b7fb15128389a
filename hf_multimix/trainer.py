"""Hugging Face `Trainer` integration.

`MultiMixTrainer` is a `Trainer` that wraps the model in a `MultiMixHead` (or takes one): it
keeps the dataset columns the wrapped model takes, lets the head compute the MultiMix loss
(the model never sees soft labels), evaluates on the model's own outputs, and saves
checkpoints with the wrapped model's `save_pretrained`, so they load into the plain model
with `from_pretrained`.
"""

from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME

from ._wrap import pop_head_options, wrap_model
from .adapters.base import logits_of
from .config import MultiMixConfig
from .head import MultiMixHead
from .losses import clean_loss


class MultiMixTrainer(Trainer):
    """`Trainer` that trains with MultiMix: a drop-in for `Trainer(` in an existing script.

    Give it the plain model, as to `Trainer`, and it wraps the model in a `MultiMixHead` itself;
    the MultiMix options come as keyword arguments (`n=1000, alpha=0.2, ...`), as a dict
    (`multimix_args={"n": 1000}`) or as a `MultiMixConfig` (`multimix_args=recipes.default().multimix`;
    keywords then override it). A `MultiMixHead` is accepted too (then without options).
    `trainer.model` is the head; the plain model is `trainer.model.model`.

    Everything else is the plain `Trainer`: `TrainingArguments`, callbacks, mixed precision,
    gradient accumulation (the head's loss is a mean, so the Trainer divides it by the
    accumulation steps as for any model), multi-GPU through `accelerate launch`. Evaluation
    and prediction see the model's own outputs, and `save_model()` writes the plain model
    (`from_pretrained` loads it; the labels never reach the model, so `problem_type` is not
    written into its config).

    `TrainingArguments(label_smoothing_factor=...)` becomes the head's `label_smoothing`.

    Multi-label models (`config.problem_type="multi_label_classification"`, or the option
    `task="multi_label"`) take float multi-hot `labels` `[m, c]`, as the Hugging Face
    text-classification example builds them; the head mixes them and trains with binary
    cross-entropy.

    Token classifiers (`*ForTokenClassification`) take `labels` `[m, L]` with -100 where nothing is
    scored, as `DataCollatorForTokenClassification` pads them; the head mixes every position over
    the examples labelled there, and `hf_multimix.token_metrics.token_compute_metrics(tag_names)`
    gives entity precision, recall and F1 as `compute_metrics` (docs/token_classification.md).

    Args:
        model: the classifier (a Hugging Face or timm model), or a `MultiMixHead`.
        args: `TrainingArguments`, and further `Trainer` arguments, positional or by name.
        multimix_args: a `MultiMixConfig`, or MultiMix options as a dict.
        **kwargs: `Trainer` keyword arguments and MultiMix options (`n`, `alpha`, `dense`, ...).

    Example:
        >>> args = TrainingArguments("out")  # doctest: +SKIP
        >>> trainer = MultiMixTrainer(model=model, args=args, train_dataset=ds, n=500)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *args: Any,
        multimix_args: MultiMixConfig | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = pop_head_options(kwargs)
        if model is None:
            raise TypeError(
                "MultiMixTrainer needs the model: MultiMixTrainer(model=model, args=training_args, ...) "
                "(model_init is not supported)."
            )
        model = wrap_model(model, multimix_args, options, "MultiMixTrainer")
        super().__init__(model, *args, **kwargs)
        self.add_callback(_TeacherStepCallback())
        if self.args.label_smoothing_factor:
            # The Trainer's label smoother would take the labels away from the head.
            if model.label_smoothing == 0:
                model.multimix_config = model.multimix_config.replace(label_smoothing=self.args.label_smoothing_factor)
            self.label_smoother = None

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            plain = self.accelerator.unwrap_model(self.model).model
            columns = list(inspect.signature(plain.forward).parameters)
            if "x" in columns:  # timm models take `x`; the head maps `pixel_values` onto it
                columns.append("pixel_values")
            self._signature_columns = list(dict.fromkeys(columns + ["label", "label_ids", "labels"]))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        if "labels" not in inputs:
            raise ValueError(
                f"MultiMixTrainer needs 'labels' in each batch; got keys {sorted(inputs)}. Name the label "
                "column 'label' or 'labels'."
            )
        outputs = model(**inputs)
        loss = getattr(outputs, "loss", None)
        if loss is None:
            # Eval mode returns exactly the model's output; a timm model's is the logits tensor.
            logits = logits_of(outputs)
            head = _find_head(model)
            loss = clean_loss(logits, inputs["labels"], head.num_classes, head.task)
            outputs = {"loss": loss, "logits": logits}
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Writes the plain model, the processing class and `training_args.bin`, as `Trainer._save`
        does, on the process where `args.should_save` only (the main one, or each node's with
        `save_on_each_node`)."""
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        head = self.accelerator.unwrap_model(self.model)
        head.save_pretrained(output_dir, **({"state_dict": state_dict} if state_dict is not None and
                                            hasattr(head.model, "save_pretrained") else {}))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        elif getattr(self.data_collator, "tokenizer", None) is not None:
            self.data_collator.tokenizer.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))


class MultiMixOffCallback(TrainerCallback):
    """Turns MultiMix off (plain cross-entropy) from epoch `after_epoch` on, a common schedule
    for the last epochs of fine-tuning. It flips the head's switch (`head.mixing_enabled`, as
    timm's `Mixup.mixup_enabled`); the head's `prob` is left as configured.

    Args:
        after_epoch: number of epochs trained with MultiMix; later epochs train with ERM.
    """

    def __init__(self, after_epoch: int) -> None:
        if isinstance(after_epoch, bool) or not isinstance(after_epoch, numbers.Integral) or after_epoch < 0:
            raise ValueError(f"after_epoch must be an integer >= 0 (epochs that mix), got {after_epoch!r}.")
        self.after_epoch = int(after_epoch)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):  # noqa: D102
        _find_head(model).mixing_enabled = state.epoch is None or state.epoch < self.after_epoch
        return control


class _TeacherStepCallback(TrainerCallback):
    """Steps the head's EMA teacher after each optimizer step (not per forward: with gradient
    accumulation the forwards outnumber the steps)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: D102
        head = _find_head(model)
        if head.teacher_model is not None:
            head.update_teacher()
        return control


def _find_head(model: Any) -> MultiMixHead:
    while model is not None and not isinstance(model, MultiMixHead):
        model = getattr(model, "module", None)
    if model is None:
        raise TypeError("MultiMixOffCallback needs the Trainer's model to be a MultiMixHead (use MultiMixTrainer).")
    return model

"""An Accelerate training loop for a `MultiMixHead`: mixed precision, gradient accumulation,
clipping, warmup + cosine schedule, per-epoch evaluation with `gather_for_metrics`,
safetensors checkpoints, resume, JSON-lines metrics and progress bars.

Runs are not lost: checkpoints are written to a temporary folder and renamed into place, so an
interrupted run (Ctrl-C, a killed process, a full disk) leaves the last complete checkpoint
loadable, and it carries the metrics history that `resume_from` continues. An output folder
that cannot be written, or lacks the space for the checkpoints, is refused before training.

The same loop trains every method the CLI compares: the head carries MultiMix, Dense
MultiMix or pairwise (manifold) mixup, and input mixup / CutMix come from timm's `Mixup`
applied to the batch, so all methods share one budget and one code path.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .adapters.base import logits_of
from .head import MultiMixHead
from .metrics import classification_metrics

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
INPUT_MIX = (None, "mixup", "cutmix")
OTHER_STEPS = ("ce", "mixup", "cutmix")
BEST_SCORE = "best_score.json"  # in checkpoint-best: the score it was saved with


@dataclass
class TrainingConfig:
    """Settings of `train`.

    Attributes:
        output_dir: where checkpoints and `metrics.jsonl` go.
        epochs: passes over the training data.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the optimiser steps spent warming up linearly; cosine after.
        gradient_accumulation_steps: batches per optimiser step.
        max_grad_norm: clip the gradient norm to this (None: no clipping).
        mixed_precision: `"no"`, `"fp16"` or `"bf16"` (MultiMix's mixing stays float32).
        seed: seeds Python, NumPy and torch on every process.
        input_mix: `"mixup"` or `"cutmix"` on the input images (timm's `Mixup`), for baselines.
        input_mix_alpha: Beta parameter of that input mixing.
        label_smoothing: label smoothing used by input mixing.
        max_steps_per_epoch: stop an epoch early (smoke tests).
        resume_from: a checkpoint folder written by `train` to continue from.
        save_checkpoints: write `checkpoint-last/` (and `checkpoint-best/`) each epoch.
        progress: show tqdm progress bars on the main process.
        eval_before_training: evaluate the untrained model first (history entry with epoch 0),
            the no-training baseline.
        eval_every: evaluate after every `eval_every` epochs and after the last one (a large
            value: only at the end, which is cheaper and gives the same final model).
        mix_off_epoch: stop mixing after this many epochs (None: mix to the end): the later
            epochs train with the plain cross-entropy of the clean batch, with neither the
            head's mixing nor `input_mix` (timm's `--mixup-off-epoch`).
        other_steps: what the steps train with where a head with `prob < 1` does not mix:
            `"ce"` (the head's plain cross-entropy of the clean batch) or `"mixup"` /
            `"cutmix"` of the input images (Beta(`input_mix_alpha`)), so every step mixes at
            one of two layers, the input or the last one, as manifold mixup picks a layer.
    """

    output_dir: str
    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    input_mix: str | None = None
    input_mix_alpha: float = 1.0
    label_smoothing: float = 0.0
    max_steps_per_epoch: int | None = None
    resume_from: str | None = None
    save_checkpoints: bool = True
    progress: bool = True
    eval_before_training: bool = False
    eval_every: int = 1
    mix_off_epoch: int | None = None
    other_steps: str = "ce"

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}.")
        if self.input_mix not in INPUT_MIX:
            raise ValueError(f"input_mix must be one of {INPUT_MIX}, got {self.input_mix!r}.")
        if self.other_steps not in OTHER_STEPS:
            raise ValueError(f"other_steps must be one of {OTHER_STEPS}, got {self.other_steps!r}.")
        if self.other_steps != "ce" and self.input_mix is not None:
            raise ValueError(
                f"other_steps={self.other_steps!r} and input_mix={self.input_mix!r} both mix the inputs; "
                "input_mix mixes every step (a baseline), other_steps only those the head does not mix. Pass one."
            )
        for name in ("epochs", "gradient_accumulation_steps", "eval_every"):
            setattr(self, name, _integer(name, getattr(self, name), 1))
        for name in ("max_steps_per_epoch", "mix_off_epoch"):
            if getattr(self, name) is not None:
                setattr(self, name, _integer(name, getattr(self, name), 1, none_ok=True))
        self.seed = _integer("seed", self.seed, 0, 2**32 - 1)  # NumPy's seeds are 32-bit
        self.lr = _real("lr", self.lr, 0.0, None, "e.g. 1e-3", low_open=True)
        self.weight_decay = _real("weight_decay", self.weight_decay, 0.0, None, "0 for none")
        self.warmup_ratio = _real("warmup_ratio", self.warmup_ratio, 0.0, 1.0, "e.g. 0.1", high_open=True)
        self.input_mix_alpha = _real("input_mix_alpha", self.input_mix_alpha, 0.0, None, "e.g. 1.0", low_open=True)
        self.label_smoothing = _real("label_smoothing", self.label_smoothing, 0.0, 1.0, "e.g. 0.1", high_open=True)
        if self.max_grad_norm is not None:
            # a negative norm would flip the gradient (the update climbs the loss); 0 would zero it
            self.max_grad_norm = _real("max_grad_norm", self.max_grad_norm, 0.0, None,
                                       "e.g. 1.0, or None for no clipping", low_open=True)
        for name in ("save_checkpoints", "progress", "eval_before_training"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise TypeError(f"output_dir must be a folder path (str), got {self.output_dir!r}.")
        self.output_dir = os.fspath(self.output_dir)
        if self.resume_from is not None:
            if not isinstance(self.resume_from, (str, os.PathLike)):
                raise TypeError(f"resume_from must be a checkpoint folder path or None, got {self.resume_from!r}.")
            self.resume_from = os.fspath(self.resume_from)


def _integer(name: str, value: Any, low: int, high: int | None = None, none_ok: bool = False) -> int:
    """`value` as a Python int (NumPy integers accepted), refused when not an integer or out of range."""
    import numbers

    none = " or None" if none_ok else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer{none}, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if value < low or (high is not None and value > high):
        kind = "a positive integer" if (low, high) == (1, None) else (
            f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]")
        raise ValueError(f"{name} must be {kind}{none}, got {value}.")
    return value


def _real(name: str, value: Any, low: float, high: float | None, example: str, low_open: bool = False,
          high_open: bool = False) -> float:
    """`value` as a Python float (NumPy numbers accepted), refused when not finite or out of range."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        lo = f"({low}" if low_open else f"[{low}"
        hi = "inf)" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value}; {example}.")
    return value


def _split(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    if "labels" not in batch:
        raise KeyError(f"each batch must be a dict with 'labels'; got keys {sorted(batch)}.")
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs, batch["labels"]


def _lr_lambda(total: int, warmup: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def selection_metric(record: dict[str, Any]) -> str:
    """The evaluation score that picks `checkpoint-best`: mean average precision (`eval_map`) for a
    multi-label model, else accuracy (`eval_accuracy`)."""
    return "eval_map" if "eval_map" in record else "eval_accuracy"


MULTI_LABEL_THRESHOLD = 0.5
"""A multi-label model predicts a class where its sigmoid exceeds this (the F1 scores' threshold)."""


def multilabel_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean average precision and micro / macro F1 (sigmoid > 0.5) of multi-label `logits` `[m, c]`
    against multi-hot `targets` `[m, c]`."""
    from .multilabel_metrics import mean_average_precision, multilabel_f1

    f1 = multilabel_f1(torch.sigmoid(logits.float()), targets, threshold=MULTI_LABEL_THRESHOLD)
    return {"eval_map": mean_average_precision(logits, targets), "eval_micro_f1": f1["micro_f1"],
            "eval_macro_f1": f1["macro_f1"]}


@torch.no_grad()
def evaluate(head: torch.nn.Module, loader: Iterable, accelerator: Accelerator, progress: bool = False) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class accuracy (a list in class-id order) and cross-entropy
    of the wrapped model on `loader`, gathered over processes once. With multi-hot labels `[B, C]` (a
    multi-label model): mean average precision (`eval_map`), micro and macro F1 at sigmoid > 0.5 and the
    binary cross-entropy instead. Token classifiers (logits `[m, L, c]`) are scored over their labelled
    tokens (labels other than -100)."""
    head.eval()
    preds, labels, losses = [], [], []
    num_classes = 0
    multi_label = False
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and accelerator.is_main_process)):
        if batch is None:  # every example of the batch failed to decode (counted by the dataset)
            continue
        inputs, y = _split(batch)
        logits = logits_of(head(**inputs))
        num_classes = logits.shape[-1]
        if logits.dim() == 3:
            # Token classification: a label per token, -100 (special tokens, padding) unscored. Sequences are
            # padded to one length across processes before the gather; the labelled tokens are kept after it.
            loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")
            p, y, loss = (accelerator.pad_across_processes(t, dim=1, pad_index=-100)
                          for t in (logits.argmax(-1), y, loss))
            p, y, loss = accelerator.gather_for_metrics((p, y, loss))
            keep = y != -100
            preds.append(p[keep])
            labels.append(y[keep])
            losses.append(loss[keep])
            continue
        multi_label = y.dim() == 2
        if multi_label:  # the scores themselves: average precision ranks them
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y.float(),
                                                                        reduction="none").mean(-1)
            p, y, loss = accelerator.gather_for_metrics((logits.float(), y, loss))
        else:
            loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
            p, y, loss = accelerator.gather_for_metrics((logits.argmax(-1), y, loss))
        preds.append(p)
        labels.append(y)
        losses.append(loss)
    preds, labels, losses = torch.cat(preds), torch.cat(labels), torch.cat(losses)
    if multi_label:
        return {**multilabel_scores(preds, labels), "eval_loss": losses.mean().item(),
                "eval_examples": int(labels.shape[0])}
    # balanced accuracy and macro-F1 weigh every class equally: a collapsed minority class shows in them
    scores = classification_metrics(preds, labels, num_classes)
    return {
        "eval_accuracy": (preds == labels).float().mean().item(),
        "eval_balanced_accuracy": scores["balanced_accuracy"],
        "eval_macro_f1": scores["macro_f1"],
        "eval_per_class_accuracy": scores["per_class_accuracy"],
        "eval_loss": losses.mean().item(),
        "eval_examples": int(labels.numel()),
    }


def train(
    head: MultiMixHead,
    train_loader: Iterable,
    eval_loader: Iterable | None,
    config: TrainingConfig,
    accelerator: Accelerator | None = None,
    save_with_model: tuple[Any, ...] = (),
) -> list[dict[str, Any]]:
    """Trains `head` (and so its wrapped model) and returns one metrics dict per epoch.

    Batches are dicts of model inputs plus `labels` (class ids, or float multi-hot rows `[B, C]` for a
    head with `task="multi_label"`, whose `checkpoint-best` is then chosen by mean average precision). Run it as is, or under
    `accelerate launch` / `torchrun` for several processes. `save_with_model` holds objects
    with `save_pretrained(folder)` (a tokenizer, an image processor) written into every
    checkpoint folder next to the weights, so that each folder loads on its own.

    Example:
        >>> history = train(MultiMixHead(model), train_loader, eval_loader,
        ...                 TrainingConfig(output_dir="runs/x", epochs=2))  # doctest: +SKIP
    """
    if not isinstance(head, MultiMixHead):
        raise TypeError(f"train() takes a MultiMixHead (wrap your model: MultiMixHead(model)), got {type(head).__name__}.")
    _check_loader(train_loader, "train_loader")
    if eval_loader is not None:
        _check_loader(eval_loader, "eval_loader")
    accelerator = accelerator or Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    set_seed(config.seed)
    # every process checks (it writes nothing), so that none waits at a collective for a main process that refused
    check_run_folder(config.output_dir, config.resume_from)
    if accelerator.is_main_process:
        check_output_dir(config.output_dir, head, config.save_checkpoints)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(train_loader)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    # Counted on the unsharded loader: Accelerate steps a prepared scheduler once per process
    # for each optimiser step, so this total holds for any number of processes.
    total = max(1, math.ceil(steps_per_epoch / config.gradient_accumulation_steps) * config.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, int(config.warmup_ratio * total)))
    generators = _loader_generators(train_loader)
    head, optimizer, train_loader, scheduler = accelerator.prepare(head, optimizer, train_loader, scheduler)
    generators += [g for g in _loader_generators(train_loader) if all(g is not h for h in generators)]
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    plain = accelerator.unwrap_model(head)
    multi_label = plain.multimix_config.task == "multi_label"  # multi-hot targets: timm's Mixup mixes them as such
    mix_fn = _input_mixer(config.input_mix, config, plain.num_classes, multi_label)
    other_fn = None if config.other_steps == "ce" else _input_mixer(config.other_steps, config, plain.num_classes,
                                                                    multi_label)
    if other_fn is not None and not 0.0 < plain.prob < 1.0:
        raise ValueError(
            f"other_steps={config.other_steps!r} trains the steps the head does not mix, but the head's prob is "
            f"{plain.prob}: build the head with 0 < prob < 1 (e.g. MultiMixHead(model, prob=0.5); --prob 0.5)."
        )

    start_epoch, best = 0, -1.0
    history: list[dict[str, Any]] = []
    metrics_path = os.path.join(config.output_dir, "metrics.jsonl")
    if config.resume_from:
        start_epoch, best, history = _load_checkpoint(config.resume_from, plain, optimizer, scheduler)
        _restore_rng_state(resume_checkpoint(config.resume_from), generators, train_loader, start_epoch)
        # A run killed between writing checkpoint-best and checkpoint-last saved a best the checkpoint lacks.
        best = max(best, _best_score(config.output_dir))
        accelerator.print(f"resumed from {config.resume_from} at epoch {start_epoch}")
        if accelerator.is_main_process:
            # The log restarts from the checkpoint's history: epochs logged after it (a run
            # killed before its next checkpoint) are trained again and must not appear twice.
            _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history if r["epoch"] > 0))
    if config.eval_before_training and eval_loader is not None and start_epoch == 0:
        record = {"epoch": 0, **evaluate(head, eval_loader, accelerator, config.progress)}
        history.append(record)
        accelerator.print(f"epoch 0 (before training)  eval_loss {record['eval_loss']:.4f}  "
                          f"{_score_text(record)}")
    switch = plain.mixing_enabled
    for epoch in range(start_epoch, config.epochs):
        head.train()
        mixing = config.mix_off_epoch is None or epoch < config.mix_off_epoch
        plain.mixing_enabled = switch and mixing  # off: the head's plain cross-entropy of the clean batch
        t0 = time.perf_counter()
        loss_sum, seen = torch.zeros((), device=accelerator.device), 0
        limit = config.max_steps_per_epoch
        bar = tqdm(
            total=min(len(train_loader), limit) if limit else len(train_loader),
            desc=f"epoch {epoch + 1}/{config.epochs}", disable=not (config.progress and accelerator.is_main_process),
        )
        for step, batch in enumerate(train_loader):
            if limit and step >= limit:
                break
            if batch is None:  # every example of the batch failed to decode (counted by the dataset)
                continue
            inputs, labels = _split(batch)
            if other_fn is not None and mixing:
                # One draw decides the layer of this step: the head's MultiMix, or the inputs.
                head_mixes = plain.decide_mixing()
                plain.mix_next = head_mixes
                if not head_mixes:
                    inputs, labels = _mix_inputs(other_fn, inputs, labels)
            elif mix_fn is not None and mixing:
                inputs, labels = _mix_inputs(mix_fn, inputs, labels)
            with accelerator.accumulate(head):
                out = head(**inputs, labels=labels)
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(
                        f"non-finite loss {out.loss.item()} at epoch {epoch + 1}, step {step}; lower the learning "
                        "rate, or use bf16 instead of fp16."
                    )
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and plain.teacher_model is not None:
                    plain.update_teacher()  # the EMA teacher steps where the optimizer steps
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += out.loss.detach()
            seen += 1
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        if seen == 0:
            raise ValueError(f"train_loader yielded no batches in epoch {epoch + 1}; give it at least one batch.")
        _check_finite_weights(plain, epoch + 1, config.output_dir if config.save_checkpoints else None)
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(1, seen)
        improved = False
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
            "epoch_time_s": time.perf_counter() - t0,
        }
        if eval_loader is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            record.update(evaluate(head, eval_loader, accelerator, config.progress))
            if not math.isfinite(record["eval_loss"]):
                raise FloatingPointError(
                    f"the eval loss is {record['eval_loss']} after epoch {epoch + 1} (non-finite logits), so the "
                    "weights were not saved; lower the learning rate (--lr), or use bf16 instead of fp16."
                )
            key = selection_metric(record)  # accuracy, or mean average precision (multi-label)
            improved = record[key] > best  # strictly: a tie keeps the earlier checkpoint-best
            best = max(best, record[key])
            record[f"best_{key}"] = best
        history.append(record)
        summary = f"epoch {epoch + 1}/{config.epochs}  train_loss {train_loss:.4f}"
        if "eval_loss" in record:
            summary += f"  eval_loss {record['eval_loss']:.4f}  {_score_text(record)}  best {best:.4f}"
        accelerator.print(summary + f"  ({record['epoch_time_s']:.1f}s)")
        if accelerator.is_main_process:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if config.save_checkpoints:
                if improved:
                    _replace_folder(os.path.join(config.output_dir, "checkpoint-best"),
                                    lambda tmp: _save_best(tmp, plain, record, save_with_model))
                _replace_folder(
                    os.path.join(config.output_dir, "checkpoint-last"),
                    lambda tmp: _save_checkpoint(tmp, plain, optimizer, scheduler, epoch + 1, best, config, history,
                                                 save_with_model, _rng_state(generators)),
                )
        accelerator.wait_for_everyone()
    plain.mixing_enabled = switch
    return history


def _check_loader(loader: Iterable, name: str) -> None:
    """Refuses a loader without batches: it would "train" on nothing and report a loss of 0."""
    try:
        batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must have a length (a DataLoader over a map-style dataset), got "
                        f"{type(loader).__name__}.") from None
    if batches == 0:
        dataset = getattr(loader, "dataset", None)
        size = f"{len(dataset)} example(s), " if hasattr(dataset, "__len__") else ""
        how = (f"{size}batch_size {getattr(loader, 'batch_size', None)}, drop_last {getattr(loader, 'drop_last', None)}")
        raise ValueError(f"{name} has no batches ({how}); give it data, a smaller batch_size, or drop_last=False.")


def _check_finite_weights(head: MultiMixHead, epoch: int, output_dir: str | None) -> None:
    """Stops a run whose weights became NaN or infinite, before they are evaluated or saved."""
    bad = [n for n, p in head.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        kept = f"; {output_dir}/checkpoint-last keeps the last finite epoch" if output_dir else ""
        raise FloatingPointError(
            f"the weights became non-finite in epoch {epoch} ({len(bad)} tensor(s), e.g. {bad[0]}), so they were "
            f"not saved{kept}; lower the learning rate (--lr), clip the gradients (max_grad_norm), or use bf16 "
            "instead of fp16."
        )


def _mix_inputs(fn, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    key = "pixel_values" if "pixel_values" in inputs else next(iter(inputs))
    inputs = dict(inputs)
    inputs[key], labels = fn(inputs[key], labels)
    return inputs, labels


def _input_mixer(kind: str | None, config: TrainingConfig, num_classes: int, multi_label: bool = False):
    if kind is None:
        return None
    from timm.data import Mixup

    mixup = config.input_mix_alpha if kind == "mixup" else 0.0
    cutmix = config.input_mix_alpha if kind == "cutmix" else 0.0
    fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=config.label_smoothing, num_classes=num_classes,
               multi_label=multi_label)

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{kind} mixes images [B, C, H, W]; got inputs of shape {tuple(x.shape)}.")
        if len(x) % 2:
            # timm's Mixup flips the batch to pair examples; it needs an even batch.
            x, y = x[:-1], y[:-1]
        return fn(x, y)

    return apply


def checkpoint_bytes(head: MultiMixHead) -> int:
    """A rough size of one `checkpoint-last` of `head`: the weights as saved, plus AdamW's two
    float32 moments per trainable parameter."""
    model = sum(t.numel() * t.element_size() for t in head.model.state_dict().values())
    moments = sum(2 * 4 * p.numel() for p in head.model.parameters() if p.requires_grad)
    return model + moments


RUN_MARKERS = ("metrics.jsonl", "checkpoint-last", "checkpoint-last.old", "checkpoint-best")
"""What `train` writes into a run folder: a folder holding one of them holds a run."""

CLI_RUN_MARKERS = ("metrics.json", "args.yaml", "compare.json", "compare.md", *RUN_MARKERS)
"""What `hf-multimix train` / `compare` write into a run folder besides `RUN_MARKERS`."""


def previous_run(path: str, markers: tuple[str, ...] = RUN_MARKERS) -> list[str]:
    """The entries of `markers` that `path` holds (empty: no run there, or no such folder)."""
    return [m for m in markers if os.path.exists(os.path.join(path, m))] if os.path.isdir(path) else []


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_run_folder(path: str, resume_from: str | None = None, markers: tuple[str, ...] = RUN_MARKERS,
                     cli: bool = False) -> None:
    """Refuses, before anything loads or is written, an output folder that would mix two runs.

    A folder holding a run (one of `markers`: metrics, args.yaml, checkpoints) takes only the
    run's own continuation, `resume_from` a checkpoint inside it; a new run goes elsewhere,
    or the old run is first moved aside with `move_run_aside` (`hf-multimix train --overwrite`).
    A path that is a file, or under one, or in a folder that cannot be written, is refused too.
    Nothing is created.

    Raises:
        ValueError: the folder holds another run; the message names the three fixes.
        OSError: the path is a file or cannot be written.
    """
    flag = "--output-dir" if cli else "output_dir"
    if os.path.exists(path) and not os.path.isdir(path):
        raise _os_error(errno.ENOTDIR, f"cannot write to the output folder {path!r} (it is a file); choose another "
                                       f"output folder ({flag})")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _os_error(errno.ENOTDIR, f"cannot write to the output folder {path!r} ({existing!r} is a file); "
                                       f"choose another output folder ({flag})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _os_error(errno.EACCES, f"cannot write to the output folder {path!r} ({existing!r} is not writable); "
                                      f"choose another output folder ({flag}) or make this one writable")
    found = previous_run(path, markers)
    if not found or (resume_from is not None and _inside(resume_from, path)):
        return
    last = os.path.join(path, "checkpoint-last")
    if cli:
        fixes = (f"continue it with --resume {last}, choose another --output-dir, or pass --overwrite to move it "
                 f"aside to {path.rstrip(os.sep)}.old-<time>")
    else:
        fixes = (f"continue it with resume_from={last!r}, choose another output_dir, or move it aside first "
                 "(hf_multimix.training.move_run_aside)")
    raise ValueError(f"the output folder {path!r} holds another run ({', '.join(found)}), which a new run would "
                     f"overwrite; {fixes}")


def move_run_aside(path: str) -> str | None:
    """Renames the run folder `path` to `path.old-<YYYYmmdd-HHMMSS>` (never deleting it) and
    returns the new name; None when `path` holds no run.

    Example:
        >>> move_run_aside("runs/x")  # doctest: +SKIP
        'runs/x.old-20261201-174500'
    """
    if not previous_run(path, CLI_RUN_MARKERS):
        return None
    base = f"{path.rstrip(os.sep)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    target, k = base, 1
    while os.path.exists(target):
        k += 1
        target = f"{base}-{k}"
    os.rename(path, target)
    return target


def check_output_dir(path: str, head: MultiMixHead, save_checkpoints: bool = True) -> None:
    """Refuses, before any training, an output folder that cannot be written or lacks the free
    space for the checkpoints: the new `checkpoint-last` is written next to the old one before
    it replaces it, and `checkpoint-best` holds another copy of the weights.

    Raises:
        OSError: naming the folder, the cause and what to do.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise _os_error(
            err.errno, f"cannot write to the output folder {path!r} ({err.strerror or err}); choose another "
            "output folder (--output-dir) or make this one writable"
        ) from None
    if not save_checkpoints:
        return
    need = 2 * checkpoint_bytes(head) + sum(t.numel() * t.element_size() for t in head.model.state_dict().values())
    free = shutil.disk_usage(path).free
    if free < need:
        raise _os_error(
            errno.ENOSPC, f"not enough free space in {path!r} for the checkpoints: about {need / 2**20:.0f} MiB "
            f"needed, {free / 2**20:.0f} MiB free; free some space or choose another output folder (--output-dir)"
        )


def _os_error(code: int | None, message: str) -> OSError:
    """An `OSError` whose text is `message` alone (no `[Errno n]` prefix), with `errno` set."""
    err = OSError(message)
    err.errno = code
    return err


def _replace_folder(path: str, write: Any) -> None:
    """Writes a folder with `write(tmp)` into a temporary sibling and renames it to `path`, so
    that `path` always holds a complete version (the old one until the new one is whole).

    A crash between the two renames leaves the old version in `path + ".old"`, which
    `_load_checkpoint` falls back to.
    """
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    for stale in os.listdir(parent):  # temporary folders of an interrupted earlier write, of any checkpoint:
        # writes run one at a time, so none is in progress (a killed checkpoint-best write is not
        # otherwise cleaned when the resumed run never beats its best)
        if stale.startswith(".checkpoint-") and ".tmp-" in stale or stale.startswith(f".{name}.tmp-"):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        write(tmp)
        for entry in os.scandir(tmp):
            with open(entry.path, "rb") as f:
                os.fsync(f.fileno())
    except Exception as err:  # noqa: BLE001 - torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        text = str(err).strip()
        why = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
        raise _os_error(
            getattr(err, "errno", None), f"could not write {path!r} ({why}); the previous complete version is still "
            "there: free some space or fix the folder, then resume from it"
        ) from err
    except BaseException:  # KeyboardInterrupt: the previous version stays, the partial one goes
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path + ".old"
    if os.path.isdir(path):
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _write_atomic(path: str, text: str) -> None:
    """Writes a text file through a temporary sibling and a rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _save_model(path: str, head: MultiMixHead, save_with_model: tuple[Any, ...] = ()) -> None:
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in head.model.state_dict().items()}
    save_file(state, os.path.join(path, "model.safetensors"))
    config = getattr(head.model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(path)
    head.multimix_config.save_pretrained(path)  # multimix_config.json: how the weights were trained
    for companion in save_with_model:
        companion.save_pretrained(path)


def _save_best(path: str, head: MultiMixHead, record: dict[str, Any], save_with_model: tuple[Any, ...] = ()) -> None:
    _save_model(path, head, save_with_model)
    key = selection_metric(record)
    with open(os.path.join(path, BEST_SCORE), "w") as f:
        json.dump({"epoch": record["epoch"], key: record[key]}, f)


def _score_text(record: dict[str, Any]) -> str:
    """`eval_acc 0.9000`, or for a multi-label model `eval_mAP 0.8000  micro_f1 ...  macro_f1 ...`."""
    if selection_metric(record) == "eval_accuracy":
        return f"eval_acc {record['eval_accuracy']:.4f}"
    return (f"eval_mAP {record['eval_map']:.4f}  micro_f1 {record['eval_micro_f1']:.4f}  "
            f"macro_f1 {record['eval_macro_f1']:.4f}")


def _best_score(output_dir: str) -> float:
    """The score `checkpoint-best` of `output_dir` was saved with (-1 when there is none)."""
    try:
        with open(os.path.join(output_dir, "checkpoint-best", BEST_SCORE)) as f:
            saved = json.load(f)
        return float(saved["eval_accuracy"] if "eval_accuracy" in saved else saved["eval_map"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1.0


RNG_STATE = "rng_state.json"  # in checkpoint-last: the random state where the next epoch starts
TEACHER_STATE = "teacher.safetensors"  # in checkpoint-last of a run with an EMA teacher: its weights


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The `torch.Generator`s that draw `loader`'s order (its own, its sampler's), each once."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None),
                  getattr(batch_sampler, "batch_sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in found):
            found.append(g)
    return found


def _rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    """Python's, NumPy's, torch's (CPU and CUDA) and the loader's random states, as JSON values."""
    import numpy as np

    version, keys, gauss = random.getstate()
    name, mt, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(keys), gauss],
        "numpy": [name, mt.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [t.tolist() for t in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "generators": [g.get_state().tolist() for g in generators],
    }


def _restore_rng_state(path: str, generators: list[torch.Generator], loader: Any, epoch: int) -> None:
    """Puts back the random states `_rng_state` saved in the checkpoint `path`, so that the resumed
    epochs draw the data order, the mixing and the augmentations of an uninterrupted run. A
    checkpoint written before they were saved resumes with fresh random states."""
    import numpy as np

    file = os.path.join(path, RNG_STATE)
    if not os.path.isfile(file):
        return
    with open(file) as f:
        state = json.load(f)
    if len(state["generators"]) != len(generators):
        raise ValueError(f"{path} was saved with {len(state['generators'])} data-loader generator(s), this run has "
                         f"{len(generators)}; resume with a loader built as the run's was (the same shuffle and "
                         "generator).")
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, mt, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(mt, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    for g, saved in zip(generators, state["generators"]):
        g.set_state(torch.tensor(saved, dtype=torch.uint8))
    if hasattr(loader, "set_epoch"):  # Accelerate's loaders count epochs for their seedable samplers
        loader.set_epoch(epoch)


def _save_checkpoint(path: str, head: MultiMixHead, optimizer, scheduler, epoch: int, best: float,
                     config: TrainingConfig, history: list[dict[str, Any]],
                     save_with_model: tuple[Any, ...] = (), rng_state: dict[str, Any] | None = None) -> None:
    _save_model(path, head, save_with_model)
    if head.teacher_model is not None:  # the EMA teacher: a resumed run distils from the same targets
        save_file({k: v.detach().clone().contiguous().cpu() for k, v in head.teacher_model.state_dict().items()},
                  os.path.join(path, TEACHER_STATE))
    torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    torch.save(scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
    if rng_state is not None:
        with open(os.path.join(path, RNG_STATE), "w") as f:
            json.dump(rng_state, f)
    # Written last: a folder with trainer_state.json is a complete checkpoint.
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump({"epoch": epoch, "best_eval_accuracy": best, "config": asdict(config), "history": history},
                  f, indent=2, default=str)


def resume_checkpoint(path: str) -> str:
    """The checkpoint folder `resume_from=path` continues: `path` itself, or its `.old` twin left by
    a run killed between two renames, or the `checkpoint-last` of a run folder.

    Raises:
        FileNotFoundError: naming the folder and what to pass instead.
    """
    for candidate in (path, path + ".old", os.path.join(path, "checkpoint-last"),
                      os.path.join(path, "checkpoint-last.old")):
        if os.path.isfile(os.path.join(candidate, "trainer_state.json")):
            return candidate
    raise FileNotFoundError(
        f"{path} is not a checkpoint written by hf_multimix (no trainer_state.json); pass a "
        "'checkpoint-last' folder from an earlier run's output directory."
    )


def _load_weights(head: MultiMixHead, saved: dict[str, torch.Tensor], path: str) -> None:
    """Loads `saved` into the wrapped model, refusing a checkpoint of another model or class count
    with the keys and shapes that differ (not torch's "Error(s) in loading state_dict")."""
    own = head.model.state_dict()
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    shapes = [f"{k} {list(saved[k].shape)} in the checkpoint, {list(own[k].shape)} here"
              for k in sorted(set(own) & set(saved)) if saved[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        what = shapes[:2] + ([f"missing {missing[:3]}"] if missing else []) + (
            [f"unexpected {unexpected[:3]}"] if unexpected else [])
        # a classifier row per class: a first dimension that differs by the class count is the class count
        counts = {len(saved[k]) for k in set(own) & set(saved)
                  if saved[k].dim() and len(own[k]) == head.num_classes and len(saved[k]) != len(own[k])}
        classes = f" (it predicts {counts.pop()} classes, this model {head.num_classes})" if len(counts) == 1 else ""
        raise ValueError(f"{path} holds the weights of another model{classes}: {'; '.join(what)}; resume with the "
                         "model and data (classes) of the run that wrote it, or start a new run")
    head.model.load_state_dict(saved)


def _load_checkpoint(path: str, head: MultiMixHead, optimizer, scheduler) -> tuple[int, float, list[dict[str, Any]]]:
    """Restores the weights, optimiser and schedule; returns `(epoch, best, history)`."""
    path = resume_checkpoint(path)
    state_file = os.path.join(path, "trainer_state.json")
    _load_weights(head, load_file(os.path.join(path, "model.safetensors")), path)
    device = next(head.model.parameters()).device
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))
    teacher = os.path.join(path, TEACHER_STATE)
    if head.teacher_model is not None:
        if os.path.isfile(teacher):
            head.load_teacher(load_file(teacher))
        else:
            logger.warning("%s has no %s (written before it was saved): the EMA teacher restarts from the loaded "
                           "weights", path, TEACHER_STATE)
    with open(state_file) as f:
        state = json.load(f)
    return int(state["epoch"]), float(state["best_eval_accuracy"]), list(state.get("history", []))


def make_loaders(data: Any, classifier: Any, batch_size: int, workers: int | None = None, seed: int = 0,
                 augmentation: Any = None) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The training and evaluation DataLoaders of `data` (a `ClassificationData` with both splits) for
    `classifier` (a `hf_multimix.models.Classifier`).

    Images are decoded and transformed in `workers` DataLoader processes (default
    `hf_multimix.data.default_workers()`) with the model's own preprocessing
    (`hf_multimix.models.image_transforms`: timm's `create_transform`, or torchvision v2 for Hugging
    Face models; `augmentation` trains); texts are tokenised per batch by the classifier's collator.
    Memory pinned when CUDA is there; workers restart each epoch, so resume is exact. An image that fails to decode is
    skipped; `loader.dataset.skipped.value` counts them.
    """
    from .data import collate_pixels, default_workers, torch_dataset
    from .models import image_transforms

    workers = default_workers() if workers is None else workers
    if data.modality == "image":
        train_tf, eval_tf = image_transforms(classifier, augmentation)
        datasets, collate = (torch_dataset(data, "train", train_tf), torch_dataset(data, "eval", eval_tf)), collate_pixels
    else:
        datasets, collate = (torch_dataset(data, "train"), torch_dataset(data, "eval")), classifier.collate
    # Workers start anew each epoch (not persistent): each epoch's iterator then draws the workers'
    # seed and the shuffle from `g` in the same order, so a run resumed at an epoch boundary (with
    # `g`'s saved state) loads and augments exactly what the uninterrupted run did.
    common = dict(collate_fn=collate, num_workers=workers, pin_memory=torch.cuda.is_available())
    g = torch.Generator().manual_seed(seed)
    stream = isinstance(datasets[0], torch.utils.data.IterableDataset)  # shuffled by its own buffer
    train_loader = torch.utils.data.DataLoader(datasets[0], batch_size=batch_size, shuffle=not stream,
                                               generator=None if stream else g,
                                               drop_last=len(datasets[0]) > batch_size, **common)
    eval_loader = torch.utils.data.DataLoader(datasets[1], batch_size=max(64, batch_size), **common)
    return train_loader, eval_loader

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

MIXED_PRECISION = ("no", "fp16", "bf16")
INPUT_MIX = (None, "mixup", "cutmix")
OTHER_STEPS = ("ce", "mixup", "cutmix")


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
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.mix_off_epoch is not None and (not isinstance(self.mix_off_epoch, int) or self.mix_off_epoch < 1):
            raise ValueError(
                f"mix_off_epoch must be a positive integer (the number of epochs that mix) or None, "
                f"got {self.mix_off_epoch!r}."
            )


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


@torch.no_grad()
def evaluate(head: torch.nn.Module, loader: Iterable, accelerator: Accelerator, progress: bool = False) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, per-class accuracy (a list in class-id order) and cross-entropy
    of the wrapped model on `loader`, gathered over processes once."""
    head.eval()
    preds, labels, losses = [], [], []
    num_classes = 0
    for batch in tqdm(loader, desc="eval", leave=False, disable=not (progress and accelerator.is_main_process)):
        inputs, y = _split(batch)
        logits = logits_of(head(**inputs))
        num_classes = logits.shape[-1]
        loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
        p, y, loss = accelerator.gather_for_metrics((logits.argmax(-1), y, loss))
        preds.append(p)
        labels.append(y)
        losses.append(loss)
    preds, labels, losses = torch.cat(preds), torch.cat(labels), torch.cat(losses)
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

    Batches are dicts of model inputs plus `labels` (class ids). Run it as is, or under
    `accelerate launch` / `torchrun` for several processes. `save_with_model` holds objects
    with `save_pretrained(folder)` (a tokenizer, an image processor) written into every
    checkpoint folder next to the weights, so that each folder loads on its own.

    Example:
        >>> history = train(MultiMixHead(model), train_loader, eval_loader,
        ...                 TrainingConfig(output_dir="runs/x", epochs=2))  # doctest: +SKIP
    """
    if not isinstance(head, MultiMixHead):
        raise TypeError(f"train() takes a MultiMixHead (wrap your model: MultiMixHead(model)), got {type(head).__name__}.")
    accelerator = accelerator or Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    set_seed(config.seed)
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
    head, optimizer, train_loader, scheduler = accelerator.prepare(head, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    plain = accelerator.unwrap_model(head)
    mix_fn = _input_mixer(config.input_mix, config, plain.num_classes)
    other_fn = None if config.other_steps == "ce" else _input_mixer(config.other_steps, config, plain.num_classes)
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
        accelerator.print(f"resumed from {config.resume_from} at epoch {start_epoch}")
        if accelerator.is_main_process:
            # The log restarts from the checkpoint's history: epochs logged after it (a run
            # killed before its next checkpoint) are trained again and must not appear twice.
            _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history if r["epoch"] > 0))
    if config.eval_before_training and eval_loader is not None and start_epoch == 0:
        record = {"epoch": 0, **evaluate(head, eval_loader, accelerator, config.progress)}
        history.append(record)
        accelerator.print(f"epoch 0 (before training)  eval_loss {record['eval_loss']:.4f}  "
                          f"eval_acc {record['eval_accuracy']:.4f}")
    mix_prob = plain.prob
    for epoch in range(start_epoch, config.epochs):
        head.train()
        mixing = config.mix_off_epoch is None or epoch < config.mix_off_epoch
        plain.prob = mix_prob if mixing else 0.0  # prob 0: the head's plain cross-entropy of the clean batch
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
            inputs, labels = _split(batch)
            if other_fn is not None and mixing:
                # One draw decides the layer of this step: the head's MultiMix, or the inputs.
                head_mixes = random.random() < mix_prob
                plain.prob = 1.0 if head_mixes else 0.0
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
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += out.loss.detach()
            seen += 1
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(1, seen)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
            "epoch_time_s": time.perf_counter() - t0,
        }
        if eval_loader is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            record.update(evaluate(head, eval_loader, accelerator, config.progress))
            best = max(best, record["eval_accuracy"])
            record["best_eval_accuracy"] = best
        history.append(record)
        summary = f"epoch {epoch + 1}/{config.epochs}  train_loss {train_loss:.4f}"
        if "eval_accuracy" in record:
            summary += f"  eval_loss {record['eval_loss']:.4f}  eval_acc {record['eval_accuracy']:.4f}  best {best:.4f}"
        accelerator.print(summary + f"  ({record['epoch_time_s']:.1f}s)")
        if accelerator.is_main_process:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if config.save_checkpoints:
                if record.get("eval_accuracy") == best:
                    _replace_folder(os.path.join(config.output_dir, "checkpoint-best"),
                                    lambda tmp: _save_model(tmp, plain, save_with_model))
                _replace_folder(
                    os.path.join(config.output_dir, "checkpoint-last"),
                    lambda tmp: _save_checkpoint(tmp, plain, optimizer, scheduler, epoch + 1, best, config, history,
                                                 save_with_model),
                )
        accelerator.wait_for_everyone()
    plain.prob = mix_prob
    return history


def _mix_inputs(fn, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    key = "pixel_values" if "pixel_values" in inputs else next(iter(inputs))
    inputs = dict(inputs)
    inputs[key], labels = fn(inputs[key], labels)
    return inputs, labels


def _input_mixer(kind: str | None, config: TrainingConfig, num_classes: int):
    if kind is None:
        return None
    from timm.data import Mixup

    mixup = config.input_mix_alpha if kind == "mixup" else 0.0
    cutmix = config.input_mix_alpha if kind == "cutmix" else 0.0
    fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=config.label_smoothing, num_classes=num_classes)

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
    for stale in os.listdir(parent):  # temporary folders of an interrupted earlier write
        if stale.startswith(f".{name}.tmp-"):
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
    for companion in save_with_model:
        companion.save_pretrained(path)


def _save_checkpoint(path: str, head: MultiMixHead, optimizer, scheduler, epoch: int, best: float,
                     config: TrainingConfig, history: list[dict[str, Any]],
                     save_with_model: tuple[Any, ...] = ()) -> None:
    _save_model(path, head, save_with_model)
    torch.save(optimizer.state_dict(), os.path.join(path, "optimizer.pt"))
    torch.save(scheduler.state_dict(), os.path.join(path, "scheduler.pt"))
    # Written last: a folder with trainer_state.json is a complete checkpoint.
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump({"epoch": epoch, "best_eval_accuracy": best, "config": asdict(config), "history": history},
                  f, indent=2, default=str)


def _load_checkpoint(path: str, head: MultiMixHead, optimizer, scheduler) -> tuple[int, float, list[dict[str, Any]]]:
    """Restores the weights, optimiser and schedule; returns `(epoch, best, history)`."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.exists(state_file) and os.path.exists(os.path.join(path + ".old", "trainer_state.json")):
        path, state_file = path + ".old", os.path.join(path + ".old", "trainer_state.json")  # killed mid-rename
    if not os.path.exists(state_file):
        raise FileNotFoundError(
            f"{path} is not a checkpoint written by hf_multimix (no trainer_state.json); pass a "
            "'checkpoint-last' folder from an earlier run's output directory."
        )
    head.model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    device = next(head.model.parameters()).device
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=True))
    with open(state_file) as f:
        state = json.load(f)
    return int(state["epoch"]), float(state["best_eval_accuracy"]), list(state.get("history", []))

"""`hf-multimix`: fine-tune a classifier with MultiMix (or a baseline), compare methods, use the result.

    hf-multimix train --output-dir runs/mnist                  # embedded MNIST, pretrained EfficientNet-Lite0
    hf-multimix train --dataset photos/ --output-dir runs/photos   # your folder: train/ + val/, or one folder to split
    hf-multimix train --dataset reviews.csv --output-dir runs/reviews   # columns text,label (optional split)
    hf-multimix train --dataset train.conll --val-dataset dev.conll --output-dir runs/ner   # named entities (entity F1)
    hf-multimix compare --methods erm,mixup,multimix --output-dir runs/compare
    hf-multimix predict --checkpoint runs/photos new_photos/
    hf-multimix evaluate --checkpoint runs/photos --dataset test_photos/

Everything runs offline on the embedded data and weights, on your image folders and CSVs, and
on Hugging Face datasets (`hf:<name>` online, or a folder written by `save_to_disk`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from . import recipes
from .config import ATTENTIONS, MultiMixConfig
from .recipes import LAST_LAYER_METHODS, METHODS, MULTIMIX_METHODS  # noqa: F401 - the CLI's names for them
from .recipes import method_alpha


_DEFAULTS = MultiMixConfig()  # the CLI's MultiMix defaults are the config's


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        self.exit(2, f"hf-multimix: error: {message} (see 'hf-multimix {self.prog.split()[-1]} --help')\n")


def _number(cast: Callable[[str], Any], ok: Callable[[Any], bool], expected: str, bound: str) -> Callable[[str], Any]:
    """An argparse `type` that parses with `cast` and accepts values where `ok` holds."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer", "a positive integer")
_positive_float = _number(float, lambda v: v > 0, "a number", "> 0")
_non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0", ">= 0")
_unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]", "in [0, 1]")
_seed = _number(int, lambda v: 0 <= v < 2**32, "an integer", "an integer in [0, 4294967295] (NumPy's seed range)")
_open_unit_float = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)", "in (0, 1), e.g. 0.1")


def _counts(text: str) -> list[int]:
    try:
        counts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class counts such as 300,60,12, got {text!r}") from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError(f"every class count must be a positive integer, got {text!r}")
    return counts


def _alpha(text: str) -> float | tuple[float, float]:
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'lo,hi', got {text!r}") from None
    if len(values) not in (1, 2) or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected a positive number or a range 'lo,hi', got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _method(text: str) -> str:
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose one of {', '.join(METHODS)}")
    return text


def _methods(text: str) -> list[str]:
    methods = [_method(t.strip()) for t in text.split(",") if t.strip()]
    if not methods:
        raise argparse.ArgumentTypeError(f"expected comma-separated methods, e.g. erm,multimix; got {text!r}")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(twice)} given twice (each method trains once, into its own "
                                         f"folder); got {text!r}")
    return methods


def _label_separator(text: str) -> str:
    from .data.multilabel import check_separator

    try:
        return check_separator(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_multi_label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--multi-label", action="store_true",
                   help="several labels per example (binary cross-entropy, checkpoints chosen by mean average "
                        "precision): a CSV label column such as sports|politics (an empty cell: no label), or an "
                        "image folder's labels.csv. Default: detected from the data (a separator in a label cell)")
    p.add_argument("--label-separator", type=_label_separator, default="|",
                   help="what separates the labels of one example in a label cell (default '|')")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="efficientnet_lite0 | minilm (embedded, pretrained) | a timm model name (random init; see "
                        "--pretrained, --pretrained-file) | a local Hugging Face image or text classifier folder | "
                        "a checkpoint folder of a run. Default: the embedded model for the data's modality.")
    p.add_argument("--pretrained", action="store_true", help="timm model names: download pretrained weights")
    p.add_argument("--pretrained-file", default=None,
                   help="timm model names: pretrained weights from this .safetensors or .pth file")
    p.add_argument("--dataset", default="mnist",
                   help="mnist | digits | tweets | newsgroups | reuters8 | mnist-multilabel (embedded) | an image "
                        "folder (one subfolder per class, or train/ + val/, or labels.csv with file,labels rows) | a "
                        "CSV with text,label (optional split; labels such as sports|politics train a multi-label "
                        "model) | hf:<name or save_to_disk folder>")
    p.add_argument("--val-dataset", default=None, help="a second image folder or CSV to evaluate on")
    p.add_argument("--val-split", type=_open_unit_float, default=None,
                   help="fraction of each class held out when the data has no validation split (default 0.1; "
                        "multi-label data: a seeded random fraction of the examples)")
    _add_multi_label_options(p)
    p.add_argument("--n", type=_positive_int, default=_DEFAULTS.n, help="MultiMix: mixes per batch (default %(default)s)")
    p.add_argument("--alpha", type=_alpha, default=None,
                   help=f"Dirichlet alpha, a number or 'lo,hi' (default {_DEFAULTS.alpha}); Beta alpha for the mixup baselines (default 1.0)")
    p.add_argument("--distill-weight", type=_unit_float, default=_DEFAULTS.distill_weight,
                   help="self-distillation weight beta (default %(default)s; it was never ahead of the same recipe "
                        "without it in the accuracy study: docs/distillation.md)")
    p.add_argument("--attention", default=_DEFAULTS.attention, choices=list(ATTENTIONS),
                   help="dense MultiMix attention (default %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="default: 5 for images; for text, enough for 200 optimiser steps, 3 to 10 epochs "
                        "(hf_multimix.recipes.default_epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--lr", type=_positive_float, default=None, help="default 1e-3 (images), 1e-4 (text)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.01)
    p.add_argument("--grad-accum", type=_positive_int, default=1, help="gradient accumulation steps")
    p.add_argument("--label-smoothing", type=_unit_float, default=_DEFAULTS.label_smoothing)
    p.add_argument("--mixing", default=_DEFAULTS.mixing, choices=["auto", "multimix", "class-balanced"],
                   help="MultiMix weights: 'class-balanced' gives every class of a batch the same expected share of "
                        "the mixes, 'multimix' draws Dir(alpha) over the batch; 'auto' (default): class-balanced for "
                        "pooled MultiMix with one label per example, multimix for dense, multi-label and token runs "
                        "(docs/results.md, The CLI's defaults against ERM)")
    p.add_argument("--class-balanced", action="store_true", help="the same as --mixing class-balanced")
    p.add_argument("--shared-lambda", action="store_true",
                   help="Dense MultiMix: one interpolation vector for all positions (default: one per position)")
    p.add_argument("--clean-weight", type=_non_negative_float, default=_DEFAULTS.clean_weight,
                   help="MultiMix: weight of the clean-batch cross-entropy added to the loss (default %(default)s, the "
                        "recipe study's choice for clean labels; 0 is the paper's loss, better with noisy labels "
                        "on images: see --noisy-labels)")
    p.add_argument("--prob", type=_unit_float, default=_DEFAULTS.prob,
                   help="MultiMix / manifold mixup: probability to mix at a step; the other steps train with "
                        "plain cross-entropy (default %(default)s)")
    p.add_argument("--noisy-labels", action="store_true",
                   help="the training labels are noisy (web, crowd or weak labels): MultiMix on images trains "
                        "with the recipe the accuracy study chose for them, mixed examples only (--clean-weight "
                        "0) and, for a model trained from scratch, CutMix of the inputs on half the steps (--prob "
                        "0.5 --other-steps cutmix). Text keeps the default recipe. Baselines are unchanged")
    p.add_argument("--other-steps", default="ce", choices=["ce", "mixup", "cutmix"],
                   help="MultiMix / manifold mixup with --prob < 1: what the steps that do not mix at the last "
                        "layer train with: the clean batch's cross-entropy (ce, default), or input mixup / CutMix "
                        "of the images, so each step mixes at one of two layers (images only)")
    p.add_argument("--mix-off-epoch", type=_positive_int, default=None,
                   help="stop mixing (every method) after this many epochs; the later epochs train with plain "
                        "cross-entropy, as timm's --mixup-off-epoch (default: mix to the end)")
    p.add_argument("--label-noise", type=_unit_float, default=0.0,
                   help="flip this fraction of the training labels to another class at random (seeded by "
                        "--seed; held-out labels stay clean), to test robustness to noisy labels (default 0)")
    p.add_argument("--class-counts", type=_counts, default=None, metavar="N,N,...",
                   help="keep at most this many training examples of each class (one count per class, in class "
                        "order, e.g. 300,60,12; seeded by --seed; held-out data unchanged), to test on long-tailed "
                        "data (default: keep all)")
    p.add_argument("--eval-every", type=_positive_int, default=1,
                   help="evaluate after every this many epochs and after the last (default 1)")
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--train-per-class", type=_positive_int, default=None,
                   help="cap on training examples per class (low-data runs); alone, the rest of the data is "
                        "evaluated on. Default: all (100 for the embedded demo data)")
    p.add_argument("--max-eval", type=_positive_int, default=None,
                   help="cap on evaluation examples (default: all; 1000 for the embedded demo data)")
    p.add_argument("--image-size", type=_positive_int, default=None,
                   help="input resolution for images (default: the model's pretrained input size; 64 for the "
                        "embedded demo digits)")
    p.add_argument("--max-length", type=_positive_int, default=None,
                   help="max tokens for text (default: the 99th percentile of the training texts' token lengths, "
                        "at most the model's positions)")
    p.add_argument("--workers", type=_number(int, lambda v: v >= 0, "an integer >= 0", ">= 0"), default=None,
                   help="DataLoader worker processes that decode and transform the data (default: the CPU count "
                        "minus one, at most 8; 0 decodes in the training process)")
    p.add_argument("--streaming", action="store_true",
                   help="hf: data sets: read the splits as streams (datasets.IterableDataset), for data too large "
                        "to hold or download first; needs the data set's own validation/test split")
    p.add_argument("--aa", default=None,
                   help="images: auto-augment policy as timm's train.py, e.g. rand-m9-mstd0.5 (default: none)")
    p.add_argument("--color-jitter", type=_non_negative_float, default=0.4,
                   help="images: colour jitter factor, used without --aa (default 0.4, as timm's train.py)")
    p.add_argument("--reprob", type=_unit_float, default=0.0, help="images: random erasing probability (default 0)")
    p.add_argument("--no-augment", action="store_true",
                   help="images: train with the evaluation transform (no random crop, flip or jitter); the "
                        "embedded demo digits always do")
    p.add_argument("--max-steps-per-epoch", type=_positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--output-dir", required=True,
                   help="the run folder; a folder holding a run is refused (continue it with --resume, or see "
                        "--overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="the --output-dir holds an earlier run: move it aside to <output-dir>.old-<time> (never "
                        "deleted) and start afresh")
    p.add_argument("--config", default=None, help="a YAML file of options (e.g. a run's args.yaml); "
                                                  "options on the command line override it")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hf-multimix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="fine-tune one model with one method")
    t.add_argument("--method", type=_method, default="multimix", help=f"one of {', '.join(METHODS)} (default multimix; dense-multimix was never ahead of "
                        "multimix in the accuracy study: docs/dense.md)")
    t.add_argument("--resume", default=None, help="a checkpoint-last folder to resume from")
    _add_common(t)
    c = sub.add_parser("compare", help="run several methods on the same data and seed")
    c.add_argument("--methods", type=_methods, default=["erm", "mixup", "manifold-mixup", "multimix"],
                   help="comma-separated (default erm,mixup,manifold-mixup,multimix)")
    _add_common(c)
    p = sub.add_parser("predict", help="predicted labels and probabilities of a trained model")
    p.add_argument("--checkpoint", required=True, help="the output folder of 'hf-multimix train' (or a checkpoint-*)")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or CSV files with a 'text' column")
    p.add_argument("--output", default=None, help="write a CSV (input, label, probability, one column per class)")
    p.add_argument("--threshold", type=_open_unit_float, default=0.5,
                   help="multi-label models: a class is predicted where its probability exceeds this (default 0.5)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--workers", type=_number(int, lambda v: v >= 0, "an integer >= 0", ">= 0"), default=None,
                   help="DataLoader worker processes that decode and transform the images (default: as train; 0 "
                        "decodes in this process)")
    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy, confusion matrix and ECE on labelled data")
    e.add_argument("--checkpoint", required=True, help="the output folder of 'hf-multimix train' (or a checkpoint-*)")
    e.add_argument("--dataset", required=True,
                   help="an image folder, a CSV or hf:<name>; its validation split if it has one, else all of it")
    e.add_argument("--output-dir", default=None,
                   help="where evaluation.json and confusion_matrix.png go (default: the --checkpoint folder)")
    e.add_argument("--batch-size", type=_positive_int, default=64)
    e.add_argument("--threshold", type=_open_unit_float, default=0.5,
                   help="multi-label models: the probability above which a class is predicted, for the F1 "
                        "scores (default 0.5)")
    e.add_argument("--label-separator", type=_label_separator, default="|",
                   help="multi-label models: what separates the labels of one example in the data (default '|')")
    e.add_argument("--workers", type=_number(int, lambda v: v >= 0, "an integer >= 0", ">= 0"), default=None,
                   help="DataLoader worker processes that decode and transform the images (default: as train; 0 "
                        "decodes in this process)")
    for command in (t, c, p, e):
        command.add_argument("--log-level", type=str.upper, default="INFO", choices=LOG_LEVELS,
                             help="what hf_multimix logs on stderr: INFO (default) names the adapter, the layer "
                                  "mixed and the recipe chosen; WARNING shows only warnings")
    return parser


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _LogFormatter(logging.Formatter):
    """timm's style: an INFO record is its message, other levels are prefixed with their name."""

    _prefixed = logging.Formatter("%(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) if record.levelno == logging.INFO else self._prefixed.format(record)


def setup_logging(level: str = "INFO") -> None:
    """hf_multimix's loggers at `level` on stderr, one line a record, as `logging.basicConfig` does: a
    handler on the root logger only when it has none (a program that configured logging keeps its
    own, and calling this twice adds nothing); the other libraries stay at the root's WARNING."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LogFormatter())
        root.addHandler(handler)
    logging.getLogger("hf_multimix").setLevel(level)


def _config_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with the options of ``--config FILE.yaml`` put first, so that the command line overrides them."""
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None or not argv or argv[0] not in ("train", "compare"):
        return argv
    import yaml

    try:
        with open(path) as f:
            options = yaml.safe_load(f) or {}
    except OSError as e:
        parser.error(f"--config {path!r}: {e.strerror or e}")
    except yaml.YAMLError as e:
        parser.error(f"--config {path!r} is not valid YAML ({str(e).splitlines()[0]})")
    if not isinstance(options, dict):
        parser.error(f"--config {path!r} must hold 'option: value' lines, got {type(options).__name__}")
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    actions = {a.dest: a for a in commands[argv[0]]._actions}
    elsewhere = {a.dest for name in ("train", "compare") for a in commands[name]._actions}
    front: list[str] = []
    for key, value in options.items():
        dest = str(key).replace("-", "_")
        # `resume` is where an earlier run continued from, not an option to repeat; `method(s)` of the other command
        # `overwrite` moved an earlier run aside once; repeating it from a run's args.yaml would move this one
        if dest in ("command", "config", "resume", "overwrite") or (dest not in actions and dest in elsewhere):
            continue
        if dest not in actions or dest == "help":
            parser.error(f"--config {path!r}: unknown option {key!r}; see 'hf-multimix {argv[0]} --help'")
        flag = actions[dest].option_strings[-1]
        if isinstance(actions[dest], argparse._StoreTrueAction):
            front += [flag] if value else []
        elif value is not None:
            text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            front.append(f"{flag}={text}")
    return [argv[0], *front, *argv[1:]]


@dataclass
class Prepared:
    model: Any
    train_loader: Any
    eval_loader: Any
    modality: str
    num_classes: int
    model_name: str
    class_names: tuple[str, ...] = ()
    save_with_model: tuple[Any, ...] = ()
    notes: tuple[str, ...] = ()
    multi_label: bool = False


def prepare(args: argparse.Namespace, method: str = "erm") -> Prepared:
    """Loads data and model and builds the loaders, all offline for the embedded choices."""
    import torch

    from .data import DEMO_IMAGE_SIZE, Augmentation, flip_labels, load_splits, subsample_classes
    from .data.sources import is_embedded
    from .models import create_classifier, fit_text_length
    from .training import make_loaders

    check_noisy_labels(args)
    other = getattr(args, "other_steps", "ce")
    if other != "ce":
        if method not in LAST_LAYER_METHODS:
            raise ValueError(f"--other-steps {other} shares the steps with a last-layer mixing method; "
                             f"--method {method} has none. Use --method multimix (or dense-multimix, "
                             "manifold-mixup) with --prob < 1.")
        if not 0.0 < args.prob < 1.0:
            raise ValueError(f"--other-steps {other} trains the steps that do not mix at the last layer; with --prob "
                             f"{args.prob:g} there are none. Pass --prob between 0 and 1, e.g. --prob 0.5.")
    # indexed, not decoded: the DataLoader's workers decode and transform each image
    streaming = getattr(args, "streaming", False)
    if streaming and getattr(args, "label_noise", 0.0):
        raise ValueError("--label-noise flips labels of a split held in memory; a stream (--streaming) has none: "
                         "drop one of them")
    data = load_splits(args.dataset, val_dataset=args.val_dataset, val_split=args.val_split,
                       train_per_class=args.train_per_class, max_eval=args.max_eval, seed=args.seed,
                       streaming=streaming, **_multi_label_reading(args))
    if data.multi_label:
        check_multi_label_options(args, method)
    if method in ("mixup", "cutmix") and data.modality != "image":
        raise ValueError(f"--method {method} mixes input images; {args.dataset!r} is text. Use manifold-mixup or multimix.")
    if other != "ce" and data.modality != "image":
        raise ValueError(f"--other-steps {other} mixes input images; {args.dataset!r} is text. Use --other-steps ce.")
    if getattr(args, "class_counts", None):
        data = dataclasses.replace(data, train=subsample_classes(data.train, args.class_counts, data.num_classes,
                                                                 args.seed))
    if getattr(args, "label_noise", 0.0):
        data = dataclasses.replace(data, train=flip_labels(data.train, args.label_noise, data.num_classes, args.seed))
    # The seed fixes the initialisation too (a new classifier, or a whole model from scratch), so runs of
    # different methods with the same seed start from the same weights and their difference is paired.
    torch.manual_seed(args.seed)
    demo = is_embedded(args.dataset)  # the small demo digits: 64 px, no augmentation (docs/training.md)
    image_size = getattr(args, "image_size", None) or (DEMO_IMAGE_SIZE if demo else None)
    clf = create_classifier(args.model, data.modality, data.class_names, pretrained=args.pretrained,
                            pretrained_file=args.pretrained_file, image_size=image_size,
                            max_length=getattr(args, "max_length", None))
    set_problem_type(clf.model, data.multi_label)
    notes = list(data.notes)
    if data.modality == "text" and getattr(args, "max_length", None) is None:
        texts = data.train.head(2000) if streaming else data.train.inputs
        notes.append(f"--max-length {fit_text_length(clf, texts)} (the 99th percentile of the training "
                     "texts' token lengths)")
    augmentation = None
    if data.modality == "image":
        if demo:  # the digits are resized whole (no crop) and not augmented
            clf = dataclasses.replace(clf, data_config={**clf.data_config, "crop_pct": 1.0})
        augmentation = Augmentation(enabled=not (demo or getattr(args, "no_augment", False)),
                                    aa=getattr(args, "aa", None), color_jitter=getattr(args, "color_jitter", 0.4),
                                    reprob=getattr(args, "reprob", 0.0))
        notes.append(f"images at {clf.data_config['input_size'][-1]} px, "
                     + ("training with the model's augmentation" if augmentation.enabled else "no augmentation"))
    train_loader, eval_loader = make_loaders(data, clf, args.batch_size, workers=getattr(args, "workers", None),
                                             seed=args.seed, augmentation=augmentation)
    return Prepared(clf.model, train_loader, eval_loader, data.modality, data.num_classes, clf.name,
                    data.class_names, clf.companions, tuple(notes), data.multi_label)


def _multi_label_reading(args: argparse.Namespace) -> dict[str, Any]:
    """How `load_splits` reads the labels: `--multi-label` forces several per example (else detected), with
    `--label-separator` between them; nothing for the defaults, so single-label reading is unchanged."""
    forced, separator = getattr(args, "multi_label", False), getattr(args, "label_separator", "|")
    return {} if not forced and separator == "|" else {"multi_label": True if forced else None,
                                                       "label_separator": separator}


def check_multi_label_options(args: argparse.Namespace, method: str) -> None:
    """Refuses the options that count one class per example, on multi-label data."""
    given = [flag for flag, on in (("--class-counts", getattr(args, "class_counts", None)),
                                   ("--label-noise", getattr(args, "label_noise", 0.0)),
                                   ("--class-balanced" if getattr(args, "class_balanced", False) else
                                    "--mixing class-balanced", mixing_of(args) == "class-balanced")) if on]
    if given:
        raise ValueError(f"{', '.join(given)} assume one class per example; the data is multi-label (several labels "
                         "per example): drop them")


def set_problem_type(model: Any, multi_label: bool) -> None:
    """A Hugging Face model's `config.problem_type` for the data: `multi_label_classification` (its own loss is
    then the binary cross-entropy, and the checkpoint says so), and not that for single-label data."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "problem_type"):
        return  # timm: the head's task="multi_label" (saved in multimix_config.json)
    if multi_label:
        config.problem_type = "multi_label_classification"
    elif config.problem_type == "multi_label_classification":  # a multi-label checkpoint fine-tuned on single labels
        config.problem_type = "single_label_classification"


NOISY_LABELS_RECIPE = recipes.NOISY_LABELS_FROM_SCRATCH
"""What `--noisy-labels` sets for an image model trained from scratch (`recipes.noisy_labels`)."""


def check_noisy_labels(args: argparse.Namespace) -> None:
    """`--noisy-labels` chooses the options of its recipe itself; refuse a run that also sets them."""
    if not getattr(args, "noisy_labels", False):
        return
    parser = build_parser()
    defaults = vars(parser.parse_args(["train", "--output-dir", "unused"]))
    changed = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in NOISY_LABELS_RECIPE
               if getattr(args, k) != defaults[k] and getattr(args, k) != NOISY_LABELS_RECIPE[k]]
    if changed:
        raise ValueError(f"--noisy-labels sets --clean-weight 0, --prob 0.5 and --other-steps cutmix itself; drop "
                         f"{', '.join(changed)} or --noisy-labels.")


def recipe_args(args: argparse.Namespace, method: str, modality: str) -> argparse.Namespace:
    """The options `method` trains with: `args`, with `--noisy-labels` resolved by `recipes.noisy_labels`
    (the policy lives there, for Python, Trainer and timm-task users alike)."""
    from .models import starts_from_scratch

    if not getattr(args, "noisy_labels", False) or method not in MULTIMIX_METHODS:
        return args
    scratch = starts_from_scratch(args.model, args.pretrained, args.pretrained_file) if modality == "image" else False
    recipe = recipes.noisy_labels(modality, scratch, method)
    if modality != "image":
        print(f"hf-multimix: --noisy-labels: {recipe.reason.removeprefix('noisy labels: ')}", flush=True)
        return args
    chosen = {"clean_weight": recipe.multimix.clean_weight, "prob": recipe.multimix.prob,
              "other_steps": recipe.other_steps}
    return argparse.Namespace(**{**vars(args), **chosen})


def run_epochs(args: argparse.Namespace, modality: str, train_loader: Any) -> int:
    """`--epochs`, else `recipes.default_epochs` for the optimiser steps an epoch of `train_loader` takes."""
    if args.epochs is not None:
        return args.epochs
    steps = math.ceil(len(train_loader) / args.grad_accum)
    if args.max_steps_per_epoch:
        steps = min(steps, args.max_steps_per_epoch)
    epochs = recipes.default_epochs(modality, max(1, steps))
    if modality == "text":
        fewest, most = recipes.TEXT_EPOCHS
        print(f"hf-multimix: --epochs {epochs} ({steps} optimiser step{'s' if steps != 1 else ''} an epoch; a text "
              f"fine-tune trains for at least {recipes.TEXT_MIN_STEPS} steps in {fewest} to {most} epochs; set "
              "--epochs to choose)", flush=True)
    return epochs


def mixing_of(args: argparse.Namespace) -> str:
    """`--mixing`, with `--class-balanced` its shorthand."""
    mixing = getattr(args, "mixing", _DEFAULTS.mixing)
    if getattr(args, "class_balanced", False):
        if mixing not in (_DEFAULTS.mixing, "class-balanced"):
            raise ValueError(f"--class-balanced and --mixing {mixing} contradict each other: give one of them")
        return "class-balanced"
    return mixing


def multimix_config(method: str, args: argparse.Namespace, task: str | None = None):
    """The `MultiMixConfig` of `method` from the command line's options (`recipes.method_config`);
    `task="multi_label"` for multi-label data (every method, the baselines included)."""
    options = dict(n=args.n, alpha=method_alpha(method, args.alpha), attention=args.attention,
                   distill_weight=args.distill_weight, label_smoothing=args.label_smoothing,
                   clean_weight=args.clean_weight, per_position=not args.shared_lambda, prob=args.prob,
                   mixing=mixing_of(args))
    config = recipes.method_config(method, **options)
    return config if task is None else config.replace(task=task)


def head_for(method: str, model: Any, args: argparse.Namespace, task: str | None = None):
    """The `MultiMixHead` that trains `model` with `method` (baselines included)."""
    from .head import MultiMixHead

    return MultiMixHead(model, multimix_config(method, args, task))


def run_method(method: str, args: argparse.Namespace, output_dir: str, resume: str | None = None) -> dict[str, Any]:
    """Trains one method and writes `metrics.json`, the checkpoint and `training_curves.png`."""
    from .training import TrainingConfig, train

    if _is_token_run(args):
        return run_token_method(method, args, output_dir, resume)
    multimix_config(method, args)  # every MultiMix number checked before the data loads
    prepared = prepare(args, method)
    for note in prepared.notes:
        print(f"hf-multimix: {note}", flush=True)
    os.makedirs(output_dir, exist_ok=True)
    write_args_yaml(args, output_dir, method)  # as given: --config reads it back
    args = recipe_args(args, method, prepared.modality)
    head = head_for(method, prepared.model, args, "multi_label" if prepared.multi_label else None)
    print(f"hf-multimix: {method}: MultiMix options {head.multimix_config.describe()} (saved as multimix_config.json "
          "in each checkpoint)", flush=True)
    lr = args.lr if args.lr is not None else recipes.default_lr(prepared.modality)
    epochs = run_epochs(args, prepared.modality, prepared.train_loader)
    alpha = method_alpha("mixup", args.alpha)  # Beta alpha of input mixup / CutMix (unused by other methods)
    config = TrainingConfig(
        output_dir=output_dir, epochs=epochs, lr=lr, weight_decay=args.weight_decay,
        gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision, seed=args.seed,
        input_mix=method if method in ("mixup", "cutmix") else None,
        input_mix_alpha=alpha if isinstance(alpha, float) else alpha[0],
        label_smoothing=args.label_smoothing, max_steps_per_epoch=args.max_steps_per_epoch,
        resume_from=resume, progress=not args.no_progress, eval_before_training=resume is None,
        mix_off_epoch=args.mix_off_epoch, eval_every=args.eval_every, other_steps=args.other_steps,
    )
    t0 = time.perf_counter()
    history = train(head, prepared.train_loader, prepared.eval_loader, config, save_with_model=prepared.save_with_model)
    elapsed = time.perf_counter() - t0
    initial = [h for h in history if h["epoch"] == 0]
    history = [h for h in history if h["epoch"] > 0]
    final = history[-1] if history else {}
    metrics = {
        "method": method,
        "model": prepared.model_name,
        "dataset": str(args.dataset),
        "num_classes": prepared.num_classes,
        "train_examples": len(prepared.train_loader.dataset),
        "eval_examples": len(prepared.eval_loader.dataset),
        "initial_eval_accuracy": initial[0].get("eval_accuracy") if initial else None,
        "eval_accuracy": final.get("eval_accuracy"),
        "best_eval_accuracy": max((h["eval_accuracy"] for h in history if "eval_accuracy" in h), default=None),
        "eval_balanced_accuracy": final.get("eval_balanced_accuracy"),
        "eval_macro_f1": final.get("eval_macro_f1"),
        "eval_per_class_accuracy": final.get("eval_per_class_accuracy"),
        "train_time_s": elapsed,
        "epochs": epochs,
        "lr": lr,
        "seed": args.seed,
        "n": args.n if "multimix" in method else None,
        "alpha": args.alpha,
        "distill_weight": args.distill_weight,
        "clean_weight": args.clean_weight,
        "prob": args.prob,
        "mix_off_epoch": args.mix_off_epoch,
        "other_steps": args.other_steps,
        "noisy_labels": args.noisy_labels,
        "label_noise": args.label_noise,
        "class_counts": args.class_counts,
        "class_balanced": getattr(args, "class_balanced", False),
        "mixing": head.multimix_config.mixing,
        "attention": args.attention if method == "dense-multimix" else None,
        "shared_lambda": args.shared_lambda if method == "dense-multimix" else None,
        "class_names": list(prepared.class_names),
        "data_notes": list(prepared.notes),
        # examples that failed to decode during training and evaluation (skipped, the run went on)
        "skipped_files": sum(getattr(getattr(loader.dataset, "skipped", None), "value", 0)
                             for loader in (prepared.train_loader, prepared.eval_loader)),
        "args": {**resolved_args(args), "method": method, "lr": lr, "alpha": method_alpha(method, args.alpha)},
        "multimix_config": head.multimix_config.to_dict(),
        "history": history,
    }
    metrics.update(_task_metrics(prepared.multi_label, initial, history, final))
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    _plot_curves({method: history}, os.path.join(output_dir, "training_curves.png"))
    return metrics


def _task_metrics(multi_label: bool, initial: list[dict[str, Any]], history: list[dict[str, Any]],
                  final: dict[str, Any]) -> dict[str, Any]:
    """`task`, and for a multi-label run its mean average precision (final, best epoch, before training) and
    micro / macro F1 of the classes whose sigmoid exceeds 0.5."""
    if not multi_label:
        return {"task": "single_label"}
    from .training import MULTI_LABEL_THRESHOLD

    return {"task": "multi_label", "threshold": MULTI_LABEL_THRESHOLD,
            "initial_eval_map": initial[0].get("eval_map") if initial else None,
            "eval_map": final.get("eval_map"),
            "best_eval_map": max((h["eval_map"] for h in history if "eval_map" in h), default=None),
            "eval_micro_f1": final.get("eval_micro_f1"), "eval_macro_f1": final.get("eval_macro_f1")}


def _summary(metrics: dict[str, Any], output_dir: str) -> str:
    """The last line of `train`: the final and best score, the time, the folder."""
    if metrics.get("task") == "multi_label":
        score = (f"eval_mAP {metrics['eval_map']:.4f}, best {metrics['best_eval_map']:.4f}, micro-F1 "
                 f"{metrics['eval_micro_f1']:.4f}, macro-F1 {metrics['eval_macro_f1']:.4f}")
    else:
        score = f"eval_accuracy {metrics['eval_accuracy']:.4f}, best {metrics['best_eval_accuracy']:.4f}"
    return f"{metrics['method']}: {score}, {metrics['train_time_s']:.1f}s -> {output_dir}"


def _compare_table(rows: list[dict[str, Any]]) -> str:
    """The table `compare` prints: accuracy, or for multi-label runs mean average precision and F1."""
    if any(r.get("task") == "multi_label" for r in rows):
        table = ["| method | eval mAP | best eval mAP | micro-F1 | macro-F1 | train time (s) |",
                 "|---|---|---|---|---|---|"]
        table += [f"| {r['method']} | {r['eval_map']:.4f} | {r['best_eval_map']:.4f} | {r['eval_micro_f1']:.4f} | "
                  f"{r['eval_macro_f1']:.4f} | {r['train_time_s']:.1f} |" for r in rows]
        return "\n".join(table)
    table = ["| method | eval accuracy | best eval accuracy | train time (s) |", "|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['method']} | {r['eval_accuracy']:.4f} | {r['best_eval_accuracy']:.4f} | {r['train_time_s']:.1f} |")
    return "\n".join(table)


def resolved_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options as plain values (JSON and YAML), as `--config` reads them back."""
    out = {}
    for key, value in vars(args).items():
        if key == "config":
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def write_args_yaml(args: argparse.Namespace, output_dir: str, method: str | None = None) -> None:
    """`args.yaml` in the run folder, as timm's train.py writes it; `--config` reads it back.

    With `method` (one run of `compare`), it is the `train` command of that run alone."""
    import yaml

    options = resolved_args(args)
    if method is not None:
        options.pop("methods", None)
        options.update(command="train", method=method, output_dir=output_dir)
    with open(os.path.join(output_dir, "args.yaml"), "w") as f:
        yaml.safe_dump(options, f, sort_keys=False)


def _plot_curves(histories: dict[str, list[dict[str, Any]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    from .training import selection_metric

    evaluated_records = [h for hs in histories.values() for h in hs if "eval_loss" in h]
    key = selection_metric(evaluated_records[0]) if evaluated_records else "eval_accuracy"
    name = "accuracy" if key == "eval_accuracy" else "mean average precision"
    for method, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{method} train")
        evaluated = [h for h in history if "eval_loss" in h]  # every epoch unless --eval-every says otherwise
        if evaluated:
            ev_epochs = [h["epoch"] for h in evaluated]
            ax_loss.plot(ev_epochs, [h["eval_loss"] for h in evaluated], marker="x", linestyle="--", label=f"{method} eval")
            ax_acc.plot(ev_epochs, [h[key] for h in evaluated], marker="o", label=method)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel=name, title=f"eval {name}")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Runs each method with the same data, model and seed; prints and saves a table and a plot."""
    rows = []
    os.makedirs(args.output_dir, exist_ok=True)
    write_args_yaml(args, args.output_dir)
    for method in args.methods:
        out = os.path.join(args.output_dir, method)
        os.makedirs(out, exist_ok=True)
        print(f"== {method}", flush=True)
        rows.append(run_method(method, args, out))
    text = _compare_table(rows)
    print(text)
    with open(os.path.join(args.output_dir, "compare.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output_dir, "compare.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "history"} for r in rows], f, indent=2)
    _plot_curves({r["method"]: r["history"] for r in rows}, os.path.join(args.output_dir, "compare.png"))
    return rows


def _eval_workers(args: argparse.Namespace, clf: Any) -> int:
    """DataLoader workers of `predict` / `evaluate`: ``--workers``, else as `train` for images; texts: none."""
    from .data import default_workers

    if clf.modality != "image" or clf.data_config is None:
        return 0
    return default_workers() if getattr(args, "workers", None) is None else args.workers


def predict(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Prints (or writes as CSV) the predicted label and its probability for each input."""
    import csv

    from .inference import predict_proba, read_inputs
    from .models import load_classifier
    from .token_classification import is_token_checkpoint

    if is_token_checkpoint(args.checkpoint):
        raise ValueError(f"--checkpoint {args.checkpoint!r} is a token classifier; 'predict' labels whole inputs. "
                         "Score it with 'hf-multimix evaluate --dataset FILE.conll', or tag sentences from Python "
                         "(docs/token_classification.md)")
    clf = load_classifier(args.checkpoint)
    # models with a data config read each image at its own size and run their evaluation transform
    size = clf.collate.size[0] if clf.modality == "image" and clf.data_config is None else None
    names, inputs, skipped = read_inputs(args.inputs, clf.modality, size)
    if skipped:
        print(f"hf-multimix: skipped {len(skipped)} unreadable image file(s) (e.g. {skipped[0]})", file=sys.stderr)
    probs = predict_proba(clf, inputs, args.batch_size, _eval_workers(args, clf))
    from .inference import is_multi_label

    if is_multi_label(clf):
        return _predict_sets(args, clf, names, probs)
    top_p, top = probs.max(-1)
    rows = [{"input": n, "label": clf.class_names[int(i)], "probability": float(p)}
            for n, i, p in zip(names, top.tolist(), top_p.tolist())]
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "label", "probability", *clf.class_names])
            for row, p in zip(rows, probs.tolist()):
                writer.writerow([row["input"], row["label"], f"{row['probability']:.6f}", *(f"{v:.6f}" for v in p)])
        print(f"{len(rows)} prediction(s) -> {args.output}")
    else:
        for row in rows:
            print(f"{row['input']}\t{row['label']}\t{row['probability']:.4f}")
    return rows


def _predict_sets(args: argparse.Namespace, clf: Any, names: list[str], probs: Any) -> list[dict[str, Any]]:
    """`predict` of a multi-label model: the classes above `--threshold` and their probabilities, per input
    (printed as `input<TAB>a|b<TAB>a=0.91 b=0.62`, `(none)` for an empty set; the CSV has one column per class)."""
    import csv

    from .inference import label_sets

    sets = label_sets(probs, clf.class_names, args.threshold)
    rows = [{"input": n, "labels": s, "probabilities": {c: float(p[clf.class_names.index(c)]) for c in s}}
            for n, s, p in zip(names, sets, probs.tolist())]
    if args.output:
        with open(args.output, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["input", "labels", *clf.class_names])
            for row, p in zip(rows, probs.tolist()):
                writer.writerow([row["input"], "|".join(row["labels"]), *(f"{v:.6f}" for v in p)])
        print(f"{len(rows)} prediction(s) -> {args.output}")
    else:
        for row in rows:
            shown = " ".join(f"{c}={p:.4f}" for c, p in row["probabilities"].items())
            print(f"{row['input']}\t{'|'.join(row['labels']) or '(none)'}\t{shown}".rstrip("\t"))
    return rows


def _evaluate_sets(args: argparse.Namespace, clf: Any, part: Any, out: str) -> dict[str, Any]:
    """`evaluate` of a multi-label model: mean average precision, micro / macro F1 and per-class scores."""
    from .inference import evaluate_multilabel
    from .models import find_checkpoint

    report = evaluate_multilabel(clf, part.inputs, part.labels, args.batch_size, _eval_workers(args, clf),
                                 args.threshold)
    result = {"checkpoint": str(find_checkpoint(args.checkpoint)), "dataset": args.dataset, **report.as_dict()}
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"mAP {report.mean_average_precision:.4f} on {report.examples} examples, micro-F1 {report.micro_f1:.4f}, "
          f"macro-F1 {report.macro_f1:.4f} (threshold {report.threshold:g})")
    for name in report.class_names:
        ap = report.per_class_ap[name]
        print(f"  {name}: AP {'-' if ap is None else f'{ap:.4f}'}, F1 {report.per_class_f1[name]:.4f}")
    print(f"-> {os.path.join(out, 'evaluation.json')}")
    return result


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy, per-class accuracy, ECE and a confusion-matrix plot of a checkpoint on a labelled data set."""
    from .inference import evaluate_classifier, evaluation_inputs, plot_confusion_matrix
    from .models import find_checkpoint, load_classifier

    if _is_token_run(args):
        return evaluate_token_checkpoint(args)
    clf = load_classifier(args.checkpoint)
    part, notes = evaluation_inputs(args.dataset, clf, getattr(args, "label_separator", "|"))
    for note in notes:
        print(f"hf-multimix: {note}", flush=True)
    out = args.output_dir or args.checkpoint
    os.makedirs(out, exist_ok=True)
    if part.multi_label:
        return _evaluate_sets(args, clf, part, out)
    report = evaluate_classifier(clf, part.inputs, part.labels, args.batch_size, _eval_workers(args, clf))
    result = {"checkpoint": str(find_checkpoint(args.checkpoint)), "dataset": args.dataset, **report.as_dict()}
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot_confusion_matrix(report, os.path.join(out, "confusion_matrix.png"))
    print(f"accuracy {report.accuracy:.4f} on {report.examples} examples, balanced accuracy "
          f"{report.balanced_accuracy:.4f}, macro-F1 {report.macro_f1:.4f}, ECE {report.ece:.4f}")
    for name, acc in report.per_class_accuracy.items():
        print(f"  {name}: {'-' if acc is None else f'{acc:.4f}'}")
    print(f"-> {os.path.join(out, 'evaluation.json')}, {os.path.join(out, 'confusion_matrix.png')}")
    return result


def _is_token_run(args: argparse.Namespace) -> bool:
    """Whether the command trains or evaluates a token classifier: a CoNLL `--dataset` (by extension
    .conll / .iob / .iob2 / .bio, or by content; `data.conll.is_conll_file`), or for `evaluate` a
    token-classification checkpoint."""
    from .token_classification import is_conll_dataset, is_token_checkpoint

    if is_conll_dataset(args.dataset):
        return True
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint is not None and is_token_checkpoint(checkpoint):
        raise ValueError(f"--checkpoint {checkpoint!r} is a token classifier; evaluate it on a CoNLL file (token and "
                         f"tag columns, e.g. dev.conll), not {args.dataset!r}")
    return False


#: Options of `train` that need one label per example; a token-classification run refuses them when set.
_PER_EXAMPLE_OPTIONS = {"train_per_class": None, "class_counts": None, "label_noise": 0.0, "class_balanced": False,
                        "noisy_labels": False, "other_steps": "ce", "streaming": False}


def run_token_method(method: str, args: argparse.Namespace, output_dir: str,
                     resume: str | None = None) -> dict[str, Any]:
    """`run_method` for CoNLL data: trains a token classifier with `method` (MultiMix mixes every token
    position over the examples labelled there) and writes `metrics.json` with the entity scores
    (precision, recall, F1, per type) of the final model on the evaluation sentences."""
    from .token_classification import (create_token_classifier, evaluate_tokens, load_conll_splits, tag_set,
                                       token_loaders)
    from .training import TrainingConfig, train

    if method in recipes.INPUT_MIX_METHODS:
        raise ValueError(f"--method {method} mixes input images; CoNLL data is text: use multimix, dense-multimix, "
                         "manifold-mixup or erm")
    given = [f"--{k.replace('_', '-')}" for k, default in _PER_EXAMPLE_OPTIONS.items()
             if getattr(args, k, default) != default]
    if given:
        raise ValueError(f"{', '.join(given)} need one label per example; CoNLL data has a tag per token: drop them")
    multimix_config(method, args)  # every MultiMix number checked before the data loads
    train_part, held, notes = load_conll_splits(args.dataset, args.val_dataset, args.val_split, args.max_eval,
                                                args.seed)
    import torch

    torch.manual_seed(args.seed)  # the new token head starts from the same weights for every method
    clf = create_token_classifier(args.model, tag_set(train_part, held), getattr(args, "max_length", None))
    train_loader, eval_loader = token_loaders(train_part, held, clf, args.batch_size, args.seed)
    for note in notes:
        print(f"hf-multimix: {note}", flush=True)
    os.makedirs(output_dir, exist_ok=True)
    write_args_yaml(args, output_dir, method)
    head = head_for(method, clf.model, args)
    print(f"hf-multimix: {method}: MultiMix options {head.multimix_config.describe()} (token classification)",
          flush=True)
    lr = args.lr if args.lr is not None else recipes.default_lr("text")
    epochs = run_epochs(args, "text", train_loader)
    config = TrainingConfig(
        output_dir=output_dir, epochs=epochs, lr=lr, weight_decay=args.weight_decay,
        gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision, seed=args.seed,
        label_smoothing=args.label_smoothing, max_steps_per_epoch=args.max_steps_per_epoch, resume_from=resume,
        progress=not args.no_progress, eval_before_training=False, mix_off_epoch=args.mix_off_epoch,
        eval_every=args.eval_every,
    )
    t0 = time.perf_counter()
    history = train(head, train_loader, eval_loader, config, save_with_model=(clf.tokenizer,))
    elapsed = time.perf_counter() - t0
    scores = evaluate_tokens(head.model, eval_loader, clf.tag_names)
    history = [h for h in history if h["epoch"] > 0]
    final = history[-1] if history else {}
    metrics = {
        "method": method, "model": clf.name, "dataset": str(args.dataset), "task": "token",
        "num_classes": len(clf.tag_names), "tag_names": list(clf.tag_names),
        "train_sentences": len(train_part), "eval_sentences": len(held),
        "eval_f1": scores.f1, "eval_precision": scores.precision, "eval_recall": scores.recall,
        "eval_per_type": scores.per_type, "eval_entities": scores.true_entities,
        # token accuracy over the labelled word pieces, per epoch: what checkpoint-best was chosen by
        "eval_accuracy": final.get("eval_accuracy"),
        "best_eval_accuracy": max((h["eval_accuracy"] for h in history if "eval_accuracy" in h), default=None),
        "train_time_s": elapsed, "epochs": epochs, "lr": lr, "seed": args.seed,
        "data_notes": list(notes),
        "args": {**resolved_args(args), "method": method, "lr": lr, "alpha": method_alpha(method, args.alpha)},
        "multimix_config": head.multimix_config.to_dict(),
        "history": history,
    }
    with open(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    _plot_curves({method: history}, os.path.join(output_dir, "training_curves.png"))
    print(f"{method}: entity F1 {scores.f1:.4f} (precision {scores.precision:.4f}, recall {scores.recall:.4f}; "
          + ", ".join(f"{k} {v['f1']:.3f}" for k, v in scores.per_type.items()) + ")", flush=True)
    return metrics


def evaluate_token_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """`evaluate` of a token classifier on a CoNLL file: entity precision, recall, F1 and per-type F1
    into `evaluation.json`."""
    from .data.conll import read_conll
    from .models import find_checkpoint
    from .token_classification import evaluate_tokens, is_token_checkpoint, load_token_classifier, token_loaders

    if not is_token_checkpoint(args.checkpoint):
        raise ValueError(f"--dataset {args.dataset!r} is a CoNLL file (a tag per token) but --checkpoint "
                         f"{args.checkpoint!r} is not a token classifier; evaluate a run trained on CoNLL files")
    clf = load_token_classifier(args.checkpoint)
    data = read_conll(args.dataset)
    _, loader = token_loaders(None, data, clf, args.batch_size)
    scores = evaluate_tokens(clf.model, loader, clf.tag_names)
    out = args.output_dir or args.checkpoint
    os.makedirs(out, exist_ok=True)
    result = {"checkpoint": str(find_checkpoint(args.checkpoint)), "dataset": args.dataset, "task": "token",
              **scores.as_dict()}
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"entity F1 {scores.f1:.4f}, precision {scores.precision:.4f}, recall {scores.recall:.4f} on "
          f"{scores.sentences} sentences ({scores.true_entities} entities), token accuracy {scores.token_accuracy:.4f}")
    for name, s in scores.per_type.items():
        print(f"  {name}: F1 {s['f1']:.4f} (precision {s['precision']:.4f}, recall {s['recall']:.4f}, "
              f"{s['support']} entities)")
    print(f"-> {os.path.join(out, 'evaluation.json')}")
    return result


def claim_output_dir(args: argparse.Namespace) -> None:
    """Checks the run folder of `train` / `compare` before anything loads: a file, an unwritable
    folder, or a folder holding another run are refused with the fixes; with `--overwrite` an
    earlier run is moved aside (never deleted)."""
    from .training import CLI_RUN_MARKERS, check_run_folder, move_run_aside, resume_checkpoint

    resume = getattr(args, "resume", None)
    if resume is not None:
        if args.overwrite:
            raise ValueError("--resume continues the run in --output-dir and --overwrite moves it aside; pass one")
        resume_checkpoint(resume)  # a missing checkpoint is an error now, not after the data loads
    check_run_folder(args.output_dir, resume, markers=(), cli=True)  # a file, or not writable
    if args.overwrite:
        moved = move_run_aside(args.output_dir)
        if moved is not None:
            print(f"hf-multimix: --overwrite: moved the earlier run in {args.output_dir} to {moved}", flush=True)
        return
    for folder in [args.output_dir, *(os.path.join(args.output_dir, m) for m in getattr(args, "methods", []))]:
        check_run_folder(folder, resume, markers=CLI_RUN_MARKERS, cli=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_config_argv(argv, parser))
    setup_logging(args.log_level)
    import transformers

    # Loading a pretrained body under a new head reports the fresh head's weights; expected here.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        if args.command == "predict":
            predict(args)
        elif args.command == "evaluate":
            evaluate(args)
        else:
            claim_output_dir(args)
            if args.command == "train":
                if args.noisy_labels and args.method not in MULTIMIX_METHODS:
                    raise ValueError(f"--noisy-labels is a MultiMix recipe; --method {args.method} does not use it. "
                                     "Use --method multimix (or dense-multimix), or drop --noisy-labels.")
                metrics = run_method(args.method, args, args.output_dir, resume=args.resume)
                print(_summary(metrics, args.output_dir))
            else:
                compare(args)
    except (ValueError, OSError, ImportError, RuntimeError, FloatingPointError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"hf-multimix: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        last = os.path.join(getattr(args, "output_dir", None) or ".", "checkpoint-last")
        hint = f"; continue with --resume {last}" if args.command == "train" and os.path.isdir(last) else ""
        print(f"hf-multimix: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

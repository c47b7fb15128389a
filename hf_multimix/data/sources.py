"""From a data set name or path to the training and evaluation splits a run uses.

One resolver for the CLI (`train`, `compare`, `evaluate`), the benchmarks and the Python API:

* a source with its own evaluation split keeps it: an image folder with ``train/`` and
  ``val/`` (or ``validation/``, ``test/``), a CSV with a ``split`` column, a Hugging Face
  dataset with a validation or test split, or a second source given as ``val_dataset``;
* any other source is split per class with ``val_split`` of each class held out (default
  0.1, at least one example per class);
* every example is used unless ``train_per_class`` / ``max_eval`` cap it. ``train_per_class``
  alone keeps today's low-data benchmark split: that many per class for training, the rest
  for evaluation.

The embedded demo data sets (mnist, digits, tweets, newsgroups, reuters8) default to the demo size
:data:`DEMO_CAPS` when neither ``train_per_class`` nor ``val_split`` is given.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import ClassificationData, Split, _concat, split
from .embedded import digits, mnist, mnist_multilabel, newsgroups, reuters8, tweets
from .files import hf_dataset, image_folder, text_csv

__all__ = ["DEFAULT_VAL_SPLIT", "DEMO_CAPS", "DEMO_IMAGE_SIZE", "evaluation_split", "is_embedded", "load_source", "load_splits", "relabel"]

DEFAULT_VAL_SPLIT = 0.1
"""Fraction of each class held out when a source has no evaluation split (timm and the
Hugging Face examples use 0.1 as well)."""

DEMO_IMAGE_SIZE = 64
"""Image size of runs on the embedded demo digits (28x28 MNIST, 8x8 digits), which train without
augmentation: the README main job stays a few minutes on a CPU. Other data default to the model's
pretrained input size."""

DEMO_CAPS: dict[str, int] = {"train_per_class": 100, "max_eval": 1000}
"""Size of a run on an embedded demo data set when no split option is given (minutes on a CPU; the main job's time is in bench/results/main_job.json)."""

_EMBEDDED = {"mnist": mnist, "digits": digits, "tweets": tweets, "newsgroups": newsgroups, "reuters8": reuters8,
             "mnist-multilabel": mnist_multilabel}


def is_embedded(name: str | Path) -> bool:
    """Whether ``name`` is one of the embedded demo data sets."""
    return isinstance(name, str) and name.strip().lower() in _EMBEDDED


def load_source(name_or_path: str | Path, image_size: int | None = None, lazy: bool = False,
                streaming: bool = False, multi_label: bool | None = None,
                label_separator: str = "|") -> ClassificationData:
    """One data source as loaded (own evaluation split kept, nothing held out yet).

    Image folders and Hugging Face image datasets are resized to ``image_size`` when decoded, and
    image files whose header cannot be read are skipped (counted in ``notes``). With ``lazy`` they
    are only indexed (:class:`~hf_multimix.data.files.ImageFiles`, Arrow rows): nothing is decoded.
    ``streaming`` reads a Hugging Face data set as ``IterableDataset`` streams (``hf:`` sources only).
    ``multi_label`` (None: detected from the data) and ``label_separator`` say how CSV label cells and an
    image folder's ``labels.csv`` are read (:mod:`hf_multimix.data.multilabel`).

    Raises:
        ValueError: an unknown name, or bad content (the message says what to change).
        FileNotFoundError: a path that does not exist.
    """
    from . import load_data

    text = str(name_or_path).strip()
    if streaming and not text.lower().startswith("hf:"):
        raise ValueError(f"--streaming reads Hugging Face data sets (hf:<name or save_to_disk folder>); "
                         f"{text!r} is not one: drop --streaming (folders and CSVs are indexed, never held whole)")
    if multi_label and (streaming or text.lower().startswith("hf:")):
        raise ValueError(f"multi-label data is read from a CSV or an image folder with labels.csv; {text!r} is a "
                         "Hugging Face data set: drop --multi-label")
    if streaming:
        return hf_dataset(text[3:].strip(), image_size=image_size, streaming=True)
    if is_embedded(text):
        data = _EMBEDDED[text.lower()]()
        if multi_label is not None and data.multi_label != bool(multi_label):
            raise ValueError(f"{text!r} is {'multi' if data.multi_label else 'single'}-label data; drop --multi-label "
                             "or choose mnist-multilabel")
        return data
    if text.lower().startswith("hf:"):
        return hf_dataset(text[3:].strip(), image_size=image_size, lazy=lazy)
    path = Path(text).expanduser()
    labels = {} if multi_label is None and label_separator == "|" else dict(multi_label=multi_label,
                                                                            label_separator=label_separator)
    if path.is_dir():
        return image_folder(path, image_size=image_size, skip_unreadable=True, lazy=lazy, **labels)
    if path.suffix.lower() in (".csv", ".tsv"):
        return text_csv(path, lazy=lazy, **labels)
    return load_data(text)  # raises the error that lists the valid choices


def relabel(part: Split, names: Sequence[str], class_names: Sequence[str], where: str) -> Split:
    """``part`` (labels indexing ``names``) with labels indexing ``class_names``, matched by name.

    Raises:
        ValueError: a class of ``names`` that ``class_names`` lacks.
    """
    if part.labels.ndim == 2:  # multi-hot columns, matched by name
        from .multilabel import relabel_multi_hot

        return Split(part.inputs, relabel_multi_hot(part.labels, names, class_names, where))
    class_names = list(class_names)
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ValueError(
            f"{where} has class(es) {unknown[:10]} that are not among the classes trained on ({class_names[:20]}); "
            "use the same class names"
        )
    to_id = np.asarray([class_names.index(n) for n in names], dtype=np.int64)
    return Split(part.inputs, to_id[part.labels])


def _pooled(data: ClassificationData) -> Split:
    """Train and eval of ``data`` as one split."""
    if data.eval is not None and hasattr(data.train.inputs, "concat"):
        return _concat(data.train, data.eval)
    parts = [data.train] + ([data.eval] if data.eval is not None else [])
    inputs: Any
    if all(isinstance(p.inputs, np.ndarray) for p in parts) and len({p.inputs.shape[1:] for p in parts}) == 1:
        inputs = np.concatenate([p.inputs for p in parts])
    else:
        inputs = [x for p in parts for x in p.inputs]
    return Split(inputs, np.concatenate([p.labels for p in parts]))


def evaluation_split(dataset: str | Path, class_names: Sequence[str], image_size: int | None = None,
                     lazy: bool = False, multi_label: bool | None = None,
                     label_separator: str = "|") -> tuple[Split, tuple[str, ...]]:
    """What ``hf-multimix evaluate`` scores: the evaluation split of ``dataset`` if it has one
    (``val/``, a ``split`` column, a Hugging Face validation split), else all of it, labelled
    by ``class_names``; ``lazy`` indexes images as ``train`` does (see :func:`load_source`).
    Returns the split and the loading notes. ``multi_label`` reads the labels as sets (a multi-label
    model's data) or refuses data that has them (False: a single-label model's)."""
    data = load_source(dataset, image_size, lazy=lazy, multi_label=True if multi_label else None,
                       label_separator=label_separator)
    if multi_label is False and data.multi_label:
        raise ValueError(f"{str(dataset)!r} has several labels per example, but the model is single-label; evaluate "
                         "a multi-label model's checkpoint (trained with --multi-label or on such data)")
    part, which = (data.eval, "its evaluation split") if data.eval is not None else (data.train, "all of it")
    notes = [n for n in data.notes if n.startswith(("skipped", "ignored"))]  # not the notes about training
    notes.append(f"evaluating on {str(dataset)!r}: {which}, {len(part)} example(s)")
    return relabel(part, data.class_names, class_names, repr(str(dataset))), tuple(notes)


def _cap_per_class(part: Split, num_classes: int, per_class: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(part.labels == c))[:per_class] for c in range(num_classes)]
    return part.subset(np.sort(np.concatenate(keep)))


def load_splits(
    dataset: str | Path,
    val_dataset: str | Path | None = None,
    val_split: float | None = None,
    train_per_class: int | None = None,
    max_eval: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    lazy: bool = True,
    streaming: bool = False,
    multi_label: bool | None = None,
    label_separator: str = "|",
) -> ClassificationData:
    """The training and evaluation splits of a run.

    Args:
        dataset: ``"mnist"``, ``"digits"``, ``"tweets"``, ``"newsgroups"``, ``"reuters8"``, an image
            folder (flat or ``train/`` + ``val/``), a CSV (``text``, ``label``, optional ``split``), or
            ``"hf:<name or folder>"``.
        val_dataset: A second source (folder or CSV) to evaluate on, with the same class names.
        val_split: Fraction of each class to hold out, in (0, 1), when the data has no evaluation
            split (default :data:`DEFAULT_VAL_SPLIT`).
        train_per_class: Cap on training examples per class. Alone, on data without an
            evaluation split: exactly that many per class train and the rest is evaluated on.
        max_eval: Cap on evaluation examples (a random subset, drawn with ``seed``).
        seed: Seed of every random choice; the same seed gives the same splits.
        image_size: Images are resized to this size when decoded (image folders, Hugging Face);
            None keeps each file's size (the model's transforms resize).
        lazy: Image folders and Hugging Face images are indexed, not decoded (their inputs read
            each image on demand, in the DataLoader's workers); the embedded demo data stay in memory.
        streaming: read a Hugging Face data set (``hf:``) as streams: it needs its own evaluation
            split, and takes no option that splits or caps per class (``max_eval`` takes the first rows).
        multi_label: several labels per example (a CSV label column such as ``sports|politics``, an
            image folder's ``labels.csv``): True forces it, None detects it from the data. Multi-label
            data without its own evaluation split is split at random (``val_split`` of the examples,
            seeded: :func:`hf_multimix.data.multilabel.random_split`); ``train_per_class`` does not apply.
        label_separator: what separates the labels of one example (default ``|``).

    Returns:
        ``ClassificationData`` with ``train`` and ``eval`` set; ``notes`` says where each came from.

    Raises:
        ValueError: a bad option or content, one line naming the problem and the fix.
        FileNotFoundError: a path that does not exist.

    Example:
        >>> data = load_splits("photos/")                  # doctest: +SKIP
        >>> len(data.train) + len(data.eval)                # every image in photos/   # doctest: +SKIP
    """
    if val_split is not None and not 0.0 < val_split < 1.0:
        raise ValueError(f"--val-split must be in (0, 1), got {val_split}; e.g. 0.1 holds out 10% of each class")
    if streaming:
        given = [flag for flag, value in (("--val-dataset", val_dataset), ("--val-split", val_split),
                                          ("--train-per-class", train_per_class)) if value is not None]
        if given:
            raise ValueError(f"--streaming reads the data as a stream, which cannot be split or capped per class; "
                             f"drop {', '.join(given)} or --streaming")
        data = load_source(dataset, image_size, streaming=True, multi_label=multi_label)
        if max_eval:
            data = replace(data, eval=data.eval.take(max_eval))
        return data
    data = load_source(dataset, image_size, lazy, multi_label=multi_label, label_separator=label_separator)
    notes = list(data.notes)
    if data.multi_label and train_per_class is not None:
        from .multilabel import random_split

        random_split(data, train_per_class=train_per_class)  # refused, with the reason
    if val_dataset is not None:
        if data.eval is not None:
            raise ValueError(
                f"{str(dataset)!r} has its own evaluation split; drop --val-dataset or point --dataset at the "
                "training part only"
            )
        extra = load_source(val_dataset, image_size, lazy, multi_label=True if data.multi_label else None,
                            label_separator=label_separator)
        if extra.multi_label != data.multi_label:
            raise ValueError(f"--val-dataset {str(val_dataset)!r} has several labels per example but --dataset does "
                             "not; give data of the same kind (or pass --multi-label)")
        if extra.modality != data.modality:
            raise ValueError(f"--val-dataset {str(val_dataset)!r} holds {extra.modality} but --dataset holds "
                             f"{data.modality}; give data of the same kind")
        where = f"--val-dataset {str(val_dataset)!r}"
        data = replace(data, eval=relabel(_pooled(extra), extra.class_names, data.class_names, where))
        notes += [*extra.notes, f"evaluating on {str(val_dataset)!r}"]
    present = np.flatnonzero(data.train.class_counts(data.num_classes))
    if len(present) < 2 and not data.multi_label:  # a multi-label classifier may tag one class
        found = ", ".join(repr(data.class_names[c]) for c in present) or "none"
        raise ValueError(
            f"{str(dataset)!r} has {len(present)} class with training examples ({found}); a classifier needs at "
            "least 2: add a subfolder (or label) per class"
        )
    if is_embedded(dataset) and train_per_class is None and val_split is None and data.eval is None:
        train_per_class = DEMO_CAPS["train_per_class"]
        max_eval = DEMO_CAPS["max_eval"] if max_eval is None else max_eval
        notes.append(f"demo size: {train_per_class} training examples per class, at most {max_eval} evaluated "
                     "(--val-split 0.1 uses the whole data set)")
    if data.eval is None:
        if val_split is None and train_per_class is not None:
            data = split(data, train_per_class=train_per_class, seed=seed)  # the low-data benchmark split
        else:
            fraction = DEFAULT_VAL_SPLIT if val_split is None else val_split
            data = split(data, train_per_class=train_per_class, eval_fraction=fraction, seed=seed)
            if data.multi_label:
                notes += [n for n in data.notes if n not in notes]
                notes.append(f"held out a seeded random {fraction:g} of the examples for evaluation (--val-split; "
                             "multi-label data is not stratified)")
            else:
                notes.append(f"held out {fraction:g} of each class for evaluation (--val-split)")
    else:
        if val_split is not None:
            raise ValueError(
                f"--val-split {val_split} would hold out part of the training data, but {str(dataset)!r} already "
                "has an evaluation split; drop --val-split"
            )
        if train_per_class is not None:
            data = replace(data, train=_cap_per_class(data.train, data.num_classes, train_per_class, seed))
    if max_eval and len(data.eval) > max_eval:
        rng = np.random.default_rng(seed)
        data = replace(data, eval=data.eval.subset(np.sort(rng.choice(len(data.eval), max_eval, replace=False))))
    if data.multi_label:
        from .multilabel import check_eval_classes

        check_eval_classes(data, repr(str(dataset if val_dataset is None else val_dataset)))
        per_example = float(data.train.labels.sum(1).mean()) if len(data.train) else 0.0
        notes.append(f"multi-label data: {data.num_classes} classes, {per_example:.2f} labels per training example "
                     "(binary cross-entropy; checkpoints chosen by mean average precision)")
    return replace(data, notes=tuple(notes))

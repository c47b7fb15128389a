"""Multi-label data: a set of classes per example, read from a label column such as ``sports|politics``.

* A text CSV (:func:`hf_multimix.data.text_csv`) whose label column holds several labels per row
  separated by :data:`MULTI_LABEL_SEPARATOR` (``|``; an empty cell is an example with no label).
* An image folder with a :data:`LABELS_FILE` (``labels.csv``) at its top, one row per image:
  ``file`` (the path below the folder) and ``labels`` (the same ``|``-separated sets), with an
  optional ``split`` column as in text CSVs (:func:`labelled_image_folder`).

Multi-label is detected from the data (a separator in some label cell) or forced
(``multi_label=True``, ``hf-multimix train --multi-label``); data with one label per row stays
single-label. The classes are the sorted union of the labels. Labels become float32 multi-hot
rows ``[N, num_classes]`` in :class:`~hf_multimix.data.base.Split`. There is no class per example
to stratify by, so a source without its own evaluation split is split at random
(:func:`random_split`).
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import ClassificationData, Split
from .files import (_GRAY_MODES, _SPLIT_VALUES, IMAGE_EXTENSIONS, ImageFiles, _label_vocabulary, _rows,
                    _size_pair, _stack_images, csv_delimiter, refuse_ambiguous_columns)

__all__ = ["MULTI_LABEL_SEPARATOR", "LABELS_FILE", "is_multi_label_column", "multi_hot", "random_split",
           "check_eval_classes", "relabel_multi_hot", "labelled_image_folder"]

MULTI_LABEL_SEPARATOR = "|"
"""What separates the labels of one example in a label cell (``sports|politics``)."""

LABELS_FILE = "labels.csv"
"""The file of a multi-label image folder: ``file,labels`` rows (optional ``split``)."""

_SEPARATORS = ("|", ";", ",", "\t")
"""Separators a label cell might use: one of them other than the chosen one, in a label, is refused."""


def check_separator(separator: str) -> str:
    """``separator`` if it can separate labels (a non-empty string without quotes or line breaks)."""
    if not isinstance(separator, str) or not separator.strip() or any(c in separator for c in "\"\r\n"):
        raise ValueError(f"the label separator must be a non-empty string such as '|' or ';', got {separator!r}")
    return separator


def is_multi_label_column(cells: Sequence[str], separator: str = MULTI_LABEL_SEPARATOR) -> bool:
    """Whether a label column holds several labels per example: ``separator`` in some cell."""
    return any(separator in str(c) for c in cells)


def multi_hot(cells: Sequence[str], rows: Sequence[int], separator: str, where: str,
              column: str = "label") -> tuple[tuple[str, ...], np.ndarray]:
    """Class names (the sorted union of the labels) and float32 multi-hot rows ``[N, C]`` of label cells.

    Labels are stripped of surrounding spaces; empty parts (``a||b``, an empty cell) add nothing.

    Args:
        cells: one label cell per example, e.g. ``"sports|politics"``.
        rows: the line number of each cell in its file (for the errors).
        separator: what separates the labels of a cell.
        where: the file, for the errors.
        column: the label column's name, for the errors.

    Raises:
        ValueError: a cell holding another separator (``a;b`` next to ``c|d``), or no label at all.

    Example:
        >>> multi_hot(["b|a", "", "a"], [2, 3, 4], "|", "x.csv")[1].tolist()
        [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    """
    separator = check_separator(separator)
    others = [s for s in _SEPARATORS if s not in separator]
    sets: list[tuple[str, ...]] = []
    mixed: dict[int, str] = {}
    for cell, row in zip(cells, rows):
        parts = tuple(dict.fromkeys(p.strip() for p in str(cell).split(separator) if p.strip()))
        other = next((s for s in others if any(s in p for p in parts)), None)
        if other is not None:
            mixed[row] = other
        sets.append(parts)
    if mixed:
        found = sorted(set(mixed.values()))
        raise ValueError(
            f"{where}, {_rows(sorted(mixed))}: the '{column}' column mixes separators: labels are separated by "
            f"{separator!r} but these cells also hold {found}; use one separator in every cell (or name it with "
            "--label-separator / label_separator=...)"
        )
    names, to_id = _label_vocabulary(p for parts in sets for p in parts)
    if not names:
        raise ValueError(
            f"{where}: no example has a label (every '{column}' cell is empty), so there are no classes; give each "
            f"example its labels separated by {separator!r}, e.g. sports{separator}politics"
        )
    labels = np.zeros((len(sets), len(names)), np.float32)
    for i, parts in enumerate(sets):
        labels[i, [to_id[p] for p in parts]] = 1.0
    return names, labels


def relabel_multi_hot(labels: np.ndarray, names: Sequence[str], class_names: Sequence[str], where: str) -> np.ndarray:
    """Multi-hot ``labels`` over ``names`` as columns over ``class_names``, matched by name.

    Raises:
        ValueError: a class of ``names`` that ``class_names`` lacks.
    """
    class_names = list(class_names)
    unknown = [n for n, k in zip(names, (labels > 0.5).sum(0)) if n not in class_names and k > 0]
    if unknown:
        raise ValueError(
            f"{where} has class(es) {unknown[:10]} that are not among the classes trained on ({class_names[:20]}); "
            "use the same class names"
        )
    out = np.zeros((len(labels), len(class_names)), np.float32)
    for j, n in enumerate(names):
        if n in class_names:
            out[:, class_names.index(n)] = labels[:, j]
    return out


def random_split(data: ClassificationData, eval_fraction: float | None = None, seed: int = 0,
                 train_per_class: int | None = None) -> ClassificationData:
    """A seeded random train/eval split of multi-label data (there is no one class per example to
    stratify by): the pooled examples are shuffled with ``numpy.random.default_rng(seed)`` and
    ``round(eval_fraction * N)`` (at least 1) are held out. A class whose every example was drawn
    for evaluation would be unlearnable, so those examples move back to training (said in ``notes``).

    Raises:
        ValueError: ``train_per_class`` (no per-class caps on multi-label data), or too few examples.

    Example:
        >>> data = random_split(mnist_multilabel(), 0.1, seed=0)   # doctest: +SKIP
    """
    from .base import _concat

    if train_per_class is not None:
        raise ValueError(
            "--train-per-class / train_per_class caps the examples of each class, which multi-label data (several "
            "classes per example) does not have; drop it (a seeded random --val-split is held out instead)"
        )
    fraction = 0.2 if eval_fraction is None else eval_fraction
    pool = data.train if data.eval is None else _concat(data.train, data.eval)
    n = len(pool)
    n_eval = max(1, int(round(fraction * n)))
    if n_eval >= n:
        raise ValueError(f"{data.name!r} has {n} example(s): too few to hold out {n_eval} for evaluation and train on "
                         "the rest; add examples or give a separate validation set")
    order = np.random.default_rng(seed).permutation(n)
    held, kept = order[:n_eval], order[n_eval:]
    positive = pool.labels > 0.5
    unseen = ~positive[kept].any(axis=0) & positive[held].any(axis=0)
    notes = list(data.notes)
    if unseen.any():  # their held-out examples train instead
        back = held[positive[held][:, unseen].any(axis=1)]
        held, kept = np.setdiff1d(held, back), np.concatenate([kept, back])
        names = [data.class_names[c] for c in np.flatnonzero(unseen)]
        notes.append(f"{len(back)} held-out example(s) moved to training: they hold the only examples of class(es) "
                     f"{names[:10]}")
    return replace(data, train=pool.subset(np.sort(kept)), eval=pool.subset(np.sort(held)), notes=tuple(notes))


def check_eval_classes(data: ClassificationData, where: str) -> None:
    """Refuses multi-label splits where a class occurs only in the evaluation split (a classifier
    cannot learn a class it never sees), or where no evaluation example has a label (no mean
    average precision to select checkpoints by)."""
    if data.eval is None or not data.multi_label:
        return
    train, held = data.train.class_counts(data.num_classes), data.eval.class_counts(data.num_classes)
    only = [data.class_names[c] for c in np.flatnonzero((train == 0) & (held > 0))]
    if only:
        raise ValueError(
            f"{where}: class(es) {only[:10]} occur only in the evaluation split; a classifier cannot learn a class it "
            "never sees in training: add training examples of them or remove them from the evaluation examples"
        )
    if not held.any():
        raise ValueError(f"{where}: no evaluation example has a label, so there is nothing to score (mean average "
                         "precision); give the evaluation examples their labels")


def labelled_image_folder(
    root: str | Path,
    image_size: int | Sequence[int] | None = None,
    mode: str | None = None,
    skip_unreadable: bool = False,
    lazy: bool = False,
    multi_label: bool | None = None,
    label_separator: str = MULTI_LABEL_SEPARATOR,
) -> ClassificationData:
    """An image folder labelled by its :data:`LABELS_FILE`: ``file,labels`` rows (optional ``split``).

    ``file`` is the image's path below ``root`` (subfolders allowed); ``labels`` its labels separated by
    ``label_separator`` (``cat|dog``; empty: no label). The ``split`` column, if there, sends a row to
    ``train`` (``train``) or ``eval`` (``val``, ``validation``, ``test``, ...). Multi-label when some cell
    holds the separator or ``multi_label`` is True; otherwise every row needs exactly one label and the
    data is single-label.

    Args:
        root: the folder holding ``labels.csv`` and the images.
        image_size: ``H`` or ``(H, W)`` to resize to on decoding.
        mode: ``"L"``, ``"RGB"`` or None (``"L"`` when every image is grayscale, from the headers).
        skip_unreadable: skip images whose header cannot be read (counted in ``notes``).
        lazy: index only (an :class:`~hf_multimix.data.files.ImageFiles`).
        multi_label: True forces multi-label, False single-label, None detects.
        label_separator: what separates the labels of a cell.

    Raises:
        ValueError: missing columns, files that do not exist, mixed separators, no labels at all, or
            (single-label) a row without exactly one label.

    Example:
        >>> data = labelled_image_folder("photos/")    # photos/labels.csv: file,labels / a.jpg,cat|dog   # doctest: +SKIP
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(root).expanduser()
    file = folder / LABELS_FILE
    where = f"{str(file)!r}"
    label_separator = check_separator(label_separator)
    encoding = "utf-8-sig"
    try:
        delimiter = csv_delimiter(file, encoding, ("file", "labels"))
        if delimiter in label_separator:
            raise ValueError(f"{where} is delimited by {delimiter!r}, which also separates the labels; use ',' "
                             "between the columns (quote the label cells) or another --label-separator")
        with open(file, encoding=encoding, newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = [c.strip() for c in reader.fieldnames or []]
            absent = [c for c in ("file", "labels") if c not in columns]
            if absent:
                raise ValueError(f"{where} has no column(s) {absent}; found columns {columns}. It needs a header "
                                 f"'file,labels' and one row per image, e.g. 'a.jpg,cat{label_separator}dog'")
            refuse_ambiguous_columns(file, columns, ("file", "labels", "split"))
            reader.fieldnames = columns
            rows = [(line_no, (r.get("file") or "").strip(), r.get("labels") or "", (r.get("split") or "").strip().lower())
                    for line_no, r in enumerate(reader, start=2)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not valid UTF-8 ({e}); save it as UTF-8") from e
    except csv.Error as e:
        raise ValueError(f"{where} cannot be parsed ({e}); check its quoting") from e
    if not rows:
        raise ValueError(f"{where} has a header {columns} but no rows; add one row per image")
    has_split = "split" in columns
    bad_split = [n for n, _, _, s in rows if has_split and s not in _SPLIT_VALUES]
    if bad_split:
        raise ValueError(f"{where}, {_rows(bad_split)}: 'split' must be 'train' or 'val' / 'validation' / 'test'")
    no_file = [n for n, p, _, _ in rows if not p]
    missing = [n for n, p, _, _ in rows if p and not (folder / p).is_file()]
    if no_file or missing:
        n = (no_file or missing)[0]
        raise ValueError(f"{where}, {_rows(no_file or missing)}: {'empty file' if no_file else 'no such image'} "
                         f"(e.g. row {n}); 'file' is the image's path below {str(folder)!r}: fix or remove the rows")
    not_images = [n for n, p, _, _ in rows if Path(p).suffix.lower() not in IMAGE_EXTENSIONS]
    if not_images:
        raise ValueError(f"{where}, {_rows(not_images)}: not an image file (suffixes: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    # headers only, as image_folder reads a folder: unreadable files found, the mode chosen, nothing decoded
    kept, modes, bad = [], [], []
    for row in rows:
        try:
            with Image.open(folder / row[1]) as img:
                modes.append(img.mode)
            kept.append(row)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            if not skip_unreadable:
                raise ValueError(f"cannot read image {str(folder / row[1])!r} ({e}); remove or replace the file") from e
            bad.append((row, e))
    notes = []
    if bad:
        (_, p, _, _), e = bad[0]
        notes.append(f"skipped {len(bad)} unreadable image file(s) listed in {where} (e.g. {p!r}: {e})")
    if not kept:
        raise ValueError(f"{where}: none of the listed images can be read")
    mode = mode or ("L" if all(m in _GRAY_MODES for m in modes) else "RGB")
    lines, cells = [r[0] for r in kept], [r[2] for r in kept]
    multi = is_multi_label_column(cells, label_separator) if multi_label is None else bool(multi_label)
    if multi:
        names, labels = multi_hot(cells, lines, label_separator, where, "labels")
    else:
        empty = [n for n, c in zip(lines, cells) if not c.strip()]
        if empty:
            raise ValueError(f"{where}, {_rows(empty)}: empty 'labels'; every row of single-label data needs a label "
                             f"(or pass --multi-label: several labels per image, separated by {label_separator!r})")
        names, to_id = _label_vocabulary(c.strip() for c in cells)
        labels = np.asarray([to_id[c.strip()] for c in cells], np.int64)
    size = _size_pair(image_size)
    paths = [str(folder / r[1]) for r in kept]
    inputs: Any = ImageFiles(paths, mode, size)
    if not lazy:
        inputs = _stack_images([inputs[i] for i in range(len(paths))], paths, where)
    split_of = Split(inputs, labels)
    which = np.asarray([_SPLIT_VALUES[r[3]] if has_split else "train" for r in kept])
    train_idx, eval_idx = np.flatnonzero(which == "train"), np.flatnonzero(which == "eval")
    if not len(train_idx):
        raise ValueError(f"{where}: no row has 'split' = 'train'; mark the training rows")
    if has_split:
        notes.append(f"{where}: {len(train_idx)} training and {len(eval_idx)} evaluation images from its 'split' "
                     "column")
    return ClassificationData(str(folder), "image", names, split_of.subset(train_idx),
                              split_of.subset(eval_idx) if len(eval_idx) else None, tuple(notes))

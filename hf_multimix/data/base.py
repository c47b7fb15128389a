"""Containers for small classification data sets, and a stratified train/eval split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence, Union

import numpy as np

Modality = Literal["image", "text"]
Inputs = Union[np.ndarray, list, Any]
"""uint8 images ``[N, H, W]`` (grayscale) or ``[N, H, W, C]`` (C = 3), texts ``list[str]``, or a
sequence read on demand (``ImageFiles``, Hugging Face rows) whose ``[i]`` is one uint8 image and
which has ``subset(indices)`` and ``concat(other)``."""


@dataclass(frozen=True)
class Split:
    """One split: inputs and labels of the same length.

    Attributes:
        inputs: uint8 ndarray ``[N, H, W]`` / ``[N, H, W, 3]`` for images (or a sequence that decodes
            them on demand, see :data:`Inputs`), ``list[str]`` for texts.
        labels: int64 ndarray ``[N]`` with values in ``[0, num_classes)`` (single-label), or float32
            multi-hot rows ``[N, num_classes]`` of 0 and 1 (multi-label: several classes per example).
    """

    inputs: Inputs
    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim == 2:  # multi-label: one multi-hot row per example
            if labels.size and not np.isin(labels, (0, 1)).all():
                raise ValueError("multi-hot labels [N, num_classes] must hold 0 (absent) and 1 (present) only")
            object.__setattr__(self, "labels", labels.astype(np.float32, copy=False))
        elif labels.ndim != 1:
            raise ValueError(f"labels must be 1-D class ids or 2-D multi-hot rows, got shape {labels.shape}")
        else:
            if labels.size and not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
            object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Split":
        """Rows ``indices`` (in the given order) as a new split."""
        idx = np.asarray(indices, dtype=np.int64)
        if hasattr(self.inputs, "subset"):  # read on demand: only the index is subset
            inputs: Inputs = self.inputs.subset(idx)
        elif isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Split(inputs, self.labels[idx])

    @property
    def multi_label(self) -> bool:
        """Whether the labels are multi-hot rows (several classes per example)."""
        return self.labels.ndim == 2

    def class_counts(self, num_classes: int) -> np.ndarray:
        """int64 ``[num_classes]``: number of samples of each class (multi-label: holding it)."""
        if self.multi_label:
            return (self.labels > 0.5).sum(axis=0).astype(np.int64)
        return np.bincount(self.labels, minlength=num_classes).astype(np.int64)


@dataclass(frozen=True)
class ClassificationData:
    """A classification data set: a ``train`` split and an optional ``eval`` split.

    Loaders return everything they read in ``train`` (``eval=None``) unless the source has its
    own held-out split (e.g. a Hugging Face ``test`` split); use ``split`` to make one.

    Attributes:
        name: Short description of the source (e.g. ``"mnist"``, a path, ``"hf:imdb"``).
        modality: ``"image"`` or ``"text"``.
        class_names: One name per class id; ``num_classes == len(class_names)``.
        train: Training split.
        eval: Evaluation split, or None.
        notes: What loading did that a user should hear about (skipped files, which folder
            became the evaluation split), one line each.
    """

    name: str
    modality: Modality
    class_names: tuple[str, ...]
    train: Split
    eval: Split | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.modality not in ("image", "text"):
            raise ValueError(f"modality must be 'image' or 'text', got {self.modality!r}")
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for part_name, part in (("train", self.train), ("eval", self.eval)):
            if part is None or not hasattr(part, "labels") or len(part) == 0:  # a stream: labels read as it goes
                continue
            if part.labels.ndim == 2:
                if part.labels.shape[1] != self.num_classes:
                    raise ValueError(f"{part_name} multi-hot labels have {part.labels.shape[1]} columns but there "
                                     f"are {self.num_classes} class names")
                continue
            lo, hi = int(part.labels.min()), int(part.labels.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(
                    f"{part_name} labels span [{lo}, {hi}] but there are {self.num_classes} class names"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        """Whether the examples carry sets of classes (multi-hot labels) rather than one class each."""
        return getattr(getattr(self.train, "labels", None), "ndim", 1) == 2

    def __repr__(self) -> str:
        ev = "None" if self.eval is None else str(len(self.eval))
        return (
            f"ClassificationData(name={self.name!r}, modality={self.modality!r}, "
            f"num_classes={self.num_classes}, train={len(self.train)}, eval={ev})"
        )


def _concat(a: Split, b: Split) -> Split:
    if hasattr(a.inputs, "concat") and type(a.inputs) is type(b.inputs):
        return Split(a.inputs.concat(b.inputs), np.concatenate([a.labels, b.labels]))
    if isinstance(a.inputs, np.ndarray) and isinstance(b.inputs, np.ndarray):
        inputs: Inputs = np.concatenate([a.inputs, b.inputs])
    else:
        inputs = list(a.inputs) + list(b.inputs)
    return Split(inputs, np.concatenate([a.labels, b.labels]))


def split(
    data: ClassificationData,
    train_per_class: int | None = None,
    eval_fraction: float | None = None,
    seed: int = 0,
) -> ClassificationData:
    """Deterministic stratified train/eval split.

    All samples of ``data`` (``train`` plus ``eval`` if present) are pooled, then each class
    is shuffled with ``numpy.random.default_rng(seed)`` and cut:

    * ``eval_fraction`` given: ``round(eval_fraction * n_c)`` samples (at least 1) of class c go
      to eval; of the rest, at most ``train_per_class`` (all if None) go to train, the others
      are dropped.
    * ``eval_fraction`` None and ``train_per_class`` given: ``train_per_class`` samples per class
      go to train and *all the rest* to eval (the few-shot benchmark setting).
    * both None: ``eval_fraction=0.2``.

    Indices within each split are returned in ascending original order. Multi-label data (no one
    class per example to stratify by) is split at random instead: see
    :func:`hf_multimix.data.multilabel.random_split`.

    Args:
        data: Data set to split.
        train_per_class: Cap on training samples per class.
        eval_fraction: Fraction of each class held out, in (0, 1).
        seed: Seed; the same seed gives the same split.

    Returns:
        A new ``ClassificationData`` with ``train`` and ``eval`` set.

    Raises:
        ValueError: bad arguments, or a class too small for the request.
    """
    if train_per_class is not None and train_per_class < 1:
        raise ValueError(f"train_per_class must be >= 1 or None, got {train_per_class}")
    if eval_fraction is not None and not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1) or None, got {eval_fraction}")
    if eval_fraction is None and train_per_class is None:
        eval_fraction = 0.2
    if data.multi_label:  # no class to stratify by: a seeded random split
        from .multilabel import random_split

        return random_split(data, eval_fraction, seed, train_per_class)
    pool = data.train if data.eval is None else _concat(data.train, data.eval)
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    eval_idx: list[np.ndarray] = []
    for c in range(data.num_classes):
        members = np.flatnonzero(pool.labels == c)
        n = len(members)
        if n == 0:
            continue
        members = members[rng.permutation(n)]
        if eval_fraction is not None:
            n_eval = max(1, int(round(eval_fraction * n)))
            if n_eval >= n:
                raise ValueError(
                    f"class {c} ({data.class_names[c]!r}) has {n} sample(s): too few to keep any for "
                    f"training after holding out {n_eval} for evaluation (eval_fraction={eval_fraction}); "
                    "add examples of this class, remove it, or give a separate validation set"
                )
            ev, tr = members[:n_eval], members[n_eval:]
            if train_per_class is not None:
                tr = tr[:train_per_class]
        else:
            assert train_per_class is not None
            if n <= train_per_class:
                raise ValueError(
                    f"class {c} ({data.class_names[c]!r}) has {n} sample(s), so train_per_class="
                    f"{train_per_class} leaves none for eval; use train_per_class < {n}"
                )
            tr, ev = members[:train_per_class], members[train_per_class:]
        train_idx.append(tr)
        eval_idx.append(ev)
    if not train_idx:
        raise ValueError(f"{data.name!r} has no samples to split")
    return replace(
        data,
        train=pool.subset(np.sort(np.concatenate(train_idx))),
        eval=pool.subset(np.sort(np.concatenate(eval_idx))),
    )


def flip_labels(part: Split, fraction: float, num_classes: int, seed: int = 0) -> Split:
    """Symmetric label noise: ``round(fraction * len(part))`` examples get another class.

    The examples are drawn without replacement and each gets a class drawn uniformly from the
    ``num_classes - 1`` others, with ``numpy.random.default_rng(seed)``: the same seed flips the
    same labels. Used to test how a method copes with noisy training labels.

    Args:
        part: The split whose labels to corrupt (usually ``data.train``; keep ``eval`` clean).
        fraction: Fraction of the examples to flip, in ``[0, 1]``.
        num_classes: Number of classes (at least 2 when anything is flipped).
        seed: Seed of the draw.

    Returns:
        A new ``Split`` with the same inputs and the flipped labels.

    Example:
        >>> noisy = flip_labels(Split(np.zeros((10, 2, 2), np.uint8), np.arange(10) % 2), 0.2, 2)
        >>> int((noisy.labels != np.arange(10) % 2).sum())
        2
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    count = int(round(fraction * len(part)))
    if count == 0:
        return part
    if num_classes < 2:
        raise ValueError(f"flipping labels needs at least 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(part), count, replace=False)
    labels = part.labels.copy()
    # an offset in [1, num_classes) never maps a label to itself
    labels[idx] = (labels[idx] + rng.integers(1, num_classes, count)) % num_classes
    return Split(part.inputs, labels)


def subsample_classes(part: Split, counts: Sequence[int], num_classes: int, seed: int = 0) -> Split:
    """Keeps at most ``counts[c]`` examples of each class c: a long-tailed version of a split.

    Each class's examples are shuffled with ``numpy.random.default_rng(seed)`` and the first
    ``counts[c]`` kept (all of them when the class has fewer), in ascending original order. Used on
    the training split to test how a method copes with rare classes; cut only ``train``, so the
    held-out examples (and their class balance) stay those of the balanced run with the same seed.

    Args:
        part: The split to cut (usually ``data.train``).
        counts: One cap per class, in class-id order, each >= 1.
        num_classes: Number of classes (``len(counts)`` must equal it).
        seed: Seed of the draw.

    Returns:
        A new ``Split`` with the kept examples.

    Example:
        >>> part = Split(np.zeros((10, 2, 2), np.uint8), np.arange(10) % 2)
        >>> np.bincount(subsample_classes(part, [5, 2], 2).labels).tolist()
        [5, 2]
    """
    counts = [int(c) for c in counts]
    if len(counts) != num_classes:
        raise ValueError(f"class counts name {len(counts)} class(es) but the data has {num_classes}; give one count "
                         f"per class, in class-id order (e.g. {','.join(['100'] * num_classes)})")
    if any(c < 1 for c in counts):
        raise ValueError(f"class counts must be >= 1 (a class with no training example cannot be learnt), got "
                         f"{counts}")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(part.labels == c))[:n] for c, n in enumerate(counts)]
    return part.subset(np.sort(np.concatenate(keep)))

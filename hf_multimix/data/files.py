"""Users' own data: an image folder, a text CSV, or a Hugging Face dataset."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from .base import ClassificationData, Split

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "HFImages", "CsvTexts", "StreamingSplit", "streaming_from_hf", "image_folder", "text_csv", "hf_dataset", "from_hf"]

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


_BIT_DEPTH_TOP = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
"""Full scale of the high-depth grayscale modes: 16-bit images (Pillow's ``I;16*``, and ``I``, which is how
16-bit PNG and TIFF files open) span 0..65535, float images (``F``) 0..1. Pixels are scaled by this bit
depth, never by an image's own maximum, so a dark 16-bit image stays dark."""


def to_mode(img: Any, mode: str, size: tuple[int, int] | None = None) -> Any:
    """A decoded PIL image as 8-bit ``mode`` (``"L"`` or ``"RGB"``), optionally resized to ``(H, W)``.

    16-bit and float grayscale are scaled by their bit depth (:data:`_BIT_DEPTH_TOP`), transparency is
    flattened onto white.
    """
    from PIL import Image

    if img.mode in _BIT_DEPTH_TOP:
        top = _BIT_DEPTH_TOP[img.mode]
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.rint(arr.clip(0, top) * (255.0 / top)).astype(np.uint8))
    elif img.mode in ("RGBA", "LA", "P", "PA") and mode == "RGB":
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # flatten transparency onto white
        img = Image.alpha_composite(background, img)
    img = img.convert(mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return img


def _to_uint8_array(img: Any, mode: str, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """PIL image -> uint8 ``[H, W]`` (mode "L") or ``[H, W, 3]`` (mode "RGB")."""
    arr = np.asarray(to_mode(img, mode, size), dtype=np.uint8)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{where}: unexpected image array shape {arr.shape}")
    return arr


class ImageFiles:
    """Image files read on demand: ``files[i]`` decodes one file to uint8 ``[H, W]`` / ``[H, W, 3]``.

    What an image folder becomes when it is indexed (paths and a mode only, nothing decoded), so that
    a folder of any size costs memory for its paths alone; DataLoader workers decode the images.

    Args:
        paths: image file paths.
        mode: ``"L"`` or ``"RGB"``: what every image is converted to.
        size: ``(H, W)`` to resize to on decoding, or None to keep each file's size.

    Example:
        >>> files = ImageFiles(["photos/cat/1.jpg"], "RGB")       # doctest: +SKIP
        >>> files[0].shape                                          # doctest: +SKIP
        (300, 400, 3)
    """

    def __init__(self, paths: Sequence[str | Path], mode: str, size: tuple[int, int] | None = None) -> None:
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        self.paths = [str(p) for p in paths]
        self.mode, self.size = mode, size

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Any:
        """The ``i``-th file as a PIL image in ``mode`` (decoded now; raises OSError / ValueError if it cannot be)."""
        from PIL import Image

        with Image.open(self.paths[int(i)]) as img:
            img.load()
            return to_mode(img, self.mode, self.size)

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return np.asarray(self.image(i), dtype=np.uint8)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageFiles":
        return ImageFiles([self.paths[int(i)] for i in indices], self.mode, self.size)

    def concat(self, other: "ImageFiles") -> "ImageFiles":
        return ImageFiles(self.paths + list(other.paths), self.mode, self.size)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, mode={self.mode!r})"


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


_TRAIN_DIRS = ("train", "training")
_EVAL_DIRS = ("val", "validation", "valid", "test")
"""Subfolder names of the split layout (timm's and torchvision's): ``train/`` plus the first of these."""


def _split_dirs(root: Path) -> tuple[Path, Path | None] | None:
    """``(train, eval or None)`` if ``root`` holds ``train/`` (and ``val/``, ...) subfolders of class folders."""
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    train = next((subdirs[n] for n in _TRAIN_DIRS if n in subdirs), None)
    if train is None or not any(p.is_dir() and not p.name.startswith(".") for p in train.iterdir()):
        return None
    return train, next((subdirs[n] for n in _EVAL_DIRS if n in subdirs), None)


def _images_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly in ``folder``; hidden files are neither."""
    images, others = [], []
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return images, others


def _read_class_folders(
    root: Path, size: tuple[int, int] | None, mode: str | None, skip_unreadable: bool,
    class_names: Sequence[str] | None = None, lazy: bool = False,
) -> tuple[Any, np.ndarray, tuple[str, ...], list[str], str]:
    """Images and labels of ``root/<class>/*``: (images, labels, class names, notes, mode).

    With ``class_names`` (an evaluation folder), labels follow that list and a class folder
    not in it is an error.
    """
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = len(_images_in(root)[0])
        found = f"found {loose} image(s) directly in it but no subfolders" if loose else "it has no subfolders"
        raise ValueError(f"no class subfolders in {str(root)!r} ({found}); {_LAYOUT_HINT}")
    names = tuple(d.name for d in class_dirs) if class_names is None else tuple(class_names)
    if class_names is not None:
        unknown = [d.name for d in class_dirs if d.name not in names]
        if unknown:
            raise ValueError(
                f"{str(root)!r} has class folder(s) {unknown} that the training data does not have "
                f"(classes: {list(names)}); rename or remove them"
            )
    notes: list[str] = []
    loose_images, loose_others = _images_in(root)
    ignored = loose_images + loose_others  # files next to the class folders
    files: list[tuple[Path, int]] = []
    for folder in class_dirs:
        members, others = _images_in(folder)
        ignored.extend(others)
        nested = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        ignored.extend(nested)
        if not members:
            raise ValueError(
                f"class folder {str(folder)!r} has no images (suffixes: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                "add images or remove the folder"
            )
        files.extend((p, names.index(folder.name)) for p in members)
    if ignored:
        notes.append(f"ignored {len(ignored)} entr(ies) in {str(root)!r} that are not images in a class folder "
                     f"(e.g. {str(ignored[0])!r})")

    bad: list[tuple[Path, Exception]] = []

    def unreadable(p: Path, e: Exception) -> None:
        if not skip_unreadable:
            raise ValueError(f"cannot read image {str(p)!r} ({e}); remove or replace the file") from e
        bad.append((p, e))

    # Headers only (Image.open reads no pixels): unreadable files are found and the mode chosen
    # without decoding a single image.
    kept: list[tuple[Path, int]] = []
    modes = []
    for p, label in files:
        try:
            with Image.open(p) as img:
                modes.append(img.mode)
            kept.append((p, label))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            unreadable(p, e)
    if mode is None:
        mode = "L" if all(m in _GRAY_MODES for m in modes) else "RGB"
    if not lazy:  # decoded now, so that a file whose pixels are broken is found now too
        arrays, decoded = [], []
        for p, label in kept:
            try:
                arrays.append(ImageFiles([p], mode, size)[0])  # resized at once
                decoded.append((p, label))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                unreadable(p, e)
        kept = decoded
    if bad:
        p, e = bad[0]
        notes.append(f"skipped {len(bad)} unreadable image file(s) in {str(root)!r} (e.g. {str(p)!r}: {e})")
        emptied = sorted({names[label] for _, label in files} - {names[label] for _, label in kept})
        if emptied:
            raise ValueError(
                f"class folder(s) {emptied} in {str(root)!r} have no readable image ({len(bad)} file(s) could not "
                f"be read, e.g. {str(p)!r}: {e}); replace the files or remove the folder(s)"
            )
    labels = np.asarray([label for _, label in kept], dtype=np.int64)
    if lazy:
        return ImageFiles([p for p, _ in kept], mode, size), labels, names, notes, mode
    images = _stack_images(arrays, [str(p) for p, _ in kept], repr(str(root)))
    return images, labels, names, notes, mode


def image_folder(
    path: str | Path,
    image_size: int | Sequence[int] | None = None,
    mode: Literal["RGB", "L"] | None = None,
    skip_unreadable: bool = False,
    lazy: bool = False,
    multi_label: bool | None = None,
    label_separator: str = "|",
) -> ClassificationData:
    """Read ``<path>/<class_name>/*.png`` (one subfolder per class) into memory, or index it (``lazy``).

    Classes are the subfolder names in sorted order; hidden files/folders and files whose
    suffix is not in :data:`IMAGE_EXTENSIONS` are ignored (counted in ``notes``).

    A folder in the split layout of timm and torchvision, ``<path>/train/<class_name>/...``
    plus ``<path>/val/<class_name>/...`` (or ``validation/``, ``valid/``, ``test/``: the first
    one found), gives ``train`` from ``train/`` and ``eval`` from the other; ``train/`` alone
    gives ``eval=None``. The evaluation folder may lack classes but not add new ones.

    Args:
        path: Root folder.
        image_size: ``H`` or ``(H, W)`` to resize every image to (bicubic). Needed when the
            images do not all have the same size and ``lazy`` is False.
        mode: ``"L"`` (grayscale) or ``"RGB"``. None: ``"L"`` if every training image is
            grayscale (from the file headers), else ``"RGB"``. Transparent images are
            flattened onto white; 16-bit images are scaled by their bit depth.
        skip_unreadable: Skip image files that cannot be read (counted in ``notes``)
            instead of raising.
        lazy: Index only: the inputs are an :class:`ImageFiles` (paths, nothing decoded;
            only the headers are read), what training on a folder of any size uses.
        multi_label, label_separator: a folder with a ``labels.csv`` at its top is labelled by it
            instead of by class subfolders (``file,labels`` rows such as ``a.jpg,cat|dog``; see
            :func:`hf_multimix.data.multilabel.labelled_image_folder`); ``multi_label`` True needs one.

    Returns:
        Image data: uint8 ``[N, H, W]`` ("L") or ``[N, H, W, 3]`` ("RGB") (an :class:`ImageFiles`
        when ``lazy``), int64 labels ``[N]``; ``eval`` from the evaluation folder of the split
        layout, else None.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a folder, no class subfolders, an empty class, an unreadable image
            (unless skipped), or mixed sizes without ``image_size`` (in memory).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist; {_LAYOUT_HINT}")
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is a file, not a folder; {_LAYOUT_HINT}")
    if mode not in (None, "RGB", "L"):
        raise ValueError(f"mode must be 'RGB', 'L' or None, got {mode!r}")
    from .multilabel import LABELS_FILE, labelled_image_folder

    if (root / LABELS_FILE).is_file() or multi_label:  # the images' labels are listed in labels.csv
        if not (root / LABELS_FILE).is_file():
            raise ValueError(f"multi-label images are read from {str(root / LABELS_FILE)!r} ('file,labels' rows, "
                             f"e.g. 'a.jpg,cat|dog'), which does not exist; add it")
        return labelled_image_folder(root, image_size, mode, skip_unreadable, lazy, multi_label, label_separator)
    size = _size_pair(image_size)
    layout = _split_dirs(root)
    train_dir, eval_dir = layout if layout is not None else (root, None)
    images, labels, names, notes, mode = _read_class_folders(train_dir, size, mode, skip_unreadable, lazy=lazy)
    eval_split = None
    if eval_dir is not None:
        ev_images, ev_labels, _, ev_notes, _ = _read_class_folders(eval_dir, size, mode, skip_unreadable, names,
                                                                   lazy=lazy)
        if not lazy and ev_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"images in {str(eval_dir)!r} are {ev_images.shape[1:]} but those in {str(train_dir)!r} are "
                f"{images.shape[1:]}; pass image_size=(H, W) to resize them on load"
            )
        eval_split = Split(ev_images, ev_labels)
        notes = [*notes, *ev_notes, f"training on {str(train_dir)!r}, evaluating on {str(eval_dir)!r}"]
    elif layout is not None:
        notes = [*notes, f"training on {str(train_dir)!r} (no val/ folder: a part is held out for evaluation)"]
    return ClassificationData(str(root), "image", names, Split(images, labels), eval_split, tuple(notes))


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


_DELIMITERS = (",", ";", "\t", "|")
_SPLIT_VALUES = {"train": "train", "training": "train", **{v: "eval" for v in ("val", "valid", "validation", "eval",
                                                                                 "dev", "test")}}


def _rows(numbers: list[int], limit: int = 10) -> str:
    """``row 3`` / ``rows 3, 7 and 4 more``: CSV line numbers for an error message."""
    shown = ", ".join(str(n) for n in numbers[:limit])
    more = f" and {len(numbers) - limit} more" if len(numbers) > limit else ""
    return f"row{'s' if len(numbers) > 1 else ''} {shown}{more}"


class _ByteLines:
    """Decoded lines of a binary file, counting the bytes read, so that a CSV row's offset is known."""

    def __init__(self, raw: Any, encoding: str) -> None:
        import codecs

        self.raw, self.pos = raw, raw.tell()
        self.decoder = codecs.getincrementaldecoder(encoding)()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.raw.readline()
        if not line:
            raise StopIteration
        self.pos += len(line)
        return self.decoder.decode(line)


class CsvTexts:
    """Texts of CSV rows read on demand: ``texts[i]`` seeks to row ``i``'s byte offset and parses it.

    What a CSV becomes when it is indexed: byte offsets (8 bytes a row), not the texts.
    """

    def __init__(self, sources: Sequence[tuple[str, str, str, int]], file_idx: np.ndarray, offsets: np.ndarray) -> None:
        self.sources = [tuple(s) for s in sources]  # (path, encoding, delimiter, text column index)
        self.file_idx = np.asarray(file_idx, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        path, encoding, delimiter, column = self.sources[int(self.file_idx[int(i)])]
        with open(path, "rb") as raw:
            raw.seek(int(self.offsets[int(i)]))
            for row in csv.reader(_ByteLines(raw, encoding), delimiter=delimiter):
                if row:  # csv.DictReader passes over blank lines too
                    return row[column] if column < len(row) else ""
        raise IndexError(f"row {i} of {path!r} is gone; was the file changed after it was read?")

    def subset(self, indices: Sequence[int] | np.ndarray) -> "CsvTexts":
        idx = np.asarray(indices, dtype=np.int64)
        return CsvTexts(self.sources, self.file_idx[idx], self.offsets[idx])

    def concat(self, other: "CsvTexts") -> "CsvTexts":
        return CsvTexts(self.sources + other.sources,
                        np.concatenate([self.file_idx, other.file_idx + len(self.sources)]),
                        np.concatenate([self.offsets, other.offsets]))

    def __repr__(self) -> str:
        return f"CsvTexts({len(self)} rows)"


def csv_delimiter(file: Path, encoding: str, required: Sequence[str]) -> str:
    """The first of ``,`` ``;`` tab ``|`` whose header row (the first line of ``file``) holds every
    ``required`` column, else ``,``: how `text_csv` and `hf-multimix predict` read a CSV."""
    with open(file, encoding=encoding, newline="") as f:
        header = f.readline()
    return next((d for d in _DELIMITERS
                 if set(required) <= {c.strip() for c in next(csv.reader([header], delimiter=d), [])}), ",")


def refuse_ambiguous_columns(file: Path, columns: Sequence[str], names: Sequence[str]) -> None:
    """Refuses a header where one of ``names`` appears more than once (compared without case and
    surrounding spaces): ``csv.DictReader`` would silently keep the last of them."""
    wanted = {c.lower() for c in names}
    clashes = sorted({c for c in columns if c.lower() in wanted and sum(o.lower() == c.lower() for o in columns) > 1})
    if clashes:
        raise ValueError(
            f"CSV file {str(file)!r} has duplicate or ambiguous column(s) {clashes} (header: {list(columns)}); "
            "keep one column of each name (names are compared without case and surrounding spaces)"
        )


def text_csv(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8-sig",
    split_column: str = "split",
    lazy: bool = False,
    multi_label: bool | None = None,
    label_separator: str = "|",
) -> ClassificationData:
    """Read a CSV with a header row holding a text column and a label column.

    Labels may be strings or integers; the distinct values, sorted (numerically when all
    are integers, e.g. ``1 < 2 < 10``), become class ids ``0..K-1`` and ``class_names``. The
    delimiter is the first of ``,`` ``;`` tab ``|`` whose header has both columns. An optional
    ``split`` column puts each row in ``train`` (``train``) or ``eval`` (``val``,
    ``validation``, ``test``, ...).

    Args:
        path: CSV file (standard quoting; other columns are ignored).
        text_column: Name of the text column.
        label_column: Name of the label column.
        encoding: File encoding (default UTF-8, with or without BOM).
        split_column: Name of the optional column that assigns rows to train / eval.
        lazy: Index only: the inputs are a :class:`CsvTexts` (each row's byte offset; a text is
            read when asked for), so the texts are never all in memory. The file is still read
            once, to check every row.
        multi_label: several labels per row (``sports|politics``; an empty cell is a row with no
            label): True forces it, None (default) detects it (``label_separator`` in some label
            cell), False reads one label per row. See :mod:`hf_multimix.data.multilabel`.
        label_separator: what separates the labels of one row (default ``|``).

    Returns:
        Text data: ``list[str]`` (a :class:`CsvTexts` when ``lazy``) and int64 labels ``[N]``
        (multi-label: float32 multi-hot ``[N, C]``, the classes the sorted union of the labels);
        ``eval`` holds the rows the split column sends there, else None.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: empty file, missing columns (the error lists the columns found), empty
            labels or texts (the error names the rows), unknown split values, or undecodable
            bytes.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise FileNotFoundError(f"CSV file {str(file)!r} does not exist")
    if not file.is_file():
        raise ValueError(f"{str(file)!r} is a folder, not a CSV file")
    try:
        delimiter = csv_delimiter(file, encoding, (text_column, label_column))
        with open(file, "rb") as raw:  # bytes, to know each row's offset
            lines = _ByteLines(raw, encoding)
            reader = csv.DictReader(lines, delimiter=delimiter)
            columns = [c.strip() for c in reader.fieldnames or []]
            if not columns or not any(columns):
                raise ValueError(
                    f"CSV file {str(file)!r} is empty; it needs a header row with "
                    f"'{text_column}' and '{label_column}' columns and one row per example"
                )
            absent = [c for c in (text_column, label_column) if c not in columns]
            if absent:
                raise ValueError(
                    f"CSV file {str(file)!r} has no column(s) {absent}; found columns {columns}. "
                    f"Rename the header to '{text_column}' and '{label_column}' (or pass text_column=... / "
                    "label_column=...)"
                )
            refuse_ambiguous_columns(file, columns, (text_column, label_column, split_column))
            reader.fieldnames = columns
            has_split = split_column in columns
            texts: list[str] = []
            offsets: list[int] = []
            raw_labels: list[str] = []
            parts: list[str] = []
            no_label: list[int] = []
            no_text: list[int] = []
            label_rows: list[int] = []
            bad_split: dict[int, str] = {}
            line_no = 1
            while True:
                start = lines.pos
                row = next(reader, None)
                if row is None:
                    break
                line_no += 1
                label = (row.get(label_column) or "").strip()
                text = row.get(text_column) or ""
                if not label:
                    no_label.append(line_no)
                if not text.strip():
                    no_text.append(line_no)
                if has_split:
                    value = (row.get(split_column) or "").strip().lower()
                    if value not in _SPLIT_VALUES:
                        bad_split[line_no] = value
                    parts.append(_SPLIT_VALUES.get(value, "train"))
                if lazy:
                    offsets.append(start)
                else:
                    texts.append(text)
                raw_labels.append(label)
                label_rows.append(line_no)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"CSV file {str(file)!r} is not valid {encoding} ({e}); pass encoding='latin-1' (or the right one)"
        ) from e
    except csv.Error as e:
        raise ValueError(f"CSV file {str(file)!r} cannot be parsed ({e}); check its quoting") from e
    if not raw_labels:
        raise ValueError(f"CSV file {str(file)!r} has a header {columns} but no data rows")
    from .multilabel import check_separator, is_multi_label_column, multi_hot

    label_separator = check_separator(label_separator)
    multi = is_multi_label_column(raw_labels, label_separator) if multi_label is None else bool(multi_label)
    if multi and delimiter in label_separator:
        raise ValueError(f"CSV file {str(file)!r} is delimited by {delimiter!r}, which also separates the labels; use "
                         "',' between the columns (quote the label cells) or another --label-separator")
    if no_label and not multi:
        raise ValueError(
            f"CSV file {str(file)!r}, {_rows(no_label)}: empty '{label_column}'; every row needs a label "
            "(fill it in or remove the row)"
        )
    if no_text:
        raise ValueError(
            f"CSV file {str(file)!r}, {_rows(no_text)}: empty '{text_column}'; fill in the text or remove the row"
        )
    if bad_split:
        values = sorted(set(bad_split.values()))
        raise ValueError(
            f"CSV file {str(file)!r}, {_rows(sorted(bad_split))}: '{split_column}' is {values}, expected 'train' "
            "or 'val' / 'validation' / 'test'"
        )
    if multi:
        names, labels = multi_hot(raw_labels, label_rows, label_separator, f"CSV file {str(file)!r}", label_column)
    else:
        names, to_id = _label_vocabulary(raw_labels)
        labels = np.asarray([to_id[v] for v in raw_labels], dtype=np.int64)
    which = np.asarray(parts if has_split else ["train"] * len(raw_labels))
    train_idx, eval_idx = np.flatnonzero(which == "train"), np.flatnonzero(which == "eval")
    if not len(train_idx):
        raise ValueError(f"CSV file {str(file)!r}: no row has '{split_column}' = 'train'; mark the training rows")
    inputs: Any = texts
    if lazy:
        inputs = CsvTexts([(str(file), encoding, delimiter, columns.index(text_column))],
                          np.zeros(len(offsets), np.int32), np.asarray(offsets, np.int64))
    split_of = Split(inputs, labels)
    notes = (f"{str(file)!r}: {len(train_idx)} training and {len(eval_idx)} evaluation rows from its "
             f"'{split_column}' column",) if has_split else ()
    return ClassificationData(
        str(file), "text", names, split_of.subset(train_idx), split_of.subset(eval_idx) if len(eval_idx) else None,
        notes,
    )


_LABEL_NAMES = ("label", "labels", "fine_label", "coarse_label", "target", "class", "category", "sentiment")
_IMAGE_NAMES = ("image", "img", "picture", "pixel_values")
_TEXT_NAMES = ("text", "sentence", "content", "review", "document", "tweet", "comment", "sentence1")
_EVAL_SPLITS = ("validation", "valid", "val", "eval", "dev", "test")


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


class _DecodeImages:
    """``with_transform`` function of :class:`HFImages`: a batch's images as uint8 arrays in one mode."""

    def __init__(self, column: str, mode: str, size: tuple[int, int] | None) -> None:
        self.column, self.mode, self.size = column, mode, size

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from PIL import Image

        out = []
        for value in batch[self.column]:
            img = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value, dtype=np.uint8))
            out.append(np.asarray(to_mode(img, self.mode, self.size), dtype=np.uint8))
        return {self.column: out}


class HFImages:
    """The images of a Hugging Face ``datasets.Dataset`` column, decoded on demand.

    The table stays Arrow-backed (memory-mapped when read from disk); ``images[i]`` decodes one
    row through ``Dataset.with_transform`` to uint8 ``[H, W]`` / ``[H, W, 3]`` in ``mode``.
    """

    def __init__(self, dataset: Any, column: str, mode: str, size: tuple[int, int] | None = None) -> None:
        self.raw = dataset.select_columns([column])
        self.column, self.mode, self.size = column, mode, size
        self.dataset = self.raw.with_transform(_DecodeImages(column, mode, size))

    def __len__(self) -> int:
        return len(self.raw)

    def image(self, i: int) -> Any:
        from PIL import Image

        return Image.fromarray(self[i])

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.dataset[int(i)][self.column]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "HFImages":
        return HFImages(self.raw.select([int(i) for i in indices]), self.column, self.mode, self.size)

    def concat(self, other: "HFImages") -> "HFImages":
        from datasets import concatenate_datasets

        return HFImages(concatenate_datasets([self.raw, other.raw]), self.column, self.mode, self.size)

    def __repr__(self) -> str:
        return f"HFImages({len(self)} rows of {self.column!r}, mode={self.mode!r})"


_MODE_SAMPLE = 256
"""Rows of a Hugging Face image column whose mode decides ``"L"`` or ``"RGB"`` (the first ones)."""


def _missing_texts(values: Sequence[Any]) -> list[int]:
    """Row numbers (0-based) whose text is missing: None, or empty / only whitespace."""
    return [i for i, t in enumerate(values) if t is None or not str(t).strip()]


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
    lazy: bool = False,
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
        eval_split: Split used as ``eval``; None picks the first of validation, valid, val, eval,
            dev, test present.
        image_size: ``H`` or ``(H, W)`` to resize images to (needed if sizes differ).
        mode: ``"RGB"`` or ``"L"`` for images; None picks ``"L"`` when every image is grayscale.
        max_samples: Keep at most this many rows of each split (the first ones).
        name: Stored as ``ClassificationData.name``.
        lazy: Images stay in the Arrow table, decoded on demand (:class:`HFImages`, through
            ``with_transform``); the mode comes from the first 256 rows. Texts are read as strings.

    A missing text (None, empty or blank) is an error naming the rows, as in :func:`text_csv`.

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
        if modality == "text":
            column = list(d[input_column])
            missing = _missing_texts(column)
            if missing:  # the rule of the CSV reader: a missing text is an error naming the rows
                raise ValueError(
                    f"{name} split {k!r}, {_rows(missing)} (0-based): missing or empty {input_column!r}; fill in "
                    f"the texts or drop those rows (dataset.filter(lambda r: r[{input_column!r}]))"
                )
            inputs: Any = [str(t) for t in column]
        elif lazy:
            if mode is None:  # from the first rows: the column is not decoded as a whole
                from PIL import Image

                head = d.select_columns([input_column]).select(range(min(_MODE_SAMPLE, len(d))))
                imgs = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
                        for im in head[input_column]]
                mode = "L" if all(im.mode in _GRAY_MODES for im in imgs) else "RGB"
            inputs = HFImages(d, input_column, mode, size)
        else:
            from PIL import Image

            imgs = [
                im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
                for im in d[input_column]
            ]
            img_mode = mode or ("L" if all(im.mode in _GRAY_MODES for im in imgs) else "RGB")
            mode = img_mode  # keep train and eval consistent
            where = [f"{name}[{k}][{i}]" for i in range(len(imgs))]
            inputs = _stack_images([_to_uint8_array(im, img_mode, size, w) for im, w in zip(imgs, where)], where, name)
        splits[k] = Split(inputs, labels[k])
    return ClassificationData(name, modality, class_names, splits["train"], splits.get("eval"))


class StreamingSplit:
    """A split read as a stream: a ``datasets.IterableDataset``, never held in memory or indexed.

    Attributes:
        dataset: the ``datasets.IterableDataset`` (its rows as the Hub or the files give them).
        input_column / label_column: the columns read.
        modality: ``"image"`` or ``"text"``.
        num_examples: rows in the split (from the data set's info; the loop's steps per epoch).
        mode: images: ``"L"`` or ``"RGB"``.
    """

    def __init__(self, dataset: Any, input_column: str, label_column: str, modality: str, num_examples: int,
                 mode: str | None = None, to_id: dict[Any, int] | None = None) -> None:
        self.dataset, self.input_column, self.label_column = dataset, input_column, label_column
        self.modality, self.num_examples, self.mode, self.to_id = modality, int(num_examples), mode, to_id

    def __len__(self) -> int:
        return self.num_examples

    def label_of(self, row: dict[str, Any]) -> int:
        value = row[self.label_column]
        return int(value) if self.to_id is None else self.to_id[value]

    def head(self, n: int) -> list[Any]:
        """The inputs of the first ``n`` rows (e.g. to fit the text length)."""
        return [row[self.input_column] for row in self.dataset.take(n)]

    def take(self, n: int) -> "StreamingSplit":
        return StreamingSplit(self.dataset.take(n), self.input_column, self.label_column, self.modality,
                              min(n, self.num_examples), self.mode, self.to_id)

    def __repr__(self) -> str:
        return f"StreamingSplit({self.num_examples} rows of {self.input_column!r}, {self.modality})"


def _split_size(d: Any, split: str, fallback: Any = None) -> int:
    info = getattr(d, "info", None)
    splits = getattr(info, "splits", None) or {}
    if split in splits and splits[split].num_examples:
        return int(splits[split].num_examples)
    if fallback is not None:
        return len(fallback)
    raise ValueError(f"the streamed split {split!r} does not say how many rows it has (no split info); without "
                     "it the epochs have no length: drop --streaming, or use a data set with split sizes")


_STREAM_KWARGS = ("input_column", "label_column", "train_split", "eval_split")


def streaming_from_hf(dataset: Any, input_column: str | None = None, label_column: str | None = None,
                      train_split: str = "train", eval_split: str | None = None, name: str = "hf",
                      sizes: dict[str, int] | None = None) -> ClassificationData:
    """``ClassificationData`` of :class:`StreamingSplit` s from a ``datasets.IterableDatasetDict``.

    Class names come from a ``ClassLabel`` label column, else (string labels) from the first 10,000
    training rows. The data set must have its own evaluation split (a stream cannot be split per class).

    Raises:
        ValueError: no evaluation split, columns that cannot be detected, or split sizes unknown.
    """
    from datasets import ClassLabel

    if train_split not in dataset:
        raise ValueError(f"split {train_split!r} not found; splits are {list(dataset)}; pass train_split=...")
    if eval_split is None:
        eval_split = next((s for s in _EVAL_SPLITS if s in dataset and s != train_split), None)
    if eval_split is None or eval_split not in dataset:
        raise ValueError(f"{name} has no evaluation split (splits: {list(dataset)}); streaming needs one "
                         "(validation or test), since a stream cannot be split per class; drop --streaming")
    features = dataset[train_split].features
    if features is None:
        raise ValueError(f"{name}: the stream does not declare its features; drop --streaming")
    input_column, label_column, modality = _detect_columns(features, input_column, label_column)
    to_id = None
    if isinstance(features[label_column], ClassLabel):
        class_names = tuple(features[label_column].names)
    else:
        class_names, to_id = _label_vocabulary(r[label_column] for r in dataset[train_split].take(10_000))
    mode = None
    if modality == "image":
        from PIL import Image

        imgs = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
                for im in (r[input_column] for r in dataset[train_split].take(_MODE_SAMPLE))]
        mode = "L" if all(im.mode in _GRAY_MODES for im in imgs) else "RGB"
    sizes = sizes or {}
    parts = {k: StreamingSplit(dataset[s], input_column, label_column, modality,
                               sizes.get(s) or _split_size(dataset[s], s), mode, to_id)
             for k, s in (("train", train_split), ("eval", eval_split))}
    return ClassificationData(name, modality, class_names, parts["train"], parts["eval"],
                              (f"{name}: streamed ({train_split!r} for training, {eval_split!r} for evaluation)",))


def hf_dataset(dataset_name: str, config: str | None = None, **kwargs: Any) -> ClassificationData:
    """Download a Hugging Face Hub dataset with ``datasets.load_dataset`` and convert it (needs network).

    Args:
        dataset_name: Hub id, e.g. ``"mnist"`` or ``"stanfordnlp/imdb"``, or a folder written by
            ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read offline).
        config: Dataset configuration name, if it has several.
        **kwargs: Passed to :func:`from_hf` (``input_column``, ``label_column``, ``image_size``, ``lazy``, ...);
            ``streaming=True`` reads the splits as ``datasets.IterableDataset`` streams instead
            (:func:`streaming_from_hf`; a ``save_to_disk`` folder through ``to_iterable_dataset``).

    Returns:
        See :func:`from_hf`.

    Raises:
        ValueError: empty name, or columns that cannot be detected.
        RuntimeError: the dataset could not be loaded (offline, unknown name, ...).
    """
    if not dataset_name or not dataset_name.strip():
        raise ValueError("empty Hugging Face dataset name; use 'hf:<owner>/<dataset>', e.g. 'hf:stanfordnlp/imdb'")
    import datasets

    local = Path(dataset_name).expanduser()
    streaming = kwargs.pop("streaming", False)
    if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "dataset_info.json").exists()):
        # a dataset written with `save_to_disk`: read it without the Hub
        loaded = datasets.load_from_disk(str(local))
        if streaming:
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            sizes = {k: len(d) for k, d in loaded.items()}
            streams = datasets.IterableDatasetDict({k: d.to_iterable_dataset(num_shards=min(8, max(1, len(d))))
                                                    for k, d in loaded.items()})
            return streaming_from_hf(streams, name=f"hf:{dataset_name}", sizes=sizes,
                                     **{k: v for k, v in kwargs.items() if k in _STREAM_KWARGS})
        return from_hf(loaded, name=f"hf:{dataset_name}", **kwargs)
    if streaming:
        try:
            streams = datasets.load_dataset(dataset_name, config, streaming=True)
        except Exception as e:  # network, auth, unknown name: all surface the same way
            raise RuntimeError(f"could not stream Hugging Face dataset {dataset_name!r}: {e}") from e
        return streaming_from_hf(streams, name=f"hf:{dataset_name}",
                                 **{k: v for k, v in kwargs.items() if k in _STREAM_KWARGS})
    try:
        loaded = datasets.load_dataset(dataset_name, config)
    except Exception as e:  # network, auth, unknown name: all surface the same way
        raise RuntimeError(
            f"could not load Hugging Face dataset {dataset_name!r}: {e}. This needs access to the Hugging Face "
            "Hub (or a local cache); offline, use 'mnist', 'digits', 'tweets', 'newsgroups', 'reuters8', an image "
            "folder or a CSV file"
        ) from e
    return from_hf(loaded, name=f"hf:{dataset_name}", **kwargs)

"""Using a trained classifier: class probabilities for new inputs, and an evaluation report
(accuracy, per-class accuracy, confusion matrix, ECE) on a labelled data set; for a multi-label
classifier, per-class sigmoid probabilities, the label sets above a threshold, and mean average
precision with micro / macro F1."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .analysis import expected_calibration_error
from .metrics import balanced_accuracy, macro_f1
from .models import Classifier

__all__ = ["read_inputs", "csv_texts", "check_inputs_fit", "evaluation_inputs", "predict_proba", "EvaluationReport", "evaluate_classifier", "plot_confusion_matrix", "is_multi_label", "label_sets", "MultiLabelReport", "evaluate_multilabel"]


def is_multi_label(classifier: Classifier) -> bool:
    """Whether ``classifier`` predicts a set of classes per input: a Hugging Face model with
    ``config.problem_type="multi_label_classification"``, or a checkpoint whose ``multimix_config.json``
    says ``task="multi_label"`` (what `hf-multimix train` saves for multi-label data, timm models included).

    Example:
        >>> is_multi_label(load_classifier("runs/tags"))    # doctest: +SKIP
        True
    """
    from .config import CONFIG_NAME, MultiMixConfig

    problem = getattr(getattr(classifier.model, "config", None), "problem_type", None)
    if problem == "multi_label_classification":
        return True
    saved = Path(classifier.name) / CONFIG_NAME
    return saved.is_file() and MultiMixConfig.from_pretrained(saved).task == "multi_label"


def label_sets(probs: torch.Tensor, class_names: Sequence[str], threshold: float = 0.5) -> list[list[str]]:
    """The classes whose probability exceeds ``threshold``, per row of ``probs`` ``[N, C]``, in class order.

    Example:
        >>> label_sets(torch.tensor([[0.9, 0.2, 0.7]]), ["a", "b", "c"])
        [['a', 'c']]
    """
    return [[class_names[k] for k in range(len(class_names)) if row[k] > threshold] for row in probs.tolist()]


def read_inputs(paths: Sequence[str | Path], modality: str, image_size: int | None = None,
                ) -> tuple[list[str], Any, list[str]]:
    """(names, inputs, skipped) of what to classify: image files or folders of them (recursively)
    for an image model; CSV files with a ``text`` column for a text model.

    Images: without ``image_size`` (what `predict` passes for a model with a data config), the
    inputs are an :class:`~hf_multimix.data.files.ImageFiles` of the paths, decoded per batch at
    their own size so that :func:`predict_proba` runs the model's evaluation transform on them as
    training evaluated; with ``image_size``, uint8 arrays resized to that square.

    Unreadable images in a folder are skipped (listed in ``skipped``); an unreadable file named
    directly is an error.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: nothing to classify, or a file of the wrong kind, naming it.
    """
    from PIL import Image, UnidentifiedImageError

    from .data import IMAGE_EXTENSIONS
    from .data.files import _to_uint8_array

    names: list[str] = []
    inputs: list[Any] = []
    skipped: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"input {str(path)!r} does not exist")
        if modality == "text":
            if path.is_dir() or path.suffix.lower() not in (".csv", ".tsv"):
                raise ValueError(f"input {str(path)!r}: a text model classifies the 'text' column of CSV files")
            for line_no, text in csv_texts(path):
                names.append(f"{path}:{line_no}")
                inputs.append(text)
            continue
        if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
            raise ValueError(f"input {str(path)!r} is a CSV of texts, but the model is an image model; give image "
                             "files or folders of images, or a text model's checkpoint")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts)) \
            if path.is_dir() else [path]
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    mode = "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                    if image_size:
                        inputs.append(np.array(_to_uint8_array(img, mode, (image_size, image_size), str(file))))
                    else:
                        _to_uint8_array(img, mode, None, str(file))  # checked now, decoded again per batch
                        inputs.append(str(file))
                    names.append(str(file))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                if not path.is_dir():
                    raise ValueError(f"cannot read image {str(file)!r} ({e}); give image files or folders") from e
                skipped.append(f"{file}: {e}")
    if not inputs:
        what = "texts" if modality == "text" else "readable images"
        raise ValueError(f"no {what} found in {[str(p) for p in paths]}")
    if modality == "image" and not image_size:
        from .data.files import ImageFiles

        inputs = ImageFiles(inputs, "RGB")  # decoded per batch, at each file's own size
    return names, inputs, skipped


def csv_texts(path: str | Path, text_column: str = "text", encoding: str = "utf-8-sig") -> list[tuple[int, str]]:
    """``(line number, text)`` of each row of a CSV, read as `hf-multimix train` reads its CSVs
    (``hf_multimix.data.text_csv``): the delimiter is the first of ``,`` ``;`` tab ``|`` whose
    header has the column, UTF-8 with or without BOM, and every error names the file.

    Raises:
        ValueError: no such column (the columns found are listed), no rows, empty texts (the rows
            are named), undecodable bytes or broken quoting.
    """
    from .data.files import _rows, csv_delimiter, refuse_ambiguous_columns

    file = Path(path).expanduser()
    try:
        delimiter = csv_delimiter(file, encoding, (text_column,))
        with open(file, encoding=encoding, newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            columns = [c.strip() for c in reader.fieldnames or []]
            if text_column not in columns:
                raise ValueError(f"CSV file {str(file)!r} has no '{text_column}' column; found columns {columns}. "
                                 f"Rename the header of the texts to '{text_column}'")
            refuse_ambiguous_columns(file, columns, (text_column,))
            reader.fieldnames = columns
            rows = [(line_no, row.get(text_column) or "") for line_no, row in enumerate(reader, start=2)]
    except UnicodeDecodeError as e:
        raise ValueError(
            f"CSV file {str(file)!r} is not valid {encoding} ({e}); save it as UTF-8 (or pass the right encoding)"
        ) from e
    except csv.Error as e:
        raise ValueError(f"CSV file {str(file)!r} cannot be parsed ({e}); check its quoting") from e
    if not rows:
        raise ValueError(f"CSV file {str(file)!r} has a header {columns} but no data rows")
    empty = [n for n, text in rows if not text.strip()]
    if empty:
        raise ValueError(f"CSV file {str(file)!r}, {_rows(empty)}: empty '{text_column}'; fill in the text or remove "
                         "the row")
    return rows


def check_inputs_fit(classifier: Classifier, inputs: Sequence[Any], where: str = "the input list") -> None:
    """Refuses inputs of the other modality than ``classifier``'s (texts for an image model, images
    for a text model), before any batch is built.

    Raises:
        ValueError: naming both modalities and what to pass.
    """
    if len(inputs) == 0:
        raise ValueError(f"{where} holds no examples to classify")
    first = inputs[0]
    kind = "text" if isinstance(first, str) else "image"
    if kind != classifier.modality:
        fix = ("give images (files, folders, or an image data set)" if classifier.modality == "image"
               else "give texts (a CSV with a 'text' column, or a text data set)")
        raise ValueError(f"{classifier.name!r} is a {classifier.modality} model but {where} holds {kind}s; {fix}, or "
                         f"use a {kind} model's checkpoint")


def evaluation_inputs(dataset: str | Path, classifier: Classifier,
                      label_separator: str = "|") -> tuple[Any, tuple[str, ...]]:
    """What `hf-multimix evaluate` scores ``classifier`` on: the evaluation split of ``dataset``
    (``hf_multimix.data.sources.evaluation_split``, read as `train` reads it), after checking that
    its modality is the model's; returns the split and the loading notes. A multi-label model's data is
    read as label sets (separated by ``label_separator``), a single-label model's must have one label each.

    Raises:
        ValueError: texts for an image model or images for a text model (before the data is read
            where the path tells: a CSV, an image folder), or classes the model was not trained on.
    """
    from .data.sources import evaluation_split, is_embedded

    text = str(dataset).strip()
    path = Path(text).expanduser()
    if not is_embedded(text) and not text.lower().startswith("hf:") and path.exists():
        kind = "text" if path.is_file() and path.suffix.lower() in (".csv", ".tsv") else (
            "image" if path.is_dir() else None)
        if kind is not None and kind != classifier.modality:
            check_inputs_fit(classifier, ["" if kind == "text" else np.zeros((1, 1), np.uint8)], repr(text))
    # models with a data config: indexed as `train` reads them (each file at its own size, decoded per
    # batch), for the evaluation transform; others: resized to the collator's square on load
    by_transform = classifier.modality == "image" and classifier.data_config is not None
    size = classifier.collate.size[0] if classifier.modality == "image" and not by_transform else None
    part, notes = evaluation_split(dataset, classifier.class_names, size, lazy=by_transform,
                                   multi_label=is_multi_label(classifier), label_separator=label_separator)
    check_inputs_fit(classifier, part.inputs, repr(text))
    return part, notes


@torch.no_grad()
def predict_proba(classifier: Classifier, inputs: Sequence[Any], batch_size: int = 64,
                  workers: int = 0) -> torch.Tensor:
    """float32 ``[N, C]`` class probabilities of ``inputs`` (uint8 images ``[H, W(, 3)]``, PIL images, an
    ``ImageFiles``, or texts): the softmax, or for a multi-label classifier (:func:`is_multi_label`) the
    per-class sigmoid.

    Image models with a ``data_config`` (every model `create_classifier` and `load_classifier` give) run
    their evaluation transform on each image at its own size, as the training loop evaluated;
    ``workers`` DataLoader processes decode and transform them.

    Example:
        >>> clf = load_classifier("runs/reviews")                        # doctest: +SKIP
        >>> predict_proba(clf, ["great phone", "battery died"]).shape    # doctest: +SKIP
        torch.Size([2, 3])
    """
    from .adapters.base import logits_of
    from .head import MultiMixHead

    check_inputs_fit(classifier, inputs)
    model = MultiMixHead(classifier.model).eval()  # in eval mode exactly the model, called the same for every family
    device = next(model.parameters()).device
    to_probs = torch.sigmoid if is_multi_label(classifier) else (lambda logits: logits.softmax(-1))
    out = []
    for batch in _batches(classifier, inputs, batch_size, workers):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out.append(to_probs(logits_of(model(**batch)).float()).cpu())
    return torch.cat(out)


class _EvalImages(torch.utils.data.Dataset):
    """Items ``{"pixel_values", "label"}`` of images (``ImageFiles``, uint8 arrays or PIL images) through
    ``transform`` (a PIL RGB image -> tensor), as :class:`hf_multimix.data.ImageDataset` gives the training
    loop's evaluation loader; an image that cannot be decoded is an error naming it."""

    def __init__(self, inputs: Sequence[Any], transform: Any) -> None:
        self.inputs, self.transform = inputs, transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        try:
            image = self.inputs[i]
        except (OSError, ValueError) as e:
            where = self.inputs.paths[i] if hasattr(self.inputs, "paths") else f"input {i}"
            raise ValueError(f"cannot read image {where!r} ({e}); remove or replace the file") from e
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        return {"pixel_values": self.transform(pil if pil.mode == "RGB" else pil.convert("RGB")), "label": 0}


def _batches(classifier: Classifier, inputs: Sequence[Any], batch_size: int, workers: int):
    """Model inputs of ``inputs`` in batches: image models with a data config through their evaluation
    transform (``image_transforms(classifier)[1]``, stacked by ``collate_pixels``: what ``make_loaders``'
    evaluation loader feeds), others through the classifier's collator."""
    if classifier.modality == "image" and classifier.data_config is not None:
        from .data import collate_pixels
        from .models import image_transforms

        dataset = _EvalImages(inputs, image_transforms(classifier)[1])
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                               collate_fn=collate_pixels)
        return
    key = "image" if classifier.modality == "image" else "text"
    for start in range(0, len(inputs), batch_size):
        yield classifier.collate([{key: x, "label": 0} for x in inputs[start:start + batch_size]])


@dataclass
class EvaluationReport:
    """Accuracy, per-class accuracy, confusion matrix (rows: true class, columns: predicted), ECE, and balanced
    accuracy and macro-F1 (every class weighs the same: a rare class that is never predicted shows in them)."""

    class_names: tuple[str, ...]
    accuracy: float
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]]
    ece: float
    examples: int
    balanced_accuracy: float
    macro_f1: float

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1,
                "ece": self.ece, "examples": self.examples,
                "per_class_accuracy": self.per_class_accuracy, "class_names": list(self.class_names),
                "confusion_matrix": self.confusion_matrix}


def evaluate_classifier(classifier: Classifier, inputs: Sequence[Any], labels: np.ndarray,
                        batch_size: int = 64, workers: int = 0) -> EvaluationReport:
    """Evaluates ``classifier`` on ``inputs`` with class ids ``labels`` (in its ``class_names`` order).

    Example:
        >>> clf = load_classifier("runs/photos")                                      # doctest: +SKIP
        >>> part, _ = evaluation_inputs("photos_test", clf)                              # doctest: +SKIP
        >>> evaluate_classifier(clf, part.inputs, part.labels, workers=4).accuracy      # doctest: +SKIP
    """
    probs = predict_proba(classifier, inputs, batch_size, workers)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    pred = probs.argmax(-1)
    c = len(classifier.class_names)
    confusion = torch.zeros(c, c, dtype=torch.int64)
    confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    counts = confusion.sum(1)
    per_class = {n: (confusion[i, i].item() / counts[i].item() if counts[i] else None)
                 for i, n in enumerate(classifier.class_names)}
    return EvaluationReport(classifier.class_names, (pred == y).float().mean().item(), per_class,
                            confusion.tolist(), expected_calibration_error(probs, y), int(len(y)),
                            balanced_accuracy(pred, y, c), macro_f1(pred, y, c))


@dataclass
class MultiLabelReport:
    """A multi-label classifier's scores: mean average precision (threshold-free), micro and macro F1 of
    the classes predicted above ``threshold``, and per-class average precision (None: no positive
    example) and F1."""

    class_names: tuple[str, ...]
    mean_average_precision: float
    micro_f1: float
    macro_f1: float
    threshold: float
    examples: int
    per_class_ap: dict[str, float | None]
    per_class_f1: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"task": "multi_label", "mean_average_precision": self.mean_average_precision,
                "micro_f1": self.micro_f1, "macro_f1": self.macro_f1, "threshold": self.threshold,
                "examples": self.examples, "per_class_ap": self.per_class_ap, "per_class_f1": self.per_class_f1,
                "class_names": list(self.class_names)}


def evaluate_multilabel(classifier: Classifier, inputs: Sequence[Any], labels: np.ndarray, batch_size: int = 64,
                        workers: int = 0, threshold: float = 0.5) -> MultiLabelReport:
    """Scores a multi-label ``classifier`` on ``inputs`` with multi-hot ``labels`` ``[N, C]`` (its class order).

    Raises:
        ValueError: no input has a label (mean average precision is then undefined).

    Example:
        >>> clf = load_classifier("runs/tags")                                          # doctest: +SKIP
        >>> part, _ = evaluation_inputs("tags_test.csv", clf)                            # doctest: +SKIP
        >>> evaluate_multilabel(clf, part.inputs, part.labels).mean_average_precision   # doctest: +SKIP
    """
    from .multilabel_metrics import mean_average_precision, multilabel_f1

    probs = predict_proba(classifier, inputs, batch_size, workers)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    if not (y > 0.5).any():
        raise ValueError("no evaluation example has a label, so there is no mean average precision; give the "
                         "examples their labels")
    f1 = multilabel_f1(probs, y, threshold)
    names = classifier.class_names
    per_ap = {n: (mean_average_precision(probs[:, [k]], y[:, [k]]) if (y[:, k] > 0.5).any() else None)
              for k, n in enumerate(names)}
    per_f1 = {n: multilabel_f1(probs[:, [k]], y[:, [k]], threshold)["macro_f1"] for k, n in enumerate(names)}
    return MultiLabelReport(tuple(names), mean_average_precision(probs, y), f1["micro_f1"], f1["macro_f1"], threshold,
                            int(len(y)), per_ap, per_f1)


def plot_confusion_matrix(report: EvaluationReport, path: str | Path) -> None:
    """Saves the confusion matrix as a PNG (rows: true class, columns: predicted; counts in the cells)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(report.confusion_matrix)
    c = len(report.class_names)
    side = min(12.0, 2.5 + 0.45 * c)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(c), yticks=range(c), xlabel="predicted", ylabel="true",
           title=f"accuracy {report.accuracy:.4f} on {report.examples} examples")
    ax.set_xticklabels(report.class_names, rotation=90, fontsize=8)
    ax.set_yticklabels(report.class_names, fontsize=8)
    if c <= 30:
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Using a trained classifier: class probabilities for new inputs, and an evaluation report
(accuracy, per-class accuracy, confusion matrix, ECE) on a labelled data set."""

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

__all__ = ["read_inputs", "predict_proba", "EvaluationReport", "evaluate_classifier", "plot_confusion_matrix"]


def read_inputs(paths: Sequence[str | Path], modality: str, image_size: int | None = None,
                ) -> tuple[list[str], list, list[str]]:
    """(names, inputs, skipped) of what to classify: image files or folders of them (recursively)
    for an image model; CSV files with a ``text`` column for a text model.

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
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.DictReader(f)
                if "text" not in [c.strip() for c in reader.fieldnames or []]:
                    raise ValueError(f"CSV file {str(path)!r} has no 'text' column; found {reader.fieldnames}")
                reader.fieldnames = [c.strip() for c in reader.fieldnames]
                for i, row in enumerate(reader, start=2):
                    names.append(f"{path}:{i}")
                    inputs.append(row.get("text") or "")
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(path).parts)) \
            if path.is_dir() else [path]
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    mode = "L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB"
                    size = (image_size, image_size) if image_size else None
                    inputs.append(np.array(_to_uint8_array(img, mode, size, str(file))))
                    names.append(str(file))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                if not path.is_dir():
                    raise ValueError(f"cannot read image {str(file)!r} ({e}); give image files or folders") from e
                skipped.append(f"{file}: {e}")
    if not inputs:
        what = "texts" if modality == "text" else "readable images"
        raise ValueError(f"no {what} found in {[str(p) for p in paths]}")
    return names, inputs, skipped


@torch.no_grad()
def predict_proba(classifier: Classifier, inputs: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
    """float32 ``[N, C]`` class probabilities of ``inputs`` (uint8 images ``[H, W(, 3)]`` or texts).

    Example:
        >>> clf = load_classifier("runs/reviews")                        # doctest: +SKIP
        >>> predict_proba(clf, ["great phone", "battery died"]).shape    # doctest: +SKIP
        torch.Size([2, 3])
    """
    from .adapters.base import logits_of
    from .head import MultiMixHead

    key = "image" if classifier.modality == "image" else "text"
    model = MultiMixHead(classifier.model).eval()  # in eval mode exactly the model, called the same for every family
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        items = [{key: x, "label": 0} for x in inputs[start:start + batch_size]]
        batch = {k: v.to(device) for k, v in classifier.collate(items).items() if k != "labels"}
        out.append(logits_of(model(**batch)).float().softmax(-1).cpu())
    return torch.cat(out)


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
                        batch_size: int = 64) -> EvaluationReport:
    """Evaluates ``classifier`` on ``inputs`` with class ids ``labels`` (in its ``class_names`` order).

    Example:
        >>> clf = load_classifier("runs/photos")                                      # doctest: +SKIP
        >>> part, _ = evaluation_split("photos_test", clf.class_names, clf.collate.size[0])  # doctest: +SKIP
        >>> evaluate_classifier(clf, part.inputs, part.labels).accuracy                # doctest: +SKIP
    """
    probs = predict_proba(classifier, inputs, batch_size)
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

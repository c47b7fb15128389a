"""Users' data and models made by the tests: image folders, text CSVs, tiny Hugging Face folders."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = {"sport": "goal match team win league", "crude": "oil barrel price opec refinery",
         "tech": "chip software cloud server code"}


def image(label: int, size: tuple[int, int] = (12, 12), seed: int = 0) -> Image.Image:
    """An RGB image whose class shows as a bright left half (0), top half (1), or diagonal (2+)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
    h, w = size
    if label == 0:
        a[:, : w // 2, 0] = 220
    elif label == 1:
        a[: h // 2, :, 2] = 220
    else:
        a[np.arange(min(h, w)), np.arange(min(h, w)), 1] = 250
    return Image.fromarray(a)


def image_folder(root: Path, counts: dict[str, int], size=(12, 12), seed: int = 0) -> int:
    """``root/<class>/<i>.png``, ``counts[class]`` images each (sizes vary by a pixel); returns the total."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image(c, (size[0] + i % 2, size[1]), seed + 100 * c + i).save(root / name / f"{i}.png")
    return sum(counts.values())


def text_csv(path: Path, counts: dict[str, int], extra: dict[str, list[str]] | None = None, seed: int = 0,
             delimiter: str = ",") -> int:
    """A CSV with ``text,label`` (plus ``extra`` columns, one value per row); returns the row count."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append([" ".join(rng.permutation(WORDS[label].split())) + f" {i}", label])
    extra = extra or {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["text", "label", *extra])
        for i, row in enumerate(rows):
            writer.writerow([*row, *(values[i] for values in extra.values())])
    return len(rows)


def tiny_bert_folder(path: Path, num_labels: int = 4) -> Path:
    """A 2-layer, 32-wide BERT sequence classifier with a word-level tokenizer, saved as a user's folder."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws.split()}),
             *[str(i) for i in range(40)]]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def tiny_vit_folder(path: Path, num_labels: int = 5, image_size: int = 16) -> Path:
    """A 2-layer, 32-wide ViT image classifier (16x16 inputs) saved as a user's folder."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=num_labels)
    ViTForImageClassification(config).save_pretrained(path)
    return path


@contextlib.contextmanager
def interrupted_after_first_checkpoint(monkeypatch):
    """Inside it, a training run raises KeyboardInterrupt (as a Ctrl-C would) right after it first
    writes checkpoint-last, so a test can resume it."""
    import hf_multimix.training as training

    real = training._replace_folder

    def stop_after_first_checkpoint(path, write):
        real(path, write)
        if path.endswith("checkpoint-last"):
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(training, "_replace_folder", stop_after_first_checkpoint)
        yield

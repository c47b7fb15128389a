"""Token classification (named entities) from CoNLL files: the model, the batches and the scores.

Shared by the CLI (`hf-multimix train` / `compare` / `evaluate` on CoNLL files), the benchmarks and
the Python API, as `models.py` and `data/` are for classifiers:

* `create_token_classifier` resolves `minilm` (embedded, pretrained), a local Hugging Face text
  model folder (a token classifier, or a base model that gets a fresh token head) or a run's
  checkpoint folder to an `AutoModelForTokenClassification` for the data's tags, with its fast
  tokenizer; `load_token_classifier` reads a checkpoint back;
* `load_conll_splits` reads the training and evaluation CoNLL files (or holds sentences out);
* `token_loaders` tokenises the sentences (labels on the first word piece, `data.conll`) and
  batches them with transformers' `DataCollatorForTokenClassification` (labels padded with -100);
* `evaluate_tokens` scores a model's predictions by entity (`token_metrics.entity_scores`).
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .models import _text_cap
from .data.conll import ConllData, is_conll_file, read_conll, sort_tags, tokenize_and_align
from .token_metrics import EntityScores, entity_scores, is_bio_tag, tags_from_ids

__all__ = ["TokenClassifier", "create_token_classifier", "evaluate_tokens", "is_conll_dataset",
           "is_token_checkpoint", "load_conll_splits", "load_token_classifier", "token_loaders"]


@dataclass
class TokenClassifier:
    """A token classifier with its tokenizer and tag names.

    Attributes:
        model: an `AutoModelForTokenClassification` model (logits `[m, L, len(tag_names)]`).
        tokenizer: its fast tokenizer (word-piece alignment reads `word_ids()`).
        tag_names: one tag per class id.
        name: what it was resolved from.
        max_length: sub-tokens per sentence; longer sentences are truncated.
    """

    model: nn.Module
    tokenizer: Any
    tag_names: tuple[str, ...]
    name: str
    max_length: int


def is_conll_dataset(dataset: Any) -> bool:
    """Whether `--dataset` names a CoNLL file (`data.conll.is_conll_file`: by extension or content)."""
    return isinstance(dataset, (str, Path)) and is_conll_file(Path(str(dataset).strip()).expanduser())


def is_token_checkpoint(path: str | Path) -> bool:
    """Whether a run or checkpoint folder holds a token classifier (`*ForTokenClassification`)."""
    from .models import find_checkpoint

    try:
        folder = find_checkpoint(path)
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForTokenClassification") for a in config.get("architectures") or [])


def _fast_tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"no usable tokenizer in {folder!r} ({str(e).splitlines()[0]}); save the model's tokenizer "
                         "into the folder (tokenizer.save_pretrained)") from e
    if getattr(tokenizer, "add_prefix_space", None) is False:
        # byte-level BPE (RoBERTa, GPT-2, ...): words given apart need their leading space, as run_ner.py loads them
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True, add_prefix_space=True)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer in {folder!r} is not a fast tokenizer; token classification aligns tags to "
                         "word pieces with word_ids(), which only fast tokenizers give")
    return tokenizer


def create_token_classifier(name: str | None, tag_names: Sequence[str],
                            max_length: int | None = None) -> TokenClassifier:
    """A token classifier for `tag_names`, ready to fine-tune.

    Args:
        name: `minilm` (embedded all-MiniLM-L6-v2, pretrained; the default), a local Hugging Face text
            model folder (a `*ForTokenClassification` model, whose head is resized to the tags, or a
            base model such as `BertModel`, which gets a fresh token head), or a run's output folder.
        tag_names: one name per class id (`ConllData.tag_names`).
        max_length: sub-tokens per sentence (default: the most the model takes, at most 512).

    Raises:
        ValueError: an image model, a timm name, or a folder without a fast tokenizer.

    Example:
        >>> clf = create_token_classifier("minilm", ["O", "B-PER", "I-PER"])  # doctest: +SKIP
        >>> type(clf.model).__name__                                         # doctest: +SKIP
        'BertForTokenClassification'
    """
    from transformers import AutoModelForTokenClassification

    from .models import find_checkpoint

    name = name or "minilm"
    if name == "minilm":
        from .weights import minilm_path

        folder = minilm_path()
    elif os.path.isdir(name):
        folder = name if os.path.isfile(os.path.join(name, "config.json")) else str(find_checkpoint(name))
    else:
        raise ValueError(
            f"--model {name!r} cannot tag tokens: CoNLL data trains minilm (embedded) or a local Hugging Face text "
            "model folder (a token classifier, or a base model such as BERT); timm and image models have no tokens"
        )
    tags = list(tag_names)
    labels = {"num_labels": len(tags), "id2label": dict(enumerate(tags)),
              "label2id": {t: i for i, t in enumerate(tags)}}
    try:
        model = AutoModelForTokenClassification.from_pretrained(folder, ignore_mismatched_sizes=True,
                                                                local_files_only=True, **labels)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load a token classifier from {folder!r} ({str(e).splitlines()[0]}); pass a Hugging "
                         "Face text model folder") from e
    model.config.architectures = [type(model).__name__]  # a base model's folder becomes a token classifier's
    tokenizer = _fast_tokenizer(folder)
    length = _text_cap(tokenizer, model.config, max_length)
    tokenizer.model_max_length = length
    return TokenClassifier(model, tokenizer, tuple(tags), name, length)


def load_token_classifier(path: str | Path, max_length: int | None = None) -> TokenClassifier:
    """The token classifier a run saved (a run folder or a `checkpoint-*`), in eval mode, with its tags."""
    from transformers import AutoModelForTokenClassification

    from .models import find_checkpoint

    folder = str(find_checkpoint(path))
    try:
        model = AutoModelForTokenClassification.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load the token classifier in {folder!r} ({str(e).splitlines()[0]})") from e
    id2label = model.config.id2label or {}
    tags = tuple(str(id2label.get(i, i)) for i in range(model.config.num_labels))
    tokenizer = _fast_tokenizer(folder)
    return TokenClassifier(model.eval(), tokenizer, tags, folder, _text_cap(tokenizer, model.config, max_length))


def load_conll_splits(dataset: str | Path, val_dataset: str | Path | None = None, val_split: float | None = None,
                      max_eval: int | None = None, seed: int = 0) -> tuple[ConllData, ConllData, tuple[str, ...]]:
    """The training and evaluation sentences of a run on CoNLL files: `val_dataset` if given, else
    `val_split` of the sentences (default 0.1, at least one) held out at random (seeded).

    Returns:
        `(train, eval, notes)`.
    """
    from .data.sources import DEFAULT_VAL_SPLIT

    train = read_conll(dataset)
    notes: list[str] = [f"CoNLL file {str(dataset)!r}: {len(train)} sentences, tags {list(train.tag_names)}"]
    if val_dataset is not None:
        if not is_conll_dataset(val_dataset):
            raise ValueError(f"--dataset is a CoNLL file but --val-dataset {str(val_dataset)!r} is not; give both as "
                             "CoNLL files (token and tag columns)")
        if val_split is not None:
            raise ValueError("--val-dataset gives the evaluation sentences; drop --val-split")
        held = read_conll(val_dataset)
        notes.append(f"evaluating on {str(val_dataset)!r}: {len(held)} sentences")
    else:
        fraction = DEFAULT_VAL_SPLIT if val_split is None else val_split
        if len(train) < 2:
            raise ValueError(f"{str(dataset)!r} has {len(train)} sentence; holding some out for evaluation needs at "
                             "least 2 (or pass --val-dataset)")
        order = np.random.default_rng(seed).permutation(len(train))
        k = min(len(train) - 1, max(1, round(fraction * len(train))))

        def pick(idx: Sequence[int]) -> ConllData:
            return ConllData([train.tokens[i] for i in idx], [train.tags[i] for i in idx], train.source)

        train, held = pick(sorted(order[k:])), pick(sorted(order[:k]))
        notes.append(f"held out {k} of the sentences for evaluation (--val-split {fraction:g})")
    if max_eval and len(held) > max_eval:
        held = replace(held, tokens=held.tokens[:max_eval], tags=held.tags[:max_eval])
    return train, held, tuple(notes)


def tag_set(*parts: ConllData) -> tuple[str, ...]:
    """The tags of every part, sorted (`O` first): the class ids of a run."""
    return sort_tags({t for part in parts for sentence in part.tags for t in sentence})


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def token_dataset(data: ConllData, clf: TokenClassifier) -> torch.utils.data.Dataset:
    """The sentences of `data` tokenised for `clf`, labels aligned to the first word piece of each word."""
    rows = tokenize_and_align(clf.tokenizer, data.tokens, data.label_ids(clf.tag_names), clf.max_length)
    keep = set(inspect.signature(type(clf.model).forward).parameters) | {"labels"}  # e.g. no token_type_ids
    return _Rows([{k: v for k, v in row.items() if k in keep} for row in rows])


def token_loaders(train: ConllData | None, held: ConllData, clf: TokenClassifier, batch_size: int,
                  seed: int = 0) -> tuple[torch.utils.data.DataLoader | None, torch.utils.data.DataLoader]:
    """Training (shuffled, seeded; None without `train`) and evaluation DataLoaders of tokenised
    sentences, batched by `DataCollatorForTokenClassification` (padded to the longest sentence,
    labels with -100)."""
    from transformers import DataCollatorForTokenClassification

    collate = DataCollatorForTokenClassification(clf.tokenizer, return_tensors="pt")
    train_loader = None
    if train is not None:
        train_ds = token_dataset(train, clf)
        train_loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True,
                                                   generator=torch.Generator().manual_seed(seed),
                                                   drop_last=len(train_ds) > batch_size, collate_fn=collate)
    eval_ds = token_dataset(held, clf)
    eval_loader = torch.utils.data.DataLoader(eval_ds, batch_size=max(64, batch_size), collate_fn=collate)
    return train_loader, eval_loader


@torch.no_grad()
def evaluate_tokens(model: nn.Module, loader: Any, tag_names: Sequence[str], strict: bool = False) -> EntityScores:
    """Entity scores (`token_metrics.entity_scores`) of `model`'s predictions on `loader`'s batches,
    over the labelled word pieces (the first of each word).

    Raises:
        ValueError: tags that are not BIO (`O`, `B-X`, `I-X`): score those by token accuracy.
    """
    bad = [t for t in tag_names if not is_bio_tag(t)]
    if bad:
        raise ValueError(f"entity scores read BIO tags (O, B-TYPE, I-TYPE); {bad[:5]} are not")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, labels = [], []
    for batch in loader:
        y = batch["labels"]
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        preds += logits.argmax(-1).cpu().tolist()
        labels += y.tolist()
    model.train(was)
    true, pred = tags_from_ids(preds, labels, tag_names)
    return entity_scores(true, pred, strict)

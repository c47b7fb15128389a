"""CoNLL-style token classification files, and word-piece alignment of their tags.

A CoNLL file holds one token per line with whitespace-separated columns (the token first, the tag
last by default, e.g. CoNLL-2003's `EU NNP B-NP B-ORG`), blank lines between sentences, and
`-DOCSTART-` lines that are skipped. Detection (`is_conll_file`) is by extension (`.conll`,
`.iob`, `.iob2`, `.bio`) or, for other files that are not CSVs (`.txt`, `.tsv`, none), by content:
the first 20 token lines all have two or more columns, the same number, and a last column of
`O` / `B-` / `I-` tags.

Word pieces get labels as the Hugging Face token-classification example (`run_ner.py`) gives
them: the first sub-token of each word takes the word's tag, the later sub-tokens and the special
tokens take -100 (ignored by the loss and the scores). The fast tokenizer's `word_ids()` says
which word each sub-token came from.

Pure Python (no torch, no transformers import): a tokenizer is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["CONLL_EXTENSIONS", "IGNORE_INDEX", "ConllData", "align_labels", "is_conll_file", "read_conll",
           "tokenize_and_align", "write_conll"]

#: File extensions read as CoNLL without looking at the content.
CONLL_EXTENSIONS = (".conll", ".iob", ".iob2", ".bio")
#: The label of positions that carry no tag (special tokens, padding, later word pieces).
IGNORE_INDEX = -100
_DOCSTART = "-DOCSTART-"
_BIO = re.compile(r"^(O|[BI][-_].+)$")
_SNIFF_LINES = 20


@dataclass
class ConllData:
    """Sentences of a CoNLL file: `tokens[i]` and `tags[i]` are the words and tags of sentence i.

    Attributes:
        tokens: words per sentence.
        tags: tag names per sentence (one per word).
        source: the file read.
    """

    tokens: list[list[str]]
    tags: list[list[str]]
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def tag_names(self) -> tuple[str, ...]:
        """Every tag of the file, sorted with `O` first (the label ids: `tag_names.index(tag)`)."""
        return sort_tags({t for sentence in self.tags for t in sentence})

    def label_ids(self, tag_names: Sequence[str]) -> list[list[int]]:
        """The tags as ids into `tag_names`; a tag not among them is refused with its name."""
        index = {t: i for i, t in enumerate(tag_names)}
        unknown = sorted({t for sentence in self.tags for t in sentence} - set(index))
        if unknown:
            raise ValueError(
                f"{self.source or 'the data'} has tag(s) {unknown[:10]} that are not among the tags trained on "
                f"({list(tag_names)[:20]}); use the same tag set."
            )
        return [[index[t] for t in sentence] for sentence in self.tags]


def sort_tags(tags: Sequence[str] | set[str]) -> tuple[str, ...]:
    """Tags sorted by entity type, then `B` before `I`, with `O` first: `O, B-LOC, I-LOC, B-PER, ...`.

    Example:
        >>> sort_tags({"I-PER", "O", "B-PER", "B-LOC"})
        ('O', 'B-LOC', 'B-PER', 'I-PER')
    """
    def key(tag: str) -> tuple[int, str, str]:
        if tag == "O":
            return 0, "", ""
        if _BIO.match(tag):
            return 1, tag[2:], tag[0]
        return 2, tag, ""

    return tuple(sorted(set(tags), key=key))


def is_conll_file(path: str | Path) -> bool:
    """Whether `path` is read as a CoNLL file: by extension (`CONLL_EXTENSIONS`), or, for a file
    that is not a `.csv`, by content (module docstring)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_EXTENSIONS:
        return True
    if suffix == ".csv" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            lines = []
            for line in f:
                cols = line.split()
                if cols and cols[0] != _DOCSTART:
                    lines.append(cols)
                if len(lines) >= _SNIFF_LINES:
                    break
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and len({len(c) for c in lines}) == 1 and len(lines[0]) >= 2 and all(
        _BIO.match(c[-1]) for c in lines)


def read_conll(path: str | Path, tag_column: int = -1, token_column: int = 0) -> ConllData:
    """Reads a CoNLL-style file.

    Args:
        path: the file.
        tag_column: the column of the tags (default the last).
        token_column: the column of the tokens (default the first).

    Returns:
        `ConllData` with one entry per sentence.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line with one column, lines with different numbers of columns (ragged), a
            column index beyond them, or a file without sentences; each names the line.

    Example:
        >>> data = read_conll("train.conll")  # doctest: +SKIP
        >>> data.tokens[0], data.tags[0]      # doctest: +SKIP
        (['EU', 'rejects', 'German', 'call'], ['B-ORG', 'O', 'B-MISC', 'O'])
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL file {str(path)!r} does not exist")
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    labels: list[str] = []
    width: tuple[int, int] | None = None  # (columns, line of the first token)
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            cols = line.split()
            if not cols or cols[0] == _DOCSTART:
                if words:
                    tokens.append(words)
                    tags.append(labels)
                    words, labels = [], []
                continue
            where = f"{str(path)!r} line {number}"
            if len(cols) == 1:
                raise ValueError(
                    f"{where} has one column ({cols[0]!r}); a CoNLL file has a token and a tag on each line, "
                    "separated by whitespace, and blank lines between sentences"
                )
            if width is None:
                width = (len(cols), number)
                for name, index in (("tag_column", tag_column), ("token_column", token_column)):
                    if not -len(cols) <= index < len(cols):
                        raise ValueError(f"{name}={index} but {where} has {len(cols)} columns; pick one of "
                                         f"{-len(cols)}..{len(cols) - 1}")
            elif len(cols) != width[0]:
                raise ValueError(
                    f"{where} has {len(cols)} columns but line {width[1]} has {width[0]}: ragged columns (a token "
                    "without its tag, or a token with spaces in it); every token line needs the same columns"
                )
            words.append(cols[token_column])
            labels.append(cols[tag_column])
    if words:
        tokens.append(words)
        tags.append(labels)
    if not tokens:
        raise ValueError(f"{str(path)!r} holds no sentences (token and tag lines, blank lines between sentences)")
    return ConllData(tokens, tags, str(path))


def write_conll(path: str | Path, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> None:
    """Writes sentences as a two-column CoNLL file (`token tag`, a blank line after each sentence)."""
    with open(path, "w", encoding="utf-8") as f:
        for words, labels in zip(tokens, tags):
            if len(words) != len(labels):
                raise ValueError(f"a sentence has {len(words)} tokens but {len(labels)} tags; give one tag per token")
            for word, tag in zip(words, labels):
                if not word or any(ch.isspace() for ch in word):
                    raise ValueError(f"token {word!r} is empty or holds whitespace; CoNLL columns are split on it")
                f.write(f"{word} {tag}\n")
            f.write("\n")


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Labels of the sub-tokens of one sentence: each word's label on its first sub-token, -100 on
    the later sub-tokens and on special tokens (`word_ids` None), as the Hugging Face
    token-classification example does.

    Example:
        >>> align_labels([None, 0, 1, 1, 2, None], [3, 0, 5])
        [-100, 3, 0, -100, 5, -100]
    """
    out, previous = [], None
    for word in word_ids:
        out.append(IGNORE_INDEX if word is None or word == previous else int(word_labels[word]))
        previous = word
    return out


def tokenize_and_align(tokenizer: Any, tokens: Sequence[Sequence[str]], labels: Sequence[Sequence[int]],
                       max_length: int | None = None) -> list[dict[str, list[int]]]:
    """Tokenises pre-split sentences with a fast tokenizer and aligns their labels (`align_labels`).

    Args:
        tokenizer: a Hugging Face fast tokenizer (`tokenizer.is_fast`).
        tokens: words per sentence.
        labels: label ids per sentence, one per word.
        max_length: truncate longer sentences to this many sub-tokens (their later words go unscored).

    Returns:
        One dict per sentence with the tokenizer's fields (`input_ids`, `attention_mask`, ...) and
        `labels`, unpadded: `transformers.DataCollatorForTokenClassification` pads a batch.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; word-piece alignment needs word_ids() "
            "(AutoTokenizer.from_pretrained(name, use_fast=True))"
        )
    encoded = tokenizer([list(t) for t in tokens], is_split_into_words=True, truncation=max_length is not None,
                        max_length=max_length)
    rows = []
    for i, words in enumerate(tokens):
        if len(labels[i]) != len(words):
            raise ValueError(f"sentence {i} has {len(words)} words but {len(labels[i])} labels")
        row = {key: list(values[i]) for key, values in encoded.items()}
        row["labels"] = align_labels(encoded.word_ids(i), labels[i])
        rows.append(row)
    return rows

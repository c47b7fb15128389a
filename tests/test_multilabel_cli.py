"""Multi-label data on the command line: CSV label sets (`sports|politics`), image folders with a
labels.csv, the generated mnist-multilabel set, and the training loop's mAP / F1 metrics."""

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_multimix.cli import main
from hf_multimix.data import load_splits, text_csv
from hf_multimix.data.base import ClassificationData, Split
from hf_multimix.data.multilabel import multi_hot, random_split
from hf_multimix.multilabel_metrics import mean_average_precision, multilabel_f1

sys.path.insert(0, str(Path(__file__).parent))
import _userdata as ud  # noqa: E402

TOPICS = sorted(ud.WORDS)  # crude, sport, tech


def _label_sets(n: int, seed: int = 0) -> list[list[str]]:
    """`n` label sets over TOPICS: every class alone, every pair, and some empty sets."""
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(n):
        k = i % 4  # 0: no label, 1: one, 2-3: two
        sets.append(sorted(rng.choice(TOPICS, min(k, 2), replace=False).tolist()) if k else [])
    return sets


def _topic_csv(path: Path, n: int = 48, seed: int = 0, split: list[str] | None = None) -> list[list[str]]:
    """`text,label` rows whose text holds the words of each of its topics; labels joined by '|'."""
    rng = np.random.default_rng(seed)
    sets = _label_sets(n, seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", *(["split"] if split else [])])
        for i, labels in enumerate(sets):
            words = [w for t in labels for w in rng.permutation(ud.WORDS[t].split())[:3]] or ["nothing"]
            writer.writerow([" ".join(words) + f" {i % 40}", "|".join(labels), *([split[i]] if split else [])])
    return sets


def _image_layout(root: Path, n: int = 40, seed: int = 0) -> list[list[str]]:
    """`root/img/<i>.png` plus `root/labels.csv` (`file,labels`): classes a (bright left half) and b (bright
    top half), alone, together, or neither."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    sets = []
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "labels"])
        for i in range(n):
            labels = [["a"], ["b"], ["a", "b"], []][i % 4]
            a = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
            if "a" in labels:
                a[:, :6, 0] = 220
            if "b" in labels:
                a[:6, :, 2] = 220
            from PIL import Image

            Image.fromarray(a).save(root / "img" / f"{i}.png")
            writer.writerow([f"img/{i}.png", "|".join(labels)])
            sets.append(labels)
    return sets


# ---------------------------------------------------------------------------------------------
# Reading the data


def test_csv_label_sets_become_multi_hot_over_the_sorted_union(tmp_path):
    path = tmp_path / "topics.csv"
    sets = _topic_csv(path, 12)
    data = text_csv(path)
    assert data.multi_label and data.class_names == tuple(TOPICS)
    assert data.train.labels.dtype == np.float32 and data.train.labels.shape == (12, 3)
    for row, labels in zip(data.train.labels, sets):
        assert [TOPICS[k] for k in np.flatnonzero(row)] == labels  # an empty cell is a row with no label
    assert not data.train.labels[0].any()


def test_single_label_csv_is_read_as_before(tmp_path):
    path = tmp_path / "one.csv"
    ud.text_csv(path, {"sport": 4, "tech": 3})
    data = text_csv(path)
    assert not data.multi_label and data.train.labels.dtype == np.int64
    assert data.class_names == ("sport", "tech") and data.train.labels.tolist() == [0] * 4 + [1] * 3


def test_multi_label_is_forced_with_one_label_per_row_and_the_separator_can_change(tmp_path):
    path = tmp_path / "one.csv"
    ud.text_csv(path, {"sport": 3, "tech": 3})
    forced = text_csv(path, multi_label=True)
    assert forced.multi_label and forced.train.labels.sum(1).tolist() == [1.0] * 6
    semi = tmp_path / "semi.csv"
    semi.write_text("text,label\nx,a;b\ny,b\nz,\n")
    assert text_csv(semi, label_separator=";").train.labels.tolist() == [[1, 1], [0, 1], [0, 0]]


def test_multi_hot_drops_empty_parts_and_repeats():
    names, labels = multi_hot([" b | a ", "a||a", ""], [2, 3, 4], "|", "x.csv")
    assert names == ("a", "b") and labels.tolist() == [[1, 1], [1, 0], [0, 0]]


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hf-multimix: error:")
    return err


def test_clear_errors_for_bad_multi_label_data(tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "run")]
    mixed = tmp_path / "mixed.csv"
    mixed.write_text('text,label\nx,a|b\ny,"c;d"\nz,a\n')
    err = _error(capsys, ["train", "--dataset", str(mixed), *out])
    assert "mixes separators" in err and "row 3" in err and "';'" in err
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\nx,\ny,\n")
    err = _error(capsys, ["train", "--dataset", str(empty), "--multi-label", *out])
    assert "no example has a label" in err and "no classes" in err
    only_val = tmp_path / "only_val.csv"
    only_val.write_text("text,label,split\ngoal,sport,train\noil,crude,train\ngoal oil,sport|crude,train\n"
                        "chip goal,tech|sport,val\n")
    err = _error(capsys, ["train", "--dataset", str(only_val), *out])
    assert "['tech'] occur only in the evaluation split" in err
    good = tmp_path / "good.csv"
    _topic_csv(good, 12)
    err = _error(capsys, ["train", "--dataset", str(good), "--train-per-class", "3", *out])
    assert "--train-per-class" in err and "multi-label" in err
    err = _error(capsys, ["train", "--dataset", str(good), "--label-noise", "0.2", *out])
    assert "--label-noise" in err and "multi-label" in err
    for flag in (["--class-balanced"], ["--mixing", "class-balanced"]):  # the default "auto" is Dir(alpha) here
        err = _error(capsys, ["train", "--dataset", str(good), *flag, *out])
        assert " ".join(flag) + " assume one class per example" in err


def test_a_validation_set_is_read_as_label_sets_and_may_not_add_classes(tmp_path):
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    _topic_csv(train, 12)
    val.write_text("text,label\ngoal,sport\nchip,tech\n")  # one label per row: read as sets all the same
    data = load_splits(train, val_dataset=val)
    assert data.multi_label and data.eval.labels.tolist() == [[0, 1, 0], [0, 0, 1]]
    assert any(n.startswith("multi-label data: 3 classes") for n in data.notes)
    val.write_text("text,label\ngoal,sport|weather\n")
    with pytest.raises(ValueError, match=r"class\(es\) \['weather'\] that are not among the classes trained on"):
        load_splits(train, val_dataset=val)


def test_labels_csv_errors_name_the_rows(tmp_path):
    _image_layout(tmp_path / "imgs", 8)
    (tmp_path / "imgs" / "labels.csv").write_text("file,labels\nimg/0.png,a|b\nimg/missing.png,a\n")
    with pytest.raises(ValueError, match=r"row 3: no such image"):
        load_splits(tmp_path / "imgs")
    (tmp_path / "imgs" / "labels.csv").write_text("image,tags\nimg/0.png,a\n")
    with pytest.raises(ValueError, match=r"no column\(s\) \['file', 'labels'\]"):
        load_splits(tmp_path / "imgs")


def test_the_held_out_split_is_seeded_random_and_keeps_every_class_in_training():
    labels = np.zeros((50, 3), np.float32)
    labels[:, 0] = 1
    labels[7, 2] = 1  # the only example of class 2
    data = ClassificationData("x", "text", ("a", "b", "c"), Split([str(i) for i in range(50)], labels))
    for seed in range(6):
        split = random_split(data, 0.2, seed)
        assert split.train.labels[:, 2].sum() == 1  # never held out: it would be unlearnable
        assert len(split.train) + len(split.eval) == 50
    one, again, other = random_split(data, 0.2, 1), random_split(data, 0.2, 1), random_split(data, 0.2, 2)
    assert one.eval.inputs == again.eval.inputs and one.eval.inputs != other.eval.inputs


def test_mnist_multilabel_labels_are_the_digits_on_each_canvas():
    from hf_multimix.data import mnist, mnist_multilabel

    digits = mnist()
    by_bytes = {}
    for k, (img, y) in enumerate(zip(digits.train.inputs, digits.train.labels)):
        by_bytes[img.tobytes()] = (k, int(y))
    data = mnist_multilabel(train=60, eval=40)
    assert data.multi_label and data.train.inputs.shape == (60, 56, 56) and data.eval.labels.shape == (40, 10)
    used = {}
    for part in ("train", "eval"):
        split, used[part] = getattr(data, part), set()
        for canvas, row in zip(split.inputs, split.labels):
            cells = [canvas[28 * r:28 * r + 28, 28 * c:28 * c + 28] for r in range(2) for c in range(2)]
            filled = [cell for cell in cells if cell.any()]
            assert 1 <= len(filled) <= 3
            found = [by_bytes[cell.tobytes()] for cell in filled]  # every filled cell is one real MNIST digit
            used[part] |= {k for k, _ in found}
            assert sorted({y for _, y in found}) == np.flatnonzero(row).tolist()
    assert not used["train"] & used["eval"]  # the digit images of training and evaluation are disjoint
    again = mnist_multilabel(train=60, eval=40)
    assert np.array_equal(again.train.inputs, data.train.inputs)  # seeded


# ---------------------------------------------------------------------------------------------
# The command line, end to end


def _bert(tmp_path):
    return str(ud.tiny_bert_folder(tmp_path / "bert", num_labels=2))


@pytest.mark.parametrize("method", ["erm", "manifold-mixup", "multimix", "dense-multimix"])
def test_text_multi_label_trains_with_bce_and_reports_map(tmp_path, method):
    data = tmp_path / "topics.csv"
    _topic_csv(data, 40)
    out = tmp_path / method
    assert main(["train", "--dataset", str(data), "--model", _bert(tmp_path), "--method", method, "--epochs", "2",
                 "--batch-size", "8", "--lr", "1e-3", "--no-progress", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "multi_label" and metrics["class_names"] == TOPICS
    assert metrics["multimix_config"]["task"] == "multi_label"
    for key in ("eval_map", "eval_micro_f1", "eval_macro_f1", "best_eval_map"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["best_eval_map"] == max(h["eval_map"] for h in metrics["history"])
    best = json.loads((out / "checkpoint-best" / "best_score.json").read_text())
    assert best["eval_map"] == metrics["best_eval_map"]  # checkpoint-best is chosen by mAP
    config = json.loads((out / "checkpoint-best" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"


def test_text_predict_prints_label_sets_and_evaluate_reports_map(tmp_path, capsys):
    data = tmp_path / "topics.csv"
    _topic_csv(data, 40)
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--model", _bert(tmp_path), "--epochs", "1", "--batch-size", "8",
                 "--no-progress", "--output-dir", str(out)]) == 0
    capsys.readouterr()
    new = tmp_path / "new.csv"
    new.write_text("text\ngoal oil\nchip\n")
    assert main(["predict", "--checkpoint", str(out), str(new), "--threshold", "0.01"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:  # input, the label set above the threshold, their probabilities
        name, labels, probs = line.split("\t")
        assert labels == "|".join(TOPICS)  # threshold 0.01: every class
        assert re.fullmatch(r"(\w+=0\.\d{4} ?)+", probs) and probs.count("=") == 3
        total = sum(float(p.split("=")[1]) for p in probs.split())
        assert abs(total - 1.0) > 0.05  # per-class sigmoids, not a softmax over the classes
    assert main(["predict", "--checkpoint", str(out), str(new), "--threshold", "0.99"]) == 0
    assert all(line.endswith("\t(none)") for line in capsys.readouterr().out.strip().splitlines())
    assert main(["predict", "--checkpoint", str(out), str(new), "--output", str(tmp_path / "p.csv")]) == 0
    header = next(csv.reader((tmp_path / "p.csv").open()))
    assert header == ["input", "labels", *TOPICS]
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(data), "--output-dir", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["task"] == "multi_label" and 0 <= report["mean_average_precision"] <= 1
    assert set(report["per_class_ap"]) == set(TOPICS) and "micro_f1" in report and "macro_f1" in report
    assert "mAP" in capsys.readouterr().out


def test_single_label_csv_runs_as_before(tmp_path, capsys):
    data = tmp_path / "one.csv"
    ud.text_csv(data, {"sport": 8, "tech": 8, "crude": 8})
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--model", _bert(tmp_path), "--epochs", "1", "--batch-size", "8",
                 "--no-progress", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "single_label" and "eval_map" not in metrics and metrics["eval_accuracy"] is not None
    assert "eval_accuracy" in json.loads((out / "checkpoint-best" / "best_score.json").read_text())
    assert "eval_accuracy" in capsys.readouterr().out
    new = tmp_path / "new.csv"
    new.write_text("text\ngoal oil\n")
    assert main(["predict", "--checkpoint", str(out), str(new)]) == 0
    name, label, prob = capsys.readouterr().out.strip().split("\t")
    assert label in ("crude", "sport", "tech") and 0 < float(prob) <= 1


IMAGES = ["--model", "resnet10t", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]


@pytest.mark.parametrize("method", ["multimix", "mixup", "cutmix"])
def test_image_folder_with_labels_csv_trains_multi_label(tmp_path, method, capsys):
    _image_layout(tmp_path / "imgs", 40)
    out = tmp_path / method
    assert main(["train", "--dataset", str(tmp_path / "imgs"), "--method", method, *IMAGES,
                 "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "multi_label" and metrics["class_names"] == ["a", "b"]
    assert metrics["train_examples"] == 36 and metrics["eval_examples"] == 4  # a seeded random 10% held out
    assert {"eval_map", "eval_micro_f1", "eval_macro_f1"} <= set(metrics["history"][-1])
    assert "eval_mAP" in capsys.readouterr().out
    if method == "multimix":
        assert main(["predict", "--checkpoint", str(out), str(tmp_path / "imgs" / "img"), "--threshold", "0.01"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 40 and all(line.split("\t")[1] == "a|b" for line in lines)
        assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(tmp_path / "imgs"), "--output-dir",
                     str(tmp_path / "ev")]) == 0
        report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
        assert report["task"] == "multi_label" and report["examples"] == 40  # no split column: all of it


def test_evaluation_loop_scores_multi_hot_batches_with_the_metrics():
    from accelerate import Accelerator

    from hf_multimix import MultiMixHead
    from hf_multimix.training import evaluate

    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    x, y = torch.randn(20, 3, 16, 16), (torch.rand(20, 3) < 0.5).float()
    loader = [{"x": x[:12], "labels": y[:12]}, {"x": x[12:], "labels": y[12:]}]
    scores = evaluate(MultiMixHead(model, task="multi_label"), loader, Accelerator(cpu=True))
    with torch.no_grad():
        logits = model(x)
    assert scores["eval_map"] == pytest.approx(mean_average_precision(logits, y))
    f1 = multilabel_f1(torch.sigmoid(logits), y, 0.5)
    assert scores["eval_micro_f1"] == pytest.approx(f1["micro_f1"]) and scores["eval_macro_f1"] == pytest.approx(
        f1["macro_f1"])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert scores["eval_loss"] == pytest.approx(bce.item(), rel=1e-5) and scores["eval_examples"] == 20


def test_bench_report_compares_multi_label_runs_by_map(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_accuracy", Path(__file__).parent.parent / "bench" / "accuracy.py")
    acc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(acc)
    setting = "mnist-multilabel-lite0"
    assert acc.build_parser().parse_args(["train", *acc.SETTINGS[setting], "--output-dir", "x"]).dataset == \
        "mnist-multilabel"
    rows = [{"setting": setting, "variant": v, "seed": s, "task": "multi_label", "eval_map": m,
             "best_eval_map": m + 0.01, "eval_micro_f1": 0.5, "eval_macro_f1": 0.25, "train_time_s": 1.0,
             "eval_accuracy": None, "best_eval_accuracy": None, "eval_balanced_accuracy": None}
            for v, maps in (("erm", (0.5, 0.6)), ("multimix", (0.53, 0.63))) for s, m in enumerate(maps)]
    text = acc.report(rows, [], str(tmp_path / "r.md"), "cmd")
    assert "final mAP (%)" in text and "| erm | 2 | 55.00 +- 7.07 | 56.00 +- 7.07 | - |" in text
    assert "| multimix | 2 | 58.00 +- 7.07 | 59.00 +- 7.07 | 3.00 +- 0.00 |" in text
    assert "| multimix | 2 | 50.00 +- 0.00 | 25.00 +- 0.00 |" in text  # micro-F1, macro-F1


def test_compare_tables_multi_label_runs_by_map(tmp_path, capsys):
    _image_layout(tmp_path / "imgs", 24)
    out = tmp_path / "cmp"
    assert main(["compare", "--dataset", str(tmp_path / "imgs"), "--methods", "erm,multimix", *IMAGES,
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| method | eval mAP | best eval mAP | micro-F1 | macro-F1 | train time (s) |" in printed
    rows = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["erm", "multimix"] and all(r["task"] == "multi_label" for r in rows)
    assert (out / "compare.png").exists()


def test_a_multi_label_run_resumes_with_its_map_selection(tmp_path):
    _image_layout(tmp_path / "imgs", 24)
    out = tmp_path / "run"
    common = ["train", "--dataset", str(tmp_path / "imgs"), "--model", "resnet10t", "--image-size", "32",
              "--batch-size", "8", "--no-progress", "--output-dir", str(out)]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume", str(out / "checkpoint-last")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and all("eval_map" in h for h in metrics["history"])
    best = json.loads((out / "checkpoint-best" / "best_score.json").read_text())
    assert best["eval_map"] == metrics["best_eval_map"]

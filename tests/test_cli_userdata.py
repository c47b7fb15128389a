"""The main job on a user's own data and model (issue 12): folders, CSVs, Hugging Face datasets,
timm weights from a file, local Hugging Face folders, args.yaml / --config, predict, evaluate."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import _userdata as ud
from hf_multimix.cli import _config_argv, build_parser, main

FAST = ["--model", "resnet10t", "--epochs", "1", "--image-size", "16", "--batch-size", "8", "--no-progress"]


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hf-multimix: error:") and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- the main job with no options


def test_image_folder_with_no_options_then_predict_and_evaluate(tmp_path, capsys):
    total = ud.image_folder(tmp_path / "faces", {"face": 10, "not_face": 10})
    (tmp_path / "faces" / "face" / "README.txt").write_text("not an image")  # ignored, counted in the log
    (tmp_path / "faces" / "not_face" / "cut.jpg").write_bytes(b"\xff\xd8 truncated")  # skipped, counted
    out = tmp_path / "run"
    # no options but --epochs 1: the defaults are the model's own (224 px, timm's augmentation)
    assert main(["train", "--dataset", str(tmp_path / "faces"), "--output-dir", str(out), "--epochs", "1"]) == 0
    m = _metrics(out)
    assert m["train_examples"] + m["eval_examples"] == total == 20  # every example used
    assert m["eval_examples"] == 2  # 10% of each class held out
    assert m["num_classes"] == 2 and m["class_names"] == ["face", "not_face"] and m["model"] == "efficientnet_lite0"
    for key in ("method", "eval_accuracy", "best_eval_accuracy", "train_time_s"):
        assert m[key] is not None
    assert m["args"]["dataset"] == str(tmp_path / "faces") and m["args"]["lr"] == 1e-3
    assert yaml.safe_load((out / "args.yaml").read_text())["dataset"] == str(tmp_path / "faces")
    config = json.loads((out / "checkpoint-best" / "config.json").read_text())
    assert config["label_names"] == ["face", "not_face"] and config["pretrained_cfg"]["input_size"] == [3, 224, 224]
    log = capsys.readouterr().out
    assert "ignored 1 entr(ies)" in log and "skipped 1 unreadable image file(s)" in log and "cut.jpg" in log

    assert main(["predict", "--checkpoint", str(out), str(tmp_path / "faces"),
                 str(tmp_path / "faces" / "not_face" / "0.png")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 21 and "skipped 1 unreadable image file(s)" in captured.err
    name, label, prob = lines[-1].split("\t")
    assert name.endswith("0.png") and label in ("face", "not_face") and 0.5 <= float(prob) <= 1

    report_dir = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", str(tmp_path / "faces"),
                 "--output-dir", str(report_dir)]) == 0
    report = json.loads((report_dir / "evaluation.json").read_text())
    assert report["examples"] == 20 and sum(map(sum, report["confusion_matrix"])) == 20
    assert set(report["per_class_accuracy"]) == {"face", "not_face"} and 0 <= report["ece"] <= 1
    diag = sum(report["confusion_matrix"][i][i] for i in range(2))
    assert report["accuracy"] == pytest.approx(diag / 20)
    assert (report_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_text_csv_with_no_options_then_predict_and_evaluate(tmp_path, capsys):
    csv = tmp_path / "news.csv"
    total = ud.text_csv(csv, {"sport": 12, "crude": 3, "tech": 9})  # unbalanced, one class of 3
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(csv), "--output-dir", str(out)]) == 0
    m = _metrics(out)
    assert m["train_examples"] + m["eval_examples"] == total and m["eval_examples"] == 1 + 1 + 1
    assert m["model"] == "minilm" and m["class_names"] == ["crude", "sport", "tech"]
    assert (m["epochs"], m["lr"]) == (10, 1e-4)  # one step an epoch: the text budget's most epochs, at 1e-4
    assert "--epochs 10 (1 optimiser step an epoch" in capsys.readouterr().out
    config = json.loads((out / "checkpoint-best" / "config.json").read_text())
    assert config["id2label"] == {"0": "crude", "1": "sport", "2": "tech"}
    assert config["architectures"] == ["BertForSequenceClassification"]
    capsys.readouterr()

    queries = tmp_path / "q.csv"
    queries.write_text("text\noil barrel price\nteam goal win\n")
    assert main(["predict", "--checkpoint", str(out), str(queries), "--output", str(tmp_path / "p.csv")]) == 0
    rows = (tmp_path / "p.csv").read_text().strip().splitlines()
    assert rows[0] == "input,label,probability,crude,sport,tech" and len(rows) == 3
    probs = [float(v) for v in rows[1].split(",")[3:]]
    assert sum(probs) == pytest.approx(1, abs=1e-4) and max(probs) == pytest.approx(float(rows[1].split(",")[2]))

    assert main(["evaluate", "--checkpoint", str(out / "checkpoint-last"), "--dataset", str(csv),
                 "--output-dir", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["examples"] == total


# ----------------------------------------------------------------------------- the layouts


def test_train_and_val_folders_are_used_as_given(tmp_path):
    ud.image_folder(tmp_path / "d" / "train", {"a": 6, "b": 5})
    ud.image_folder(tmp_path / "d" / "val", {"a": 3, "b": 2}, seed=7)
    ud.image_folder(tmp_path / "d" / "test", {"a": 4, "b": 4}, seed=9)  # val/ comes first
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "d"), *FAST, "--output-dir", str(out)]) == 0
    m = _metrics(out)
    assert (m["train_examples"], m["eval_examples"]) == (11, 5)
    assert any("evaluating on" in n and n.endswith("val'") for n in m["data_notes"])


def test_val_dataset_split_column_and_val_split(tmp_path):
    from hf_multimix.data import load_splits

    ud.image_folder(tmp_path / "train", {"a": 6, "b": 6})
    ud.image_folder(tmp_path / "holdout", {"b": 3}, seed=5)  # may lack a class
    data = load_splits(tmp_path / "train", val_dataset=tmp_path / "holdout", image_size=16)
    assert (len(data.train), len(data.eval)) == (12, 3) and data.eval.labels.tolist() == [1, 1, 1]

    csv = tmp_path / "t.csv"
    ud.text_csv(csv, {"sport": 5, "tech": 5}, extra={"split": ["train"] * 3 + ["val", "test"] + ["TRAIN"] * 5})
    data = load_splits(csv)
    assert (len(data.train), len(data.eval)) == (8, 2)

    many = tmp_path / "many.csv"
    ud.text_csv(many, {"sport": 20, "tech": 30, "crude": 10})
    for fraction, expected in ((None, [1, 2, 3]), (0.5, [5, 10, 15])):  # classes sorted: crude, sport, tech
        data = load_splits(many, val_split=fraction, seed=3)
        assert np.bincount(data.eval.labels).tolist() == expected and len(data.train) + len(data.eval) == 60


def test_train_per_class_keeps_the_benchmark_split():
    from hf_multimix.data import load_data, load_splits, split

    got = load_splits("digits", train_per_class=6, max_eval=40, seed=2)
    ref = split(load_data("digits"), train_per_class=6, seed=2)
    rng = np.random.default_rng(2)
    idx = np.sort(rng.choice(len(ref.eval), 40, replace=False))
    assert np.array_equal(got.train.inputs, ref.train.inputs) and np.array_equal(got.train.labels, ref.train.labels)
    assert np.array_equal(got.eval.inputs, ref.eval.inputs[idx])
    demo = load_splits("digits")  # the demo size when no split option is given: 100 per class, the rest evaluated
    assert (len(demo.train), len(demo.eval)) == (1000, 797)
    whole = load_splits("digits", val_split=0.1)
    assert len(whole.train) + len(whole.eval) == 1797


def test_hf_dataset_saved_to_disk_uses_its_own_splits(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from hf_multimix.data import load_splits

    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    def make(n):
        return Dataset.from_dict({"text": [f"t{i}" for i in range(n)], "label": [i % 2 for i in range(n)]},
                                 features=feats)

    DatasetDict({"train": make(10), "validation": make(4), "test": make(6)}).save_to_disk(str(tmp_path / "ds"))
    data = load_splits(f"hf:{tmp_path / 'ds'}")
    assert (len(data.train), len(data.eval)) == (10, 4) and data.class_names == ("neg", "pos")
    DatasetDict({"train": make(20)}).save_to_disk(str(tmp_path / "only_train"))
    data = load_splits(f"hf:{tmp_path / 'only_train'}")
    assert (len(data.train), len(data.eval)) == (18, 2)


def test_csv_delimiter_bom_and_integer_labels(tmp_path):
    from hf_multimix.data import text_csv

    path = tmp_path / "semi.csv"
    path.write_bytes("\ufefftext;label\nhello there;10\nbye;2\nok;2\n".encode("utf-8"))
    data = text_csv(path)
    assert data.class_names == ("2", "10") and data.train.labels.tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------- models users bring


def test_timm_name_with_pretrained_file(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from hf_multimix.models import create_classifier

    source = timm.create_model("resnet10t", pretrained=False)  # 1000 ImageNet classes
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for file in ("w.safetensors", "w.pth"):
        clf = create_classifier("resnet10t", "image", ["a", "b", "c"], pretrained_file=str(tmp_path / file))
        assert torch.equal(clf.model.conv1[0].weight, source.conv1[0].weight)  # body loaded
        assert clf.model.fc.out_features == 3  # head replaced for the data's classes
    with pytest.raises(ValueError, match=r"does not fit timm model 'resnet18'"):
        create_classifier("resnet18", "image", ["a", "b"], pretrained_file=str(tmp_path / "w.safetensors"))

    ud.image_folder(tmp_path / "d", {"a": 5, "b": 5})
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "d"), *FAST, "--pretrained-file", str(tmp_path / "w.pth"),
                 "--method", "erm", "--output-dir", str(out)]) == 0
    assert _metrics(out)["args"]["pretrained_file"] == str(tmp_path / "w.pth")
    # a run's output folder is a model too: its best checkpoint, with a new head for other classes
    from hf_multimix.models import load_classifier

    again = create_classifier(str(out), "image", ["x", "y", "z"], image_size=16)
    assert again.model.fc.out_features == 3 and again.name.endswith("checkpoint-best")
    assert torch.equal(again.model.conv1[0].weight, load_classifier(out).model.conv1[0].weight)


def test_local_hugging_face_folders(tmp_path, capsys):
    ud.image_folder(tmp_path / "imgs", {"a": 5, "b": 5}, size=(20, 20))
    vit = ud.tiny_vit_folder(tmp_path / "vit", num_labels=5, image_size=16)
    out = tmp_path / "vit_run"
    assert main(["train", "--dataset", str(tmp_path / "imgs"), "--model", str(vit), "--epochs", "1",
                 "--no-progress", "--output-dir", str(out)]) == 0
    config = json.loads((out / "checkpoint-best" / "config.json").read_text())
    assert config["id2label"] == {"0": "a", "1": "b"} and config["architectures"] == ["ViTForImageClassification"]
    assert json.loads((out / "checkpoint-best" / "preprocessor_config.json").read_text())["size"]["height"] == 16
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), str(tmp_path / "imgs" / "a")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5

    csv = tmp_path / "t.csv"
    ud.text_csv(csv, {"sport": 5, "tech": 5})
    bert = ud.tiny_bert_folder(tmp_path / "bert", num_labels=4)
    out = tmp_path / "bert_run"
    assert main(["train", "--dataset", str(csv), "--model", str(bert), "--epochs", "1", "--no-progress",
                 "--output-dir", str(out)]) == 0
    m = _metrics(out)
    assert m["num_classes"] == 2 and m["model"] == str(bert)
    err = _one_line_error(capsys, ["train", "--dataset", str(csv), "--model", str(vit), "--output-dir",
                                   str(tmp_path / "vit_on_text")])
    assert "is a image model but the data holds texts" in err


def test_local_folder_of_a_family_without_its_own_adapter(tmp_path, capsys):
    """An ELECTRA classifier folder (the generic Hugging Face path) trains pooled and dense from the CLI,
    and predict reads what it wrote."""
    import transformers

    bert = ud.tiny_bert_folder(tmp_path / "bert", num_labels=4)
    config = transformers.ElectraConfig(vocab_size=transformers.BertConfig.from_pretrained(bert).vocab_size,
                                        embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=37, num_labels=4)
    electra = tmp_path / "electra"
    transformers.ElectraForSequenceClassification(config).save_pretrained(electra)
    transformers.AutoTokenizer.from_pretrained(bert).save_pretrained(electra)
    csv = tmp_path / "t.csv"
    ud.text_csv(csv, {"sport": 6, "crude": 6, "tech": 6})
    for method in ("multimix", "dense-multimix"):
        out = tmp_path / method
        assert main(["train", "--dataset", str(csv), "--model", str(electra), "--method", method, "--epochs", "1",
                     "--no-progress", "--output-dir", str(out)]) == 0
        assert _metrics(out)["num_classes"] == 3
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "multimix"), str(csv)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 18


# ----------------------------------------------------------------------------- args.yaml and --config


def test_config_file_reads_args_yaml_back_and_the_command_line_wins(tmp_path, capsys):
    parser = build_parser()
    first = parser.parse_args(["train", "--dataset", "digits", "--alpha", "0.5,2", "--epochs", "3", "--shared-lambda",
                               "--output-dir", str(tmp_path / "a")])
    from hf_multimix.cli import write_args_yaml

    (tmp_path / "a").mkdir()
    write_args_yaml(first, str(tmp_path / "a"))
    argv = ["train", "--config", str(tmp_path / "a" / "args.yaml"), "--epochs", "7"]
    again = parser.parse_args(_config_argv(argv, parser))
    assert again.alpha == (0.5, 2.0) and again.shared_lambda and again.dataset == "digits"
    assert again.epochs == 7 and again.output_dir == str(tmp_path / "a")
    both = parser.parse_args(_config_argv(["compare", "--config", str(tmp_path / "a" / "args.yaml")], parser))
    assert both.epochs == 3 and both.methods == ["erm", "mixup", "manifold-mixup", "multimix"]  # `method` is train's
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(bad)])
    assert info.value.code == 2 and "unknown option 'epochz'" in capsys.readouterr().err
    bad.write_text("epochs: -1\n")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(bad), "--output-dir", str(tmp_path)])
    assert "--epochs: must be a positive integer" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input: one line each


def _bad_inputs(tmp_path):
    """(argv, message) pairs; each builds its own bad input under tmp_path."""
    (tmp_path / "empty").mkdir()
    ud.image_folder(tmp_path / "one", {"face": 4})
    ud.image_folder(tmp_path / "broken", {"a": 3})
    (tmp_path / "broken" / "b").mkdir()
    (tmp_path / "broken" / "b" / "x.jpg").write_bytes(b"not a jpeg")
    ud.image_folder(tmp_path / "tiny", {"a": 5, "b": 1})
    (tmp_path / "cols.csv").write_text("sentence,target\nhi,1\n")
    (tmp_path / "nolabel.csv").write_text("text,label\na,x\nb,\nc,y\nd,\n")
    ud.image_folder(tmp_path / "tv" / "train", {"a": 3, "b": 3})
    ud.image_folder(tmp_path / "tv" / "val", {"a": 1, "c": 1})
    ud.image_folder(tmp_path / "tv2" / "train", {"a": 3, "b": 3})
    ud.image_folder(tmp_path / "tv2" / "validation", {"a": 1, "b": 1})
    (tmp_path / "notckpt").mkdir()
    (tmp_path / "junkckpt").mkdir()
    (tmp_path / "junkckpt" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "junkckpt" / "config.json").write_text("{not json")
    from transformers import Wav2Vec2Config

    Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64).save_pretrained(tmp_path / "audio_model")
    out = ["--output-dir", str(tmp_path / "out")]
    return [
        (["train", "--dataset", str(tmp_path / "tv2"), "--model", str(tmp_path / "audio_model"), *out],
         "is an audio classifier; hf-multimix reads image and text data sets only"),
        (["train", "--dataset", str(tmp_path / "empty"), *out], "no class subfolders"),
        (["train", "--dataset", str(tmp_path / "one"), *out], "a classifier needs at least 2"),
        (["train", "--dataset", str(tmp_path / "broken"), *out], "have no readable image"),
        (["train", "--dataset", str(tmp_path / "tiny"), *out], "too few to keep any for training"),
        (["train", "--dataset", str(tmp_path / "cols.csv"), *out], "no column(s) ['text', 'label']"),
        (["train", "--dataset", str(tmp_path / "nolabel.csv"), *out], "rows 3, 5: empty 'label'"),
        (["train", "--dataset", str(tmp_path / "tv"), *out], "class folder(s) ['c'] that the training data"),
        (["train", "--dataset", str(tmp_path / "tv2"), "--val-split", "0.2", *out], "drop --val-split"),
        (["train", "--dataset", "digits", "--model", "minilm", "--pretrained-file", "w.pt", *out],
         "apply to timm model names"),
        (["train", "--dataset", "digits", "--model", "no_such_net", *out], "unknown model 'no_such_net'"),
        (["train", "--dataset", "digits", "--model", "resnet10t", "--pretrained", *out],  # offline in the tests
         "pass --pretrained-file FILE"),
        (["train", "--dataset", "digits", "--model", "resnet10t", "--pretrained-file", "missing.pt", *out],
         "--pretrained-file 'missing.pt' does not exist"),
        (["predict", "--checkpoint", str(tmp_path / "notckpt"), "x.png"], "is not a checkpoint"),
        (["predict", "--checkpoint", str(tmp_path / "nowhere"), "x.png"], "does not exist"),
        (["evaluate", "--checkpoint", str(tmp_path / "junkckpt"), "--dataset", "digits"], "is not valid JSON"),
    ]


def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys):
    for argv, message in _bad_inputs(tmp_path):
        err = _one_line_error(capsys, argv)
        assert message in err, (argv, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "half"])
def test_val_split_outside_the_open_unit_interval(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        main(["train", "--val-split", value, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "--val-split" in err and "(0, 1)" in err


def test_subprocess_error_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "hf_multimix.cli", "train", "--dataset", str(tmp_path / "empty"),
                           "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no class subfolders" in proc.stderr


# ----------------------------------------------------------------------------- the documented commands


def _documented_commands():
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    section = page.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#")[0].split() for line in block.strip().splitlines()]


def test_your_own_data_commands_run_as_documented(tmp_path, monkeypatch, capsys):
    """Every command of the docs' "Your own data" block, on data made here; training gets a small
    budget appended (a tiny timm model or a tiny BERT folder, one epoch)."""
    from datasets import Dataset, DatasetDict

    monkeypatch.chdir(tmp_path)
    ud.image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    ud.image_folder(tmp_path / "photos_test", {"cat": 2, "dog": 3}, seed=3)
    ud.image_folder(tmp_path / "new_photos", {"x": 2}, seed=4)
    ud.image(1).save(tmp_path / "more.png")
    ud.text_csv(tmp_path / "reviews.csv", {"sport": 6, "tech": 6})
    ud.text_csv(tmp_path / "held_out.csv", {"sport": 2, "tech": 1}, seed=1)
    ud.text_csv(tmp_path / "queries.csv", {"tech": 2}, seed=2)
    DatasetDict({"train": Dataset.from_dict({"text": [f"t {i}" for i in range(8)], "label": [i % 2 for i in range(8)]}),
                 "validation": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})}).save_to_disk("saved_dataset")
    bert = ud.tiny_bert_folder(tmp_path / "bert", num_labels=2)
    text_budget = ["--model", str(bert), "--epochs", "1", "--max-length", "16", "--batch-size", "8", "--no-progress"]
    commands = _documented_commands()
    assert [c[1] for c in commands].count("train") == 4 and {"predict", "evaluate"} <= {c[1] for c in commands}
    for command in commands:
        assert command[0] == "hf-multimix"
        argv = command[1:]
        if argv[0] == "train":
            argv += FAST if "photos" in argv else text_budget
        assert main(argv) == 0, argv
    assert json.loads((tmp_path / "runs" / "hf" / "metrics.json").read_text())["eval_examples"] == 2
    assert json.loads((tmp_path / "runs" / "reviews_held_out" / "metrics.json").read_text())["eval_examples"] == 3
    assert (tmp_path / "predictions.csv").read_text().startswith("input,label,probability,sport,tech")
    assert (tmp_path / "runs" / "photos" / "confusion_matrix.png").exists()


def test_readme_points_to_the_documented_commands():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = {" ".join(c) for c in _documented_commands()}
    shown = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("hf-multimix ")]
    own = [s for s in shown if any(w in s for w in ("photos", "reviews", "predict", "evaluate"))]
    assert own and all(s in documented for s in own), own


def test_fixed_size_models_take_their_own_size(tmp_path):
    from hf_multimix import MultiMixHead
    from hf_multimix.models import create_classifier, input_size, load_classifier
    from hf_multimix.training import _save_model

    assert input_size("vit_tiny_patch16_224", 64) == 224 and input_size("resnet10t", 64) == 64
    assert input_size(str(ud.tiny_vit_folder(tmp_path / "vit", image_size=16)), 64) == 16
    clf = create_classifier("vit_tiny_patch16_224", "image", ["a", "b"], image_size=64)
    assert clf.collate.size == (224, 224)
    _save_model(str(tmp_path / "ckpt"), MultiMixHead(clf.model), clf.companions)
    back = load_classifier(tmp_path / "ckpt")
    assert back.collate.size == (224, 224) and back.class_names == ("a", "b")
    assert input_size(str(tmp_path / "ckpt"), 64) == 224


def test_data_at_real_size_commands_run_as_documented(tmp_path, monkeypatch):
    """The commands of the docs' "Data at real size" block: the model's size and augmentation, timm's
    --aa / --reprob with workers, a streamed hf: data set (small budgets appended)."""
    import re
    from pathlib import Path

    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as HFImage

    monkeypatch.chdir(tmp_path)
    ud.image_folder(tmp_path / "photos", {"cat": 6, "dog": 6})
    feats = Features({"image": HFImage(), "label": ClassLabel(names=["a", "b"])})
    rows = lambda n: Dataset.from_dict({"image": [ud.image(i % 2, seed=i) for i in range(n)],  # noqa: E731
                                        "label": [i % 2 for i in range(n)]}, features=feats)
    DatasetDict({"train": rows(8), "validation": rows(4)}).save_to_disk("big_saved_dataset")
    page = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    section = page.split("### Data at real size", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert len(commands) == 3 and all(c[:2] == ["hf-multimix", "train"] for c in commands)
    budget = ["--epochs", "1", "--batch-size", "4", "--no-progress", "--method", "erm", "--max-steps-per-epoch", "2"]
    for command in commands:
        argv = command[1:] + budget
        if not any("photos_224" in token for token in command):  # the others small: a tiny timm model, 16 px
            argv += ["--model", "resnet10t", "--image-size", "16"]
        assert main(argv) == 0, argv
    m = _metrics(tmp_path / "runs" / "photos_224")
    assert json.loads((tmp_path / "runs" / "photos_224" / "checkpoint-best" / "config.json").read_text())[
        "pretrained_cfg"]["input_size"] == [3, 224, 224]
    assert any("images at 224 px, training with the model's augmentation" in n for n in m["data_notes"])
    assert _metrics(tmp_path / "runs" / "photos_aa")["args"]["reprob"] == 0.25
    assert (_metrics(tmp_path / "runs" / "stream")["train_examples"], _metrics(tmp_path / "runs" / "stream")[
        "eval_examples"]) == (8, 4)

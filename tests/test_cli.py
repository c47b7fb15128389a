"""The hf-multimix command line: the main job, comparisons, and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_multimix.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import _userdata as ud  # noqa: E402

TINY = ["--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class", "6", "--max-eval", "40",
        "--image-size", "16", "--batch-size", "16", "--no-progress"]


def test_train_writes_metrics_checkpoint_and_plot(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "multimix", "--n", "200", "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("method", "eval_accuracy", "best_eval_accuracy", "train_time_s", "initial_eval_accuracy"):
        assert key in metrics
    assert metrics["method"] == "multimix" and 0 <= metrics["eval_accuracy"] <= 1
    assert metrics["train_examples"] == 60 and metrics["eval_examples"] == 40
    assert (out / "checkpoint-last" / "model.safetensors").exists()
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_from_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--output-dir", str(out)]) == 0
    args = [a if a != "1" else "2" for a in TINY]  # --epochs 2
    assert main(["train", *args, "--output-dir", str(out), "--resume", str(out / "checkpoint-last")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # The checkpoint carries the history: the resumed run reports every epoch, once.
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["initial_eval_accuracy"] is not None
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_compare_runs_methods_side_by_side(tmp_path, capsys):
    assert main(["compare", *TINY, "--methods", "erm,cutmix,manifold-mixup,dense-multimix", "--output-dir",
                 str(tmp_path)]) == 0
    table = (tmp_path / "compare.md").read_text()
    for method in ("erm", "cutmix", "manifold-mixup", "dense-multimix"):
        assert f"| {method} |" in table
        assert json.loads((tmp_path / method / "metrics.json").read_text())["method"] == method
    assert (tmp_path / "compare.png").exists()
    assert "| erm |" in capsys.readouterr().out


def test_text_with_embedded_minilm(tmp_path):
    out = tmp_path / "tweets"
    assert main(["train", "--dataset", "tweets", "--method", "dense-multimix", "--epochs", "1", "--train-per-class",
                 "4", "--max-eval", "24", "--max-length", "16", "--batch-size", "6", "--no-progress",
                 "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "minilm" and metrics["num_classes"] == 3


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hf-multimix: error:") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "saliencymix"], "unknown method 'saliencymix'"),
        (["train", "--n", "0"], "--n: must be a positive integer, got 0"),
        (["train", "--alpha", "-1"], "--alpha: expected a positive number"),
        (["train", "--clean-weight", "-0.5"], "--clean-weight: must be >= 0, got -0.5"),
        (["compare", "--methods", "erm,foo"], "unknown method 'foo'"),
    ],
)
def test_bad_arguments_get_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--output-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_missing_folder_and_bad_csv_get_one_line(tmp_path, capsys):
    err = _one_line_error(capsys, ["train", "--dataset", "/no/such/folder", "--output-dir", str(tmp_path)])
    assert "/no/such/folder" in err
    csv = tmp_path / "bad.csv"
    csv.write_text("sentence,target\nhello,1\n")
    err = _one_line_error(capsys, ["train", "--dataset", str(csv), "--output-dir", str(tmp_path)])
    assert "text" in err and "sentence" in err  # names the missing and the found columns


def test_input_mixup_on_text_is_refused(tmp_path, capsys):
    err = _one_line_error(capsys, ["train", "--dataset", "tweets", "--method", "mixup", "--output-dir", str(tmp_path)])
    assert "mixes input images" in err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "hf_multimix.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--method" in out.stdout and "dense-multimix" in out.stdout


def test_options_reach_the_head():
    import timm

    from hf_multimix.cli import build_parser, head_for

    args = build_parser().parse_args(["train", "--method", "dense-multimix", "--shared-lambda", "--clean-weight", "0.5",
                                      "--attention", "cam", "--n", "64", "--alpha", "0.3", "--output-dir", "unused"])
    head = head_for("dense-multimix", timm.create_model("resnet10t", pretrained=False, num_classes=3), args)
    assert head.dense and head.per_position is False and head.clean_weight == 0.5 and head.attention == "cam"
    assert head.n == 64 and head.alpha == 0.3


def test_an_interrupted_and_resumed_train_equals_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    two = [a if a != "1" else "2" for a in TINY] + ["--method", "multimix", "--n", "50", "--prob", "0.5"]
    assert main(["train", *two, "--output-dir", str(tmp_path / "straight")]) == 0
    with ud.interrupted_after_first_checkpoint(monkeypatch):
        assert main(["train", *two, "--output-dir", str(tmp_path / "cut")]) == 130
    last = tmp_path / "cut" / "checkpoint-last"
    assert f"continue with --resume {last}" in capsys.readouterr().err
    assert main(["train", *two, "--output-dir", str(tmp_path / "cut"), "--resume", str(last)]) == 0
    a = load_file(tmp_path / "straight" / "checkpoint-last" / "model.safetensors")
    b = load_file(last / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    straight, resumed = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("straight", "cut"))
    assert [h["train_loss"] for h in straight["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_class_balanced_and_another_mixing_are_refused(tmp_path, capsys):
    err = _one_line_error(capsys, ["train", "--class-balanced", "--mixing", "multimix", "--output-dir", str(tmp_path)])
    assert "--class-balanced and --mixing multimix contradict each other" in err

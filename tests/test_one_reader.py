"""One reader (issue 21): `predict` and `evaluate` read CSVs as `train` does (delimiters, BOM,
errors naming the file and rows), and check the data's modality against the model before running."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _userdata as ud  # noqa: E402

from hf_multimix.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    image = root / "image"
    assert main(["train", "--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class", "4",
                 "--max-eval", "20", "--image-size", "16", "--batch-size", "8", "--no-progress",
                 "--output-dir", str(image)]) == 0
    csv = root / "news.csv"
    ud.text_csv(csv, {"sport": 6, "crude": 6, "tech": 6})
    text = root / "text"
    assert main(["train", "--dataset", str(csv), "--model", str(ud.tiny_bert_folder(root / "bert", num_labels=3)),
                 "--epochs", "1", "--no-progress", "--output-dir", str(text)]) == 0
    return {"image": image, "text": text, "csv": csv, "root": root}


def _one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hf-multimix: error:") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_predict_reads_the_delimiters_and_bom_train_reads(runs, tmp_path, capsys, sep):
    comma, other = tmp_path / "comma.csv", tmp_path / "other.csv"
    comma.write_text("id,text\n1,oil barrel price\n2,team goal win\n")
    other.write_bytes(b"\xef\xbb\xbf" + f"id{sep}text\n1{sep}oil barrel price\n2{sep}team goal win\n".encode())
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(runs["text"]), str(comma)]) == 0
    first = [line.split("\t", 1)[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert main(["predict", "--checkpoint", str(runs["text"]), str(other)]) == 0
    second = [line.split("\t", 1)[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(first) == 2 and first == second  # the same texts, the same predictions


@pytest.mark.parametrize("content, message", [
    ("text,label\ncafé,1\n".encode("latin-1"), r"CSV file '.*bad.csv' is not valid utf-8-sig"),
    (b"sentence;y\nhi;1\n", r"CSV file '.*bad.csv' has no 'text' column; found columns \['sentence;y'\]"),
    (b"text\n", r"CSV file '.*bad.csv' has a header \['text'\] but no data rows"),
    (b"text,label\nhi,1\n  ,2\nthere,3\n,4\n", r"CSV file '.*bad.csv', rows 3, 5: empty 'text'"),
    (b"text,Text ,label\nhi,there,1\n", r"CSV file '.*bad.csv' has duplicate or ambiguous column\(s\) \['Text', 'text'\]"),
])
def test_predict_csv_errors_name_the_file_as_train_does(runs, tmp_path, capsys, content, message):
    import re

    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    err = _one_line(capsys, ["predict", "--checkpoint", str(runs["text"]), str(bad)])
    assert re.search(message, err), err


def test_evaluate_refuses_the_other_modality_before_running(runs, tmp_path, capsys):
    err = _one_line(capsys, ["evaluate", "--checkpoint", str(runs["image"]), "--dataset", str(runs["csv"]),
                             "--output-dir", str(tmp_path / "a")])
    assert "is a image model but" in err and "news.csv' holds texts" in err and "give images" in err
    folder = tmp_path / "photos"
    ud.image_folder(folder, {"sport": 3, "tech": 3})
    err = _one_line(capsys, ["evaluate", "--checkpoint", str(runs["text"]), "--dataset", str(folder),
                             "--output-dir", str(tmp_path / "b")])
    assert "is a text model but" in err and "holds images" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # a text data set with the image model's class names: refused by what it holds, not a NumPy error
    digits_csv = tmp_path / "digits.csv"
    digits_csv.write_text("text,label\n" + "".join(f"number {i},{i}\n" for i in range(10)))
    from hf_multimix.inference import evaluation_inputs
    from hf_multimix.models import load_classifier

    clf = load_classifier(str(runs["image"]))
    with pytest.raises(ValueError, match=r"is a image model but .*digits.csv' holds texts"):
        evaluation_inputs(str(digits_csv), clf)


def test_predict_refuses_the_other_modality(runs, tmp_path, capsys):
    err = _one_line(capsys, ["predict", "--checkpoint", str(runs["image"]), str(runs["csv"])])
    assert "is a CSV of texts, but the model is an image model" in err
    from hf_multimix.inference import predict_proba
    from hf_multimix.models import load_classifier

    with pytest.raises(ValueError, match=r"is a image model but the input list holds texts"):
        predict_proba(load_classifier(str(runs["image"])), ["a text"])
    with pytest.raises(ValueError, match=r"is a text model but the input list holds images"):
        predict_proba(load_classifier(str(runs["text"])), [np.zeros((16, 16, 3), np.uint8)])

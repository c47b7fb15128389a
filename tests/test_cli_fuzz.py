"""Fuzzing the command line with malformed folders, CSVs and arguments (issue 15).

Every generated input has at least one defect, on top of random harmless noise (hidden files,
junk next to the classes, a BOM, another delimiter). Whatever the mix, `hf-multimix` must answer
with exactly one line on stderr, a non-zero exit, no traceback, and no file written anywhere
(the output folder is not even created).

The default run is small; `HF_MULTIMIX_FUZZ_EXAMPLES=500 pytest tests/test_cli_fuzz.py` runs a
larger profile.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hf_multimix.cli import main

# The default profile is small and the same on every run; the larger one draws new examples each time.
FUZZ = settings(max_examples=int(os.environ.get("HF_MULTIMIX_FUZZ_EXAMPLES", "12")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                derandomize="HF_MULTIMIX_FUZZ_EXAMPLES" not in os.environ)


@contextlib.contextmanager
def _inside(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_bad(root: Path, argv: list[str]) -> str:
    """Runs `main(argv)` in `root`; asserts one error line, a non-zero exit, nothing written."""
    before = _files(root)
    err = io.StringIO()
    with _inside(root), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's errors
            code = e.code
    text = err.getvalue().strip()
    assert code not in (0, None), (argv, text)
    assert len(text.splitlines()) == 1 and text.startswith("hf-multimix: error:"), (argv, text)
    assert "Traceback" not in text
    assert _files(root) == before, (argv, _files(root) - before)
    return text


def _png(path: Path, seed: int, size: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


# ----------------------------------------------------------------------------- folders

JUNK = st.sampled_from([("notes.txt", b"hello"), ("broken.png", b"\x89PNG not really"), ("empty.jpg", b""),
                        (".DS_Store", b"\x00\x01"), ("data.csv", b"text,label\n")])
DEFECTS = ("empty", "one_class", "unreadable_class", "nested_only", "single_image_class", "files_only")


@st.composite
def bad_folders(draw):
    """(defect, builder): a folder layout with one defect and random noise."""
    defect = draw(st.sampled_from(DEFECTS))
    good_classes = draw(st.integers(0 if defect not in ("one_class",) else 0, 3))
    good_counts = draw(st.lists(st.integers(3, 5), min_size=good_classes, max_size=good_classes))
    junk = draw(st.lists(JUNK, max_size=3))
    junk_in_root = draw(st.booleans())
    hidden = draw(st.booleans())
    seed = draw(st.integers(0, 10_000))

    def build(root: Path) -> None:
        root.mkdir()
        if defect == "empty":
            for name, data in junk:
                (root / name).write_bytes(data)
            return
        if defect == "files_only":  # images but no class subfolders
            for i in range(3):
                _png(root / f"{i}.png", seed + i)
            return
        counts = {f"class_{k}": n for k, n in enumerate(good_counts)}
        if defect == "one_class":
            counts = {"only": good_counts[0] if good_counts else 4}
        for name, n in counts.items():
            for i in range(n):
                _png(root / name / f"{i}.png", seed + 31 * i + len(name))
        if defect == "unreadable_class":
            (root / "broken").mkdir()
            (root / "broken" / "a.png").write_bytes(b"\x89PNG\r\n garbage")
            (root / "broken" / "b.jpg").write_bytes(bytes(range(40)))
        elif defect == "nested_only":
            _png(root / "deep" / "inner" / "0.png", seed)
        elif defect == "single_image_class":
            _png(root / "lonely" / "0.png", seed)
            if len(counts) < 1:
                for i in range(3):
                    _png(root / "other" / f"{i}.png", seed + i)
        target = root if junk_in_root else root / next(iter(counts), "")
        for name, data in junk:
            if target.is_dir() and not name.endswith((".png", ".jpg")):
                (target / name).write_bytes(data)
        if hidden:
            (root / ".cache").mkdir(exist_ok=True)
            _png(root / ".cache" / "x.png", seed)

    return defect, build


EXPECTED = {
    "empty": "no class subfolders",
    "files_only": "no class subfolders",
    "one_class": "a classifier needs at least 2",
    "unreadable_class": "have no readable image",
    "nested_only": "has no images",
    "single_image_class": "too few to keep any for training",
}


@FUZZ
@given(case=bad_folders(), layout=st.sampled_from(["flat", "train_only"]))
def test_malformed_image_folders(case, layout):
    defect, build = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data"
        if layout == "train_only" and defect not in ("empty", "files_only"):
            data.mkdir()
            build(data / "train")  # train/ without val/: the same checks, then a part is held out
        else:
            build(data)
        err = _run_bad(root, ["train", "--dataset", "data", "--output-dir", "out"])
        assert EXPECTED[defect] in err, err


# ----------------------------------------------------------------------------- CSVs

CSV_DEFECTS = ("missing_columns", "empty_text", "missing_label", "header_only", "empty_file", "bad_split",
               "one_class", "other_delimiter_header")


@st.composite
def bad_csvs(draw):
    """(defect, bytes) of a CSV with one defect, a random delimiter, maybe a BOM."""
    defect = draw(st.sampled_from(CSV_DEFECTS))
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    bom = draw(st.booleans())
    n = draw(st.integers(4, 10))
    words = draw(st.lists(st.text(alphabet="abcdefgh xyz", min_size=1, max_size=12).filter(str.strip),
                          min_size=n, max_size=n))
    bad_rows = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True))
    header = ["text", "label"]
    rows = [[w, ("pos", "neg")[i % 2]] for i, w in enumerate(words)]
    if defect == "missing_columns":
        header = draw(st.sampled_from([["sentence", "label"], ["text", "target"], ["review", "stars"]]))
    elif defect == "empty_text":
        for i in bad_rows:
            rows[i][0] = draw(st.sampled_from(["", "  "]))
    elif defect == "missing_label":
        for i in bad_rows:
            rows[i][1] = ""
    elif defect == "header_only":
        rows = []
    elif defect == "bad_split":
        header = header + ["split"]
        rows = [r + ["train"] for r in rows]
        for i in bad_rows:
            rows[i][2] = draw(st.sampled_from(["holdout", "", "trian"]))
    elif defect == "one_class":
        rows = [[w, "pos"] for w in words]
    text = "" if defect == "empty_file" else "\n".join(
        sep.join(f'"{c}"' if sep in c or '"' in c else c for c in r) for r in [header, *rows]) + "\n"
    if defect == "other_delimiter_header":
        text = text.replace(sep, ":") if sep != ":" else text
    return defect, (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


CSV_EXPECTED = {
    "missing_columns": "has no column(s)",
    "empty_text": "empty 'text'",
    "missing_label": "empty 'label'",
    "header_only": "no data rows",
    "empty_file": "is empty",
    "bad_split": "'split' is",
    "one_class": "a classifier needs at least 2",
    "other_delimiter_header": "has no column(s)",
}


@FUZZ
@given(case=bad_csvs())
def test_malformed_csvs(case):
    defect, content = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data.csv").write_bytes(content)
        err = _run_bad(root, ["train", "--dataset", "data.csv", "--output-dir", "out"])
        assert CSV_EXPECTED[defect] in err, (defect, content, err)


# ----------------------------------------------------------------------------- arguments

BAD_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--val-split"]), st.one_of(st.floats(max_value=0), st.floats(min_value=1),
                                                          st.just("half"))),
    st.tuples(st.sampled_from(["--epochs", "--n", "--batch-size", "--grad-accum", "--train-per-class",
                               "--max-eval", "--image-size", "--max-length"]),
              st.one_of(st.integers(max_value=0), st.sampled_from(["1.5", "ten", ""]))),
    st.tuples(st.sampled_from(["--lr"]), st.one_of(st.floats(max_value=0, allow_nan=False), st.just("fast"))),
    st.tuples(st.sampled_from(["--alpha"]), st.sampled_from(["-1", "0", "a,b", "1,2,3", "0.2,-1"])),
    st.tuples(st.sampled_from(["--method"]), st.text(alphabet="abcxyz-", min_size=1, max_size=10)),
    st.tuples(st.sampled_from(["--mixed-precision", "--attention"]), st.sampled_from(["fp8", "none", "x"])),
    st.tuples(st.sampled_from(["--label-smoothing", "--distill-weight"]), st.sampled_from(["-0.1", "1.5", "lots"])),
)


@FUZZ
@given(option=BAD_OPTIONS, command=st.sampled_from(["train", "compare"]))
def test_malformed_arguments(option, command):
    flag, value = option
    if command == "compare" and flag == "--method":
        flag = "--methods"
    with tempfile.TemporaryDirectory() as tmp:
        err = _run_bad(Path(tmp), [command, "--dataset", "digits", f"{flag}={value}", "--output-dir", "out"])
        assert flag in err or "unknown method" in err, err


@FUZZ
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_./-", min_size=1, max_size=20))
def test_unknown_datasets_and_models(name):
    name = f"x_{name}"  # never an embedded name
    with tempfile.TemporaryDirectory() as tmp:
        err = _run_bad(Path(tmp), ["train", "--dataset", name, "--output-dir", "out"])
        assert "does not exist" in err or "unknown data set" in err or "not a .csv" in err, err
        err = _run_bad(Path(tmp), ["train", "--dataset", "digits", "--model", name, "--output-dir", "out"])
        assert "unknown model" in err or "is a file" in err, err


# ----------------------------------------------------------------------------- real processes


@pytest.mark.parametrize("content, message", [
    (b"sentence;y\nhi;1\n", "has no column(s)"),
    (b"text,label\nhi,1\nthere,\n", "row 3: empty 'label'"),
])
def test_subprocess_malformed_csv(tmp_path, content, message):
    (tmp_path / "d.csv").write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "hf_multimix.cli", "train", "--dataset", "d.csv", "--output-dir",
                           "out"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]

"""Every training number checked once, before anything loads (issue 21): `TrainingConfig` and the
CLI's training options refuse non-finite, out-of-range and mistyped values with one clear message,
accept NumPy integers, and a run that cannot train (no batches, a non-finite loss or weights)
stops with one line and saves nothing non-finite."""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_multimix.training import TrainingConfig

FUZZ = settings(max_examples=int(os.environ.get("HF_MULTIMIX_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                derandomize="HF_MULTIMIX_FUZZ_EXAMPLES" not in os.environ)

# name -> (accepts(value) for a real number, example of a good value)
REAL_FIELDS = {
    "lr": lambda v: v > 0,
    "weight_decay": lambda v: v >= 0,
    "warmup_ratio": lambda v: 0 <= v < 1,
    "input_mix_alpha": lambda v: v > 0,
    "label_smoothing": lambda v: 0 <= v < 1,
    "max_grad_norm": lambda v: v > 0,
}
INT_FIELDS = {
    "epochs": lambda v: v >= 1,
    "gradient_accumulation_steps": lambda v: v >= 1,
    "eval_every": lambda v: v >= 1,
    "max_steps_per_epoch": lambda v: v >= 1,
    "mix_off_epoch": lambda v: v >= 1,
    "seed": lambda v: 0 <= v < 2**32,
}

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                    st.sampled_from([0.0, -0.0, 1e-12, 0.999999, 1.0, -1.0, 2**32, 2**32 - 1]))


@FUZZ
@given(name=st.sampled_from(sorted(REAL_FIELDS)), value=NUMBERS,
       wrap=st.sampled_from([float, np.float32, np.float64, lambda v: v]))
def test_real_fields_accept_exactly_the_finite_values_in_range(name, value, wrap):
    try:
        value = wrap(value)
    except OverflowError:
        return
    ok = math.isfinite(float(value)) and REAL_FIELDS[name](float(value))
    if ok:
        config = TrainingConfig(output_dir="unused", **{name: value})
        assert type(getattr(config, name)) is float and getattr(config, name) == float(value)
    else:
        with pytest.raises(ValueError, match=rf"{name} must be a finite number in .* got "):
            TrainingConfig(output_dir="unused", **{name: value})


@FUZZ
@given(name=st.sampled_from(sorted(INT_FIELDS)), value=st.integers(-5, 2**33),
       wrap=st.sampled_from([int, np.int64, np.int32, np.uint8]))
def test_integer_fields_accept_numpy_integers_in_range(name, value, wrap):
    if wrap in (np.int32, np.uint8):
        info = np.iinfo(wrap)
        value = min(max(value, int(info.min)), int(info.max))
    value = wrap(value)
    if INT_FIELDS[name](int(value)):
        config = TrainingConfig(output_dir="unused", **{name: value})
        assert type(getattr(config, name)) is int and getattr(config, name) == int(value)
    else:
        with pytest.raises(ValueError, match=rf"{name} must be .*integer.* got {int(value)}"):
            TrainingConfig(output_dir="unused", **{name: value})


@pytest.mark.parametrize("name, value", [
    ("epochs", 1.5), ("epochs", True), ("epochs", "3"), ("seed", 0.0), ("gradient_accumulation_steps", None),
    ("lr", "1e-3"), ("lr", None), ("max_grad_norm", True), ("warmup_ratio", torch.tensor(0.1)),
    ("progress", 1), ("save_checkpoints", "no"), ("output_dir", None), ("resume_from", 3),
])
def test_wrong_types_are_refused_with_the_type(name, value):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        TrainingConfig(**{"output_dir": "unused", name: value})


def test_the_values_the_issue_found_are_refused():
    with pytest.raises(ValueError, match=r"max_grad_norm must be a finite number in \(0.0, inf\), got -1.0; e.g. 1.0, "
                                         r"or None for no clipping"):
        TrainingConfig(output_dir="unused", max_grad_norm=-1)  # it reversed the update
    with pytest.raises(ValueError, match="lr must be a finite number"):
        TrainingConfig(output_dir="unused", lr=float("inf"))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 4294967295\], got -1"):
        TrainingConfig(output_dir="unused", seed=-1)
    assert TrainingConfig(output_dir="unused", max_grad_norm=None).max_grad_norm is None
    assert TrainingConfig(output_dir=Path("runs") / "x").output_dir == os.path.join("runs", "x")


# ----------------------------------------------------------------------------- the loop


def _head():
    import timm

    from hf_multimix import MultiMixHead

    torch.manual_seed(0)
    return MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16)


def _loader(n, batch_size=4, drop_last=False):
    items = [{"pixel_values": torch.randn(3, 16, 16), "labels": torch.tensor(i % 3)} for i in range(n)]
    return torch.utils.data.DataLoader(items, batch_size=batch_size, drop_last=drop_last)


@pytest.mark.parametrize("which", ["train", "eval"])
def test_a_loader_without_batches_is_refused_before_training(tmp_path, which):
    from hf_multimix.training import train

    empty = _loader(3, batch_size=4, drop_last=True)
    loaders = (empty, _loader(4)) if which == "train" else (_loader(4), empty)
    with pytest.raises(ValueError, match=rf"{which}_loader has no batches \(3 example\(s\), batch_size 4, drop_last "
                                         r"True\); give it data"):
        train(_head(), *loaders, TrainingConfig(output_dir=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()


class _PoisonedAdamW(torch.optim.AdamW):
    """AdamW whose second step leaves a NaN in the first parameter (what a diverging run does)."""

    steps = 0

    def step(self, closure=None):
        out = super().step(closure)
        type(self).steps += 1
        if type(self).steps == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    import hf_multimix.training as training

    monkeypatch.setattr(training.torch.optim, "AdamW", _PoisonedAdamW)
    config = TrainingConfig(output_dir=str(tmp_path), epochs=2, max_steps_per_epoch=2, progress=False)
    with pytest.raises(FloatingPointError, match=r"the weights became non-finite in epoch 1 \(1 tensor\(s\), e.g. "
                                                 r".*\), so they were not saved.*lower the learning rate"):
        training.train(_head(), _loader(8), _loader(4), config)
    assert not (tmp_path / "checkpoint-best").exists() and not (tmp_path / "checkpoint-last").exists()
    assert not (tmp_path / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- the command line


def _cli(argv, cwd):
    from hf_multimix.cli import main

    err = io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
    finally:
        os.chdir(before)
    return code, err.getvalue().strip()


BAD_TRAINING_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--lr", "--weight-decay", "--label-smoothing"]),
              st.sampled_from(["inf", "-inf", "nan", "NaN", "1e999", "-1e-3"])),
    st.tuples(st.just("--seed"), st.one_of(st.integers(max_value=-1).map(str), st.integers(min_value=2**32).map(str),
                                           st.sampled_from(["1.5", "x", "", "nan"]))),
    st.tuples(st.sampled_from(["--epochs", "--eval-every", "--mix-off-epoch", "--grad-accum", "--batch-size"]),
              st.sampled_from(["0", "-1", "inf", "2.0", "1e3"])),
)


@FUZZ
@given(option=BAD_TRAINING_OPTIONS, command=st.sampled_from(["train", "compare"]))
def test_bad_training_numbers_get_one_line_and_write_nothing(option, command):
    flag, value = option
    with tempfile.TemporaryDirectory() as tmp:
        code, err = _cli([command, "--dataset", "digits", f"{flag}={value}", "--output-dir", "out"], tmp)
        assert code == 2 and len(err.splitlines()) == 1 and flag in err and "Traceback" not in err, err
        assert os.listdir(tmp) == []


@pytest.mark.parametrize("methods, message", [
    (",", "expected comma-separated methods"), (" , ,", "expected comma-separated methods"),
    ("erm,erm", "erm given twice"), ("multimix,erm,multimix", "multimix given twice"),
])
def test_compare_methods_must_name_each_method_once(tmp_path, methods, message):
    code, err = _cli(["compare", f"--methods={methods}", "--output-dir", "out"], tmp_path)
    assert code == 2 and len(err.splitlines()) == 1 and message in err and "--methods" in err
    assert os.listdir(tmp_path) == []


def test_a_diverging_cli_run_stops_with_one_line_and_saves_no_best(tmp_path):
    code, err = _cli(["train", "--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class",
                      "4", "--max-eval", "20", "--image-size", "16", "--batch-size", "8", "--no-progress",
                      "--lr", "1e30", "--output-dir", "out"], tmp_path)
    assert code == 2 and len(err.splitlines()) == 1 and "non-finite" in err and "learning rate" in err, err
    assert not (tmp_path / "out" / "checkpoint-best").exists()


# ----------------------------------------------------------------------------- run folders

from hf_multimix.training import CLI_RUN_MARKERS, check_run_folder, move_run_aside  # noqa: E402

HARMLESS = st.lists(st.sampled_from(["notes.txt", "data.csv", ".DS_Store", "README.md", "plots"]), max_size=3,
                    unique=True)


@FUZZ
@given(markers=st.lists(st.sampled_from(CLI_RUN_MARKERS), max_size=4, unique=True), harmless=HARMLESS,
       nested=st.booleans())
def test_any_trace_of_a_run_is_refused_and_nothing_else_is(markers, harmless, nested):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("a/b/run" if nested else "run")
        out.mkdir(parents=True)
        for name in [*markers, *harmless]:
            (out / name).mkdir() if name.startswith("checkpoint") or name == "plots" else (out / name).write_text("x")
        before = sorted(p.name for p in out.iterdir())
        if markers:
            with pytest.raises(ValueError, match=r"holds another run \((.*)\).*--resume .*checkpoint-last.*another "
                                                 r"--output-dir.*--overwrite") as info:
                check_run_folder(str(out), markers=CLI_RUN_MARKERS, cli=True)
            assert all(m in str(info.value) for m in markers)
            # its own continuation is allowed, a checkpoint of another folder is not
            check_run_folder(str(out), resume_from=str(out / "checkpoint-last"), markers=CLI_RUN_MARKERS)
            with pytest.raises(ValueError, match="holds another run"):
                check_run_folder(str(out), resume_from=str(Path(tmp) / "elsewhere" / "checkpoint-last"),
                                 markers=CLI_RUN_MARKERS)
            moved = move_run_aside(str(out))
            assert moved is not None and sorted(p.name for p in Path(moved).iterdir()) == before
            assert not out.exists()
        else:
            check_run_folder(str(out), markers=CLI_RUN_MARKERS, cli=True)
            assert move_run_aside(str(out)) is None
            assert sorted(p.name for p in out.iterdir()) == before


@FUZZ
@given(depth=st.integers(0, 2), command=st.sampled_from(["train", "compare"]))
def test_an_output_dir_under_a_file_is_refused_at_any_depth(depth, command):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f").write_text("mine")
        out = os.path.join("f", *["x"] * depth)
        code, err = _cli([command, "--dataset", "digits", "--output-dir", out], tmp)
        assert code == 2 and len(err.splitlines()) == 1 and "is a file" in err, err
        assert sorted(os.listdir(tmp)) == ["f"] and (Path(tmp) / "f").read_text() == "mine"


# ----------------------------------------------------------------------------- one reader


@FUZZ
@given(sep=st.sampled_from([",", ";", "\t", "|"]), bom=st.booleans(), extra=st.booleans(),
       texts=st.lists(st.text(alphabet="abc xyz,;|\"'é", min_size=1, max_size=15).filter(str.strip), min_size=2,
                      max_size=6))
def test_predict_reads_each_csv_as_train_reads_it(sep, bom, extra, texts):
    import csv as csvlib

    from hf_multimix.data.files import text_csv
    from hf_multimix.inference import csv_texts

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
            writer = csvlib.writer(f, delimiter=sep)
            writer.writerow((["id"] if extra else []) + ["text", "label"])
            for i, t in enumerate(texts):
                writer.writerow(([str(i)] if extra else []) + [t, ("pos", "neg")[i % 2]])
        trained_on = text_csv(path).train.inputs
        assert [t for _, t in csv_texts(path)] == list(trained_on) == texts


@FUZZ
@given(kind=st.sampled_from(["image", "text"]), given_kind=st.sampled_from(["image", "text"]),
       n=st.integers(1, 4))
def test_inputs_of_the_other_modality_are_refused(kind, given_kind, n):
    from types import SimpleNamespace

    from hf_multimix.inference import check_inputs_fit

    clf = SimpleNamespace(modality=kind, name="m")
    inputs = ["a text"] * n if given_kind == "text" else [np.zeros((4, 4, 3), np.uint8)] * n
    if kind == given_kind:
        check_inputs_fit(clf, inputs)
    else:
        with pytest.raises(ValueError, match=rf"'m' is a {kind} model but the input list holds {given_kind}s"):
            check_inputs_fit(clf, inputs)

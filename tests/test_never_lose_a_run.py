"""Never lose a run: interrupted training leaves the last complete checkpoint loadable and
`resume_from` continues it with the same metrics history; an output folder that cannot take
the checkpoints is refused before training."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import hf_multimix.training as training
from hf_multimix import MultiMixHead
from hf_multimix.training import TrainingConfig, train

sys.path.insert(0, str(Path(__file__).parent))
import _userdata as ud  # noqa: E402


class Batches(torch.utils.data.Dataset):
    """Eight tiny images, in batches of four; counts the examples training reads."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(8, 3, 16, 16, generator=g)
        self.y = torch.arange(8) % 3
        self.reads = 0

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], self.y[i]

    def loader(self):
        return torch.utils.data.DataLoader(self, batch_size=4, collate_fn=lambda b: {
            "pixel_values": torch.stack([x for x, _ in b]), "labels": torch.stack([y for _, y in b])})


def tiny_head():
    torch.manual_seed(0)
    return MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16)


def config(out, epochs, **kw):
    return TrainingConfig(output_dir=str(out), epochs=epochs, progress=False, **kw)


def run(out, epochs, **kw):
    data = Batches()
    return train(tiny_head(), data.loader(), Batches(1).loader(), config(out, epochs, **kw))


def saved_epoch(folder):
    return json.loads((folder / "trainer_state.json").read_text())["epoch"]


def test_resume_after_ctrl_c_in_a_checkpoint_write(tmp_path, monkeypatch):
    out = tmp_path / "run"
    reference = run(tmp_path / "straight", 3)
    saves = []
    real_save = torch.save

    def interrupted_save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:  # epoch 2: optimizer.pt of the second checkpoint
            raise KeyboardInterrupt
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(training.torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run(out, 3)
    monkeypatch.setattr(training.torch, "save", real_save)
    last = out / "checkpoint-last"
    assert saved_epoch(last) == 1
    assert set(load_file(str(last / "model.safetensors"))) == set(tiny_head().model.state_dict())
    assert not [p for p in os.listdir(out) if ".tmp-" in p]  # the partial write is gone

    history = run(out, 3, resume_from=str(last))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert history[0] == first
    # The interrupted run's first epoch is the straight run's: same data, seed and weights.
    assert history[0]["train_loss"] == pytest.approx(reference[0]["train_loss"])
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert saved_epoch(last) == 3


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    import hf_multimix.training as training
    from test_never_lose_a_run import Batches, config, tiny_head

    real_save = training.save_file
    calls = []

    def save_then_die(state, path, *args, **kwargs):
        calls.append(path)
        real_save(state, path, *args, **kwargs)
        if len(calls) == 3:  # epoch 2: weights written into the temporary folder, then killed
            os.kill(os.getpid(), signal.SIGKILL)

    training.save_file = save_then_die
    training.train(tiny_head(), Batches().loader(), Batches(1).loader(), config({out!r}, 3))
""")


def test_a_killed_process_leaves_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    script = KILLED_RUN.format(tests=os.path.dirname(__file__), out=str(out))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    last = out / "checkpoint-last"
    assert saved_epoch(last) == 1
    assert [p for p in os.listdir(out) if ".tmp-" in p]  # the half-written checkpoint, never renamed
    history = run(out, 2, resume_from=str(last))
    assert [h["epoch"] for h in history] == [1, 2] and saved_epoch(last) == 2
    assert not [p for p in os.listdir(out) if ".tmp-" in p]


def test_resume_from_a_checkpoint_killed_between_renames(tmp_path):
    out = tmp_path / "run"
    run(out, 1)
    last = out / "checkpoint-last"
    os.rename(last, str(last) + ".old")  # the state between moving the old one aside and the new one in
    history = run(out, 2, resume_from=str(last))
    assert [h["epoch"] for h in history] == [1, 2] and saved_epoch(last) == 2
    assert not os.path.exists(str(last) + ".old")


def test_unwritable_output_folder_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    data = Batches()
    with pytest.raises(OSError, match=r"cannot write to the output folder .*a-file/run.*choose another output folder"):
        train(tiny_head(), data.loader(), None, config(blocker / "run", 1))
    assert data.reads == 0


def test_full_disk_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(training.shutil, "disk_usage", lambda path: type("U", (), {"free": 2**20})())
    data = Batches()
    head = tiny_head()
    with pytest.raises(OSError, match=r"not enough free space in .* about \d+ MiB needed, 1 MiB free"):
        train(head, data.loader(), None, config(tmp_path, 1))
    assert data.reads == 0
    # Without checkpoints there is nothing large to write.
    train(head, data.loader(), None, config(tmp_path, 1, save_checkpoints=False))
    assert data.reads == 8


def test_disk_full_during_a_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    saves = []
    real_save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(training.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*checkpoint-last.*PytorchStreamWriter failed writing file.*"
                                      r"the previous complete version is still there"):
        run(out, 3)
    assert saved_epoch(out / "checkpoint-last") == 1


def test_cli_reports_unwritable_folder_and_interrupt_in_one_line(tmp_path, capsys, monkeypatch):
    from hf_multimix.cli import main

    tiny = ["--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class", "4", "--max-eval",
            "20", "--image-size", "16", "--batch-size", "8", "--no-progress"]
    monkeypatch.setattr(training.shutil, "disk_usage", lambda path: type("U", (), {"free": 0})())
    assert main(["train", *tiny, "--output-dir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not enough free space" in err and "Traceback" not in err
    assert not (tmp_path / "full" / "metrics.json").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    assert main(["train", *tiny, "--output-dir", str(tmp_path / "stopped")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "hf-multimix: interrupted"


# ----------------------------------------------------------------------------- one run per folder

TINY_CLI = ["--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class", "4", "--max-eval",
            "20", "--image-size", "16", "--batch-size", "8", "--no-progress"]


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_loading(monkeypatch):
    import hf_multimix.cli as cli

    def refuse(*args, **kwargs):
        raise AssertionError("the data and model were loaded before the output folder was checked")

    monkeypatch.setattr(cli, "prepare", refuse)


def test_a_second_train_into_a_finished_run_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys, monkeypatch):
    from hf_multimix.cli import main

    out = tmp_path / "run"
    assert main(["train", *TINY_CLI, "--output-dir", str(out)]) == 0
    before = _snapshot(out)
    assert "checkpoint-best/model.safetensors" in before and "metrics.json" in before
    capsys.readouterr()
    with monkeypatch.context() as m:
        _no_loading(m)
        assert main(["train", *TINY_CLI, "--seed", "1", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another run" in err
    assert f"--resume {out / 'checkpoint-last'}" in err and "another --output-dir" in err and "--overwrite" in err
    assert _snapshot(out) == before  # not a byte changed

    assert main(["train", *TINY_CLI, "--seed", "1", "--overwrite", "--output-dir", str(out)]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and _snapshot(moved[0]) == before  # the old run, whole, beside the new one
    assert f"moved the earlier run in {out} to {moved[0]}" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    # --overwrite is not carried by args.yaml: `--config` of the run does not move the next run aside by itself
    with monkeypatch.context() as m:
        _no_loading(m)
        assert main(["train", "--config", str(out / "args.yaml"), "--output-dir", str(out)]) == 2
    assert "holds another run" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("left", ["args.yaml", "checkpoint-last", "metrics.jsonl"])
def test_a_started_run_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch, command, left):
    from hf_multimix.cli import main

    _no_loading(monkeypatch)
    out = tmp_path / "run"
    target = out / "erm" / left if command == "compare" else out / left  # compare: a method's folder counts too
    target.parent.mkdir(parents=True)
    target.mkdir() if left.startswith("checkpoint") else target.write_text("x")
    argv = [command, *TINY_CLI, "--output-dir", str(out)] + (["--methods", "erm,mixup"] if command == "compare" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another run" in err and left in err


def test_an_output_dir_that_is_a_file_is_refused_before_anything_loads(tmp_path, capsys, monkeypatch):
    from hf_multimix.cli import main

    _no_loading(monkeypatch)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    for out in (blocker, blocker / "run"):
        for command in ("train", "compare"):
            assert main([command, *TINY_CLI, "--output-dir", str(out)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "is a file" in err and "choose another output folder" in err
    assert blocker.read_text() == "mine"


def test_resume_with_a_missing_checkpoint_or_with_overwrite_is_refused_early(tmp_path, capsys, monkeypatch):
    from hf_multimix.cli import main

    _no_loading(monkeypatch)
    assert main(["train", *TINY_CLI, "--output-dir", str(tmp_path / "r"), "--resume", str(tmp_path / "nope")]) == 2
    assert "no trainer_state.json" in capsys.readouterr().err
    assert main(["train", *TINY_CLI, "--output-dir", str(tmp_path / "r"), "--resume", str(tmp_path / "nope"),
                 "--overwrite"]) == 2
    assert "pass one" in capsys.readouterr().err


def test_train_api_refuses_a_folder_holding_another_run(tmp_path):
    out = tmp_path / "run"
    run(out, 1)
    data = Batches()
    with pytest.raises(ValueError, match=r"holds another run \(metrics.jsonl, checkpoint-last, checkpoint-best\).*"
                                         r"resume_from=.*checkpoint-last.*move_run_aside"):
        train(tiny_head(), data.loader(), None, config(out, 2))
    assert data.reads == 0
    moved = training.move_run_aside(str(out))
    assert os.path.isdir(os.path.join(moved, "checkpoint-last")) and not out.exists()
    assert [h["epoch"] for h in run(out, 1)] == [1]


def test_checkpoint_best_is_replaced_only_by_a_better_score(tmp_path, monkeypatch):
    scores = iter([0.5, 0.3, 0.5, 0.7, 0.6])
    real = training.evaluate

    def scripted(*args, **kwargs):
        return {**real(*args, **kwargs), "eval_accuracy": next(scores)}

    monkeypatch.setattr(training, "evaluate", scripted)
    saved = []
    real_best = training._save_best
    monkeypatch.setattr(training, "_save_best", lambda path, head, record, *a: (saved.append(record["epoch"]),
                                                                               real_best(path, head, record, *a)))
    history = run(tmp_path / "run", 3)
    assert [h["best_eval_accuracy"] for h in history] == [0.5, 0.5, 0.5]
    assert saved == [1]  # a tie (epoch 3) keeps the first
    best = json.loads((tmp_path / "run" / "checkpoint-best" / training.BEST_SCORE).read_text())
    assert best == {"epoch": 1, "eval_accuracy": 0.5}
    # resumed: only 0.7 (epoch 4) beats what checkpoint-best holds
    history = run(tmp_path / "run", 5, resume_from=str(tmp_path / "run" / "checkpoint-last"))
    assert saved == [1, 4] and [h["best_eval_accuracy"] for h in history][-2:] == [0.7, 0.7]


# ----------------------------------------------------------------------------- resume = uninterrupted


def _shuffled_run(out, epochs, stop_after=None, head_kw=None, **kw):
    """3 epochs of MultiMix on half the steps and CutMix on the others (torch, Python and NumPy draws), over a
    shuffled loader with its own generator; with `stop_after`, interrupted once that epoch's checkpoint is whole."""
    data = Batches()
    g = torch.Generator().manual_seed(5)
    loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True, generator=g, collate_fn=lambda b: {
        "pixel_values": torch.stack([x for x, _ in b]), "labels": torch.stack([y for _, y in b])})
    torch.manual_seed(0)
    head = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16, prob=0.5,
                        **(head_kw or {}))
    return train(head, loader, Batches(1).loader(), config(out, epochs, other_steps="cutmix", **kw))


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one_bit_for_bit(tmp_path, monkeypatch):
    straight = _shuffled_run(tmp_path / "straight", 3)
    with ud.interrupted_after_first_checkpoint(monkeypatch), pytest.raises(KeyboardInterrupt):
        _shuffled_run(tmp_path / "cut", 3)
    last = tmp_path / "cut" / "checkpoint-last"
    assert saved_epoch(last) == 1 and (last / training.RNG_STATE).is_file()
    import shutil

    shutil.copytree(tmp_path / "cut", tmp_path / "cut-without-rng")
    resumed = _shuffled_run(tmp_path / "cut", 3, resume_from=str(last))
    timeless = [[{k: v for k, v in h.items() if k != "epoch_time_s"} for h in run] for run in (straight, resumed)]
    assert timeless[0] == timeless[1]  # the same losses and accuracies, epoch by epoch
    a = load_file(str(tmp_path / "straight" / "checkpoint-last" / "model.safetensors"))
    b = load_file(str(last / "model.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the control: without the saved random state the resumed epochs draw other batches and mixes
    other = tmp_path / "cut-without-rng" / "checkpoint-last"
    os.remove(other / training.RNG_STATE)
    _shuffled_run(tmp_path / "cut-without-rng", 3, resume_from=str(other))
    c = load_file(str(other / "model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_resumed_run_with_an_ema_teacher_distils_from_the_teacher_it_saved(tmp_path, monkeypatch):
    ema = {"distill_weight": 0.5, "teacher": "ema", "ema_decay": 0.5}
    straight = _shuffled_run(tmp_path / "straight", 3, head_kw=ema)
    with ud.interrupted_after_first_checkpoint(monkeypatch), pytest.raises(KeyboardInterrupt):
        _shuffled_run(tmp_path / "cut", 3, head_kw=ema)
    last = tmp_path / "cut" / "checkpoint-last"
    assert (last / training.TEACHER_STATE).is_file()
    import shutil

    shutil.copytree(tmp_path / "cut", tmp_path / "cut-without-teacher")
    resumed = _shuffled_run(tmp_path / "cut", 3, head_kw=ema, resume_from=str(last))
    timeless = [[{k: v for k, v in h.items() if k != "epoch_time_s"} for h in run] for run in (straight, resumed)]
    assert timeless[0] == timeless[1]
    a = load_file(str(tmp_path / "straight" / "checkpoint-last" / "model.safetensors"))
    b = load_file(str(last / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ta = load_file(str(tmp_path / "straight" / "checkpoint-last" / training.TEACHER_STATE))
    tb = load_file(str(last / training.TEACHER_STATE))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    # the control: a checkpoint without the teacher's weights restarts it from the model's, and trains otherwise
    other = tmp_path / "cut-without-teacher" / "checkpoint-last"
    os.remove(other / training.TEACHER_STATE)
    _shuffled_run(tmp_path / "cut-without-teacher", 3, head_kw=ema, resume_from=str(other))
    c = load_file(str(other / "model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resuming_with_another_class_count_names_the_classes(tmp_path):
    run(tmp_path / "run", 1)
    torch.manual_seed(0)
    other = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=5), n=16)
    with pytest.raises(ValueError, match=r"holds the weights of another model \(it predicts 3 classes, this model 5\): "
                                         r"fc.bias \[3\] in the checkpoint, \[5\] here.*resume with the model and data"):
        train(other, Batches().loader(), None, config(tmp_path / "run", 2,
                                                       resume_from=str(tmp_path / "run" / "checkpoint-last")))


def test_compare_overwrite_moves_the_whole_comparison_aside(tmp_path, capsys):
    from hf_multimix.cli import build_parser, claim_output_dir

    out = tmp_path / "cmp"
    (out / "mixup" / "checkpoint-last").mkdir(parents=True)
    (out / "compare.md").write_text("| erm |")
    args = build_parser().parse_args(["compare", "--methods", "erm,mixup", "--output-dir", str(out)])
    with pytest.raises(ValueError, match="holds another run"):
        claim_output_dir(args)
    args.overwrite = True
    claim_output_dir(args)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("cmp.old-")]
    assert len(moved) == 1 and (moved[0] / "mixup" / "checkpoint-last").is_dir() and not out.exists()
    assert "--overwrite: moved the earlier run" in capsys.readouterr().out

"""Recipe options the accuracy study measures: label noise, per-step probability, mixing off
for the last epochs (the training loop and the CLI)."""

import numpy as np
import pytest
import timm
import torch

from hf_multimix import MultiMixHead
from hf_multimix.cli import build_parser, head_for, prepare
from hf_multimix.data import Split, flip_labels
from hf_multimix.training import TrainingConfig, train


def test_flip_labels_flips_the_requested_count_to_other_classes_reproducibly():
    labels = np.arange(200) % 10
    part = Split(np.zeros((200, 2, 2), np.uint8), labels)
    noisy = flip_labels(part, 0.4, 10, seed=3)
    changed = noisy.labels != labels
    assert changed.sum() == 80  # every drawn example moves to another class, none keeps its own
    assert np.array_equal(noisy.labels, flip_labels(part, 0.4, 10, seed=3).labels)
    assert not np.array_equal(noisy.labels, flip_labels(part, 0.4, 10, seed=4).labels)
    assert noisy.labels.min() >= 0 and noisy.labels.max() <= 9
    assert noisy.inputs is part.inputs and np.array_equal(part.labels, labels)  # the input split is not touched
    assert flip_labels(part, 0.0, 10) is part


def test_flip_labels_errors():
    part = Split(np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"label noise fraction must be in \[0, 1\], got 1.5"):
        flip_labels(part, 1.5, 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        flip_labels(part, 0.5, 1)


def test_label_noise_corrupts_training_labels_only():
    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "20", "--max-eval", "100",
            "--image-size", "16", "--output-dir", "unused"]
    clean = prepare(build_parser().parse_args(argv))
    noisy = prepare(build_parser().parse_args([*argv, "--label-noise", "0.2"]))
    y_clean, y_noisy = clean.train_loader.dataset.split.labels, noisy.train_loader.dataset.split.labels
    assert (y_clean != y_noisy).sum() == 40  # 20% of 200
    assert np.array_equal(clean.eval_loader.dataset.split.labels, noisy.eval_loader.dataset.split.labels)


def test_prob_reaches_multimix_and_manifold_mixup_heads():
    args = build_parser().parse_args(["train", "--prob", "0.5", "--output-dir", "unused"])
    for method in ("multimix", "manifold-mixup", "dense-multimix"):
        head = head_for(method, timm.create_model("resnet10t", pretrained=False, num_classes=3), args)
        assert head.prob == 0.5
    assert head_for("erm", timm.create_model("resnet10t", pretrained=False, num_classes=3), args).prob == 0.0


def _loader(n=16, batch=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.arange(n) % 3
    return [{"pixel_values": x[i:i + batch], "labels": y[i:i + batch]} for i in range(0, n, batch)]


@pytest.mark.parametrize("input_mix", [None, "mixup"])
def test_mix_off_epoch_trains_the_last_epochs_with_plain_cross_entropy(tmp_path, input_mix):
    head = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16, prob=0.7)
    seen = []  # (head.mixing_enabled, head.prob, labels are class ids) at each training forward
    head.register_forward_pre_hook(lambda m, a, kw: seen.append((m.mixing_enabled, m.prob, kw["labels"].dim() == 1))
                                   if m.training else None, with_kwargs=True)
    config = TrainingConfig(output_dir=str(tmp_path), epochs=3, mix_off_epoch=2, input_mix=input_mix,
                            save_checkpoints=False, progress=False)
    history = train(head, _loader(), None, config)
    assert len(history) == 3
    # two batches an epoch: two epochs mixing (and soft input-mixed targets), then the switch is off: plain CE;
    # the head's prob is never rewritten
    assert seen == [(True, 0.7, input_mix is None)] * 4 + [(False, 0.7, True)] * 2
    assert head.mixing_enabled and head.prob == 0.7  # the switch is restored after training


def test_mix_off_epoch_is_validated():
    with pytest.raises(ValueError, match="mix_off_epoch must be a positive integer"):
        TrainingConfig(output_dir="unused", mix_off_epoch=0)


def test_eval_every_evaluates_on_schedule_and_after_the_last_epoch(tmp_path):
    from hf_multimix.cli import main

    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "resnet10t", "--epochs", "3", "--eval-every", "2",
                 "--train-per-class", "4", "--max-eval", "20", "--image-size", "16", "--batch-size", "20",
                 "--no-progress", "--output-dir", str(out)]) == 0
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert [("eval_accuracy" in h) for h in metrics["history"]] == [False, True, True]
    assert metrics["best_eval_accuracy"] == max(h["eval_accuracy"] for h in metrics["history"][1:])


def test_the_seed_fixes_the_initial_weights_whatever_ran_before():
    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "4", "--max-eval", "20",
            "--image-size", "16", "--seed", "1", "--output-dir", "unused"]
    first = prepare(build_parser().parse_args(argv)).model.state_dict()
    torch.rand(1000)  # another run in the same process moves the global generator
    second = prepare(build_parser().parse_args(argv)).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = prepare(build_parser().parse_args([*argv[:-4], "--seed", "2", "--output-dir", "unused"])).model.state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_cli_and_head_share_the_default_recipe():
    from hf_multimix import MultiMixConfig

    defaults = MultiMixConfig()
    args = build_parser().parse_args(["train", "--output-dir", "unused"])
    assert args.clean_weight == defaults.clean_weight == 1.0
    assert args.prob == defaults.prob == 1.0
    assert (args.n, args.attention, args.label_smoothing) == (defaults.n, defaults.attention, defaults.label_smoothing)
    assert head_for("multimix", timm.create_model("resnet10t", pretrained=False, num_classes=3),
                    args).multimix_config == defaults.replace(alpha=0.2, mixing="class-balanced")  # "auto", resolved
    assert args.mixing == defaults.mixing == "auto"
    assert head_for("multimix", timm.create_model("resnet10t", pretrained=False, num_classes=3), build_parser(
        ).parse_args(["train", "--mixing", "multimix", "--output-dir", "unused"])).mixing == "multimix"
    head = head_for("multimix", timm.create_model("resnet10t", pretrained=False, num_classes=3), args)
    assert head.clean_weight == 1.0
    # manifold mixup stays the standard baseline (mixed pairs only) whatever MultiMix's default
    manifold = head_for("manifold-mixup", timm.create_model("resnet10t", pretrained=False, num_classes=3), args)
    assert manifold.clean_weight == 0.0 and manifold.mixing == "pairwise"


def test_other_steps_cutmix_shares_the_steps_between_the_head_and_the_inputs(tmp_path):
    import random

    head = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16, prob=0.5)
    seen = []  # (the loop's decision for the head, labels are class ids) at each training forward
    head.register_forward_pre_hook(lambda m, a, kw: seen.append((m.mix_next, kw["labels"].dim() == 1)) if m.training
                                   else None, with_kwargs=True)
    config = TrainingConfig(output_dir=str(tmp_path), epochs=10, other_steps="cutmix", save_checkpoints=False,
                            progress=False, seed=0)
    train(head, _loader(), None, config)
    # every step mixes at exactly one layer: the head's MultiMix on class ids, or CutMix's soft targets with no
    # second mixing by the head
    assert set(seen) == {(True, True), (False, False)}
    random.seed(0)  # train seeds Python's random with config.seed; the draws decide the layers in order
    assert [d for d, _ in seen] == [random.random() < 0.5 for _ in seen]
    assert head.prob == 0.5 and head.mix_next is None


def test_other_steps_errors(tmp_path):
    with pytest.raises(ValueError, match="other_steps must be one of"):
        TrainingConfig(output_dir="unused", other_steps="cutout")
    with pytest.raises(ValueError, match="both mix the inputs"):
        TrainingConfig(output_dir="unused", other_steps="cutmix", input_mix="mixup")
    head = MultiMixHead(timm.create_model("resnet10t", pretrained=False, num_classes=3), n=16)
    config = TrainingConfig(output_dir=str(tmp_path), other_steps="mixup", save_checkpoints=False, progress=False)
    with pytest.raises(ValueError, match=r"0 < prob < 1 \(e.g. MultiMixHead\(model, prob=0.5\)"):
        train(head, _loader(), None, config)


@pytest.mark.parametrize("extra, message", [
    (["--method", "multimix"], "with --prob 1 there are none"),
    (["--method", "erm", "--prob", "0.5"], "--method erm has none"),
    (["--method", "multimix", "--prob", "0.5", "--dataset", "tweets", "--train-per-class", "4"], "is text"),
])
def test_cli_other_steps_errors(extra, message):
    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "4", "--max-eval", "20",
            "--image-size", "16", "--other-steps", "cutmix", "--output-dir", "unused", *extra]
    with pytest.raises(ValueError, match=message):
        prepare(build_parser().parse_args(argv), build_parser().parse_args(argv).method)


def test_noisy_labels_is_one_argument_for_the_noisy_label_recipe(tmp_path, capsys):
    import json

    import yaml

    from hf_multimix.cli import main, recipe_args

    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "4", "--max-eval", "20",
            "--image-size", "16", "--epochs", "1", "--no-progress", "--noisy-labels", "--output-dir", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # images: mixed examples only, and CutMix of the inputs on half the steps
    assert (metrics["clean_weight"], metrics["prob"], metrics["other_steps"]) == (0.0, 0.5, "cutmix")
    assert metrics["noisy_labels"] is True
    saved = yaml.safe_load((out / "args.yaml").read_text())
    assert saved["noisy_labels"] is True and saved["clean_weight"] == 1.0  # as given, so --config reads it back
    assert main(["train", "--config", str(out / "args.yaml"), "--output-dir", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert (again["clean_weight"], again["prob"], again["other_steps"]) == (0.0, 0.5, "cutmix")
    # a pretrained image model (the embedded EfficientNet-Lite0, --pretrained, --pretrained-file) trains with
    # mixed examples only and no CutMix; text keeps the default recipe, with one line saying why
    for extra in ([], ["--model", "resnet10t", "--pretrained"], ["--model", "resnet10t", "--pretrained-file", "w.pt"]):
        pretrained = build_parser().parse_args(["train", *extra, "--noisy-labels", "--output-dir", "unused"])
        resolved = recipe_args(pretrained, "dense-multimix", "image")
        assert (resolved.clean_weight, resolved.prob, resolved.other_steps) == (0.0, 1.0, "ce")
    text = build_parser().parse_args(["train", "--dataset", "tweets", "--noisy-labels", "--output-dir", "unused"])
    assert recipe_args(text, "multimix", "text") is text
    assert "text keeps the default recipe" in capsys.readouterr().out
    scratch = build_parser().parse_args(["train", "--model", "resnet10t", "--noisy-labels", "--output-dir", "unused"])
    assert recipe_args(scratch, "manifold-mixup", "image") is scratch  # baselines keep their recipe
    plain = build_parser().parse_args(["train", "--model", "resnet10t", "--output-dir", "unused"])
    assert recipe_args(plain, "multimix", "image") is plain


@pytest.mark.parametrize("extra, message", [
    (["--clean-weight", "0.5"], "--noisy-labels sets --clean-weight 0, --prob 0.5 and --other-steps cutmix itself; "
                                "drop --clean-weight 0.5 or --noisy-labels"),
    (["--method", "erm"], "--noisy-labels is a MultiMix recipe; --method erm does not use it"),
])
def test_noisy_labels_errors(tmp_path, capsys, extra, message):
    from hf_multimix.cli import main

    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "4", "--max-eval", "20",
            "--image-size", "16", "--no-progress", "--noisy-labels", "--output-dir", str(tmp_path / "run"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err

"""`MultiMixConfig`: one set of defaults for every layer, every number checked once, saved beside
every checkpoint; the switch, the EMA teacher per optimizer step and the shared mixing decision."""

import json
import os
import random
import time

import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hf_multimix import MultiMixConfig, MultiMixHead, dense_multimix_loss, multimix_loss, recipes, sample_lambda
from hf_multimix.config import CONFIG_NAME


def tiny_timm(classes=3):
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False, num_classes=classes)


def batch(m=4, size=16, classes=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(m, 3, size, size, generator=g), torch.arange(m) % classes


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("options, exc, match", [
    (dict(clean_weight=float("nan")), ValueError, r"clean_weight must be finite, got nan; e\.g\. clean_weight=1\.0"),
    (dict(clean_weight=float("inf")), ValueError, r"clean_weight must be finite, got inf"),
    (dict(clean_weight=-0.5), ValueError, r"clean_weight must be >= 0, got -0\.5"),
    (dict(prob=1.5), ValueError, r"prob must be in \[0, 1\], got 1\.5"),
    (dict(prob="0.5"), TypeError, r"prob must be a number, got '0\.5' \(str\)"),
    (dict(label_smoothing=1.0), ValueError, r"label_smoothing must be in \[0, 1\), got 1"),
    (dict(temperature=0.0), ValueError, r"temperature must be > 0, got 0"),
    (dict(temperature=float("nan")), ValueError, r"temperature must be finite"),
    (dict(ema_decay=1.5), ValueError, r"ema_decay must be in \[0, 1\]"),
    (dict(distill_weight=-0.1), ValueError, r"distill_weight must be in \[0, 1\]"),
    (dict(n=0), ValueError, r"n must be a positive integer, got 0: the number of mixes"),
    (dict(n=10.0), TypeError, r"n must be an integer, got 10\.0 \(float\)"),
    (dict(n=True), TypeError, r"n must be an integer, got True"),
    (dict(chunk_size=0), ValueError, r"chunk_size must be a positive integer, got 0"),
    (dict(alpha=float("inf")), ValueError, r"alpha must be finite"),
    (dict(alpha=float("nan")), ValueError, r"alpha must be > 0"),
    (dict(alpha=(2.0, 1.0)), ValueError, r"lo <= hi, got \(2\.0, 1\.0\); write it as \(1\.0, 2\.0\)"),
    (dict(alpha="0.2"), ValueError, r"alpha must be a positive float or a \(lo, hi\) range"),
    (dict(attention="saliency"), ValueError, r"unknown attention 'saliency'; choose one of"),
    (dict(teacher="mean"), ValueError, r"unknown teacher 'mean'"),
    (dict(mixing="triplet"), ValueError, r"unknown mixing 'triplet'"),
    (dict(dense="yes"), TypeError, r"dense must be True or False, got 'yes'"),
])
def test_every_option_is_checked_once_with_the_fix(options, exc, match):
    with pytest.raises(exc, match=match):
        MultiMixConfig(**options)
    # the head, the losses and the Trainer's dict all go through the same check
    with pytest.raises(exc, match=match):
        MultiMixHead(tiny_timm(), **options)
    loss_options = {k: v for k, v in options.items() if k in ("n", "alpha", "clean_weight", "label_smoothing",
                                                              "temperature", "distill_weight", "chunk_size")}
    if loss_options:
        with pytest.raises(exc, match=match):
            multimix_loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), nn.Linear(5, 3), **loss_options)


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    config = MultiMixConfig(n=np.int64(64), alpha=(np.float32(0.5), np.int32(2)), prob=np.float64(0.5),
                            dense=np.bool_(True), chunk_size=np.int16(8))
    assert (config.n, config.alpha, config.prob, config.dense, config.chunk_size) == (64, (0.5, 2.0), 0.5, True, 8)
    assert type(config.n) is int and type(config.alpha[0]) is float and type(config.dense) is bool
    json.dumps(config.to_dict())  # plain JSON values
    head = MultiMixHead(tiny_timm(), n=np.int64(8))
    x, y = batch()
    assert torch.isfinite(head(x, labels=y).loss)


def test_unknown_options_are_refused_everywhere():
    with pytest.raises(TypeError, match=r"MultiMixHead got unknown MultiMix option\(s\) \['alhpa'\]"):
        MultiMixHead(tiny_timm(), alhpa=0.3)
    with pytest.raises(TypeError, match=r"multimix_loss got unknown MultiMix option\(s\) \['dense'\]"):
        multimix_loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 0]), nn.Linear(5, 3), dense=True)
    with pytest.raises(TypeError, match=r"unknown MultiMix option\(s\) \['extra'\]"):
        MultiMixConfig.from_dict({"n": 10, "extra": 1})
    with pytest.raises(TypeError, match=r"replace: unknown MultiMix option"):
        MultiMixConfig().replace(nn=3)


# ----------------------------------------------------------------------------- one set of defaults


def test_the_head_the_losses_and_the_sampler_share_one_set_of_defaults():
    defaults = MultiMixConfig()
    assert (defaults.alpha, defaults.clean_weight, defaults.attention) == (0.2, 1.0, "uniform")
    assert MultiMixHead(tiny_timm()).multimix_config == defaults.replace(mixing="class-balanced")  # "auto", resolved
    head = nn.Linear(5, 3)
    z, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(3)
    implicit = multimix_loss(z, y, head, n=50)  # samples lam with the default alpha, adds the clean term
    torch.manual_seed(3)
    lam = sample_lambda(6, 50, alpha=0.2)
    explicit = multimix_loss(z, y, head, lam, clean_weight=0) + F.cross_entropy(head(z), y)
    torch.testing.assert_close(implicit, explicit)
    torch.manual_seed(3)
    torch.testing.assert_close(sample_lambda(6, 50), lam)
    zt = torch.randn(6, 4, 5)
    lam_d = sample_lambda(6, 20, positions=4)
    torch.testing.assert_close(dense_multimix_loss(zt, y, head, lam_d),
                               dense_multimix_loss(zt, y, head, lam_d, attention="uniform", clean_weight=1.0))
    # a config given to a loss is the head's: keywords override it
    cfg = MultiMixConfig(clean_weight=0.0)
    torch.testing.assert_close(multimix_loss(z, y, head, lam, cfg), multimix_loss(z, y, head, lam, clean_weight=0))
    torch.testing.assert_close(multimix_loss(z, y, head, lam, cfg, clean_weight=1.0), multimix_loss(z, y, head, lam))


def test_head_options_come_from_the_config_and_keywords_override_it():
    config = MultiMixConfig(n=7, alpha=0.5, prob=0.5)
    head = MultiMixHead(tiny_timm(), config, n=9)
    assert (head.n, head.alpha, head.prob) == (9, 0.5, 0.5)
    assert config.n == 7  # not modified
    assert MultiMixHead(tiny_timm(), {"n": 11}).n == 11
    with pytest.raises(AttributeError, match=r"head\.multimix_config = head\.multimix_config\.replace\(prob=\.\.\.\)"):
        head.prob = 0.0
    head.multimix_config = head.multimix_config.replace(prob=0.25)
    assert head.prob == 0.25
    with pytest.raises(ValueError, match=r"\['dense'\] decide what MultiMixHead builds"):
        head.multimix_config = head.multimix_config.replace(dense=True)
    with pytest.raises(TypeError, match=r"wrapped already"):
        MultiMixHead(head)


# ----------------------------------------------------------------------------- saving


def test_config_round_trips_through_dict_and_folder(tmp_path):
    config = MultiMixConfig(n=123, alpha=(0.3, 0.9), dense=True, attention="cam", clean_weight=0.0, chunk_size=16)
    assert MultiMixConfig.from_dict(config.to_dict()) == config
    path = config.save_pretrained(tmp_path / "ckpt")
    assert os.path.basename(path) == CONFIG_NAME
    assert json.loads(open(path).read())["alpha"] == [0.3, 0.9]
    assert MultiMixConfig.from_pretrained(tmp_path / "ckpt") == config
    with pytest.raises(FileNotFoundError, match=r"no multimix_config\.json in .*empty"):
        MultiMixConfig.from_pretrained(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_NAME).write_text('{"n": 10, "nn": 3}')
    with pytest.raises(TypeError, match=r"multimix_config\.json: MultiMixConfig\.from_dict: unknown MultiMix option"):
        MultiMixConfig.from_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / CONFIG_NAME).write_text('{"clean_weight": NaN}')  # json reads NaN
    with pytest.raises(ValueError, match=r"clean_weight must be finite"):
        MultiMixConfig.from_pretrained(tmp_path / "bad")


def test_every_checkpoint_of_the_training_loop_carries_the_config(tmp_path):
    from hf_multimix.training import TrainingConfig, train

    head = MultiMixHead(tiny_timm(), n=16, alpha=(0.3, 0.6), clean_weight=0.25)
    x, y = batch(8)
    loader = [{"pixel_values": x[:4], "labels": y[:4]}, {"pixel_values": x[4:], "labels": y[4:]}]
    train(head, loader, loader, TrainingConfig(output_dir=str(tmp_path), epochs=1, progress=False))
    for folder in ("checkpoint-last", "checkpoint-best"):
        assert MultiMixConfig.from_pretrained(tmp_path / folder) == head.multimix_config
    # a head rebuilt from the folder trains as the saved one did
    again = MultiMixHead(tiny_timm(), MultiMixConfig.from_pretrained(tmp_path / "checkpoint-last"))
    assert again.multimix_config == head.multimix_config
    head.save_pretrained(str(tmp_path / "saved"))
    assert MultiMixConfig.from_pretrained(tmp_path / "saved") == head.multimix_config


def test_the_cli_config_round_trips_through_the_checkpoint_and_config_option(tmp_path):
    from hf_multimix.cli import main

    out = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--model", "resnet10t", "--train-per-class", "4", "--max-eval", "20",
            "--image-size", "16", "--epochs", "1", "--no-progress", "--n", "37", "--alpha", "0.3,0.6",
            "--clean-weight", "0.25", "--output-dir", str(out)]
    assert main(argv) == 0
    first = MultiMixConfig.from_pretrained(out / "checkpoint-last")
    assert (first.n, first.alpha, first.clean_weight) == (37, (0.3, 0.6), 0.25)
    assert json.loads((out / "metrics.json").read_text())["multimix_config"] == first.to_dict()
    assert main(["train", "--config", str(out / "args.yaml"), "--output-dir", str(tmp_path / "again")]) == 0
    assert MultiMixConfig.from_pretrained(tmp_path / "again" / "checkpoint-last") == first


def test_the_cli_checks_multimix_numbers_before_loading_data(tmp_path, capsys, monkeypatch):
    from hf_multimix import cli

    monkeypatch.setattr(cli, "prepare", lambda *a, **k: pytest.fail("data loaded before the options were checked"))
    assert cli.main(["train", "--alpha", "inf", "--output-dir", str(tmp_path)]) == 2
    assert "alpha must be finite" in capsys.readouterr().err


# ----------------------------------------------------------------------------- recipes


def test_recipes_are_library_functions_for_every_integration(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="hf_multimix.recipes"):
        scratch = recipes.noisy_labels("image", from_scratch=True)
    assert (scratch.multimix.clean_weight, scratch.multimix.prob, scratch.other_steps) == (0.0, 0.5, "cutmix")
    assert "noisy labels, images from scratch" in caplog.text  # the resolved recipe is logged
    pretrained = recipes.noisy_labels("image", from_scratch=False, method="dense-multimix")
    assert (pretrained.multimix.clean_weight, pretrained.multimix.prob, pretrained.multimix.dense) == (0.0, 1.0, True)
    text = recipes.noisy_labels("text", from_scratch=False)
    assert text.multimix == recipes.default().multimix == MultiMixConfig() and text.lr == recipes.default_lr("text")
    assert recipes.noisy_labels("image", True, method="erm").multimix.prob == 0.0  # baselines unchanged
    manifold = recipes.method_config("manifold-mixup")
    assert (manifold.mixing, manifold.alpha, manifold.clean_weight) == ("pairwise", 1.0, 0.0)
    with pytest.raises(ValueError, match=r"the noisy-label recipe sets \['clean_weight'\] itself"):
        recipes.noisy_labels("image", True, clean_weight=1.0)
    with pytest.raises(ValueError, match=r"unknown modality 'audio'"):
        recipes.default("audio")
    # the same config drives the head, the Trainer and the timm task
    head = MultiMixHead(tiny_timm(), scratch.multimix)
    assert head.multimix_config == scratch.multimix.replace(mixing="class-balanced")


# ----------------------------------------------------------------------------- switches and teachers


def test_the_switch_trains_plain_cross_entropy_and_draws_nothing():
    head = MultiMixHead(tiny_timm(), n=16, prob=0.5, label_smoothing=0.1).train()
    head.mixing_enabled = False
    x, y = batch()
    random.seed(5)
    torch.manual_seed(5)
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    out = head(x, labels=y)
    assert random.getstate() == py_state and torch.equal(torch.get_rng_state(), torch_state)
    expected = F.cross_entropy(head.model(x), y, label_smoothing=0.1)
    torch.testing.assert_close(out.loss, expected)
    assert head.prob == 0.5
    head.mix_next = True  # a decision for the next step is ignored while the switch is off
    torch.testing.assert_close(head(x, labels=y).loss, expected)
    assert head.mix_next is None
    head.mixing_enabled = True
    head.mix_next = False
    torch.testing.assert_close(head(x, labels=y).loss, expected)
    head.mix_next = True
    assert not torch.allclose(head(x, labels=y).loss, expected)


def _ema_reference(initial, snapshots, decay):
    teacher = [t.clone() for t in initial]
    for weights in snapshots:
        teacher = [decay * t + (1 - decay) * w for t, w in zip(teacher, weights)]
    return teacher


@pytest.mark.parametrize("auto", [True, False])
def test_the_ema_teacher_steps_once_per_optimizer_step_whatever_the_accumulation(auto):
    head = MultiMixHead(tiny_timm(), n=8, teacher="ema", distill_weight=0.5, ema_decay=0.5, ema_auto_update=auto)
    head.train()
    initial = [p.detach().clone() for p in head.model.parameters()]
    opt = torch.optim.SGD(head.model.parameters(), lr=0.1)
    x, y = batch()
    snapshots = []
    for step in range(3):
        for _ in range(2):  # gradient accumulation: two forwards per optimizer step
            head(x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
        snapshots.append([p.detach().clone() for p in head.model.parameters()])
        if not auto:
            head.update_teacher()  # what the training loop and the Trainer do after optimizer.step()
    if auto:
        head(x, labels=y)  # the next forward steps the teacher for the last optimizer step
    expected = _ema_reference(initial, snapshots, 0.5)
    for t, e in zip(head.teacher_model.parameters(), expected):
        torch.testing.assert_close(t, e)


def test_the_training_loop_steps_the_teacher_after_each_optimizer_step(tmp_path):
    from hf_multimix.training import TrainingConfig, train

    head = MultiMixHead(tiny_timm(), n=8, teacher="ema", distill_weight=0.5)
    calls = []
    update = head.update_teacher
    head.update_teacher = lambda: (calls.append(1), update())[1]
    x, y = batch(16)
    loader = [{"pixel_values": x[i:i + 4], "labels": y[i:i + 4]} for i in range(0, 16, 4)]
    train(head, loader, None, TrainingConfig(output_dir=str(tmp_path), epochs=1, gradient_accumulation_steps=2,
                                             save_checkpoints=False, progress=False))
    assert len(calls) == 2  # 4 batches, 2 optimizer steps; the forwards add none (the weights are unchanged)


# ----------------------------------------------------------------------------- one decision for every process


def _decision_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    random.seed(100 + rank)  # different seeds on the two processes
    torch.manual_seed(100 + rank)
    head = MultiMixHead(tiny_timm(), n=8, prob=0.5, mix_across_processes=True).train()
    decisions = []
    decide = head.decide_mixing
    head.decide_mixing = lambda: (lambda d: (decisions.append(d), d)[1])(decide())
    x, y = batch(4)
    for _ in range(10):
        head(x[2 * rank:2 * rank + 2], labels=y[2 * rank:2 * rank + 2]).loss.backward()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(decisions, f)
    dist.destroy_process_group()


def test_every_process_takes_the_same_mixing_decision(tmp_path):
    ctx = mp.spawn(_decision_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    deadline = time.time() + 240
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two processes hung: they took different mixing decisions")
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first == second and len(first) == 10
    assert set(first) == {True, False}  # prob 0.5 did draw both


def test_describe_names_the_options_that_differ_from_the_defaults():
    assert MultiMixConfig().describe() == "defaults"
    assert MultiMixConfig(n=500, clean_weight=0.0).describe() == "n=500, clean_weight=0.0"


def test_default_budget_gives_a_text_fine_tune_enough_steps():
    # a few hundred documents (19 steps an epoch) train 10 epochs at 1e-4, a large corpus 3 (the study's budgets)
    assert (recipes.default_lr("text"), recipes.default_lr("image")) == (1e-4, 1e-3)
    assert [recipes.default_epochs("text", s) for s in (1, 19, 20, 40, 67, 68, 5000)] == [10, 10, 10, 5, 3, 3, 3]
    assert recipes.default_epochs("image", 3) == recipes.default_epochs("image") == 5
    assert recipes.default_epochs("text") == 10  # steps unknown: the most
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
            recipes.default_epochs("text", bad)


def test_auto_mixing_balances_classes_where_there_is_one_label_per_example(caplog):
    import logging

    from hf_multimix.config import resolve_mixing

    assert MultiMixConfig().mixing == "auto"
    assert resolve_mixing(MultiMixConfig()).mixing == "class-balanced"
    assert resolve_mixing(MultiMixConfig(task="single_label")).mixing == "class-balanced"
    for other in (MultiMixConfig(dense=True), MultiMixConfig(task="multi_label"), MultiMixConfig(task="token")):
        assert resolve_mixing(other).mixing == "multimix"  # measured with Dir(alpha) weights only
    for given in ("multimix", "pairwise", "class-balanced"):
        assert resolve_mixing(MultiMixConfig(mixing=given)).mixing == given  # an explicit choice stands
    with caplog.at_level(logging.INFO, logger="hf_multimix.head"):
        head = MultiMixHead(tiny_timm())
    assert head.mixing == "class-balanced" and "mixing='auto' -> 'class-balanced'" in caplog.text
    assert MultiMixHead(tiny_timm(), dense=True).mixing == "multimix"
    head.multimix_config = MultiMixConfig(prob=0.5)  # a new config is resolved too
    assert (head.mixing, head.prob) == ("class-balanced", 0.5)
    # the resolved value is what "auto" gives: not an option the user changed
    assert head.multimix_config.describe() == "prob=0.5"
    assert MultiMixConfig(mixing="multimix").describe() == "mixing='multimix'"

"""Long-tailed data: class-balanced MultiMix weights, the long-tailed split, and the probe."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_multimix import MultiMixHead
from hf_multimix.data import Split, subsample_classes
from hf_multimix.functional import multimix, sample_class_balanced_lambda, sample_lambda

ROOT = Path(__file__).resolve().parent.parent


def test_balanced_weights_give_each_present_class_the_same_share():
    torch.manual_seed(0)
    y = torch.tensor([0] * 26 + [1] * 5 + [2])
    lam = sample_class_balanced_lambda(y, 20000, 0.2)
    assert lam.shape == (32, 20000) and torch.all(lam >= 0)
    assert torch.allclose(lam.sum(0), torch.ones(20000), atol=1e-5)
    _, t = multimix(torch.zeros(32, 1), y, lam, num_classes=3)
    assert t.mean(0) == pytest.approx([1 / 3] * 3, abs=0.02)
    _, plain = multimix(torch.zeros(32, 1), y, sample_lambda(32, 20000, 0.2), num_classes=3)
    assert plain.mean(0) == pytest.approx([26 / 32, 5 / 32, 1 / 32], abs=0.02)  # the batch histogram
    # a class absent from the batch gets nothing; soft targets count their class mass
    assert sample_class_balanced_lambda(torch.tensor([0, 0, 2]), 10, num_classes=4).shape == (3, 10)
    soft = torch.nn.functional.one_hot(y, 3).float()
    torch.manual_seed(1)
    a = sample_class_balanced_lambda(soft, 50)
    torch.manual_seed(1)
    assert torch.equal(a, sample_class_balanced_lambda(y, 50))


def test_balanced_weights_on_a_balanced_batch_are_the_plain_dirichlet():
    # same concentration alpha for every example: the same gamma draws, so the same weights
    y = torch.arange(8) % 4
    torch.manual_seed(3)
    a = sample_class_balanced_lambda(y, 100, 0.5)
    torch.manual_seed(3)
    b = sample_lambda(8, 100, 0.5)
    assert torch.allclose(a, b, atol=1e-6)


def test_balanced_weights_draw_under_bf16_autocast():
    # timm's train.py --amp on a CPU: a matmul there would come out bf16, which the gamma sampler refuses
    y = torch.tensor([0] * 6 + [1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(4)
        a = sample_class_balanced_lambda(y, 64, 0.2)
        soft = sample_class_balanced_lambda(torch.nn.functional.one_hot(y, 3).to(torch.bfloat16), 64, 0.2)
    torch.manual_seed(4)
    assert a.dtype == soft.dtype == torch.float32 and torch.equal(a, sample_class_balanced_lambda(y, 64, 0.2))


def test_balanced_weights_refuse_bad_targets():
    with pytest.raises(ValueError, match="class ids"):
        sample_class_balanced_lambda(torch.zeros(2, 2, 2), 10)
    with pytest.raises(ValueError, match="n"):
        sample_class_balanced_lambda(torch.tensor([0, 1]), 0)


def test_head_trains_with_class_balanced_mixing():
    torch.manual_seed(0)
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    head = MultiMixHead(model, mixing="class-balanced", n=50)
    out = head(torch.randn(16, 3, 16, 16), labels=torch.tensor([0] * 13 + [1] * 2 + [2]))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    with pytest.raises(ValueError, match="unknown mixing"):
        MultiMixHead(model, mixing="balanced")


def test_subsample_classes_cuts_each_class_and_is_seeded():
    part = Split(np.zeros((30, 2, 2), np.uint8), np.arange(30) % 3)
    cut = subsample_classes(part, [10, 4, 1], 3, seed=5)
    assert np.bincount(cut.labels).tolist() == [10, 4, 1]
    assert np.array_equal(cut.labels, subsample_classes(part, [10, 4, 1], 3, seed=5).labels)
    assert np.bincount(subsample_classes(part, [50, 50, 50], 3).labels).tolist() == [10, 10, 10]  # at most
    with pytest.raises(ValueError, match="one count per class"):
        subsample_classes(part, [10, 4], 3)
    with pytest.raises(ValueError, match=">= 1"):
        subsample_classes(part, [10, 0, 1], 3)


def test_cli_class_counts_cut_the_training_split_only():
    from hf_multimix.cli import build_parser, prepare

    common = ["train", "--dataset", "digits", "--train-per-class", "20", "--max-eval", "300", "--model",
              "resnet10t", "--image-size", "16", "--output-dir", "unused", "--seed", "1"]
    balanced = prepare(build_parser().parse_args(common))
    cut = prepare(build_parser().parse_args(common + ["--class-counts", "20,20,20,20,20,2,2,2,2,2"]))
    labels = cut.train_loader.dataset.split.labels
    assert np.bincount(labels).tolist() == [20] * 5 + [2] * 5
    assert len(cut.eval_loader.dataset) == len(balanced.eval_loader.dataset) == 300
    assert cut.eval_loader.dataset.split.labels.tolist() == \
        balanced.eval_loader.dataset.split.labels.tolist()
    with pytest.raises(SystemExit):
        build_parser().parse_args(common + ["--class-counts", "20,x"])


def test_probe_shows_rare_classes_rarely_dominate_and_balanced_weights_fix_it():
    spec = importlib.util.spec_from_file_location("imbalance_probe", ROOT / "bench" / "imbalance_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    plain = probe.probe([300, 60, 12], 32, 200, 30, "dirichlet", 0.2, 0.0, 1.0)
    assert plain[2]["dominant"] < plain[2]["batch_share"] / 3
    assert plain[2]["pull_argmax"] == 0  # the paper's loss pulls the rare class towards the frequent one
    balanced = probe.probe([300, 60, 12], 32, 200, 30, "balanced", 0.2, 0.0, 1.0)
    assert balanced[2]["target_mass"] > 4 * plain[2]["target_mass"]

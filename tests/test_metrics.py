"""Balanced accuracy, macro-F1 and per-class accuracy against values worked out by hand."""

import pytest
import torch

from hf_multimix.metrics import (balanced_accuracy, classification_metrics, confusion_matrix, macro_f1,
                                 per_class_accuracy)

# 10 examples, 3 classes. True: six of class 0, three of class 1, one of class 2.
# Predicted: class 0 gets 5 right and 1 called class 1; class 1 gets 2 right and 1 called 0;
# the single class-2 example is called 0 (a collapsed minority class).
LABELS = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
PREDS = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 0, 0])


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(PREDS, LABELS, 3).tolist() == [[5, 1, 0], [1, 2, 0], [1, 0, 0]]


def test_per_class_accuracy_and_balanced_accuracy_by_hand():
    assert per_class_accuracy(PREDS, LABELS, 3) == pytest.approx([5 / 6, 2 / 3, 0.0])
    # (5/6 + 2/3 + 0) / 3 = 0.5, while plain accuracy is 7/10
    assert balanced_accuracy(PREDS, LABELS, 3) == pytest.approx(0.5)


def test_macro_f1_by_hand():
    # class 0: tp 5, fp 2, fn 1 -> 10/13; class 1: tp 2, fp 1, fn 1 -> 4/6; class 2: tp 0 -> 0
    assert macro_f1(PREDS, LABELS, 3) == pytest.approx((10 / 13 + 4 / 6 + 0) / 3)


def test_a_class_absent_from_the_labels():
    # class 2 neither true nor predicted: left out of both means; per-class accuracy says None
    preds, labels = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0])
    assert per_class_accuracy(preds, labels, 3) == [pytest.approx(2 / 3), 1.0, None]
    assert balanced_accuracy(preds, labels, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert macro_f1(preds, labels, 3) == pytest.approx((0.8 + 2 / 3) / 2)
    # class 2 predicted once but never true: F1 0 enters the mean
    assert macro_f1(torch.tensor([0, 2]), torch.tensor([0, 0]), 3) == pytest.approx((2 / 3 + 0) / 2)


def test_perfect_and_majority_predictions():
    assert classification_metrics(LABELS, LABELS, 3) == {
        "accuracy": 1.0, "balanced_accuracy": 1.0, "macro_f1": 1.0, "per_class_accuracy": [1.0, 1.0, 1.0]}
    majority = classification_metrics(torch.zeros(10, dtype=torch.long), LABELS, 3)
    assert majority["accuracy"] == pytest.approx(0.6)
    assert majority["balanced_accuracy"] == pytest.approx(1 / 3)
    assert majority["macro_f1"] == pytest.approx((2 * 6 / (2 * 6 + 4)) / 3)  # class 0: tp 6, fp 4


def test_matches_sklearn():
    from sklearn import metrics  # the "data" extra, which the test command installs
    g = torch.Generator().manual_seed(0)
    labels, preds = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 5, (200,), generator=g)
    assert balanced_accuracy(preds, labels, 5) == pytest.approx(metrics.balanced_accuracy_score(labels, preds))
    assert macro_f1(preds, labels, 5) == pytest.approx(metrics.f1_score(labels, preds, average="macro"))


@pytest.mark.parametrize("preds, labels, num_classes, match", [
    (torch.tensor([0, 1]), torch.tensor([0]), 2, "same length"),
    (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 2, "1-D class ids"),
    (torch.tensor([0, 3]), torch.tensor([0, 1]), 2, r"preds must be class ids in \[0, 2\)"),
    (torch.tensor([0, 1]), torch.tensor([-1, 1]), 2, "labels must be class ids"),
    (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2, "at least one example"),
])
def test_bad_input_is_refused(preds, labels, num_classes, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(preds, labels, num_classes)


def test_the_training_loops_evaluate_reports_them():
    from accelerate import Accelerator

    from hf_multimix.training import evaluate

    class Fixed(torch.nn.Module):  # predicts the class stored in the input: PREDS on the examples above
        def forward(self, x):
            return torch.nn.functional.one_hot(x, 3).float()

    loader = [{"x": PREDS[:6], "labels": LABELS[:6]}, {"x": PREDS[6:], "labels": LABELS[6:]}]
    got = evaluate(Fixed(), loader, Accelerator(cpu=True))
    assert got["eval_accuracy"] == pytest.approx(0.7)
    assert got["eval_balanced_accuracy"] == pytest.approx(0.5)
    assert got["eval_macro_f1"] == pytest.approx((10 / 13 + 4 / 6) / 3)
    assert got["eval_per_class_accuracy"] == pytest.approx([5 / 6, 2 / 3, 0.0])
    assert got["eval_examples"] == 10

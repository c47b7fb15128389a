import math

import pytest
import timm
import torch

from hf_multimix import MultiMixHead
from hf_multimix.analysis import (
    alignment,
    embedding_report,
    expected_calibration_error,
    plot_projection,
    uniformity,
)


def test_alignment_zero_for_collapsed_classes_and_grows_with_spread():
    labels = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert alignment(tight, labels) == pytest.approx(0.0, abs=1e-12)
    loose = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    assert alignment(loose, labels) == pytest.approx(2.0)  # squared distance of orthogonal unit vectors


def test_uniformity_known_values():
    # Two antipodal points: one pair at squared distance 4.
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    # All points equal: every distance 0, log mean exp(0) = 0 (the worst possible).
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0)
    torch.manual_seed(0)
    spread = uniformity(torch.randn(200, 8))
    assert spread < uniformity(torch.randn(200, 8) * 0.01 + 1.0)


def test_ece_perfectly_calibrated_and_overconfident():
    labels = torch.tensor([0, 1, 0, 1])
    exact = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(exact, labels) == pytest.approx(0.0)
    wrong = torch.tensor([[0.9, 0.1]] * 4)  # 90% confident, 50% right
    assert expected_calibration_error(wrong, labels) == pytest.approx(0.4)


def test_embedding_report_on_a_model(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    items = [{"pixel_values": torch.randn(3, 32, 32), "labels": torch.tensor(i % 3)} for i in range(12)]
    loader = torch.utils.data.DataLoader(items, batch_size=5)
    head = MultiMixHead(model)
    report = embedding_report(head, loader)
    assert report.embeddings.shape == (12, model.num_features) and 0 <= report.accuracy <= 1
    assert math.isfinite(report.alignment) and report.uniformity <= 0 and 0 <= report.ece <= 1
    assert head.training  # restored
    plot_projection({"a": report, "b": report}, str(tmp_path / "proj.png"))
    assert (tmp_path / "proj.png").read_bytes()[:4] == b"\x89PNG"

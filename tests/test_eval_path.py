"""One reader (issue 21, item 3): `evaluate` and `predict` score a checkpoint with the preprocessing the
training loop evaluated it with (the model's evaluation transform on each image at its own size), so
`evaluate` on the run's validation folder reports the run's final eval_accuracy, and `predict` gives the
probabilities of a forward of the evaluation transform's tensor."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import _userdata as ud  # noqa: E402

from hf_multimix.cli import main  # noqa: E402
from hf_multimix.inference import evaluation_inputs, predict_proba  # noqa: E402
from hf_multimix.models import image_transforms, load_classifier  # noqa: E402

COUNTS = {"a": 6, "b": 6, "c": 6}


def _folder(root: Path) -> Path:
    """train/ and val/ of non-square images (24 high, 40 wide; heights vary by a pixel)."""
    ud.image_folder(root / "train", COUNTS, size=(24, 40), seed=0)
    ud.image_folder(root / "val", COUNTS, size=(24, 40), seed=7)
    return root


def _tiny_resnet_hf(path: Path, shortest_edge: int, crop: int) -> Path:
    """A tiny Hugging Face ResNet (any input size) whose processor resizes the shortest edge and center-crops."""
    from transformers import BitImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    ResNetForImageClassification(config).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop},
                      do_center_crop=True, image_mean=[0.4, 0.45, 0.5], image_std=[0.2, 0.25, 0.3]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalpath")
    data = _folder(root / "data")
    common = ["--dataset", str(data), "--epochs", "1", "--batch-size", "6", "--image-size", "16", "--lr", "1e-2",
              "--no-progress"]  # lr 1e-2: one epoch learns enough that the predictions are not one class
    assert main(["train", "--model", "resnet10t", *common, "--output-dir", str(root / "timm")]) == 0
    hf = _tiny_resnet_hf(root / "hf_resnet", shortest_edge=20, crop=16)
    assert main(["train", "--model", str(hf), *common, "--output-dir", str(root / "hf")]) == 0
    return {"data": data, "timm": root / "timm", "hf": root / "hf", "root": root}


def _final_eval_accuracy(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["history"][-1]["eval_accuracy"]


@pytest.mark.parametrize("family", ["timm", "hf"])
def test_evaluate_reports_the_runs_final_eval_accuracy(runs, capsys, family):
    run = runs[family]
    assert main(["evaluate", "--checkpoint", str(run), "--dataset", str(runs["data"] / "val"),
                 "--output-dir", str(runs["root"] / f"eval_{family}")]) == 0
    result = json.loads((runs["root"] / f"eval_{family}" / "evaluation.json").read_text())
    assert result["examples"] == sum(COUNTS.values())
    assert result["accuracy"] == pytest.approx(_final_eval_accuracy(run), abs=1e-6)
    predicted = np.asarray(result["confusion_matrix"]).sum(0)
    assert (predicted > 0).sum() >= 2, predicted  # not a constant prediction, which any preprocessing would match


@pytest.mark.parametrize("family", ["timm", "hf"])
def test_loaded_checkpoint_keeps_the_training_preprocessing(runs, family):
    from hf_multimix.models import create_classifier

    clf = load_classifier(runs[family])
    trained = create_classifier("resnet10t" if family == "timm" else str(runs["root"] / "hf_resnet"), "image",
                                ["a", "b", "c"], image_size=16)
    assert clf.family == family and clf.data_config is not None
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "resize"):
        assert clf.data_config.get(key) == trained.data_config.get(key), key
    if family == "hf":
        assert clf.data_config["resize"] == 20  # shortest edge 20, then a 16x16 center crop


@pytest.mark.parametrize("family", ["timm", "hf"])
def test_evaluate_scores_exactly_the_eval_loaders_batches(runs, family):
    """Per-example probabilities of `evaluate`'s inputs equal the model on `make_loaders`' evaluation batches,
    and differ from the old square resize of the whole image (which the 40x24 images make visible)."""
    from hf_multimix.data import load_splits
    from hf_multimix.training import make_loaders

    clf = load_classifier(runs[family])
    part, _ = evaluation_inputs(runs["data"] / "val", clf)
    probs = predict_proba(clf, part.inputs)
    data = load_splits(str(runs["data"]))
    _, eval_loader = make_loaders(data, clf, batch_size=6, workers=0)
    with torch.no_grad():
        expected = torch.cat([_logits(clf, b["pixel_values"]).softmax(-1) for b in eval_loader])
    assert probs.shape == expected.shape == (18, 3)
    assert torch.allclose(probs, expected, atol=1e-6)
    square = torch.cat([torch.nn.functional.interpolate(  # what predict/evaluate did before: the image squashed
        torch.from_numpy(np.asarray(part.inputs[i], np.float32)).permute(2, 0, 1)[None] / 255, size=(16, 16),
        mode="bilinear", antialias=True) for i in range(len(part.inputs))])
    mean, std = (torch.tensor(clf.data_config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        squashed = _logits(clf, (square - mean) / std).softmax(-1)
    assert not torch.allclose(probs, squashed, atol=1e-4)


def _logits(clf, pixels):
    out = clf.model(pixels) if clf.family == "timm" else clf.model(pixel_values=pixels).logits
    return out.float()


@pytest.mark.parametrize("family", ["timm", "hf"])
def test_predict_gives_the_forward_of_the_eval_transform(runs, tmp_path, capsys, family):
    clf = load_classifier(runs[family])
    file = runs["data"] / "val" / "b" / "1.png"
    assert Image.open(file).size == (40, 25)  # non-square, kept at its own size
    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(runs[family]), str(file), "--output", str(out)]) == 0
    row = out.read_text().strip().splitlines()[1].split(",")
    got = torch.tensor([float(v) for v in row[3:]])
    pixels = image_transforms(clf)[1](Image.open(file).convert("RGB")).unsqueeze(0)
    assert pixels.shape == (1, 3, 16, 16)
    with torch.no_grad():
        expected = _logits(clf, pixels).softmax(-1)[0]
    assert torch.allclose(got, expected, atol=2e-6)
    assert row[1] == clf.class_names[int(expected.argmax())]


def test_predict_workers_give_the_same_probabilities(runs, tmp_path, capsys):
    outs = []
    for workers in ("0", "2"):
        out = tmp_path / f"p{workers}.csv"
        assert main(["predict", "--checkpoint", str(runs["timm"]), str(runs["data"] / "val"), "--batch-size", "4",
                     "--workers", workers, "--output", str(out)]) == 0
        outs.append(out.read_text())
    assert len(outs[0].strip().splitlines()) == 1 + sum(COUNTS.values())
    assert outs[0] == outs[1]

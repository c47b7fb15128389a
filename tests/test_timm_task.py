"""MultiMixTask: timm's task API (timm.task) with MultiMix, and timm's own train.py / validate.py
with the one-line change (tests/third_party/timm/)."""

import csv
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
from PIL import Image
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

import hf_multimix
from hf_multimix import MultiMixHead, MultiMixOutput
from hf_multimix.timm_task import MultiMixTask

ROOT = Path(__file__).resolve().parents[1]
TIMM_SCRIPTS = ROOT / "tests" / "third_party" / "timm"


def tiny(seed=0, name="test_resnet", **kw):
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, num_classes=3, **kw)


def batch(m=4, size=32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(m, 3, size, size, generator=g), torch.arange(m) % 3


def test_loss_is_the_multimix_loss_of_the_head():
    x, y = batch()
    task = MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), n=50, alpha=0.5, verbose=False)
    reference = MultiMixHead(tiny(), n=50, alpha=0.5)
    torch.manual_seed(3)
    result = task(x, y)
    torch.manual_seed(3)
    expected = reference(x, labels=y)
    assert isinstance(expected, MultiMixOutput)
    torch.testing.assert_close(result["loss"], expected.loss)
    torch.testing.assert_close(result["output"], expected.logits)
    plain_ce = torch.nn.functional.cross_entropy(result["output"], y)
    assert not torch.allclose(result["loss"], plain_ce)
    result["loss"].backward()
    assert all(p.grad is not None for p in task.head.model.parameters())


def test_options_as_a_config():
    from hf_multimix import MultiMixConfig, recipes

    recipe = recipes.noisy_labels("image", from_scratch=True)
    task = MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), multimix_args=recipe.multimix, n=9, verbose=False)
    assert task.head.multimix_config == recipe.multimix.replace(n=9, mixing="class-balanced")  # "auto", resolved
    assert isinstance(task.head.multimix_config, MultiMixConfig)


def test_options_as_dict_or_keywords():
    task = MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), multimix_args={"n": 7, "alpha": 0.3}, verbose=False)
    assert (task.head.n, task.head.alpha) == (7, 0.3)
    task = MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), n=9, dense=True, verbose=False)
    assert (task.head.n, task.head.dense) == (9, True)


@pytest.mark.parametrize(
    "criterion, smoothing",
    [
        (torch.nn.CrossEntropyLoss(label_smoothing=0.2), 0.2),
        (LabelSmoothingCrossEntropy(smoothing=0.1), 0.1),
        (SoftTargetCrossEntropy(), 0.0),
    ],
)
def test_criterion_smoothing_becomes_the_heads(criterion, smoothing):
    assert MultiMixTask(tiny(), criterion, verbose=False).head.label_smoothing == pytest.approx(smoothing)
    # an explicit MultiMix option wins
    assert MultiMixTask(tiny(), criterion, label_smoothing=0.05, verbose=False).head.label_smoothing == 0.05


def test_soft_targets_from_timm_mixup_train():
    x, _ = batch()
    soft = torch.softmax(torch.randn(4, 3), dim=-1)
    task = MultiMixTask(tiny(), SoftTargetCrossEntropy(), n=20, verbose=False)
    loss = task(x, soft)["loss"]
    assert torch.isfinite(loss)


def test_bad_arguments_fail_early_with_the_fix():
    with pytest.raises(ValueError, match="BinaryCrossEntropy.*drop --bce-loss"):
        MultiMixTask(tiny(), BinaryCrossEntropy(), verbose=False)
    with pytest.raises(TypeError, match=r"unknown arguments \['nn'\]"):
        MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), nn=10, verbose=False)
    with pytest.raises(TypeError, match="pass the plain timm model"):
        MultiMixTask(MultiMixHead(tiny()), torch.nn.CrossEntropyLoss(), verbose=False)
    with pytest.raises(TypeError, match=r"both in multimix_args and as keywords"):
        MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), multimix_args={"n": 5}, n=6, verbose=False)


def test_without_task_api_the_package_imports_and_the_task_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm.task", None)  # as on a timm without the module
    monkeypatch.delitem(sys.modules, "hf_multimix.timm_task")
    needs = r"needs timm's task API \(the module timm.task, timm >= 1.0.23\).*pip install"
    with pytest.raises(ImportError, match=needs):
        importlib.import_module("hf_multimix.timm_task")
    # a fresh copy of the package imports without timm.task; only asking for MultiMixTask fails
    package = Path(hf_multimix.__file__).parent
    spec = importlib.util.spec_from_file_location("hf_multimix_fresh", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "hf_multimix_fresh", fresh)
    spec.loader.exec_module(fresh)
    assert fresh.MultiMixHead is not None and "hf_multimix_fresh.timm_task" not in sys.modules
    with pytest.raises(ImportError, match="pip install -U 'timm>=1.0.23'"):
        fresh.MultiMixTask
    for name in [m for m in sys.modules if m.startswith("hf_multimix_fresh.")]:
        monkeypatch.delitem(sys.modules, name)


def test_eval_model_is_the_plain_model_and_checkpoints_are_plain():
    x, y = batch()
    model = tiny()
    task = MultiMixTask(model, torch.nn.CrossEntropyLoss(), n=20, verbose=False)
    task.setup_ema(decay=0.5)
    task(x, y)["loss"].backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    task.update_ema(step=1)
    for ema in (False, True):
        eval_model = task.get_eval_model(ema=ema)
        eval_model.eval()
        out = eval_model(x)
        assert type(out) is torch.Tensor
        state = task.get_checkpoint_state(ema=ema)["state_dict_ema" if ema else "state_dict"]
        assert list(state) == list(model.state_dict())
        plain = tiny(seed=5).eval()
        plain.load_state_dict(state)
        torch.testing.assert_close(out, plain(x))
    # resume: a plain state dict loads back into the task
    other = MultiMixTask(tiny(seed=7), torch.nn.CrossEntropyLoss(), verbose=False)
    other.load_checkpoint_state(task.get_checkpoint_state()["state_dict"])
    torch.testing.assert_close(other.head.model.eval()(x), model.eval()(x))
    # in eval mode the task scores the batch with its criterion
    task.eval()
    result = task(x, y)
    torch.testing.assert_close(result["loss"], torch.nn.functional.cross_entropy(result["output"], y))


def test_optimizer_groups_match_the_plain_model():
    vit = tiny(name="test_vit", img_size=32)
    task = MultiMixTask(vit, torch.nn.CrossEntropyLoss(), verbose=False)

    def shape(groups):
        return sorted((g.get("lr_scale", 1.0), g["weight_decay"], len(g["params"])) for g in groups)

    assert task.head.no_weight_decay() == {"model." + n for n in vit.no_weight_decay()}
    assert shape(param_groups_weight_decay(task.head, 0.05, task.head.no_weight_decay())) == shape(
        param_groups_weight_decay(vit, 0.05, vit.no_weight_decay()))
    assert shape(param_groups_layer_decay(task.head, 0.05, task.head.no_weight_decay(), layer_decay=0.7)) == shape(
        param_groups_layer_decay(vit, 0.05, vit.no_weight_decay(), layer_decay=0.7))
    clip = task.get_clip_parameters(exclude_head=True)
    assert len(clip) == len(list(vit.parameters())) - 2


def test_compile_and_distributed_paths(tmp_path):
    x, y = batch()
    task = MultiMixTask(tiny(), torch.nn.CrossEntropyLoss(), n=20, verbose=False)
    task.compile(backend="eager")
    torch.manual_seed(0)
    compiled_loss = task(x, y)["loss"]
    compiled_loss.backward()
    eval_model = task.get_eval_model().eval()
    torch.testing.assert_close(eval_model(x), task.head.model.eval()(x))

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = tiny()
        ddp_task = MultiMixTask(model, torch.nn.CrossEntropyLoss(), n=20, verbose=False)
        ddp_task.prepare_distributed()
        assert isinstance(ddp_task.trainable_module, torch.nn.parallel.DistributedDataParallel)
        torch.manual_seed(0)
        loss = ddp_task(x, y)["loss"]
        loss.backward()
        torch.testing.assert_close(loss, compiled_loss)
        assert all(p.grad is not None for p in model.parameters())
        assert list(ddp_task.get_checkpoint_state()["state_dict"]) == list(model.state_dict())
    finally:
        dist.destroy_process_group()


# --- timm's train.py and validate.py, run as a user runs them -------------------------------------


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def _image_folders(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("validation", per_class // 2)):
        for c in range(3):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 120, (32, 32, 3))
                pixels[..., c] += 120  # a colour per class
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(TIMM_SCRIPTS / script), *args], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_timm_train_py_with_one_changed_line_trains_resumes_and_validate_py_scores_it(tmp_path):
    diff = subprocess.run(["grep", "-n", "MultiMixTask", str(TIMM_SCRIPTS / "train.py")], capture_output=True,
                          text=True).stdout
    assert "task = MultiMixTask(" in diff and "from hf_multimix import MultiMixTask" in diff
    _image_folders(tmp_path / "data", per_class=8)
    common = ["--data-dir", str(tmp_path / "data"), "--train-split", "train", "--val-split", "validation",
              "--model", "test_resnet", "--num-classes", "3", "--img-size", "32", "-b", "8", "--workers", "0",
              "--no-prefetcher", "--device", "cpu", "--output", str(tmp_path / "out"), "--experiment", "run",
              "--model-ema", "--lr", "0.05", "--warmup-epochs", "0"]
    log = _run("train.py", *common, "--epochs", "1", "--amp", "--amp-dtype", "bfloat16")
    assert "MultiMixTask: criterion=LabelSmoothingCrossEntropy" in log and "Training in mixed precision" in log
    assert "Test (EMA)" in log  # the EMA model is validated too
    run = tmp_path / "out" / "run"
    # resume from the last checkpoint for one more epoch (float32, as validate.py scores below)
    log = _run("train.py", *common, "--epochs", "2", "--resume", str(run / "last.pth.tar"))
    assert "Restoring model state from checkpoint" in log
    rows = [r for r in csv.DictReader(open(run / "summary.csv")) if r["epoch"] != "epoch"]  # a header per run
    assert [r["epoch"] for r in rows] == ["0", "1"]

    checkpoint = torch.load(run / "model_best.pth.tar", map_location="cpu", weights_only=False)
    plain = tiny()
    assert list(checkpoint["state_dict"]) == list(plain.state_dict())
    assert list(checkpoint["state_dict_ema"]) == list(plain.state_dict())
    timm.models.load_checkpoint(plain, str(run / "model_best.pth.tar"), use_ema=True)  # strict

    results = tmp_path / "validate.csv"
    _run("validate.py", "--data-dir", str(tmp_path / "data"), "--split", "validation", "--model", "test_resnet",
         "--num-classes", "3", "--img-size", "32", "--checkpoint", str(run / "model_best.pth.tar"),
         "--device", "cpu", "--workers", "0", "--no-prefetcher", "--use-ema", "--results-file", str(results))
    scored = next(csv.DictReader(open(results)))
    # train.py ranks checkpoints by the EMA model's validation when --model-ema is on
    assert float(scored["top1"]) == pytest.approx(float(checkpoint["metric"]), abs=1e-3)
    assert float(scored["top1"]) == pytest.approx(float(rows[-1]["eval_top1"]), abs=1e-3)

"""Smoke tests: each example script runs end to end with tiny settings, offline."""

import os
import re
import subprocess
import sys
from pathlib import Path

import timm
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str, *args: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def final_accuracy(stdout: str) -> float:
    match = re.search(r"final eval accuracy: ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


def test_timm_accelerate(tmp_path):
    out = run_example("timm_accelerate.py", "--epochs", "1", "--max-steps", "2", "--train-per-class", "4",
                      "--max-eval", "24", "--image-size", "32", "--batch-size", "8", "--n", "64",
                      "--output-dir", str(tmp_path))
    assert "epoch 1/1" in out and 0.0 <= final_accuracy(out) <= 1.0
    assert "on 24 held-out MNIST images" in out  # every held-out image evaluated, none dropped
    assert "logits match: True" in out
    # The checkpoint is the plain timm model's, key for key.
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"))


def test_trainer_image(tmp_path):
    out = run_example("trainer_image.py", "--epochs", "2", "--erm-last-epochs", "1", "--max-steps", "2",
                      "--train-per-class", "4", "--max-eval", "24", "--image-size", "32", "--batch-size", "8",
                      "--n", "64", "--cpu", "--output-dir", str(tmp_path))
    assert 0.0 <= final_accuracy(out) <= 1.0
    assert "on 24 held-out digits" in out
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"))


def test_minilm_text_dense(tmp_path):
    out = run_example("minilm_text_dense.py", "--epochs", "1", "--max-steps", "2", "--train-per-class", "4",
                      "--max-eval", "24", "--max-length", "16", "--batch-size", "6", "--n", "64",
                      "--output-dir", str(tmp_path))
    assert 0.0 <= final_accuracy(out) <= 1.0
    assert "on 24 held-out tweets" in out
    assert "reloaded as BertForSequenceClassification" in out
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model", local_files_only=True)
    assert model.config.num_labels == 3 and model.config.problem_type != "multi_label_classification"

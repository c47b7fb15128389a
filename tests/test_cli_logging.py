"""What `hf-multimix` logs on stderr: the adapter chosen and the layer mixed, one line each (timm's
style: an INFO record is its message), and `--log-level` to quieten it."""

import logging
import subprocess
import sys

from hf_multimix.cli import setup_logging

TINY = ["--dataset", "digits", "--model", "resnet10t", "--epochs", "1", "--train-per-class", "4", "--max-eval", "20",
        "--image-size", "16", "--batch-size", "16", "--no-progress", "--n", "50"]


def _train(tmp_path, *extra):
    proc = subprocess.run([sys.executable, "-m", "hf_multimix.cli", "train", *TINY, "--method", "dense-multimix",
                           "--output-dir", str(tmp_path / "run"), *extra], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.strip().splitlines()


def test_a_run_logs_the_adapter_and_the_layer_once(tmp_path):
    lines = _train(tmp_path)
    assert "hf_multimix: TimmAdapter takes ResNet" in lines, lines
    layer = [line for line in lines if "mixes the input of 'fc'" in line]
    assert len(layer) == 1 and layer[0].startswith("hf_multimix: ResNet"), lines
    assert not [line for line in lines if line.startswith("INFO")]  # INFO records are their message
    assert len(lines) == len(set(lines)), lines  # no record twice


def test_log_level_warning_hides_the_decisions(tmp_path):
    lines = _train(tmp_path, "--log-level", "warning")
    assert not [line for line in lines if "TimmAdapter" in line or "mixes the input" in line], lines


def test_setup_logging_adds_one_handler_and_keeps_a_configured_program(monkeypatch):
    root, ours = logging.getLogger(), logging.getLogger("hf_multimix")
    monkeypatch.setattr(ours, "level", ours.level)  # restored after the test
    monkeypatch.setattr(root, "handlers", [])
    setup_logging("INFO")
    setup_logging("INFO")  # main() called twice in one process
    assert len(root.handlers) == 1
    record = logging.LogRecord("hf_multimix.x", logging.WARNING, __file__, 1, "careful", None, None)
    assert root.handlers[0].format(record) == "WARNING: careful"
    record.levelno, record.levelname = logging.INFO, "INFO"
    assert root.handlers[0].format(record) == "careful"
    mine = logging.StreamHandler()
    monkeypatch.setattr(root, "handlers", [mine])
    setup_logging("WARNING")
    assert root.handlers == [mine] and ours.level == logging.WARNING

"""MultiMixTrainer saves as the Trainer does: only where `args.should_save`, with `training_args.bin`;
a 2-process run (torchrun, Gloo, CPU) writes each file once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from hf_multimix.trainer import MultiMixTrainer

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_write_each_file_once(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(ROOT / "tests" / "_trainer_two_procs.py"), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((out / f"writes-{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["should_save"] for r in ranks] == [True, False]
    main, other = set(ranks[0]["writes"]), set(ranks[1]["writes"])
    assert not main & other, main & other
    # the second process writes only its own random state, which the Trainer keeps per process
    assert other == {"checkpoint-2/rng_state_1.pth", "checkpoint-4/rng_state_1.pth"}, other
    for folder in ("checkpoint-2/", "checkpoint-4/", ""):
        assert {f"{folder}model.safetensors", f"{folder}training_args.bin", f"{folder}config.json"} <= main
    assert len(ranks[0]["writes"]) == len(main)  # and the main process writes each file once


def test_save_model_writes_training_args_only_where_should_save(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=37, num_labels=3))
    args = TrainingArguments(str(tmp_path / "a"), use_cpu=True, report_to=[], seed=0)
    trainer = MultiMixTrainer(model=model, args=args, n=10)
    trainer.save_model()
    saved = torch.load(tmp_path / "a" / "training_args.bin", weights_only=False)
    assert isinstance(saved, TrainingArguments) and saved.output_dir == str(tmp_path / "a")
    assert BertForSequenceClassification.from_pretrained(tmp_path / "a").num_labels == 3
    monkeypatch.setattr(TrainingArguments, "should_save", property(lambda self: False))
    trainer.save_model(str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_the_head_answers_for_the_wrapped_model_where_the_trainer_asks():
    import timm

    from hf_multimix import MultiMixHead
    from hf_multimix._trainer_model import DELEGATED_ATTRIBUTES

    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=37, num_labels=3))
    head = MultiMixHead(bert)
    for name in DELEGATED_ATTRIBUTES:
        assert getattr(head, name, "absent") == getattr(bert, name, "absent"), name
    assert not hasattr(head, "hf_device_map")  # Accelerate tests it with hasattr
    assert head.supports_gradient_checkpointing and not head.is_activation_checkpointing
    head.gradient_checkpointing_enable()
    assert head.is_activation_checkpointing and bert.is_activation_checkpointing
    assert head.num_parameters() == bert.num_parameters()
    assert head.get_input_embeddings() is bert.get_input_embeddings()

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    head = MultiMixHead(net)
    assert head._keys_to_ignore_on_save is None and head._tied_weights_keys is None  # PreTrainedModel's defaults
    assert head.supports_gradient_checkpointing and not head.is_activation_checkpointing
    head.activation_checkpointing_enable()
    assert net.grad_checkpointing and head.is_activation_checkpointing
    assert head.num_parameters() == sum(p.numel() for p in net.parameters())
    import pytest

    with pytest.raises(ValueError, match="has no get_input_embeddings"):
        head.get_input_embeddings()
    with pytest.raises(AttributeError):
        head._keys_to_ignore_on_sav  # noqa: B018 - a typo is an error, not a silent None

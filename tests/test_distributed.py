"""Two CPU processes (Gloo): the Accelerate loop keeps ranks in sync and gathers metrics
once; mix_across_processes mixes the global batch with correct gradients."""

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import _dist_workers as workers  # noqa: E402

from hf_multimix import MultiMixHead  # noqa: E402


@pytest.mark.parametrize("dense", [False, True])
def test_mix_across_processes_gradients_match_single_process(tmp_path, dense):
    mp.spawn(workers.mix_across_worker, args=(2, str(tmp_path / "init"), str(tmp_path), dense), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # Reference in one process: each rank's loss is MultiMix over the whole global batch with
    # that rank's weights; DDP averages, so the gradient is that of the mean of the losses.
    model = workers.tiny_bert()
    head = MultiMixHead(model, n=30, dense=dense, clean_weight=0.5)
    ids, mask, y = workers.global_batch()
    losses = []
    for rank in range(2):
        torch.manual_seed(100 + rank)
        losses.append(head(input_ids=ids, attention_mask=mask, labels=y).loss)
    (sum(losses) / 2).backward()
    for rank in range(2):
        torch.testing.assert_close(results[rank]["loss"], losses[rank].detach())
    for name, p in model.named_parameters():
        torch.testing.assert_close(results[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results[1]["grads"][name], p.grad, rtol=1e-4, atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_loop_two_processes(tmp_path):
    mp.spawn(workers.spawned_train_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert r["world"] == 2
        assert r["max_param_diff"] == 0.0  # parameters identical across ranks
        assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r["history"])
        assert [h["eval_examples"] for h in r["history"]] == [8, 8]  # gathered once, no duplicates
    timeless = [[{k: v for k, v in h.items() if k != "epoch_time_s"} for h in r["history"]] for r in results]
    assert timeless[0] == timeless[1]  # the same reduced loss and gathered metrics on every rank
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # written by the main process only
    assert (tmp_path / "checkpoint-last" / "model.safetensors").exists()

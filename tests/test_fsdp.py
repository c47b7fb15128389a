"""FSDP on two CPU processes (Gloo): `MultiMixHead` trains sharded models of every kind of adapter,
pooled and dense, as it trains them unsharded, under FSDP2 and FSDP1.

Each model is sharded as users shard a classifier that outgrows one device (tests/_dist_workers.py,
`shard`): FSDP2's `fully_shard` on every layer of its stack and then on the root, or FSDP1's
`FullyShardedDataParallel` with an auto-wrap policy over the same layers and `use_orig_params=True`
(on CPU FSDP1 needs `device_id=torch.device("cpu")`; with `device_id=None` it asks for an accelerator).
The adapters run the model's own root forward (where FSDP gathers the parameters) and read it with
hooks; the logits, the positions' logits and the CLS attention are computed inside that forward, and
the loss mixes logits (no classifier runs after the forward, when FSDP1 has resharded the root's
parameters). So the sharded head gives the unsharded head's loss and gradients, over two steps. One
process group runs every case.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import _dist_workers as workers  # noqa: E402

ADAPTERS = {"timm-resnet": "TimmAdapter", "timm-vit": "TimmAdapter", "hf-vit": "ViTAdapter",
            "hf-electra": "HFGenericAdapter", "hf-llama": "HFGenericAdapter"}


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    mp.spawn(workers.fsdp_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [json.loads((tmp / f"fsdp{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("kind", workers.FSDP_KINDS)
@pytest.mark.parametrize("case", workers.FSDP_CASES)
def test_sharded_head_trains_as_the_unsharded_head(fsdp_results, kind, case):
    for results in fsdp_results:
        row = results[f"{kind}-{case}"]
        # control: the plain model trains under the same sharding
        assert math.isfinite(row["plain_ce"]) and row["plain_grads_finite"]
        # identical examples: the pooled loss is the plain model's CE * (1 + clean_weight)
        assert row["pooled_same"] == pytest.approx(2 * row["plain_ce"], rel=1e-5, abs=1e-6)
        # dense0: no clean term, attention="pooled" (built from the embeddings, then logits are mixed)
        for mode in ("pooled", "dense", "dense0") + (("cls",) if "vit" in case else ()):
            assert row[f"{mode}_adapter"] == ADAPTERS[case]
            assert row[f"{mode}_loss"] == pytest.approx(row[f"{mode}_ref"], rel=1e-5, abs=1e-6), mode
            assert row[f"{mode}_grads_finite"] and row[f"{mode}_grad_names_match"], mode
            assert row[f"{mode}_max_grad_diff"] < 1e-5, mode


def test_fsdp1_refuses_a_classifier_call_after_the_forward(fsdp_results):
    for results in fsdp_results:
        ema, no_logits = results["fsdp1-timm-resnet"]["refusals"]
        assert "teacher='ema' under FSDP1" in ema and "fully_shard" in ema
        assert "NoLogits gives no logits" in no_logits and "fully_shard" in no_logits

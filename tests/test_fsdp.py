"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on two CPU processes (Gloo): `MultiMixHead` trains
sharded models of every kind of adapter, pooled and dense, as it trains them unsharded.

Each model gets `fully_shard` on every layer of its stack and then on the root, as users shard a
classifier that outgrows one device. The adapters run the model's own root forward (where FSDP
gathers the parameters) and read it with hooks, so the sharded head gives the unsharded head's loss
and gradients. One process group runs every case (tests/_dist_workers.py).
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


@pytest.mark.parametrize("case", workers.FSDP_CASES)
def test_sharded_head_trains_as_the_unsharded_head(fsdp_results, case):
    for results in fsdp_results:
        row = results[case]
        # control: the plain model trains under the same sharding
        assert math.isfinite(row["plain_ce"]) and row["plain_grads_finite"]
        # identical examples: the pooled loss is the plain model's CE * (1 + clean_weight)
        assert row["pooled_same"] == pytest.approx(2 * row["plain_ce"], rel=1e-5, abs=1e-6)
        for mode in ("pooled", "dense") + (("cls",) if "vit" in case else ()):
            assert row[f"{mode}_adapter"] == ADAPTERS[case]
            assert row[f"{mode}_loss"] == pytest.approx(row[f"{mode}_ref"], rel=1e-5, abs=1e-6), mode
            assert row[f"{mode}_grads_finite"] and row[f"{mode}_grad_names_match"], mode
            assert row[f"{mode}_max_grad_diff"] < 1e-5, mode

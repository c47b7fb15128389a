"""Training-step cost of MultiMix through `MultiMixHead`, against ERM, measured side by side.

One step = forward + backward + optimiser step. For each model and batch size the ERM step
(the plain model and cross-entropy), pooled MultiMix and Dense MultiMix steps run
interleaved (ERM, MultiMix, dense, ERM, ...) and the medians are compared, so machine
noise hits all alike. Peak memory is measured per case: on CUDA with
`max_memory_allocated`, on CPU as the peak resident set of a fresh process.

    python bench/speed.py                                   # the CPU grid (small images)
    python bench/speed.py --device cuda --image-size 224 --batch-sizes 128 --precision bf16
    python bench/speed.py --models resnet18 --n 100,1000,10000 --plot docs/img/speed_scaling.png
    python bench/speed.py --from-json a.json,b.json --plot docs/img/speed_scaling.png  # merge saved sweeps

Dense resolution `r` follows from the model and the input size (ResNet/ConvNeXt: (size/32)^2,
ViT-S/16: (size/16)^2, BERT and ELECTRA: sequence length); `--r` picks the input size that gives it.
`electra` (base size), `hf_vit_s` (transformers ViT, ViT-S/16 config: the generic path plus CLS
attention) and `dinov2_s` (transformers DINOv2, ViT-S/16 config: the generic path) measure the
Hugging Face path; the timm names the timm adapter.

Every row records the machine's load average while it ran (`load_1m`, before and after) and, for
dense rows, the time of drawing the per-position Dirichlet weights alone (`sampler_ms`,
`sample_lambda(m, n, positions=r)`), so the part of the dense cost that is the sampler can be read off.

    python bench/speed.py --threads 1 --models vit_small_patch16_224,dinov2_s --r 196 --classes 100 \
        --repeats 3 --json bench/results/speed_r196_hooks.json
    python bench/speed.py --fsdp --models resnet18 --image-size 64 --repeats 5   # 2-process Gloo FSDP2 ratio
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date

import torch
import torch.nn.functional as F

from hf_multimix import MultiMixHead, sample_lambda
from loss_speed import PeakMemory  # bench/ is on the path when a bench script runs

TIMM = {"resnet18": 32, "resnet50": 32, "vit_small_patch16_224": 16, "convnext_tiny": 32}
BERT = "bert"
ELECTRA = "electra"  # no hand-written adapter: MultiMixHead's generic Hugging Face path
#: transformers image classifiers with the ViT-S/16 configuration (patch 16, width 384, 12 layers, 6 heads).
HF_VIT_S = {"hf_vit_s": ("ViTConfig", "ViTForImageClassification"),
            "dinov2_s": ("Dinov2Config", "Dinov2ForImageClassification")}


def build(model_name: str, m: int, r: int | None, image_size: int, device: torch.device, num_classes: int = 1000):
    """Model and one batch. With `r`, the input size is chosen to give `r` positions."""
    torch.manual_seed(0)
    if model_name in (BERT, ELECTRA):
        import transformers

        if model_name == BERT:
            model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=num_classes))
        else:  # electra-base sized
            cfg = transformers.ElectraConfig(embedding_size=768, hidden_size=768, num_hidden_layers=12,
                                             num_attention_heads=12, intermediate_size=3072, num_labels=num_classes)
            model = transformers.ElectraForSequenceClassification(cfg)
        length = r or 128
        inputs = {"input_ids": torch.randint(1000, 30000, (m, length)), "attention_mask": torch.ones(m, length, dtype=torch.long)}
    elif model_name in HF_VIT_S:
        import transformers

        config_name, model_cls = HF_VIT_S[model_name]
        size = 16 * int(math.isqrt(r)) if r else image_size
        config = getattr(transformers, config_name)(image_size=size, patch_size=16, hidden_size=384,
                                                    num_hidden_layers=12, num_attention_heads=6,
                                                    intermediate_size=1536, num_labels=num_classes)
        model = getattr(transformers, model_cls)(config)
        inputs = {"pixel_values": torch.randn(m, 3, size, size)}
    else:
        import timm

        stride = TIMM[model_name]
        size = stride * int(math.isqrt(r)) if r else image_size
        kwargs = {"img_size": size} if model_name.startswith("vit") else {}
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
        inputs = {"pixel_values": torch.randn(m, 3, size, size)}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels = torch.randint(0, num_classes, (m,), device=device)
    return model.to(device), inputs, labels


def make_steps(model, inputs, labels, n: int, precision: str, device: torch.device) -> dict:
    """One callable per method, each a full training step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def run(loss_fn):
        def step():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    pooled = MultiMixHead(model, n=n)
    dense = MultiMixHead(model, n=n, dense=True)

    timm_model = not hasattr(model, "config")

    def erm():
        out = model(inputs["pixel_values"]) if timm_model else model(**inputs).logits
        return F.cross_entropy(out.float(), labels)

    return {
        "erm": run(erm),
        "multimix": run(lambda: pooled(**inputs, labels=labels).loss),
        "dense": run(lambda: dense(**inputs, labels=labels).loss),
    }


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_case(model_name, m, n, r, args, device) -> dict:
    load_before = os.getloadavg()[0]
    model, inputs, labels = build(model_name, m, r, args.image_size, device, args.classes)
    model.train()
    steps = make_steps(model, inputs, labels, n, args.precision, device)
    for step in steps.values():  # warm-up
        step()
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    positions = r or _positions(model_name, args.image_size)
    row = {"model": model_name, "m": m, "n": n, "r": positions, "classes": args.classes,
           "adapter": type(MultiMixHead(model, n=n).adapter).__name__}
    for name, ts in times.items():
        row[f"{name}_ms"] = 1000 * statistics.median(ts)
    row["sampler_ms"] = sampler_ms(m, n, positions, device)
    row["load_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return row


def sampler_ms(m: int, n: int, r: int, device: torch.device, repeats: int = 5) -> float:
    """Median time of drawing dense mode's per-position weights alone, `sample_lambda(m, n, positions=r)`."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        sample_lambda(m, n, 0.2, positions=r, device=device)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _positions(model_name: str, size: int) -> int:
    if model_name in HF_VIT_S:
        return (size // 16) ** 2
    return 128 if model_name in (BERT, ELECTRA) else (size // TIMM[model_name]) ** 2


def step_memory(model_name, m, n, r, method, args, device) -> float:
    """Peak extra memory (MiB) of one training step of `method`, after a warm-up step."""
    model, inputs, labels = build(model_name, m, r, args.image_size, device, args.classes)
    step = make_steps(model, inputs, labels, n, args.precision, device)[method]
    step()  # optimiser state allocated
    with PeakMemory(device) as mem:
        step()
    return mem.mib


def memory_case(model_name, m, n, r, method, args, device) -> float:
    """`step_memory` here on CUDA; on CPU in a fresh process, so earlier cases leave no trace."""
    if device.type == "cuda":
        return step_memory(model_name, m, n, r, method, args, device)
    spec = json.dumps([model_name, m, n, r, method])
    cmd = [sys.executable, __file__, "--memory-case", spec, "--image-size", str(args.image_size),
           "--precision", args.precision, "--threads", str(torch.get_num_threads())]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key in zip(axes, ("n", "m", "r")):
        others = [k for k in ("model", "n", "m", "r") if k != key]
        groups: dict = {}
        for row in rows:
            groups.setdefault(tuple(row[k] for k in others), []).append(row)
        for group_key, group in groups.items():
            if len({g[key] for g in group}) < 2:
                continue
            group.sort(key=lambda g: g[key])
            xs = [g[key] for g in group]
            label = ", ".join(f"{k}={v}" for k, v in zip(others, group_key))
            for method, style in (("multimix", "-o"), ("dense", "--s")):
                # a step measured no slower than ERM (within noise) has no place on a log axis: left out
                pts = [(x, g[f"{method}_ms"] - g["erm_ms"]) for x, g in zip(xs, group) if g[f"{method}_ms"] > g["erm_ms"]]
                if pts:
                    ax.loglog(*zip(*pts), style, label=f"{method} ({label})")
        ax.set(xlabel=key, ylabel="extra ms per step over ERM (points <= 0 left out)", title=f"cost vs {key}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,vit_small_patch16_224,convnext_tiny,bert")
    p.add_argument("--batch-sizes", default="32")
    p.add_argument("--n", default="1000")
    p.add_argument("--r", default="", help="comma-separated dense resolutions; empty: from --image-size")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--memory", action="store_true", help="also measure peak memory per method")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--plot", default=None, help="save the log-log cost plot here")
    p.add_argument("--json", default=None, help="save the rows here")
    p.add_argument("--from-json", default=None,
                   help="comma-separated row files saved by --json: print their table and --plot them, time nothing")
    p.add_argument("--classes", type=int, default=1000, help="classes of the classifier")
    p.add_argument("--fsdp", action="store_true",
                   help="time the steps under FSDP2 (fully_shard on the layer stack and the root), 2 Gloo CPU processes")
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_case:
        print(step_memory(*json.loads(args.memory_case), args, torch.device("cpu")))
        return
    device = torch.device(args.device)
    rs = [int(v) for v in args.r.split(",") if v] or [None]
    rows = []
    if args.fsdp:
        rows = fsdp_rows(args, rs)
        print_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{**row, **recorded(device)} for row in rows], f, indent=2)
        return
    if args.from_json:
        for path in args.from_json.split(","):
            with open(path) as f:
                rows += json.load(f)
        print_table(rows)
        if args.plot:
            plot(rows, args.plot)
        return
    for model_name in args.models.split(","):
        for m in [int(v) for v in args.batch_sizes.split(",")]:
            for r in rs:
                for n in [int(v) for v in args.n.split(",")]:
                    row = time_case(model_name, m, n, r, args, device)
                    if args.memory:
                        for method in ("erm", "multimix", "dense"):
                            row[f"{method}_mib"] = memory_case(model_name, m, n, r, method, args, device)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"\n{date.today()}, {where}, torch {torch.__version__}, precision {args.precision}, "
          f"image size {args.image_size}, medians of {args.repeats} interleaved steps\n")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**row, **recorded(device)} for row in rows], f, indent=2)
    if args.plot:
        plot(rows, args.plot)


def _layer_stack(model) -> list:
    """The layers `fully_shard` wraps one by one: timm's `blocks` / ResNet stages, else the longest ModuleList."""
    if isinstance(getattr(model, "blocks", None), torch.nn.Sequential):
        return list(model.blocks)
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    lists = [mod for mod in model.modules() if isinstance(mod, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def _fsdp_worker(rank: int, world: int, init_file: str, out: str, cases: list, args) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rows = []
    for model_name, m, n, r in cases:
        model, inputs, labels = build(model_name, m, r, args.image_size, torch.device("cpu"), args.classes)
        for layer in _layer_stack(model):
            fully_shard(layer)
        fully_shard(model)
        model.train()
        steps = make_steps(model, inputs, labels, n, args.precision, torch.device("cpu"))
        for step in steps.values():
            step()
        times = {k: [] for k in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                dist.barrier()
                t0 = time.perf_counter()
                step()
                dist.barrier()
                times[name].append(time.perf_counter() - t0)
        row = {"model": model_name, "m": m, "n": n, "r": r or _positions(model_name, args.image_size),
               "classes": args.classes, "fsdp": f"FSDP2, {world} Gloo CPU processes, 1 thread each",
               **{f"{k}_ms": 1000 * statistics.median(v) for k, v in times.items()},
               "load_1m": round(os.getloadavg()[0], 2)}
        rows.append(row)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(rows, f)
    dist.destroy_process_group()


def fsdp_rows(args, rs) -> list[dict]:
    """Interleaved medians of ERM, pooled and dense steps of a model sharded over 2 Gloo CPU processes."""
    import tempfile

    import torch.multiprocessing as mp

    cases = [(name, m, n, r) for name in args.models.split(",") for m in [int(v) for v in args.batch_sizes.split(",")]
             for r in rs for n in [int(v) for v in args.n.split(",")]]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        mp.spawn(_fsdp_worker, args=(2, os.path.join(tmp, "init"), out, cases, args), nprocs=2, join=True)
        with open(out) as f:
            return json.load(f)


def recorded(device: torch.device) -> dict:
    """What a saved row says of where it came from (bench/pages.py shows it under the table)."""
    from datetime import datetime, timezone

    return {"command": "python bench/speed.py " + " ".join(sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"{torch.get_num_threads()} torch thread(s), device "
                       f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}",
            "versions": {"torch": torch.__version__}}


def print_table(rows: list[dict]) -> None:
    mem = all("erm_mib" in row for row in rows)
    print("| model | m | n | r | ERM ms | MultiMix ms | ratio | Dense ms | ratio |" + (" ERM MiB | MultiMix MiB | Dense MiB |" if mem else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if mem else ""))
    for row in rows:
        line = (f"| {row['model']} | {row['m']} | {row['n']} | {row['r']} | {row['erm_ms']:.1f} | {row['multimix_ms']:.1f} | "
                f"{row['multimix_ms'] / row['erm_ms']:.3f} | {row['dense_ms']:.1f} | {row['dense_ms'] / row['erm_ms']:.3f} |")
        if mem:
            line += f" {row['erm_mib']:.0f} | {row['multimix_mib']:.0f} | {row['dense_mib']:.0f} |"
        print(line)


if __name__ == "__main__":
    main()

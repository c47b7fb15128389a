"""Micro-benchmark of the MultiMix losses: forward + backward time and peak memory, exact
logit shortcut vs embedding path, pooled and dense.

    python bench/loss_speed.py                      # ImageNet-like and CIFAR-like sizes
    python bench/loss_speed.py --device cuda        # on a GPU
    python bench/loss_speed.py --sizes imagenet --n 10000 --paths shortcut --modes dense

Peak memory: on CUDA, `torch.cuda.max_memory_allocated`; on CPU, the rise of the peak
resident set (VmHWM) over one forward + backward, in a fresh process per case so that memory
the allocator kept from earlier cases does not hide it.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from hf_multimix import dense_multimix_loss, multimix_loss, sample_lambda

SIZES = {
    "imagenet": dict(m=128, d=2048, c=1000, r=49),
    "cifar": dict(m=128, d=512, c=100, r=16),
}


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak extra memory (MiB) of the code run inside the context."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mib = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.base = _rss_mib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.mib = _rss_mib("VmHWM") - self.base


def run_case(size: str, mode: str, path: str, n: int, device: torch.device, repeats: int) -> dict:
    """Times the case here; measures its memory in a fresh process on CPU."""
    row = _run(size, mode, path, n, device, repeats)
    if device.type == "cpu":
        cmd = [sys.executable, __file__, "--memory-case", json.dumps([size, mode, path, n]),
               "--threads", str(torch.get_num_threads())]
        row["peak_mib"] = float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
    return row


def _run(size: str, mode: str, path: str, n: int, device: torch.device, repeats: int) -> dict:
    s = SIZES[size]
    m, d, c, r = s["m"], s["d"], s["c"], s["r"]
    torch.manual_seed(0)
    head = nn.Linear(d, c).to(device)
    shape = (m, r, d) if mode == "dense" else (m, d)
    z = torch.randn(*shape, device=device, requires_grad=True)
    y = torch.randint(0, c, (m,), device=device)
    lam = sample_lambda(m, n, positions=r if mode == "dense" else None, device=device)
    fn = dense_multimix_loss if mode == "dense" else multimix_loss
    affine = path == "shortcut"

    def step() -> None:
        loss = fn(z, y, head, lam, affine=affine)
        loss.backward()
        z.grad = None
        head.zero_grad(set_to_none=True)

    times = []
    if repeats:
        step()  # warm-up
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    with PeakMemory(device) as mem:
        step()
    return dict(size=size, mode=mode, path=path, n=n, m=m, d=d, c=c, r=r if mode == "dense" else 1,
                ms=1000 * statistics.median(times) if times else float("nan"), peak_mib=mem.mib)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="imagenet,cifar")
    p.add_argument("--modes", default="pooled,dense")
    p.add_argument("--paths", default="shortcut,embedding")
    p.add_argument("--n", default="1000", help="comma-separated numbers of mixes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory_case:
        size, mode, path, n = json.loads(args.memory_case)
        print(_run(size, mode, path, n, device, repeats=0)["peak_mib"])
        return
    rows = []
    for size in args.sizes.split(","):
        for n in [int(v) for v in args.n.split(",")]:
            for mode in args.modes.split(","):
                for path in args.paths.split(","):
                    row = run_case(size, mode, path, n, device, args.repeats)
                    rows.append(row)
                    print(f"# {size} {mode} {path} n={n}: {row['ms']:.1f} ms, peak +{row['peak_mib']:.0f} MiB", flush=True)
    print()
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, repeats: {args.repeats} (median)")
    print()
    print("| size | mode | path | m | n | d | c | r | fwd+bwd ms | peak extra MiB | shortcut speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        twin = [o for o in rows if o["path"] == "embedding" and all(o[k] == row[k] for k in ("size", "mode", "n"))]
        speedup = f"{twin[0]['ms'] / row['ms']:.1f}x" if row["path"] == "shortcut" and twin else ""
        print(f"| {row['size']} | {row['mode']} | {row['path']} | {row['m']} | {row['n']} | {row['d']} | {row['c']} | "
              f"{row['r']} | {row['ms']:.1f} | {row['peak_mib']:.0f} | {speedup} |")


if __name__ == "__main__":
    main()

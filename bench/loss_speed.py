"""Micro-benchmark of the MultiMix losses: forward + backward time and peak memory, exact
logit shortcut vs embedding path, pooled and dense.

    python bench/loss_speed.py                      # ImageNet-like and CIFAR-like sizes
    python bench/loss_speed.py --device cuda        # on a GPU
    python bench/loss_speed.py --sizes imagenet --n 10000 --paths shortcut --modes dense
    python bench/loss_speed.py --sampler --threads 2   # sample_lambda vs torch._standard_gamma
    python bench/loss_speed.py --dense-limit           # dense loss vs its arithmetic floor (ViT-S sizes)

Peak memory: on CUDA, `torch.cuda.max_memory_allocated`; on CPU, the rise of the peak
resident set (VmHWM) over one forward + backward, in a fresh process per case so that memory
the allocator kept from earlier cases does not hide it.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
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


def _timed(fn, device: torch.device) -> float:
    """Milliseconds of one call of `fn`, with the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0)


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
        loss = fn(z, y, head, lam, affine=affine, clean_weight=0)  # the mixing loss alone, as recorded
        loss.backward()
        z.grad = None
        head.zero_grad(set_to_none=True)

    times = []
    if repeats:
        step()  # warm-up
    for _ in range(repeats):
        times.append(_timed(step, device) / 1000)
    with PeakMemory(device) as mem:
        step()
    return dict(size=size, mode=mode, path=path, n=n, m=m, d=d, c=c, r=r if mode == "dense" else 1,
                ms=1000 * statistics.median(times) if times else float("nan"), peak_mib=mem.mib)


def reference_sample_lambda(m: int, n: int, alpha: float, positions: int | None = None) -> torch.Tensor:
    """The sampler before the log-space rewrite: `torch._standard_gamma(alpha)` per entry, normalised."""
    shape = (m, n) if positions is None else (positions, m, n)
    g = torch._standard_gamma(torch.full(shape, alpha, dtype=torch.float32))
    return g / g.sum(dim=-2, keepdim=True)


def sampler_rows(cases: list[tuple[int, int, int | None, float]], repeats: int) -> list[dict]:
    """Median ms of `sample_lambda` and of the reference, interleaved (one of each per repeat)."""
    rows = []
    for m, n, r, alpha in cases:
        new, old = [], []
        sample_lambda(m, n, alpha, positions=r), reference_sample_lambda(m, n, alpha, r)  # warm-up
        for _ in range(repeats):
            for fn, out in ((lambda: sample_lambda(m, n, alpha, positions=r), new),
                            (lambda: reference_sample_lambda(m, n, alpha, r), old)):
                t0 = time.perf_counter()
                fn()
                out.append(1000 * (time.perf_counter() - t0))
        rows.append(dict(m=m, n=n, r=r, alpha=alpha, sample_lambda_ms=statistics.median(new),
                         standard_gamma_ms=statistics.median(old),
                         speedup=statistics.median(old) / statistics.median(new)))
        print(f"# sampler m={m} n={n} r={r} alpha={alpha}: {rows[-1]['sample_lambda_ms']:.1f} ms "
              f"(standard_gamma {rows[-1]['standard_gamma_ms']:.1f} ms)", flush=True)
    return rows


def dense_limit_rows(cases: list[dict], repeats: int, device: torch.device) -> list[dict]:
    """The dense loss (exact shortcut, forward + backward) against its floor: the mixing of the
    clean logits is `n*r*m*c` multiply-adds forward and twice that backward, i.e. three
    `[r, n, m] @ [r, m, c]` matmuls, plus one `exp` per mixed logit (`n*r*c`)."""
    rows = []
    for s in cases:
        m, r, n, c = s["m"], s["r"], s["n"], s["c"]
        torch.manual_seed(0)
        logits = torch.randn(m, r, c, device=device, requires_grad=True)
        y = torch.randint(0, c, (m,), device=device)
        lam = sample_lambda(m, n, positions=r, device=device)
        wt = torch.rand(r, n, m, device=device)
        lt = torch.randn(r, m, c, device=device)

        def loss_step() -> None:
            # as MultiMixHead calls it: its own weights need no value check
            dense_multimix_loss(logits, y, nn.Identity(), lam, affine=True, clean_weight=0, validate=False).backward()
            logits.grad = None

        def floor_step() -> None:
            e = torch.bmm(wt, lt)  # the forward matmul
            e.exp_()
            torch.bmm(e, lt.transpose(1, 2))  # the two backward matmuls
            torch.bmm(wt.transpose(1, 2), e)

        times = {"loss": [], "floor": []}
        loss_step(), floor_step()
        for _ in range(repeats):
            for name, fn in (("loss", loss_step), ("floor", floor_step)):
                times[name].append(_timed(fn, device))
        loss_ms, floor_ms = statistics.median(times["loss"]), statistics.median(times["floor"])
        rows.append(dict(**s, loss_ms=loss_ms, floor_ms=floor_ms, ratio=loss_ms / floor_ms,
                         gmacs=3 * n * r * m * c / 1e9))
        print(f"# dense limit m={m} r={r} n={n} c={c}: loss {loss_ms:.1f} ms, floor {floor_ms:.1f} ms", flush=True)
    return rows


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
    p.add_argument("--sampler", action="store_true", help="time sample_lambda against torch._standard_gamma")
    p.add_argument("--dense-limit", action="store_true", help="time the dense loss against its arithmetic floor")
    p.add_argument("--json", default=None, help="also write the rows (and the command, date, machine) to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dense_limit or args.sampler:
        device = torch.device(args.device if args.dense_limit else "cpu")
        repeats = max(args.repeats, 5)
        if args.dense_limit:
            cases = [dict(m=32, r=196, n=1000, c=100), dict(m=32, r=49, n=1000, c=1000)]
            rows = dense_limit_rows(cases, repeats, device)
            header = "| m | r | n | c | 3nrmc GMAC | dense loss fwd+bwd ms | floor (3 bmm + exp) ms | ratio |"
            cells = lambda row: [row["m"], row["r"], row["n"], row["c"], f"{row['gmacs']:.2f}",  # noqa: E731
                                 f"{row['loss_ms']:.1f}", f"{row['floor_ms']:.1f}", f"{row['ratio']:.2f}x"]
        else:
            cases = [(32, 1000, 196, 0.2), (32, 1000, 196, 1.0), (32, 1000, 196, 2.0), (32, 1000, None, 0.2)]
            rows = sampler_rows(cases, repeats)
            header = "| m | n | r | alpha | sample_lambda ms | torch._standard_gamma ms | speed-up |"
            cells = lambda row: [row["m"], row["n"], row["r"] or 1, row["alpha"], f"{row['sample_lambda_ms']:.1f}",  # noqa: E731
                                 f"{row['standard_gamma_ms']:.1f}", f"{row['speedup']:.1f}x"]
        print(f"\ndevice: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
              f"repeats: {repeats} (median, interleaved), load average {os.getloadavg()[0]:.1f}\n")
        print(header)
        print("|---" * header.count(" | ") + "|---|")
        for row in rows:
            print("| " + " | ".join(str(c) for c in cells(row)) + " |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "load_average": os.getloadavg(), "rows": rows}, f, indent=2)
        return
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
    print(table(rows))
    if args.json:  # the record bench/pages.py renders on docs/benchmarks.md
        import platform
        from datetime import datetime, timezone

        with open(args.json, "w") as f:
            json.dump({"command": "python bench/loss_speed.py " + " ".join(sys.argv[1:]),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                                  f"device {device}",
                       "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__},
                       "load_average": os.getloadavg(), "repeats": args.repeats, "rows": rows}, f, indent=2)


def table(rows: list[dict]) -> str:
    """The Markdown table of `run_case` rows, with each shortcut's speed-up over its embedding-path twin."""
    lines = ["| size | mode | path | m | n | d | c | r | fwd+bwd ms | peak extra MiB | shortcut speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        twin = [o for o in rows if o["path"] == "embedding" and all(o[k] == row[k] for k in ("size", "mode", "n"))]
        speedup = f"{twin[0]['ms'] / row['ms']:.1f}x" if row["path"] == "shortcut" and twin else ""
        lines.append(f"| {row['size']} | {row['mode']} | {row['path']} | {row['m']} | {row['n']} | {row['d']} | "
                     f"{row['c']} | {row['r']} | {row['ms']:.1f} | {row['peak_mib']:.0f} | {speedup} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

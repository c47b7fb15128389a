"""What MultiMix's mixed targets look like on a long-tailed batch: no training, just the weights.

Draws batches of `m` examples from a long-tailed class distribution (`--counts`, the training
class counts of a setting), samples the MultiMix weights (`n` mixes) and prints, per class:

* `batch share`: the class's share of the batch's examples;
* `target mass`: its mean share of the mixed targets `lam^T y`;
* `dominant`: the share of mixes whose largest target class it is, and `>= 0.5` the share where
  it holds at least half of the target;
* `pull on own class`, `pull argmax`: where the loss pulls an example of that class. With an
  affine classifier the gradient of the mixed term on example i's logits is
  `(1/n) sum_k lam_ik (p_k - t_k)`: example i is pulled towards the lam-weighted mean of the
  mixed targets `t_k` of the mixes it enters. The clean term (weight `clean_weight`) pulls it to its
  own label; a step that does not mix (probability `1 - prob`) trains the clean cross-entropy alone.
  The column gives the own-class mass of the combined pull and the class it favours: a rare
  class whose pull favours a frequent class is trained towards that class.

Rows: the default (Dir(0.2), `clean_weight` 1), `prob` 0.5, the paper's loss (`clean_weight` 0),
Dir(1.0), and class-balanced weights (`functional.sample_class_balanced_lambda`).

    python bench/imbalance_probe.py --counts 300,60,12              # tweets-minilm-lt
    python bench/imbalance_probe.py --counts 50,50,50,50,50,3,3,3,3,3 --json bench/results/imbalance_probe_digits.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_multimix.functional import sample_class_balanced_lambda, sample_lambda  # noqa: E402

# name -> (weights: "dirichlet" or "balanced", alpha, clean_weight, prob)
VARIANTS: dict[str, tuple[str, float, float, float]] = {
    "default (Dir(0.2), clean_weight=1)": ("dirichlet", 0.2, 1.0, 1.0),
    "prob=0.5": ("dirichlet", 0.2, 1.0, 0.5),
    "clean_weight=0 (paper's loss)": ("dirichlet", 0.2, 0.0, 1.0),
    "alpha=1.0": ("dirichlet", 1.0, 1.0, 1.0),
    "class-balanced weights": ("balanced", 0.2, 1.0, 1.0),
}


def probe(counts: list[int], m: int, n: int, batches: int, weights: str, alpha: float, clean_weight: float,
          prob: float, seed: int = 0) -> list[dict[str, Any]]:
    """Per-class statistics of the mixed targets over `batches` random batches (see the module docstring)."""
    c = len(counts)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pool = torch.repeat_interleave(torch.arange(c), torch.tensor(counts))
    share = torch.zeros(c)
    mass = torch.zeros(c)
    dominant = torch.zeros(c)
    half = torch.zeros(c)
    pull_sum = torch.zeros(c, c)  # row: true class, summed over its examples
    seen = torch.zeros(c)
    for _ in range(batches):
        y = pool[torch.randperm(len(pool), generator=g)[:m]]
        onehot = F.one_hot(y, c).float()  # [m, c]
        lam = sample_lambda(m, n, alpha) if weights == "dirichlet" else sample_class_balanced_lambda(y, n, alpha,
                                                                                                     num_classes=c)
        t = lam.t() @ onehot  # [n, c] mixed targets
        share += onehot.mean(0)
        mass += t.mean(0)
        dominant += F.one_hot(t.argmax(1), c).float().mean(0)
        half += (t >= 0.5).float().mean(0)
        # each example's pull from the mixed term, normalised to a distribution: sum_k lam_ik t_k / sum_k lam_ik
        mixed_pull = (lam @ t) / lam.sum(1, keepdim=True).clamp_min(1e-12)  # [m, c]
        # per-example gradient weights: the mixed term sums lam_ik / n ~ 1/m, the clean term 1/m per unit weight
        mix_w = lam.sum(1, keepdim=True) / n * m  # about 1
        on_mixing_step = (mix_w * mixed_pull + clean_weight * onehot)
        on_mixing_weight = mix_w + clean_weight
        pull = prob * on_mixing_step + (1 - prob) * onehot
        weight = prob * on_mixing_weight + (1 - prob)
        pull = pull / weight
        pull_sum.index_add_(0, y, pull)
        seen += onehot.sum(0)
    pull_mean = pull_sum / seen.clamp_min(1).unsqueeze(1)
    return [{"class": k, "train_count": counts[k], "batch_share": float(share[k] / batches),
             "target_mass": float(mass[k] / batches), "dominant": float(dominant[k] / batches),
             "at_least_half": float(half[k] / batches), "pull_own": float(pull_mean[k, k]),
             "pull_argmax": int(pull_mean[k].argmax()), "pull": [float(v) for v in pull_mean[k]]}
            for k in range(c)]


def table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"#### {name}", "", "| class | train count | batch share (%) | target mass (%) | dominant (%) | "
             ">= 0.5 (%) | pull on own class (%) | pull argmax |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['class']} | {r['train_count']} | {100 * r['batch_share']:.1f} | "
                     f"{100 * r['target_mass']:.1f} | {100 * r['dominant']:.1f} | {100 * r['at_least_half']:.1f} | "
                     f"{100 * r['pull_own']:.1f} | {r['pull_argmax']}{'' if r['pull_argmax'] == r['class'] else ' (!)'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="300,60,12", help="training examples per class (default: tweets-minilm-lt)")
    p.add_argument("--m", type=int, default=32, help="batch size (default 32, the CLI's)")
    p.add_argument("--n", type=int, default=1000, help="mixes per batch (default 1000)")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the figures and their provenance here")
    args = p.parse_args()
    counts = [int(v) for v in args.counts.split(",")]
    results = {name: probe(counts, args.m, args.n, args.batches, *spec, seed=args.seed)
               for name, spec in VARIANTS.items()}
    command = "python bench/imbalance_probe.py " + " ".join(sys.argv[1:])
    print(f"Command: `{command}`; m={args.m}, n={args.n}, {args.batches} batches, seed {args.seed}\n")
    for name, rows in results.items():
        print(table(name, rows) + "\n")
    if args.json:
        from accuracy import provenance

        with open(args.json, "w") as f:
            json.dump({**provenance(command), "seed": args.seed, "counts": counts, "m": args.m, "n": args.n,
                       "batches": args.batches, "variants": {k: list(v) for k, v in VARIANTS.items()},
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

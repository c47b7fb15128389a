"""Draws the method figure of docs/method.md: where the mixed embeddings of one batch land with
pairwise (manifold) mixup and with MultiMix, using the package's own samplers.

    python bench/method_figure.py docs/img/method.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from hf_multimix import sample_lambda, sample_pair_lambda  # noqa: E402


def main(path: str) -> None:
    torch.manual_seed(0)
    m, n = 6, 1000
    angles = torch.linspace(0, 2 * torch.pi, m + 1)[:-1] + 0.3 * torch.rand(m)
    z = torch.stack([angles.cos(), angles.sin()], 1) * (0.7 + 0.3 * torch.rand(m, 1))
    colors = plt.cm.tab10(torch.arange(m) % 10)
    pair = torch.cat([sample_pair_lambda(m, alpha=1.0) for _ in range(n // m + 1)], 1)[:, :n]
    panels = [
        ("pairwise (manifold) mixup: mixes lie on segments", pair),
        ("MultiMix, alpha=1: mixes spread inside the hull", sample_lambda(m, n, 1.0)),
        ("MultiMix, alpha=(0.5, 2.0)", sample_lambda(m, n, (0.5, 2.0))),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (title, lam) in zip(axes, panels):
        mixed = lam.t() @ z
        mix_color = lam.t() @ torch.tensor(colors[:, :3], dtype=torch.float32)  # colour = mixed target
        ax.scatter(mixed[:, 0], mixed[:, 1], c=mix_color.clamp(0, 1).numpy(), s=3, alpha=0.6)
        ax.scatter(z[:, 0], z[:, 1], c=colors, s=90, edgecolors="black", zorder=3)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Mixed embeddings of one batch of 6 examples (colour: the mixed target)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img/method.png")

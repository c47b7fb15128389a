"""Embedding-space analysis: alignment and uniformity (Wang and Isola, 2020), expected
calibration error, and a 2-D projection plot of a model's embeddings on a dataset.

MultiMix claims that classes end up more tightly clustered (lower alignment) and more
uniformly spread (lower uniformity); these functions measure that on the pooled embedding
the classifier sees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .head import MultiMixHead


def alignment(z: Tensor, labels: Tensor, alpha: float = 2.0) -> float:
    """Mean `||f(x) - f(x')||^alpha` over pairs of the same class, on L2-normalised embeddings.

    Lower is tighter classes. Args: `z [N, d]`, `labels [N]`.
    """
    z = F.normalize(z.double(), dim=-1)
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    if not same.any():
        raise ValueError("alignment needs at least two examples of one class.")
    dist = torch.cdist(z, z).pow(alpha)
    return float(dist[same].mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """`log mean exp(-t ||f(x) - f(x')||^2)` over all pairs of distinct examples, on
    L2-normalised embeddings. Lower is more uniformly spread on the sphere. Args: `z [N, d]`."""
    if z.shape[0] < 2:
        raise ValueError("uniformity needs at least two examples.")
    z = F.normalize(z.double(), dim=-1)
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, 0) - torch.log(torch.tensor(float(sq.numel()), dtype=torch.double)))


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE: `sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|` over equal-width confidence bins.

    Args: `probs [N, c]` (rows summing to 1), `labels [N]`.
    """
    conf, pred = probs.double().max(dim=-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.double)
    ece = torch.zeros((), dtype=torch.double)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs()
    return float(ece)


@dataclass
class EmbeddingReport:
    """Embedding-space statistics of a model on a dataset."""

    accuracy: float
    alignment: float
    uniformity: float
    ece: float
    embeddings: Tensor
    labels: Tensor

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "alignment": self.alignment, "uniformity": self.uniformity,
                "ece": self.ece}


@torch.no_grad()
def embedding_report(head: MultiMixHead, loader: Iterable, max_examples: int | None = None) -> EmbeddingReport:
    """Runs the wrapped model (eval mode) over `loader` (dict batches with `labels`) and
    measures alignment, uniformity and ECE of the pooled embedding the classifier sees.

    Example:
        >>> report = embedding_report(MultiMixHead(model), eval_loader)  # doctest: +SKIP
        >>> report.as_dict()  # doctest: +SKIP
    """
    was_training = head.training
    head.eval()
    zs, ps, ys = [], [], []
    seen = 0
    for batch in loader:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        inputs = head.adapter.normalize_inputs((), inputs)
        z = head.adapter.features(inputs).pooled
        zs.append(z.float().cpu())
        ps.append(head.adapter.classify(z).float().softmax(-1).cpu())
        ys.append(batch["labels"].cpu())
        seen += len(z)
        if max_examples and seen >= max_examples:
            break
    head.train(was_training)
    z, p, y = torch.cat(zs), torch.cat(ps), torch.cat(ys)
    if max_examples:
        z, p, y = z[:max_examples], p[:max_examples], y[:max_examples]
    return EmbeddingReport(
        accuracy=float((p.argmax(-1) == y).float().mean()), alignment=alignment(z, y), uniformity=uniformity(z),
        ece=expected_calibration_error(p, y), embeddings=z, labels=y,
    )


def plot_projection(reports: dict[str, EmbeddingReport], path: str, max_points: int = 2000) -> None:
    """Saves a 2-D PCA projection of each report's L2-normalised embeddings, one panel per name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4 * len(reports), 4), squeeze=False)
    for ax, (name, rep) in zip(axes[0], reports.items()):
        z = F.normalize(rep.embeddings[:max_points].double(), dim=-1)
        z = z - z.mean(0)
        _, _, v = torch.linalg.svd(z, full_matrices=False)
        xy = (z @ v[:2].T).numpy()
        ax.scatter(xy[:, 0], xy[:, 1], c=rep.labels[:max_points].numpy(), cmap="tab10", s=4)
        ax.set_title(f"{name}\nalign {rep.alignment:.3f}  unif {rep.uniformity:.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

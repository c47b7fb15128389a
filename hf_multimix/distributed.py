"""Gathering a batch from all processes with autograd, so MultiMix can span the global batch
(`MultiMixHead(..., mix_across_processes=True)`, beyond the paper, which mixes per GPU).

Uses only `all_gather` and `all_reduce`, which every backend (NCCL, Gloo) implements.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """`all_gather` along dim 0 whose backward sums the gradients of all processes and returns
    this process's slice (the gradient of the sum of every process's loss)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.m = dist.get_rank(), x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.m : (ctx.rank + 1) * ctx.m]


def _shapes(x: Tensor) -> tuple[list[int], list[int]]:
    """(the largest size of each dim over processes, each process's batch size)."""
    shape = torch.tensor(x.shape, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    stacked = torch.stack(shapes)
    return stacked.max(0).values.tolist(), stacked[:, 0].tolist()


def gather_batch(x: Tensor | None, *, grad: bool = True, pad_value: float = 0.0) -> Tensor | None:
    """Concatenates `x` `[m, ...]` from every process along dim 0.

    Batch sizes may differ between processes, and so may dim 1 (the number of positions of a
    text batch): it is padded to the longest with `pad_value` (use False for masks).

    Args:
        x: this process's tensor, or None (then None is returned, on every process alike).
        grad: let gradients flow back to each process's own slice.

    Returns:
        `[sum of m over processes, ...]`.
    """
    if x is None:
        return None
    full, sizes = _shapes(x)
    pads = []
    for dim in reversed(range(1, x.dim())):
        pads += [0, full[dim] - x.shape[dim]]
    pads += [0, full[0] - x.shape[0]]
    is_bool = x.dtype == torch.bool
    y = x.to(torch.uint8) if is_bool else x
    y = F.pad(y, pads, value=pad_value) if any(pads) else y
    if grad and y.requires_grad:
        out = _GatherWithGrad.apply(y)
    else:
        parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, y.contiguous())
        out = torch.cat(parts, 0)
    if any(s != full[0] for s in sizes):
        out = torch.cat([out[i * full[0] : i * full[0] + s] for i, s in enumerate(sizes)])
    return out.bool() if is_bool else out

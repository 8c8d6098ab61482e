"""Cross-process gathers for contrastive pools.

Two collectives, both concatenating rank-major along dim 0 and both returning the input unchanged outside
distributed training (torch.distributed not initialised, or a world of one process):

* :func:`gather_with_grad` for embeddings. Gradients flow through it: the backward pass sums, over every
  process, the gradient that process's loss sends to each gathered slice, and hands the result to the process
  that owns the slice. Every process must therefore run backward through the gather (a loss that skipped it on
  one rank would leave the others waiting).
* :func:`gather_no_grad` for masks and counts. The result is detached.

Every process must pass a tensor of the same shape; a mismatch raises ``ValueError`` on all of them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather as _autograd_all_gather


def rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the world size, or ``(0, 1)`` when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_same_shape(x: torch.Tensor, world_size: int) -> None:
    """Raise on every process when the processes disagree about ``x``'s shape (a gather would misalign rows)."""
    if x.dim() == 0:
        raise ValueError("cannot gather a 0-d tensor: the processes' tensors are concatenated along dim 0")
    shape = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shapes[0]) for s in shapes[1:]):
        found = ", ".join(f"rank {r}: {tuple(s.tolist())}" for r, s in enumerate(shapes))
        raise ValueError(f"every process must gather a tensor of the same shape; got {found}")


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` from every process, keeping the autograd graph.

    Args:
        x: this process's tensor, shape ``[N, ...]``, the same shape on every process.

    Returns:
        ``[world_size * N, ...]``: rank 0's rows first, then rank 1's, and so on. ``x`` itself (same object)
        when not running distributed. Backward sums the gradients all processes send to this process's rows.
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return x
    _check_same_shape(x, world_size)
    return torch.cat(_autograd_all_gather(x), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (a mask or count) from every process without autograd.

    Args:
        x: this process's tensor, shape ``[N, ...]``, the same shape on every process; bool is allowed.

    Returns:
        ``[world_size * N, ...]`` rank-major, detached, same dtype as ``x``; ``x`` itself when not distributed.
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return x
    _check_same_shape(x, world_size)
    # Not every backend reduces or gathers bool tensors, so bool travels as uint8.
    send = x.detach().to(torch.uint8) if x.dtype == torch.bool else x.detach()
    parts = [torch.empty_like(send) for _ in range(world_size)]
    dist.all_gather(parts, send.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if x.dtype == torch.bool else out

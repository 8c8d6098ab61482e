"""Two real CPU processes (gloo on 127.0.0.1), each holding half a batch, must reproduce one process.

Convention under test (see nearid.training.losses): each process returns its share of the global loss times the world
size, so the mean of the returned losses equals the single-process loss on the concatenated batch, and each
process's input gradients divided by the world size (what DDP's gradient averaging does) equal the matching
slice of the single-process gradients.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nearid.training.distributed import gather_no_grad, gather_with_grad
from nearid.training.losses import LOSSES, LossInputs, get_loss, nearid_loss


WORLD_SIZE = 2
PER_RANK = 3
TENSORS = ("anchor", "positives", "positive_mask", "distractors", "distractor_mask")
EMBEDDINGS = ("anchor", "positives", "distractors")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _global_batch() -> dict[str, torch.Tensor]:
    """Six tuples; the ranks hold different numbers of valid positives, distractors and oracle pairs (4 vs 2),
    so averaging per-rank means would not give the global mean."""
    gen = torch.Generator().manual_seed(0)
    b, p, k, d = WORLD_SIZE * PER_RANK, 2, 3, 8
    positive_mask = torch.tensor([[1, 1], [0, 1], [1, 1], [1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    distractor_mask = torch.tensor(
        [[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 1]], dtype=torch.bool
    )
    return {
        "anchor": torch.randn(b, d, generator=gen, dtype=torch.float64),
        "positives": torch.randn(b, p, d, generator=gen, dtype=torch.float64),
        "positive_mask": positive_mask,
        "distractors": torch.randn(b, k, d, generator=gen, dtype=torch.float64),
        "distractor_mask": distractor_mask,
        "margins": torch.rand(b, k, generator=gen, dtype=torch.float64),
    }


def _run_losses(batch: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Loss value and input gradients of every registered loss on ``batch``."""
    results = {}
    for name in LOSSES:
        leaves = {k: v.clone().requires_grad_(k in EMBEDDINGS) for k, v in batch.items()}
        loss = get_loss(name)(LossInputs(*(leaves[k] for k in TENSORS), margins=leaves["margins"]))
        loss.backward()
        grads = {k: leaves[k].grad if leaves[k].grad is not None else torch.zeros_like(leaves[k]) for k in EMBEDDINGS}
        results[name] = {"loss": loss.detach(), **grads}
    return results


def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    """One process: check the raw gathers, then run every loss on this rank's half of the batch."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on the loopback interface
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        out: dict[str, object] = {}
        # gather_with_grad: rank r's loss weights the gathered rows by (r + 1), so every slice's gradient is the
        # sum over ranks: 3 * base weight.
        x = (torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100 * rank).requires_grad_()
        gathered = gather_with_grad(x)
        (gathered * torch.arange(12, dtype=torch.float64).reshape(6, 2) * (rank + 1)).sum().backward()
        out["gathered"], out["gather_grad"] = gathered.detach(), x.grad
        out["mask"] = gather_no_grad(torch.tensor([rank == 0, True]))
        try:
            gather_with_grad(torch.zeros(rank + 1, 2))
        except ValueError as err:
            out["mismatch"] = str(err)

        batch = torch.load(data_path)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        local = {k: v[rows] for k, v in batch.items()}
        out["losses"] = _run_losses(local)
        out["no_gather"] = nearid_loss(LossInputs(*(local[k] for k in TENSORS)), gather=False)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    torch.save(_global_batch(), tmp / "batch.pt")
    mp.start_processes(
        _worker, args=(_free_port(), str(tmp / "batch.pt"), str(tmp)), nprocs=WORLD_SIZE, start_method="spawn"
    )
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD_SIZE)]


def test_gathers_are_rank_major_and_keep_gradients(two_process_results: list[dict]) -> None:
    expected = torch.cat([torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100 * r for r in range(WORLD_SIZE)])
    weights = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    for rank, result in enumerate(two_process_results):
        torch.testing.assert_close(result["gathered"], expected)
        torch.testing.assert_close(result["gather_grad"], 3 * weights[rank * 3 : (rank + 1) * 3])
        assert result["mask"].dtype == torch.bool
        assert result["mask"].tolist() == [True, True, False, True]
        assert "every process must gather a tensor of the same shape" in result["mismatch"]


def test_without_gather_each_process_uses_its_own_batch(two_process_results: list[dict]) -> None:
    batch = _global_batch()
    for rank, result in enumerate(two_process_results):
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        expected = nearid_loss(LossInputs(*(batch[k][rows] for k in TENSORS)))
        torch.testing.assert_close(result["no_gather"], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_processes_match_one_process(two_process_results: list[dict], name: str) -> None:
    single = _run_losses(_global_batch())[name]
    per_rank = [result["losses"][name] for result in two_process_results]
    # the global loss is the mean over processes of what each returns
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD_SIZE
    torch.testing.assert_close(mean_loss, single["loss"], atol=1e-6, rtol=0)
    # DDP averages gradients over processes; each process's inputs are its slice of the global batch
    for key in EMBEDDINGS:
        averaged = torch.cat([r[key] / WORLD_SIZE for r in per_rank])
        torch.testing.assert_close(averaged, single[key], atol=1e-6, rtol=0)
        assert single[key].abs().sum() > 0 or (name == "infonce" and key == "distractors")

"""Many processes with PyTorch's own engine: ``torchrun --nproc_per_node=N -m circuits.run ...``.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE. Each process reads only its slice of every global
batch (``circuits.data.batches(..., shard=world())``: the rows ``tensor_split`` gives it, of the
one-process order) and evaluates its block of each evaluation split (sums all-reduced by
``all_sum``); DistributedDataParallel averages every ``.grad`` across processes, which covers every
rule's local changes (W's, and plastic feedback such as KP's B and PFA's R, are ``.grad`` of
parameters; implicit feedback follows W's averaged step on every process alike).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def setup(device: str) -> str:
    """Join the process group if launched by torchrun; returns this process's device."""
    rank, size = world()
    if size == 1 or dist.is_initialized():
        return device
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def shard(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's slice of a global batch (equal slices when the batch divides evenly). The
    training loop no longer uses it: it reads only its slice (``circuits.data.batches(shard=)``)."""
    rank, size = world()
    if size == 1:
        return x, y
    return x.tensor_split(size)[rank], y.tensor_split(size)[rank]


def all_sum(values: list[float], device="cpu") -> list[float]:
    """The element-wise sum over processes of ``values`` (float64); ``values`` itself with one process."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

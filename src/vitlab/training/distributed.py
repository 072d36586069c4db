"""Data parallelism with PyTorch's own engine: `torchrun --nproc_per_node N -m vitlab train ...`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; this module turns them into a process
group (gloo on CPU, NCCL on GPU) and a device. A plain `vitlab train` is a world of one and needs none of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vitlab.errors import VitlabError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> World:
    """The process's place in the job; initialises the process group when launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    wanted = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise VitlabError("--device cuda was asked for but PyTorch sees no CUDA GPU")
    if wanted == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(wanted)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return World(rank, size, chosen)


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], world: World) -> list[float]:
    """Sum a few scalars over all processes (metrics); the values themselves in a world of one."""
    if world.size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return tensor.tolist()

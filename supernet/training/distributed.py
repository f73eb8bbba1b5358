"""The rank, world and device of this process: torchrun's environment, or one process alone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["Context", "start"]


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and progress; the others only train."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def start(cpu: bool = False) -> Context:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cpu
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", store=_store(rank, world), rank=rank,
                                world_size=world)
    return Context(rank, world, device)


def _store(rank: int, world: int) -> dist.Store:
    """torchrun's store, with a prefix per restart: after ``--max-restarts`` restarts the workers, the keys of
    the killed attempt are still there, and the new process group would read a dead peer's address from them
    (pytorch/pytorch#167288)."""
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts, timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"ofa-train/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)

"""Training on several GPUs (or CPU processes) with DistributedDataParallel, started by torchrun.

``torchrun --nproc-per-node N -m segdesk train PROJECT`` starts N processes with RANK, LOCAL_RANK
and WORLD_SIZE set; each trains the same model on its own random crops (its own random stream),
DDP averages the gradients, and rank 0 alone validates, writes checkpoints and the heartbeat.
Decisions that end or shape the loop (stop, a checkpoint kept or not) are agreed by all ranks, so
every process takes the same number of steps. NCCL on CUDA, gloo on CPU.
Without torchrun, ``start`` returns a group of one and nothing here costs anything.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# A follower may wait for labels for hours; ranks meet only while training, but a rank that
# waits for the others' next step must not time out while they re-read a slow share.
_TIMEOUT = timedelta(hours=2)


class Group:
    """The processes training one model: ``size`` 1 without torchrun."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, device: str = "cpu",
                 backend: str | None = None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.device, self.backend = device, backend

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}, {self.backend}" if self.size > 1 else "one process"

    def describe_suffix(self) -> str:
        """For the heartbeat's device: " x N" under torchrun."""
        return f" x {self.size}" if self.size > 1 else ""

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: DDP around ``model`` in a group, else ``model`` itself."""
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def from_main(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def close(self, finished: bool = True) -> None:
        """Leave the group. ``finished``: every rank got to its end, so they wait for each other
        first: a rank that tore its connections down while rank 0 was still saving the checkpoint
        was seen to abort in gloo ("terminate called without an active exception")."""
        if self.size > 1 and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


def start(requested_device: str | None = None) -> Group:
    """Join the process group torchrun set up (WORLD_SIZE > 1), else a group of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Group()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (requested_device or "auto") not in ("cpu",)
    if use_cuda:
        device, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(local_rank)
    else:
        device, backend = "cpu", "gloo"
    dist.init_process_group(backend, timeout=_TIMEOUT)
    log.info("rank %d of %d on %s (%s)", rank, size, device, backend)
    return Group(rank, size, local_rank, device, backend)

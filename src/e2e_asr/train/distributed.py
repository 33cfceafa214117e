"""Process-group setup for torchrun DDP, and the single-process fallback.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them (plain ``python
steps/train.py``) the run is one process and no process group is made. The backend follows the
device: nccl on CUDA, gloo on CPU. Each rank uses GPU ``LOCAL_RANK`` of the devices that
``CUDA_VISIBLE_DEVICES`` leaves visible. Collectives time out after ``timeout`` seconds, so a rank
that died leaves the others with an error instead of a hang; torchrun then stops the job.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def pick_device(choice: str, local_rank: int) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto|cpu|cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device visible (check CUDA_VISIBLE_DEVICES)")
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise RuntimeError(
            f"local rank {local_rank} needs GPU {local_rank} but only {n} are visible "
            "(CUDA_VISIBLE_DEVICES); start fewer processes per node"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Read the torchrun environment and, with more than one process, join the group."""
    rank = _env_int("RANK", 0)
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, **kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over ranks (float64, on the rank's device)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` on every rank (used for per-rank RNG states)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable value: the resume decision)."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's persistent buffers (BatchNorm running statistics) to every rank.

    DDP runs with ``broadcast_buffers=False`` (the positional tables and CMVN are constants,
    re-sending them every forward costs ~14 MB per step), so the only buffers that drift apart,
    BatchNorm's running statistics, are made equal here before validation and checkpoints:
    every rank then validates and saves the statistics rank 0 would have had.
    """
    if not info.distributed:
        return
    for name, buf in module.state_dict().items():
        if "running_" in name or name.endswith("num_batches_tracked"):
            dist.broadcast(buf, src=0)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo, failed: bool = False) -> None:
    """Leave the process group. After a failure under NCCL the group is left to the process
    exit instead: ``destroy_process_group`` can wait for the failed step's in-flight
    collectives until the watchdog fires (minutes), while torchrun should stop the other ranks
    now. gloo has no such wait."""
    if not (info.distributed and dist.is_initialized()):
        return
    if failed and dist.get_backend() == "nccl":
        return
    dist.destroy_process_group()

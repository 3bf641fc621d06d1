"""torchrun / DDP plumbing: read the launcher's environment, pick gloo or nccl, SyncBN, rank-0-only side effects.

Without torchrun (no WORLD_SIZE in the environment) everything here degrades to a single process.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from scaseg.errors import ScasegError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ScasegError(f"the environment variable {name} should be an integer, not {value!r}") from None


def setup(device: str = "auto", backend: str = "auto") -> DistEnv:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and choose the device.

    ``device``: auto (this rank's GPU if CUDA is present, else CPU), cpu or cuda. ``backend``: auto (nccl on
    CUDA, gloo on CPU), gloo or nccl.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ScasegError("--device cuda was asked for, but this PyTorch sees no CUDA GPU")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ScasegError(f"unknown device {device!r} (expected auto, cpu or cuda)")
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ScasegError(f"unknown distributed backend {backend!r} (expected auto, gloo or nccl)")
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def prepare_model(model: nn.Module, env: DistEnv, channels_last: bool = False) -> nn.Module:
    """Move to the device (in channels-last memory format if asked); under DDP wrap in DistributedDataParallel,
    with BatchNorm made SyncBatchNorm on GPUs.

    PyTorch's SyncBatchNorm runs on CUDA only; CPU (gloo) ranks keep per-rank batch statistics, and DDP
    broadcasts rank 0's running statistics at every forward so the ranks' buffers agree.
    """
    model = model.to(env.device)
    if channels_last:  # Module.to takes memory_format, which torch's type stubs leave out
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if not env.distributed:
        return model
    if env.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [env.device.index] if env.device.type == "cuda" else None
    # Depthwise kernels (C, 1, k, k) may carry any stride on their size-1 axis; DDP's reducer then warns, once per
    # rank, that the gradient's strides differ from its bucket's and copies it: a few KiB per step, not an error.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(array: np.ndarray, env: DistEnv) -> np.ndarray:
    """Sum a numpy array over ranks (float64/int64 exact); identity in one process."""
    if not env.distributed:
        return array
    # gloo reduces CPU tensors, nccl needs them on the GPU.
    t = torch.from_numpy(np.ascontiguousarray(array)).to(env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op in one process)."""
    if env.distributed:
        dist.barrier()

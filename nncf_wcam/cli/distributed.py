"""Helpers for data-parallel compression-aware training under `torchrun` (DistributedDataParallel).

    torchrun --nproc_per_node 2 -m nncf_wcam.cli compress --config configs/X.json --output runs/X

`init_from_env` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and
starts the process group: gloo on CPU, NCCL when CUDA is available. Without those variables (a
plain `python` or `nncf-wcam` call) everything here degrades to a single process: rank 0 of 1.

The NNCF side follows NNCF's own samples: after `create_compressed_model`, call
`compression_ctrl.distributed()` (quantizers broadcast their initialized ranges from rank 0) and
wrap the compressed model in DistributedDataParallel (`wrap_ddp` does both). The
`attribution_matching` controller keeps one frozen teacher per process; the matching loss is a
mean over the local batch, so DDP's gradient averaging gives the gradient of the global batch
(for equal local batch sizes and a model without BatchNorm in train mode: BatchNorm normalizes
with each process's own batch statistics).
"""

import os
from typing import Any
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import DistributedSampler

from nncf_wcam.errors import NncfWcamError

_ENV_KEYS = ("RANK", "WORLD_SIZE")


def launched_distributed() -> bool:
    """True when the process was started by torchrun (or another launcher) with WORLD_SIZE > 1."""
    return all(key in os.environ for key in _ENV_KEYS) and int(os.environ["WORLD_SIZE"]) > 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def init_from_env(backend: Optional[str] = None) -> bool:
    """Starts the process group from torchrun's environment; returns True when running distributed.

    Idempotent; a no-op (False) for a single process. With NCCL, each process uses cuda:LOCAL_RANK.
    """
    if is_initialized():
        return True
    if not launched_distributed():
        return False
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0 (or a single process): the only process that writes checkpoints, IR and reports."""
    return rank() == 0


def device() -> torch.device:
    """The device this process trains on: cuda:LOCAL_RANK with NCCL, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank (pickled; for small objects such as a state_dict of a small model)."""
    if not is_initialized():
        return obj
    holder = [obj if rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


class RefusedOnAnotherRank(NncfWcamError):
    """Another rank refused the run (a folder in use, a bad flag): this rank stops too, before any collective."""


def share_refusal(error: Optional[BaseException]) -> None:
    """Every rank learns whether any rank refused: then all stop at once (rank 0 says why, in one line),
    instead of the others running on into a collective that fails with the transport's traceback."""
    if not is_initialized():
        if error is not None:
            raise error
        return
    reasons = [None] * world_size()
    dist.all_gather_object(reasons, None if error is None else str(error))
    first = next((rank_ for rank_, reason in enumerate(reasons) if reason is not None), None)
    if first is None:
        return
    if error is None:
        error = RefusedOnAnotherRank(f"rank {first} refused the run: {reasons[first]}")
    error.said_on_rank0 = not is_main()  # rank 0 prints the one line, the others stay silent
    raise error


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over all ranks (a detached copy; the input itself is unchanged)."""
    result = tensor.detach().clone()
    if is_initialized():
        dist.all_reduce(result, op=dist.ReduceOp.SUM)
        result /= world_size()
    return result


def make_sampler(dataset: Dataset, seed: int, shuffle: bool = True) -> DistributedSampler:
    """A sampler whose order is a function of (seed, epoch) only: call `set_epoch(epoch)` before each epoch.

    With several processes each rank gets its own shard (padded so that every rank has as many
    samples); with one process it is a seeded shuffle of the whole dataset. Either way an interrupted
    run resumed at epoch e sees exactly the data order an uninterrupted run sees.
    """
    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed, drop_last=False)


def wrap_ddp(model: nn.Module, compression_ctrl=None) -> nn.Module:
    """`compression_ctrl.distributed()` then DistributedDataParallel; the model itself when not distributed."""
    if not is_initialized():
        return model
    if compression_ctrl is not None:
        # NNCF's quantizers broadcast their parameters in place; outside no_grad, torch records the
        # broadcast in the autograd graph and warns ("c10d::broadcast_: an autograd kernel was not registered").
        with torch.no_grad():
            compression_ctrl.distributed()
    if device().type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[local_rank()], output_device=local_rank())
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

"""Distributed data parallel for the training script: the same script under ``torchrun`` or alone.

``init_distributed`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); without it the run is one process and every helper here is the identity. NCCL on
CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU.

BatchNorm: GMIC fine-tunes with small per-GPU batches of huge images, so the default is
``"frozen"``: every BatchNorm runs in eval mode (running statistics from the parent, affine weights
still trained). Each image is then computed independently of its batch, so N processes on shards of
a global batch take exactly the step one process takes on the whole batch (tested with gloo).
``"sync"`` converts BatchNorm to SyncBatchNorm (batch statistics over the global batch, for
``scratch`` training on GPUs; one process simply uses its batch statistics); PyTorch supports
SyncBatchNorm on GPUs only, so several CPU processes refuse it. The recipe's one mode setter
(`models.training.recipe.set_mode`) keeps frozen BatchNorm in eval mode at every epoch.
In feature-extraction mode the backbones (the only BatchNorm layers) are frozen anyway.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from core.errors import InputError
from models.device import resolve_device

__all__ = ["BATCHNORM_MODES", "ONE_PROCESS", "Announcer", "DistContext", "all_reduce_sum", "broadcast_object",
           "gather_array", "init_distributed", "leave_process", "leave_together", "rank_batches",
           "rank_slice", "teardown", "unwrap", "wrap_model"]

BATCHNORM_MODES = ("frozen", "sync")
# Rank 0 alone caches a run's inputs and scores its test sets while the other ranks wait in a
# collective: allow hours (torch's default is 30 minutes), not a hang's forever.
COLLECTIVE_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the store, the checkpoints and the tracking; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


ONE_PROCESS = DistContext()   # the context of a run that torchrun did not start


def init_distributed(device: str = "auto") -> DistContext:
    """Join torchrun's process group (or stay single-process when torchrun did not start us)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world_size <= 1:
        return DistContext(device=base)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                             "visible; start at most one process per GPU (--nproc-per-node)")
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if base.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=base)


def leave_together(ctx: DistContext) -> None:
    """Wait until every rank is done before any leaves the group: rank 0 hosts the rendezvous
    store, and a rank still talking to it after it is gone would abort. Not on a failure path:
    the other ranks are then inside another collective."""
    if ctx.distributed:
        dist.barrier()


def leave_process(ctx: DistContext, code: int) -> int:
    """End a process of a process group (after `teardown`) with ``code`` at once, skipping
    Python's interpreter shutdown; a single process gets ``code`` back.

    Why: gloo's work threads free their finished collectives late, and one that frees a tensor
    Python still knows while the interpreter shuts down aborts the process ("terminate called
    without an active exception", gdb: ``ProcessGroupGloo::runLoop`` -> ``~AsyncBarrierWork``
    -> ``decref_pyobject`` -> ``take_gil``). Here 13 of 165 two-process runs of `tests._ddp_step`
    aborted so, with or without a final barrier; none of 143 that left this way. Every file the
    worker wrote is closed by then (the store's connections last one operation)."""
    if not ctx.distributed:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (safe to call twice, or single-process)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, *, batchnorm: str = "frozen") -> nn.Module:
    """Move ``model`` to the device and, when distributed, wrap it in DDP.

    Call after ``freeze_backbones`` (feature extraction): DDP only synchronises parameters that
    require grad. GMIC's patch selection is an argmax without gradient, but the crops are gathered
    differentiably, so every trainable parameter gets a gradient: ``find_unused_parameters`` is off.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise InputError(f"batchnorm must be one of {BATCHNORM_MODES}; got {batchnorm!r}")
    model = model.to(ctx.device)
    if not ctx.distributed:
        return model
    if batchnorm == "sync":
        if ctx.device.type != "cuda":
            raise InputError("batchnorm 'sync' needs CUDA (PyTorch's SyncBatchNorm is GPU-only); use 'frozen' on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (for ``state_dict``, ``config``, ``freeze_backbones``)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rank_batches(indices, global_batch: int, ctx: DistContext) -> list[tuple[np.ndarray, int]]:
    """This rank's part of each global batch: ``[(its indices, the global batch's size), ...]``.

    Every rank passes the same epoch ``indices`` (same seed); global batch b is
    ``indices[b*global_batch:(b+1)*global_batch]``, exactly a single process's batch b, split into
    ``world_size`` contiguous parts differing by at most one image. Scale each rank's
    ``gmic_loss(..., reduction="sum")`` by ``world_size / size``: DDP's gradient average then equals
    the single-process mean over the global batch, even for unequal parts. A last global batch with
    fewer images than ranks is dropped (every rank must take part in every step).
    """
    if global_batch < ctx.world_size:
        raise InputError(f"batch size {global_batch} is smaller than the {ctx.world_size} processes; "
                         "raise the batch size or start fewer processes")
    idx = np.asarray(indices)
    out = []
    for start in range(0, len(idx), global_batch):
        batch = idx[start:start + global_batch]
        if len(batch) < ctx.world_size:
            break
        out.append((np.array_split(batch, ctx.world_size)[ctx.rank], len(batch)))
    return out


def rank_slice(n: int, ctx: DistContext) -> slice:
    """Contiguous share of ``n`` items for evaluation; gathered in rank order they are 0..n-1."""
    bounds = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), ctx.world_size)])
    return slice(int(bounds[ctx.rank]), int(bounds[ctx.rank + 1]))


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (pickled by torch between our own processes only; the
    other ranks pass None)."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


class Announcer:
    """Rank 0's side of a one-message-per-job protocol: `send` broadcasts the job's work (or
    None: nothing to do) once; the other ranks receive it with ``broadcast_object(None, ctx)``.
    ``training`` says whether the ranks are inside the job's collectives. A no-op in one process."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx, self.sent, self.training = ctx, False, False

    def send(self, work: dict | None) -> None:
        if self.ctx.distributed and not self.sent:
            broadcast_object(work, self.ctx)
        self.sent = True


def all_reduce_sum(values, ctx: DistContext) -> np.ndarray:
    """Sum of float ``values`` (e.g. [loss sum, image count]) over the ranks, float64."""
    arr = np.asarray(values, dtype=np.float64)
    if not ctx.distributed:
        return arr
    t = torch.as_tensor(arr, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def gather_array(local, ctx: DistContext) -> np.ndarray:
    """Concatenate every rank's (n_r, ...) float array in rank order (scores for the AUC)."""
    arr = np.asarray(local, dtype=np.float64)
    if not ctx.distributed:
        return arr
    t = torch.as_tensor(arr, device=ctx.device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=ctx.device) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=ctx.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=ctx.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)]).cpu().numpy()

"""Data-parallel training through PyTorch's own engine: ``torchrun`` / ``torch.distributed`` DDP.

``torchrun`` (or SLURM's ``srun`` with ``torchrun``'s rendezvous) sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; this module only reads them, starts the process group (NCCL on GPUs, gloo on CPUs) and offers the
few collective helpers the training loop needs. Without those variables training runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> tuple[DistributedContext, str]:
    """Start the process group when launched by ``torchrun``; return the context and the device to use.

    Each process takes the GPU of its local rank; on CPU-only machines the gloo backend is used.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(), device_request
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request in ("auto", "cuda") or device_request.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return DistributedContext(rank, world_size, local_rank), device


def broadcast_float(value: float, context: DistributedContext) -> float:
    """Rank 0's value on every rank (validation results, stop decisions)."""
    if not context.enabled:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def average_gradients(module: torch.nn.Module, context: DistributedContext) -> None:
    """Replace every parameter gradient of ``module`` by its mean over the processes, in place.

    For modules trained outside ``DistributedDataParallel``: the WGAN critic, whose gradient penalty differentiates
    through ``torch.autograd.grad(..., create_graph=True)`` and calls the critic three times per update, where
    DDP's bucketed gradient hooks (made for one forward and one backward into ``.grad``) are not documented to
    work. Called after ``backward`` and before the optimiser step, it keeps every process's copy identical, as DDP does for the generator. One flat all-reduce;
    parameters without a gradient take part as zeros so the processes always exchange the same tensor.
    """
    if not context.enabled:
        return
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    offset = 0
    for parameter, grad in zip(parameters, grads):
        count = grad.numel()
        parameter.grad = flat[offset: offset + count].view_as(grad).clone()
        offset += count


def broadcast_module(module: torch.nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's parameters and buffers into every process's ``module`` (a common starting point)."""
    if not context.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()

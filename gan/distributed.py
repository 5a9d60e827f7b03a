"""Data-parallel training across processes (torchrun), without DistributedDataParallel.

    torchrun --standalone --nproc_per_node 4 -m gan train --config configs/emoji64_gpu.json --out runs/x
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        -m gan train ...                                  (and the same with --node_rank 1 on the second node)

Each rank runs the same step on its share of the global batch (cfg.batch // world_size images); after each
phase's backward the gradients are averaged with one all-reduce of a flat buffer (as SG2-ADA does), so every rank
applies the same Adam update and the weights, G_ema and w_avg-free state stay identical without broadcasts. A
plain all-reduce (not DDP) is used because the lazy R1 phase differentiates twice and the set of trainable
parameters changes between phases, which DDP's bucketed hooks handle badly.

NCCL on GPUs, gloo on the CPU. Rank 0 alone logs, writes samples and checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class Distributed:
    """Where this process sits in a data-parallel job (rank 0 of 1 when run without torchrun)."""

    rank: int = 0  # global rank of this process
    world_size: int = 1  # number of processes
    local_rank: int = 0  # rank on this node (picks the GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (a no-op in one process). Asynchronous to the host on NCCL."""
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def all_reduce_mean_grads(self, params: list[torch.Tensor]) -> None:
        """Average the .grad of `params` over ranks with one flat all-reduce (missing grads count as zeros)."""
        if not self.enabled or not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in params])  # (sum of numels,)
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat /= self.world_size
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            # copy into the existing grad: it has the parameter's memory format (e.g. channels_last), which fused
            # Adam relies on (it walks parameter, gradient and moments as flat memory)
            p.grad.copy_(g.view(p.shape))

    def broadcast_(self, tensors: list[torch.Tensor]) -> None:
        """Copy rank 0's values into every rank's tensors (used once, after building or loading the networks)."""
        if self.enabled:
            for t in tensors:
                c = t.contiguous()  # collectives send memory as is: a channels_last tensor would arrive scrambled
                tdist.broadcast(c, src=0)
                if c.data_ptr() != t.data_ptr():
                    t.copy_(c)


def setup(device: str | None = None) -> tuple[Distributed, torch.device]:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or stay alone without it.

    Returns this process's place and its device: cuda:LOCAL_RANK with NCCL when GPUs are available (and `device`
    does not say 'cpu'), else the CPU with gloo.
    """
    from gan.runtime import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), pick_device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not (device or "").startswith("cpu")
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(rank, world, local_rank), dev


def teardown(dist: Distributed) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()

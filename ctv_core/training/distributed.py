"""Several training processes through torchrun: this process's place, its device, global batch norm.

When ``WORLD_SIZE`` > 1 each process joins the process group (NCCL on CUDA, gloo on the CPU),
the trainer wraps the network in DistributedDataParallel and each process takes its share of
every global batch. Batch norm uses the statistics of the global batch
(``sampling.sync_batch_norm``): torch's SyncBatchNorm on CUDA, an all-reduce of the moments on
the CPU (:class:`GlobalBatchNorm3d`). Only rank 0 validates and writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import DeviceError, TrainingError
from ..model.runtime import configure_runtime, select_device, usable_cpu_count


@dataclass(frozen=True)
class Processes:
    """This process among torchrun's: world size, ranks, its device, and whether it made the group."""

    world: int
    rank: int
    local_rank: int
    local_world: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (nothing with one process)."""
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is True in any process (every process must call this at the same point)."""
        if self.world == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def stop(self) -> None:
        """Leave the process group if this process made it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise TrainingError(f"The environment variable {name}={value!r} is not an integer; launch with torchrun.") \
            from exc


def start_processes(device: str) -> Processes:
    """This process's place among torchrun's processes (WORLD_SIZE, RANK, LOCAL_RANK), group joined."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    try:
        chosen = select_device(device)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from exc
    if chosen.type == "cuda" and world > 1:
        if local_rank >= torch.cuda.device_count():
            raise TrainingError(f"Process {rank} has LOCAL_RANK {local_rank} but this node has "
                                f"{torch.cuda.device_count()} GPUs; start at most that many processes per node.")
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        owns = True
    configure_runtime(chosen)
    if chosen.type == "cpu" and local_world > 1:
        torch.set_num_threads(max(1, usable_cpu_count() // local_world))  # share the node's cores
    return Processes(world, rank, local_rank, local_world, chosen, owns)


class GlobalBatchNorm3d(nn.BatchNorm3d):
    """Batch norm whose training statistics are those of the global batch across all processes.

    For the CPU (gloo), where torch's SyncBatchNorm does not run: the per-channel sum and the
    sum of squared deviations are all-reduced with autograd (``torch.distributed.nn``), so the
    forward and the gradients equal those of one process holding the whole batch (up to the
    order of floating-point sums). Outside training or without a process group it is a plain
    ``BatchNorm3d``; its parameters and buffers are the same, so state dicts are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3, 4)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count.item())
        mean = all_reduce(x.sum(dims)) / n
        centred = x - mean[None, :, None, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n
        scale = torch.rsqrt(var + self.eps) * self.weight
        out = centred * scale[None, :, None, None, None] + self.bias[None, :, None, None, None]
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1)), alpha=m)
        return out


def global_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm3d for one with global-batch statistics (same weights)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm3d:
                swapped = GlobalBatchNorm3d(child.num_features, child.eps, child.momentum).to(child.weight.device)
                swapped.load_state_dict(child.state_dict())
                setattr(module, name, swapped)
    return model

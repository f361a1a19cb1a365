"""Multi-process training under ``torchrun``: process-group set-up, model wrapping, reductions.

``torchrun --nproc_per_node N -m rtseg train RECIPE`` sets RANK / WORLD_SIZE / LOCAL_RANK; the trainer then
runs one process per device (gloo on CPU, NCCL on CUDA). Without those variables everything here is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn

from rtseg.config import ConfigError

__all__ = ["DistributedContext"]


class DistributedContext:
    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self._owns_group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> torch.device:
        """Join the process group; on CUDA, each process takes the GPU of its local rank."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self._owns_group = True
        return device

    def wrap(self, model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
        if not self.enabled:
            return model
        if sync_bn:
            if device.type != "cuda":
                # PyTorch's SyncBatchNorm runs only on GPUs; on CPU each process normalises its own share of the batch
                raise ConfigError("train.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm has no CPU kernel); set train.sync_bn=false on CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def rewrap(self, net: nn.Module) -> nn.Module:
        """A new DDP wrapper around the same module, after parameters changed ``requires_grad`` (DDP registers
        gradient hooks for those that required one when it was built); the module itself when not distributed."""
        if not self.enabled:
            return net
        module = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
        return nn.parallel.DistributedDataParallel(module, device_ids=net.device_ids if hasattr(net, "device_ids") else None)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the processes, in place (CPU tensors are moved for NCCL and back)."""
        if self.enabled:
            backend_device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else tensor.device
            work = tensor.to(backend_device)
            dist.all_reduce(work)
            tensor.copy_(work.to(tensor.device))
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False

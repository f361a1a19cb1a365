"""Training batches: shuffled per (seed, epoch), one crop size per batch for multi-scale training, and split
across processes so that N processes together see exactly the batches one process would.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from rtseg.config import ConfigError

__all__ = ["EpochBatchSampler"]


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices into a dataset of ``num_items * num_crops`` entries.

    Entry ``p * num_items + i`` is item ``i`` cropped to the ``p``-th crop size: an epoch passes over the
    items once per crop size, each batch holds a single crop size (so it stacks), and the batches of
    all passes are shuffled together. ``global_batch`` is the batch of the whole run; with ``world_size``
    processes, rank ``r`` takes its ``global_batch // world_size`` share of every global batch, so the
    samples of a step do not depend on the number of processes.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, num_crops: int = 1, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ConfigError(f"train.batch_size={global_batch} (the global batch) must be divisible by the {world_size} processes")
        if num_items < global_batch:
            raise ConfigError(f"train.batch_size={global_batch} is larger than the training set ({num_items} images)")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.num_crops, self.rank, self.world_size = num_crops, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + self.epoch)
        batches: list[list[int]] = []
        per_pass = self.num_items // self.global_batch
        for p in range(self.num_crops):
            order = (torch.randperm(self.num_items, generator=g) + p * self.num_items).tolist()
            batches += [order[b * self.global_batch : (b + 1) * self.global_batch] for b in range(per_pass)]
        if self.num_crops > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        share = self.global_batch // self.world_size
        for batch in self.global_batches():
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return self.num_crops * (self.num_items // self.global_batch)

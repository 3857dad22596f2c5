"""Seeded, resumable, distributed-aware batching for map-style datasets.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, so a resumed run replays the exact
order and skips the batches it already took. Under ``torchrun`` every global batch of ``batch_size`` examples is
cut into ``world_size`` equal slices, one per rank: the averaged DDP gradient is then the gradient of the same
global batch a single process would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from lmlab import distributed
from lmlab.errors import ConfigError


class EpochLoader:
    """Iterate ``collate_fn([dataset[i] for i in batch])`` over seeded batches.

    Args:
        dataset: anything with ``__len__`` and ``__getitem__``.
        batch_size: the GLOBAL batch size (split across ranks under torchrun).
        shuffle: draw a new permutation each epoch (seeded by ``seed + epoch``).
        seed: base seed of the permutations.
        collate_fn: turns a list of items into a batch.
        drop_last: drop a final incomplete batch.
        sort_key: optional ``key(item) -> int`` (e.g. length); batches are then formed from pools of 50
            batches sorted by that key (bucketing), and the batch order is shuffled.
    """

    def __init__(
        self,
        dataset: Sequence,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        drop_last: bool = False,
        sort_key: Callable[[Any], int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.collate_fn = collate_fn or (lambda items: items)
        self.drop_last = drop_last
        self.sort_key = sort_key
        self.epoch = 0
        self._keys = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[list[int]]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        bs = self.batch_size
        if self.sort_key is not None:
            if self._keys is None:
                self._keys = [self.sort_key(self.dataset[i]) for i in range(n)]
            pool = bs * 50
            batches = []
            for start in range(0, n, pool):
                chunk = sorted(order[start : start + pool], key=lambda i: self._keys[i])
                batches += [chunk[j : j + bs] for j in range(0, len(chunk), bs)]
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + self.epoch + 1_000_003)
                batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        else:
            batches = [order[j : j + bs] for j in range(0, n, bs)]
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()
        return batches

    def _local(self, batch: list[int]) -> list[int] | None:
        world = distributed.world_size()
        if world == 1:
            return batch
        if self.batch_size % world:
            ok = [b for b in range(world, 4 * world * max(1, self.batch_size // world) + 1, world)][:6]
            raise ConfigError(
                f"train.batch_size={self.batch_size} (the global batch) is not divisible by the world size "
                f"{world}; use a multiple of {world}, e.g. {', '.join(map(str, ok))}"
            )
        if len(batch) < world:
            return None  # a final batch too small to give every rank an example
        per = len(batch) // world
        r = distributed.rank()
        return batch[r * per : (r + 1) * per]

    def __len__(self) -> int:
        return len(self._global_batches())

    def iter_from(self, start: int) -> Iterator[Any]:
        """Batches of the current epoch, skipping the first ``start`` (for exact resume)."""
        for batch in self._global_batches()[start:]:
            local = self._local(batch)
            if local is None:
                continue
            yield self.collate_fn([self.dataset[i] for i in local])

    def __iter__(self) -> Iterator[Any]:
        return self.iter_from(0)

"""HF Accelerate: our samplers under ``accelerator.prepare``, sharded exactly once.

``accelerator.prepare(loader)`` always wraps the batch sampler in its ``BatchSamplerShard``,
which hands rank ``r`` the global batches ``k * W + r``. :func:`prepare_for_accelerate` builds
the loader around :class:`AccelerateBatches`, which repeats every local batch ``W`` times, so
that round-robin hands each rank exactly its own batches (nothing computed for the other ranks,
no loop-back padding: our lengths are already equal). The batches are those of the native
``torchrun`` run, and the sampler's state resumes under any world size.

Trap: a loader prepared by hand, ``accelerator.prepare(DataLoader(dataset, batch_sampler=s))``,
is exact only for a batch sampler directly under Accelerate's shard of its own world (it then
repeats its batches itself); any other wiring of a batch sampler raises
``DoubleShardingError`` at the first batch
(:func:`~distsampler.integrations.double_sharding.accelerate_wiring`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler

from .._batch import BatchPlanSampler
from .._core.checks import check_int
from ._common import (
    OurSampler,
    check_dataset_size,
    check_sampler,
    fixed_batch_size,
    items_per_batch,
)
from .checkpoint import SamplerCheckpoint
from .double_sharding import check_not_double_sharded

__all__ = ["AccelerateBatches", "prepare_for_accelerate"]


class AccelerateBatches(Sampler[list[int]]):
    """This rank's batches, each repeated ``num_processes`` times, for Accelerate to shard.

    Accelerate's ``BatchSamplerShard`` keeps batch ``k * W + r`` on rank ``r``; with every local
    batch repeated ``W`` times, that is exactly this rank's ``k``-th batch, so Accelerate's
    sharding becomes a pass-through and our (already sharded) sampler decides alone. Build it
    with :func:`prepare_for_accelerate` rather than by hand.

    Args:
        sampler: a rank-aware sampler whose world equals Accelerate's.
        batch_size: local batch size; required for a :class:`DistributedWeightedSampler`
            (batches are consecutive runs of its indices, the last one may be short).
        num_processes: Accelerate's world size (``accelerator.num_processes``).
    """

    def __init__(
        self, sampler: OurSampler, batch_size: int | None = None, num_processes: int = 1
    ) -> None:
        check_sampler(sampler)
        self._items = items_per_batch(sampler, batch_size)
        self.num_processes = check_int("num_processes", num_processes, 1)
        if sampler.num_replicas != self.num_processes:
            raise ValueError(
                f"the sampler is sharded over num_replicas={sampler.num_replicas} ranks but "
                f"Accelerate runs num_processes={self.num_processes}; build the sampler after "
                "Accelerator() (it then reads the world from torch.distributed)"
            )
        # DataLoaderShard.set_epoch reaches `batch_sampler.batch_sampler.sampler.set_epoch`.
        self.sampler = sampler
        # BatchSamplerShard checks batch sizes only when it knows one: a weighted sampler's last
        # local batch may be short, so it gets None. drop_last=True: never loop back to the
        # first batches to even out lengths (ours are already equal on all ranks).
        self.batch_size = fixed_batch_size(sampler)
        self.drop_last = True

    def local_batches(self) -> Iterator[list[int]]:
        """This rank's batches, once each (what the rank trains on)."""
        sampler = self.sampler
        if isinstance(sampler, BatchPlanSampler):
            yield from sampler
            return
        batch: list[int] = []
        for index in sampler:
            batch.append(index)
            if len(batch) == self._items:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.local_batches():
            for _ in range(self.num_processes):
                yield batch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self._items) * self.num_processes


def prepare_for_accelerate(
    accelerator: Any,
    dataset: Any,
    sampler: OurSampler,
    *,
    batch_size: int | None = None,
    register: bool = True,
    **dataloader_kwargs: Any,
) -> tuple[DataLoader, SamplerCheckpoint]:
    """A prepared DataLoader that yields exactly the sampler's batches on every rank.

    Builds ``DataLoader(dataset, batch_sampler=AccelerateBatches(...))``, runs
    ``accelerator.prepare`` on it and checks the result. Batches equal those of the same
    sampler under ``torchrun`` (no second sharding, no loop-back padding).

    Args:
        accelerator: the ``accelerate.Accelerator``.
        dataset: a map-style dataset.
        sampler: built after ``Accelerator()`` (so it finds the world in ``torch.distributed``).
        batch_size: local batch size; required for a :class:`DistributedWeightedSampler`.
        register: register the returned :class:`SamplerCheckpoint` with
            ``accelerator.register_for_checkpointing``, so ``save_state``/``load_state`` carry
            the resume point. Then do NOT also call ``accelerator.skip_first_batches`` (the
            batches would be skipped twice); pass ``register=False`` to resume with it instead.
        **dataloader_kwargs: ``num_workers``, ``collate_fn``, ``pin_memory``, ...

    Raises:
        ValueError: the sampler's labels (or weights) do not number ``len(dataset)``, or an
            Accelerate setting would split, broadcast or replay the batches.
        RuntimeError: the launcher and Accelerate disagree on the number of processes.

    Returns:
        ``(loader, checkpoint)``: iterate ``checkpoint.track(loader)`` and call
        ``loader.set_epoch(epoch)`` (it reaches the sampler) before each epoch.
    """
    check_sampler(sampler)
    check_dataset_size(sampler, dataset)
    world = accelerator.num_processes
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world != world:
        raise RuntimeError(
            f"the launcher started WORLD_SIZE={env_world} processes but Accelerate sees "
            f"num_processes={world}: every process would train alone. On CPU launch with "
            "ACCELERATE_USE_CPU=1 and --multi_gpu (docs/integrations.md#hf-accelerate)"
        )
    if sampler.rank != accelerator.process_index:
        raise ValueError(
            f"sampler.rank={sampler.rank} differs from accelerator.process_index="
            f"{accelerator.process_index}; build the sampler after Accelerator()"
        )
    if accelerator.split_batches or accelerator.dispatch_batches:
        raise ValueError(
            "split_batches / dispatch_batches split or broadcast one process's batches; "
            "our samplers already give each rank its own: leave both off"
        )
    if register and accelerator.use_stateful_dataloader:
        raise ValueError(
            "use_stateful_dataloader=True already restores the loader by replaying batches; "
            "with register=True they would be skipped twice: pass register=False"
        )
    for key in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
        if key in dataloader_kwargs:
            raise TypeError(f"{key} is set by prepare_for_accelerate; do not pass it")
    batches = AccelerateBatches(sampler, batch_size, world)
    loader = accelerator.prepare(DataLoader(dataset, batch_sampler=batches, **dataloader_kwargs))
    check_not_double_sharded(loader)
    checkpoint = SamplerCheckpoint(sampler, batch_size, loader)
    if register:
        accelerator.register_for_checkpointing(checkpoint)
    return loader, checkpoint

"""Glue for HF Accelerate, PyTorch Lightning and torchdata: our samplers, sharded exactly once.

Our samplers are rank-aware: each rank already reads only its own share of the global plan.
Frameworks that shard a loader themselves would cut that share again, so each rank sees
``1 / W**2`` of the data and nothing warns:

* **HF Accelerate** (``accelerator.prepare(loader)``) always wraps the batch sampler in its
  ``BatchSamplerShard``, which hands rank ``r`` the global batches ``k * W + r``.
  :func:`prepare_for_accelerate` builds the loader around :class:`AccelerateBatches`, which
  repeats every local batch ``W`` times, so that round-robin hands each rank exactly its own
  batches (nothing computed for the other ranks, no loop-back padding: our lengths are already
  equal). The batches are those of the native ``torchrun`` run, and the sampler's state resumes
  under any world size.
* **PyTorch Lightning** wraps every sampler that is not a ``DistributedSampler`` in its
  ``DistributedSamplerWrapper`` (and re-creates custom batch samplers) unless the trainer gets
  ``Trainer(use_distributed_sampler=False)``; build the sampler in ``train_dataloader()``.
* **torchdata** ``StatefulDataLoader`` needs nothing: it snapshots ``sampler.state_dict()`` in
  the main process at the moment each batch index is drawn, so prefetching workers are accounted.

:func:`check_not_double_sharded` finds the first two cases in any loader and raises
:class:`DoubleShardingError`. :class:`SamplerCheckpoint` is the sampler's resume point at the
training loop's own step count (a ``DataLoader`` with workers, or Accelerate's one-batch
look-ahead, draws batches before the loop uses them); register it with
``accelerator.register_for_checkpointing`` or put its ``state_dict()`` in your checkpoint.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .quota import DistributedQuotaBatchSampler
from .topology import check_int
from .weighted import DistributedWeightedSampler

__all__ = [
    "AccelerateBatches",
    "DoubleShardingError",
    "SamplerCheckpoint",
    "check_not_double_sharded",
    "find_sampler_state",
    "prepare_for_accelerate",
]

OurSampler = DistributedWeightedSampler | DistributedQuotaBatchSampler
T = TypeVar("T")


class DoubleShardingError(RuntimeError):
    """A rank-aware distsampler sampler sits under a framework that shards it once more."""


def _check_sampler(sampler: Any) -> None:
    if not isinstance(sampler, (DistributedWeightedSampler, DistributedQuotaBatchSampler)):
        raise TypeError(
            "sampler should be a DistributedWeightedSampler or a DistributedQuotaBatchSampler, "
            f"but got {type(sampler).__name__}"
        )


def _items_per_batch(sampler: OurSampler, batch_size: int | None) -> int:
    """Items of the sampler's state per local batch (indices; or 1 for a batch sampler)."""
    if isinstance(sampler, DistributedQuotaBatchSampler):
        if batch_size is not None and batch_size != sampler.batch_size:
            raise ValueError(
                f"batch_size={batch_size} differs from the quota sampler's "
                f"batch_size={sampler.batch_size}; leave it out"
            )
        return 1
    if batch_size is None:
        raise ValueError("batch_size is required with a DistributedWeightedSampler")
    return check_int("batch_size", batch_size, 1)


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

    def __init__(self, sampler: OurSampler, batch_size: int | None = None, num_processes: int = 1):
        _check_sampler(sampler)
        self._items = _items_per_batch(sampler, batch_size)
        self.num_processes = check_int("num_processes", num_processes, 1)
        if sampler.num_replicas != self.num_processes:
            raise ValueError(
                f"the sampler is sharded over num_replicas={sampler.num_replicas} ranks but "
                f"Accelerate runs num_processes={self.num_processes}; build the sampler after "
                "Accelerator() (it then reads the world from torch.distributed)"
            )
        # DataLoaderShard.set_epoch reaches `batch_sampler.batch_sampler.sampler.set_epoch`.
        self.sampler = sampler
        quota = isinstance(sampler, DistributedQuotaBatchSampler)
        # BatchSamplerShard checks batch sizes only when it knows one: a weighted sampler's last
        # local batch may be short, so it gets None. drop_last=True: never loop back to the
        # first batches to even out lengths (ours are already equal on all ranks).
        self.batch_size = sampler.batch_size if quota else None
        self.drop_last = True

    def local_batches(self) -> Iterator[list[int]]:
        """This rank's batches, once each (what the rank trains on)."""
        if isinstance(self.sampler, DistributedQuotaBatchSampler):
            yield from self.sampler
            return
        batch: list[int] = []
        for index in self.sampler:
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


class SamplerCheckpoint:
    """The sampler's resume point at the training loop's own count of batches.

    A ``DataLoader`` with workers (and Accelerate's one-batch look-ahead) draws batches before
    the loop uses them, so the sampler's own count runs ahead. Iterate through
    :meth:`track`; :meth:`state_dict` then describes the batches the loop received (a batch
    counts once the loop body gets it: save after its optimizer step). The state is the
    sampler's own (plain ints and strings): saved at a step boundary, it resumes under any
    world size.

    Example::

        ckpt = SamplerCheckpoint(sampler, batch_size=32)
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            for x, y in ckpt.track(loader):
                ...  # step; at a checkpoint: torch.save({"sampler": ckpt.state_dict(), ...})

    Args:
        sampler: the distsampler sampler feeding the loader.
        batch_size: local batch size; required for a :class:`DistributedWeightedSampler`.
        loader: optional loader with ``set_epoch`` (Accelerate's): :meth:`load_state_dict`
            sets its epoch too, so the loader's own epoch counter cannot reset the resume point.
    """

    def __init__(self, sampler: OurSampler, batch_size: int | None = None, loader: Any = None):
        _check_sampler(sampler)
        self.sampler = sampler
        self.loader = loader
        self._items = _items_per_batch(sampler, batch_size)
        loader_batch = getattr(loader, "batch_size", None)
        if isinstance(sampler, DistributedWeightedSampler) and loader_batch not in (
            None,
            batch_size,
        ):
            raise ValueError(f"batch_size={batch_size} differs from the loader's {loader_batch}")
        self.steps = 0  # batches the loop received in the pass being tracked
        self._base: dict | None = None  # the sampler's resume point when the pass began
        self._length = 0  # local items of that pass

    def _begin(self) -> None:
        self.steps = 0
        self._base = self.sampler.state_dict(consumed=0)
        self._length = len(self.sampler)

    def track(self, batches: Iterable[T]) -> Iterator[T]:
        """Iterate ``batches`` (one pass of the loader), counting what the loop receives."""
        self._begin()
        for batch in batches:
            if self.steps == 0 and self.sampler.epoch != self._base["epoch"]:
                self._begin()  # the loader set another epoch as it started (Accelerate does)
            self.steps += 1
            yield batch

    def state_dict(self) -> dict:
        """The sampler's state after the batches the loop received (plain ints and strings)."""
        if self._base is None or self._base["epoch"] != self.sampler.epoch:
            # no pass of this epoch tracked since creation, load or set_epoch
            start = self.sampler.state_dict(consumed=0)
            if self.sampler.state_dict() != start:
                raise RuntimeError(
                    "the sampler handed out items the loop's count does not know; iterate the "
                    "loader through SamplerCheckpoint.track(loader)"
                )
            return start
        items = self.steps * self._items
        if items >= self._length:  # the pass is over: what the sampler handed out is all used
            return self.sampler.state_dict()
        return self.sampler.state_dict(consumed=items)

    def load_state_dict(self, state: dict) -> None:
        """Restore the sampler (and the loader's epoch); the next pass continues the plan."""
        self.sampler.load_state_dict(state)
        if callable(getattr(self.loader, "set_epoch", None)):
            self.loader.set_epoch(state["epoch"])
        self._base, self.steps, self._length = None, 0, 0


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

    Returns:
        ``(loader, checkpoint)``: iterate ``checkpoint.track(loader)`` and call
        ``loader.set_epoch(epoch)`` (it reaches the sampler) before each epoch.
    """
    _check_sampler(sampler)
    world = accelerator.num_processes
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if env_world != world:
        raise RuntimeError(
            f"the launcher started WORLD_SIZE={env_world} processes but Accelerate sees "
            f"num_processes={world}: every process would train alone. On CPU launch with "
            "ACCELERATE_USE_CPU=1 and --multi_gpu (see DESIGN decision 9)"
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


def find_sampler_state(loader_state: Any) -> dict:
    """Our sampler's state inside a torchdata ``StatefulDataLoader.state_dict()``.

    ``StatefulDataLoader.load_state_dict`` restores only under the same ``num_workers`` and world
    size; to continue under another world size, load the state found here into the new rank's
    sampler (``sampler.load_state_dict``) and start a fresh loader.
    """
    found = list(_sampler_states(loader_state))
    if not found:
        raise ValueError("loader_state holds no distsampler sampler state")
    if any(f != found[0] for f in found):
        raise ValueError("loader_state holds several different distsampler sampler states")
    return found[0]


def _sampler_states(obj: Any, depth: int = 0) -> Iterator[dict]:
    names = (DistributedWeightedSampler.__name__, DistributedQuotaBatchSampler.__name__)
    if not isinstance(obj, dict) or depth > 8:
        return
    if obj.get("sampler") in names and {"config", "epoch", "consumed"} <= set(obj):
        yield obj
        return
    for value in obj.values():
        yield from _sampler_states(value, depth + 1)


# -- the detector ---------------------------------------------------------------------------------
def _shard_world(obj: Any) -> int:
    """Ranks a layer deals its input over: Accelerate's BatchSamplerShard, a DistributedSampler."""
    if isinstance(obj, DistributedSampler):
        return int(obj.num_replicas)
    if all(hasattr(obj, a) for a in ("num_processes", "process_index", "batch_sampler")):
        return 1 if getattr(obj, "split_batches", False) else int(obj.num_processes)
    return 1


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    for attr in ("batch_sampler", "sampler"):
        child = getattr(obj, attr, None)
        if child is not None and child is not obj:
            yield attr, child
    if isinstance(obj, DistributedSampler):  # Lightning's DistributedSamplerWrapper
        inner = getattr(getattr(obj, "dataset", None), "_sampler", None)
        if inner is not None:
            yield "dataset._sampler", inner


def _problems(obj: Any, path: str, sharders: tuple, depth: int = 0) -> Iterator[tuple[bool, str]]:
    """``(fatal, message)`` for every double sharding (and loop-back padding) under ``obj``."""
    if depth > 8:
        return
    if isinstance(obj, (DistributedWeightedSampler, DistributedQuotaBatchSampler)):
        for where, world in sharders:
            if obj.num_replicas > 1:
                yield (
                    True,
                    (
                        f"{path} is {type(obj).__name__}(num_replicas={obj.num_replicas}), already "
                        f"sharded, and {where} shards it again over {world} ranks: each rank sees "
                        f"1/{obj.num_replicas * world} of the plan"
                    ),
                )
        return
    if isinstance(obj, AccelerateBatches):
        for where, world in sharders:
            if world != obj.num_processes:
                yield (
                    True,
                    f"{path} repeats batches {obj.num_processes}x; {where} has {world} ranks",
                )
        if obj.num_processes > 1 and not sharders:
            yield (
                True,
                (
                    f"{path} repeats every batch {obj.num_processes}x for Accelerate to deal out, "
                    "but nothing deals them out: use it only through prepare_for_accelerate"
                ),
            )
        return  # its sampler is rank-aware by design: the shard above is a pass-through
    world = _shard_world(obj)
    if world > 1:
        yield from _loop_back(obj, path, world)
        sharders = (*sharders, (path, world))
    for attr, child in _children(obj):
        yield from _problems(child, f"{path}.{attr}", sharders, depth + 1)


def _loop_back(obj: Any, path: str, world: int) -> Iterator[tuple[bool, str]]:
    """Accelerate pads an epoch whose batches are no multiple of W with its first batches."""
    inner = getattr(obj, "batch_sampler", None)
    if inner is None or isinstance(inner, AccelerateBatches) or isinstance(obj, DistributedSampler):
        return
    if getattr(obj, "even_batches", False) and not getattr(obj, "drop_last", False):
        try:
            n = len(inner)
        except TypeError:
            return
        if n % world:
            yield (
                False,
                (
                    f"{path} deals {n} batches over {world} ranks; Accelerate will repeat the "
                    f"first {world - n % world} batch(es) to even them out"
                ),
            )


def check_not_double_sharded(dataloader: Any) -> None:
    """Raise :class:`DoubleShardingError` if a rank-aware sampler gets sharded a second time.

    Looks through the loader's (batch) samplers for Accelerate's ``BatchSamplerShard`` or a
    ``DistributedSampler`` (Lightning's ``DistributedSamplerWrapper`` included) with more than one
    rank above one of our samplers built with ``num_replicas > 1``. A sampler built with
    ``num_replicas=1`` (one global plan that Accelerate deals out) is accepted, with a warning
    if Accelerate will pad the epoch with repeated batches.
    """
    found = list(_problems(dataloader, "dataloader", ()))
    errors = [msg for fatal, msg in found if fatal]
    if errors:
        raise DoubleShardingError(
            "\n".join(errors)
            + "\nFix: with Accelerate use distsampler.integrations.prepare_for_accelerate; with "
            "Lightning pass Trainer(use_distributed_sampler=False)."
        )
    for _, msg in found:
        warnings.warn(msg, stacklevel=2)

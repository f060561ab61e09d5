"""Finding a rank-aware sampler that a framework shards a second time.

Our samplers are rank-aware: each rank already reads only its own share of the global plan.
Frameworks that shard a loader themselves would cut that share again, so each rank sees
``1 / W**2`` of the data and nothing warns. :func:`check_not_double_sharded` walks a loader's
(batch) samplers and raises :class:`DoubleShardingError` when that happens.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DistributedSampler

from ._common import OUR_SAMPLERS

__all__ = ["DoubleShardingError", "check_not_double_sharded"]


class DoubleShardingError(RuntimeError):
    """A rank-aware distsampler sampler sits under a framework that shards it once more."""


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
    from .accelerate import AccelerateBatches  # it builds on this module

    if depth > 8:
        return
    if isinstance(obj, OUR_SAMPLERS):
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
    from .accelerate import AccelerateBatches

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

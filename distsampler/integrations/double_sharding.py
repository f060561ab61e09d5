"""Finding a rank-aware sampler that a framework shards a second time.

Our samplers are rank-aware: each rank already reads only its own share of the global plan.
Frameworks that shard a loader themselves would cut that share again, so each rank sees
``1 / W**2`` of the data and nothing warns. :func:`check_not_double_sharded` walks a loader's
(batch) samplers and raises :class:`DoubleShardingError` when that happens.

A plain ``accelerator.prepare(DataLoader(dataset, batch_sampler=sampler))`` is checked again when
the loader is iterated (:func:`accelerate_wiring`, called by the samplers themselves): a batch
sampler directly under Accelerate's ``BatchSamplerShard`` with the same world is served so that
the shard deals each rank exactly its own batches; every other wiring that would shard the plan
again raises at the first batch, naming
``distsampler.integrations.accelerate.prepare_for_accelerate``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator
from types import FrameType
from typing import Any

from torch.utils.data import DistributedSampler

from ._common import OUR_SAMPLERS, is_batch_sampler

__all__ = ["DoubleShardingError", "accelerate_wiring", "check_not_double_sharded"]

PREPARE = "distsampler.integrations.accelerate.prepare_for_accelerate"
#: Frames walked up from a sampler's ``__iter__`` to the Accelerate wrapper iterating it (the
#: dispatcher sits 4 to 7 frames up: the DataLoader's iterator, a ``BatchSampler``, between).
_FRAMES = 12


class DoubleShardingError(RuntimeError):
    """A rank-aware distsampler sampler sits under a framework that shards it once more."""


def _shard_world(obj: Any) -> int:
    """Ranks a layer deals its input over: Accelerate's BatchSamplerShard, a DistributedSampler."""
    if isinstance(obj, DistributedSampler):
        return int(obj.num_replicas)
    if all(hasattr(obj, a) for a in ("num_processes", "process_index", "batch_sampler")):
        return int(obj.num_processes)  # split_batches too: each rank keeps 1/W of every batch
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
        if len(sharders) == 1 and exact_under(obj, sharders[0][2]) is None:
            return  # Accelerate's shard deals this batch sampler's batches exactly
        for where, world, _ in sharders:
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
        for where, world, _ in sharders:
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
        sharders = (*sharders, (path, world, obj))
    for attr, child in _children(obj):
        yield from _problems(child, f"{path}.{attr}", sharders, depth + 1)


def _loop_back(obj: Any, path: str, world: int) -> Iterator[tuple[bool, str]]:
    """Accelerate pads an epoch whose batches are no multiple of W with its first batches."""
    from .accelerate import AccelerateBatches

    inner = getattr(obj, "batch_sampler", None)
    if inner is None or isinstance(inner, AccelerateBatches) or isinstance(obj, DistributedSampler):
        return
    if getattr(obj, "split_batches", False):  # it pads the last batch, not the epoch
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
    if Accelerate will pad the epoch with repeated batches. So is a batch sampler that is the
    direct input of a ``BatchSamplerShard`` of its own world and rank without ``split_batches``:
    it then serves each batch ``W`` times, and the shard deals it exactly
    (:func:`accelerate_wiring`).
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


# -- at iteration: a plain accelerator.prepare(DataLoader(...)) ----------------------------------
def _accelerate_types() -> tuple[Any, Any] | None:
    """Accelerate's ``(BatchSamplerShard, DataLoaderDispatcher)``; ``None`` if never imported
    (then no Accelerate wrapper can exist, and nothing is imported here)."""
    module = sys.modules.get("accelerate.data_loader")
    if module is None:
        return None
    # Typed Any: isinstance against them must not narrow our Any-typed wrappers to object.
    return module.BatchSamplerShard, module.DataLoaderDispatcher


def _holds(obj: Any, owner: Any, depth: int = 4) -> bool:
    """``owner`` is reachable from ``obj`` through ``batch_sampler`` / ``sampler`` attributes."""
    if obj is owner:
        return True
    if depth == 0:
        return False
    for attr in ("batch_sampler", "sampler", "base_dataloader"):
        child = getattr(obj, attr, None) if attr in _attrs(obj) else None
        if child is not None and child is not obj and _holds(child, owner, depth - 1):
            return True
    return False


def _attrs(obj: Any) -> Iterable[str]:
    """Instance attributes only: ``DataLoaderAdapter.__getattr__`` and our ``sampler`` property
    would otherwise build objects while we look."""
    return getattr(obj, "__dict__", {})


def exact_under(owner: Any, shard: Any) -> str | None:
    """Why Accelerate's ``BatchSamplerShard`` ``shard`` cannot deal ``owner``'s batches exactly.

    ``None`` when it can: ``owner`` is one of our batch samplers, the shard's direct input, with
    Accelerate's world and rank and no ``split_batches``. The shard keeps batch ``k * W + r`` on
    rank ``r``; ``owner`` then serves each of its local batches ``W`` times (see
    :func:`accelerate_wiring`), so that rank ``r`` gets exactly its own ``k``-th batch. A global
    plan (``num_replicas=1``) is Accelerate's to deal out: ``None`` too.
    """
    types = _accelerate_types()
    if types is None or not isinstance(shard, types[0]):
        return "it is not Accelerate's BatchSamplerShard"
    world = int(shard.num_processes)
    if owner.num_replicas == 1 or world == 1:
        return None
    if not is_batch_sampler(owner):
        return (
            f"Accelerate's BatchSamplerShard(num_processes={world}) keeps every {world}th of the "
            "batches cut from this rank's share"
        )
    if shard.batch_sampler is not owner:
        inner = type(shard.batch_sampler).__name__
        return f"Accelerate's BatchSamplerShard deals out the batches of a {inner} around it"
    if shard.split_batches:
        return (
            f"Accelerate's BatchSamplerShard(split_batches=True) cuts each of this rank's batches "
            f"into {world} pieces and keeps one"
        )
    if world != owner.num_replicas or int(shard.process_index) != owner.rank:
        return (
            f"Accelerate's BatchSamplerShard(num_processes={world}, process_index="
            f"{shard.process_index}) deals its batches over another world"
        )
    return None


def _wiring_error(owner: Any, reason: str) -> DoubleShardingError:
    if is_batch_sampler(owner):
        wiring, also, fix = "batch_sampler=sampler", "", "sampler"
    else:
        wiring, fix = "sampler=sampler, batch_size=...", "sampler, batch_size=..."
        also = " (as with batch_sampler=BatchSampler(sampler, ...))"
    return DoubleShardingError(
        f"{type(owner).__name__}(num_replicas={owner.num_replicas}, rank={owner.rank}) already "
        f"gives this rank its own share of the plan, and {reason}: each rank would silently "
        f"train on part of its share. accelerator.prepare(DataLoader(dataset, {wiring})) shards "
        f"our samplers a second time{also}; build the loader with "
        f"{PREPARE}(accelerator, dataset, {fix}) instead"
    )


def accelerate_wiring(owner: Any, items: Iterator, frame: FrameType | None) -> Iterator:
    """``owner``'s items as the Accelerate wrappers iterating it need them, or a loud error.

    Our samplers call this from ``__iter__`` (``frame``: theirs) when Accelerate is imported. It
    walks up the frames to the first Accelerate layer that iterates ``owner``:

    * :class:`~distsampler.integrations.AccelerateBatches`: ``prepare_for_accelerate``'s
      pass-through; ``items`` as they are;
    * ``BatchSamplerShard`` that can deal ``owner``'s batches exactly (:func:`exact_under`):
      each batch ``W`` times, so the shard keeps exactly this rank's batches;
    * any other ``BatchSamplerShard``, or ``dispatch_batches``' ``DataLoaderDispatcher`` (it
      iterates process 0's sampler alone), above a rank-aware sampler: raises.

    ``items`` as they are when no Accelerate layer iterates ``owner`` (torchrun, a plain loop).

    Raises:
        DoubleShardingError: the loader would shard the sampler's plan a second time; the
            message names the wiring and ``prepare_for_accelerate``.
    """
    types = _accelerate_types()
    if types is None:
        return items
    shard_type, dispatcher_type = types
    batches = sys.modules.get(__package__ + ".accelerate")
    for _ in range(_FRAMES):
        if frame is None:
            break
        this = frame.f_locals.get("self")
        frame = frame.f_back
        if this is None or this is owner:
            continue
        if batches is not None and isinstance(this, batches.AccelerateBatches):
            if this.sampler is owner:
                return items
        elif isinstance(this, shard_type) and _holds(this, owner):
            reason = exact_under(owner, this)
            if reason is not None:
                raise _wiring_error(owner, reason)
            world = int(this.num_processes)
            if world == 1 or owner.num_replicas == 1:
                return items
            return _repeated(items, world, getattr(this, "batch_size", None), owner)
        elif isinstance(this, dispatcher_type) and _holds(this, owner) and owner.num_replicas > 1:
            raise _wiring_error(
                owner,
                "Accelerate's dispatch_batches=True iterates process 0's sampler alone and "
                "splits its batches over the ranks",
            )
    return items


def repeats_for_length(owner: Any, frame: FrameType | None) -> int:
    """``W`` when ``frame`` is the ``BatchSamplerShard`` asking ``len(owner)`` that
    :func:`accelerate_wiring` serves each batch ``W`` times; else 1 (never raises)."""
    types = _accelerate_types()
    if types is None or frame is None:
        return 1
    shard = frame.f_locals.get("self")
    if not isinstance(shard, types[0]) or exact_under(owner, shard) is not None:
        return 1
    return 1 if owner.num_replicas == 1 else int(shard.num_processes)


def _repeated(items: Iterator, times: int, size: int | None, owner: Any) -> Iterator:
    """Each batch ``times`` times; the shard counts a batch of another length than ``size``
    as the epoch's short last one, so such a batch is refused rather than mis-dealt."""
    for batch in items:
        if size is not None and len(batch) != size:
            raise _wiring_error(
                owner,
                f"Accelerate's BatchSamplerShard expects batches of batch_size={size}, but got "
                f"one of {len(batch)}",
            )
        for _ in range(times):
            yield batch

"""What a sampler built with ``shards=`` adds: its options, the lanes it serves, the schedule.

One mixin for both samplers (the index and the quota sampler), so the arguments, the errors,
the state fields and the reader's interface are written once. The plan itself is
:mod:`distsampler._core.shard_plan`.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch

from ._core.checks import check_int
from ._core.shard_plan import SHARD_PLAN_VERSION, LaneLayout, ShardOptions

__all__ = ["SharedCursor", "ShardedSampler", "shard_options"]


class SharedCursor:
    """A sampler's ``(epoch, resume point)`` in shared memory, for its copies in other processes.

    A ``DataLoader`` worker holds a copy of the dataset, and so of the sampler a
    ``ShardedDataset`` follows, made when the worker started: with ``persistent_workers=True``
    that copy stays at its first epoch. The process that created the cursor (the one that
    iterates the sampler) publishes on ``set_epoch``, ``load_state_dict`` and at the start of
    every pass, before any index reaches a worker; copies in other processes read it. The
    tensor is shared through ``torch.multiprocessing``'s pickling (fork or spawn).
    """

    def __init__(self) -> None:
        self._cell = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._pid = os.getpid()

    def publish(self, epoch: int, resume: int) -> None:
        if os.getpid() == self._pid:
            self._cell.copy_(torch.tensor([epoch, resume], dtype=torch.int64))

    def read(self, epoch: int, resume: int) -> tuple[int, int]:
        """The owner's ``(epoch, resume)``: the arguments (this copy's own) in its process."""
        if os.getpid() == self._pid:
            return epoch, resume
        got = self._cell.tolist()
        return int(got[0]), int(got[1])


def shard_options(
    shards: Any,
    dataset_size: int,
    world: int,
    cache_shards: int,
    resident: int | None,
    lanes: int | None,
) -> ShardOptions:
    """Checked options for ``shards=``; ``lanes=None`` is the world size (a state keeps it)."""
    offsets = getattr(shards, "offsets", None)
    if offsets is None or not callable(getattr(shards, "fingerprint", None)):
        raise TypeError(
            f"shards should be a distsampler.shards.ShardLayout, but got {type(shards).__name__}"
        )
    if len(shards) != dataset_size:
        raise ValueError(
            f"shards holds {len(shards)} samples but the labels (or weights) describe "
            f"{dataset_size}: the layout and the labels must describe the same dataset, in the "
            "same order"
        )
    options = ShardOptions(
        world if lanes is None else check_int("lanes", lanes, 1),
        check_int("cache_shards", cache_shards, 1),
        None if resident is None else check_int("resident", resident, 0),
    )
    LaneLayout(options.lanes).check_world(world)
    return options


class ShardedSampler:
    """The reader's view of a sampler built with ``shards=`` (see ``ShardedDataset``).

    Subclasses set ``shards`` (the layout, or ``None``), ``_shard_plan`` (a plan with
    ``schedule(epoch, lane)``, ``resident_members()`` and ``options``) and ``_lanes_given``.
    """

    shards: Any = None
    _shard_plan: Any = None
    _lanes_given: bool = False
    _cursor: SharedCursor | None = None

    # -- the reader's interface ----------------------------------------------------------------
    @property
    def lanes(self) -> int | None:
        """The plan's independent readers (``None`` without ``shards=``)."""
        return None if self._shard_plan is None else self._shard_plan.options.lanes

    @property
    def cache_shards(self) -> int | None:
        """Shards a lane reads from at a time (``None`` without ``shards=``)."""
        return None if self._shard_plan is None else self._shard_plan.options.cache_shards

    def _need_shards(self, what: str) -> Any:
        if self._shard_plan is None:
            raise ValueError(f"{what} needs a sampler built with shards=ShardLayout(...)")
        return self._shard_plan

    def _share_cursor(self) -> None:
        """From now on copies of this sampler in other processes (DataLoader workers, also
        persistent ones) follow this one's epoch and resume point (``ShardedDataset`` asks)."""
        if self._cursor is None:
            self._cursor = SharedCursor()
        self._publish()  # type: ignore[attr-defined]

    def _current(self) -> tuple[int, int]:
        """``(epoch, resume point)`` of the sampler the main process iterates."""
        epoch, resume = self.epoch, self._resume  # type: ignore[attr-defined]
        cursor = self._cursor
        return (epoch, resume) if cursor is None else cursor.read(epoch, resume)

    def lanes_served(self) -> tuple[int, ...]:
        """Lanes this rank reads in the current iteration: ``l % num_replicas == rank``, or,
        after resuming mid-epoch under another world size, the lanes the rest of the epoch
        deals it (until the next ``set_epoch``)."""
        plan = self._need_shards("lanes_served()")
        start = self._current()[1] // plan.layout.block
        return plan.layout.served(self._shard.world, self._shard.rank, start)  # type: ignore[attr-defined]

    def shard_schedule(self, epoch: int | None = None) -> dict[int, np.ndarray]:
        """For each lane this rank serves, the shard ids in the order the lane opens them in
        ``epoch`` (default: the current one). A lane reads from at most ``cache_shards``
        consecutive entries at a time (entry ``j`` opens when entry ``j - cache_shards`` is
        done). Resident members are read off this schedule (:meth:`resident_indices`)."""
        plan = self._need_shards("shard_schedule()")
        ep = self._current()[0] if epoch is None else check_int("epoch", epoch, 0)
        return {lane: plan.schedule(ep, lane) for lane in self.lanes_served()}

    def resident_indices(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Sorted dataset indices kept resident: the members of classes drawn more often than
        they have members in an epoch (oversampled), within the ``resident=`` budget. A reader
        keeps them (memory or a local cache) and serves them at any time.

        ``start``/``stop``: only those in ``[start, stop)`` (a shard's range): a binary search
        per class, where the whole list costs 8 bytes a resident member."""
        plan = self._need_shards("resident_indices()")
        start = check_int("start", start, 0)
        stop = None if stop is None else check_int("stop", stop, start)
        return plan.resident_members(start, stop)

    # -- construction helpers --------------------------------------------------------------------
    def _shard_config(self) -> dict:
        plan = self._shard_plan
        if plan is None:
            return {}
        return {
            "shard_plan_version": SHARD_PLAN_VERSION,
            "shards": self.shards.fingerprint(),
            "lanes": plan.options.lanes,
            "cache_shards": plan.options.cache_shards,
            "resident": -1 if plan.options.resident is None else plan.options.resident,
        }

    def _warn_overflow(self, names: Any) -> None:
        classes, members = self._shard_plan.overflow
        if classes:
            budget = self._shard_plan.options.resident
            warnings.warn(
                f"resident={budget} holds {self._shard_plan.resident_members().size} members; "
                f"{classes} more oversampled {'class' if classes == 1 else 'classes'} "
                f"({members} members) are read with their shards, so each of their members "
                "repeats within its shard's window (a burst); raise resident= to spread them "
                "evenly",
                stacklevel=3,
            )

    def _state_lanes(self, state: Any) -> int | None:
        """The lanes a state was saved with, if this sampler should adopt them: ``lanes=`` was
        left at its default, so a resumed run finds the plan's lanes in the state."""
        if self._shard_plan is None or self._lanes_given or not isinstance(state, dict):
            return None
        config = state.get("config")
        lanes = config.get("lanes") if isinstance(config, dict) else None
        if lanes is None or lanes == self._shard_plan.options.lanes:
            return None
        lanes = check_int("state['config']['lanes']", lanes, 1)
        LaneLayout(lanes).check_world(self._shard.world)  # type: ignore[attr-defined]
        return lanes

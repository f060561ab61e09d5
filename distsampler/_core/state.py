"""Epoch, resume point and state dicts shared by both samplers.

A state is plain ints, strings and bools (it survives ``torch.load(weights_only=True)`` and
JSON): the epoch, how much of the epoch's global plan was consumed, and the configuration it
belongs to. ``consumed`` counts plan units (positions for the index sampler, micro-batches for
the quota sampler) taken by *all* ranks together, so it means the same under any world size.

The configuration is data: a flat dict of every plan-shaping field (the data's fingerprint, the
seed, sizes, policies; floats as their exact ``repr``), compared field by field on load, so a
mismatch names each differing field with both values. The world size and rank are not part of
it: a state loads under any world size.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

import numpy as np

from .checks import MAX_SIZE, check_int
from .origin import Origin, before_origin
from .sharding import Shard

#: Version of the state layout. 1: distsampler 0.1 (configuration as a formatted string).
STATE_VERSION = 2
#: Ints made into Python objects at a time: the memory of the ints a consumer dropped is reused
#: while it is still in cache (8192 at a time made ``tolist`` about 2.5 ns an int cheaper than
#: 65536 at a time, with the DataLoader's batching of the ints included).
_SLICE = 1 << 13

Config = dict[str, "int | str | bool"]


class EpochNotSetWarning(UserWarning):
    """An epoch was iterated from its start a second time without ``set_epoch``.

    Every such pass repeats the same plan (torch's ``DistributedSampler`` repeats silently).
    Call ``sampler.set_epoch(epoch)`` before each epoch; to replay an epoch on purpose, call
    ``set_epoch`` with the same epoch (it silences this warning). A pass stopped part-way and
    started again from the start counts as a second pass too; a pass that resumes a loaded
    state does not.
    """


class ResumeDiscardedWarning(UserWarning):
    """``set_epoch`` moved a freshly loaded sampler away from its state's epoch.

    The loaded resume point is dropped and the new epoch starts from its beginning: a resumed
    run replays an epoch it already trained (torchdata.nodes' ``SamplerWrapper`` does this with
    its default ``initial_epoch=0``). Call ``set_epoch`` with the state's epoch (``sampler.epoch``
    after the load) to resume. Moving from a fully consumed epoch to the next one does not warn.
    """


def config_value(value: object) -> int | str | bool:
    """A configuration field as plain, exactly comparable data (floats as their exact repr)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if value is None:
        return "None"
    return str(value)


def config_diff(saved: dict, this: dict) -> list[str]:
    """``"field: saved X, this Y"`` for every field that differs (missing shown as <absent>)."""
    out = []
    for name in sorted(set(saved) | set(this)):
        a, b = saved.get(name, "<absent>"), this.get(name, "<absent>")
        if a != b:
            out.append(f"{name}: saved {a!r}, this {b!r}")
    return out


#: Frames in these directories are the library's, not the user's (torch's loader included).
_LIBRARY_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # distsampler/
    os.path.join("torch", "utils", "data"),
    os.path.join("torchdata", "nodes"),
)


def _user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside distsampler and torch's data loader, so that
    a warning names the user's line (the loop that iterated again), not a library's."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and any(d in frame.f_code.co_filename for d in _LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


class EpochState:
    """The epoch, the resume point and the bookkeeping of the iteration in flight.

    Subclasses provide ``_config()`` (a dict of plain values that identifies the plan),
    ``_total()`` (plan units of the epoch), ``_shard`` (a :class:`Shard`) and ``drop_last``.
    """

    _shard: Shard
    drop_last: bool
    epoch: int = 0
    _resume: int = 0  # plan units consumed before this iteration (all ranks)
    _skip: int = 0  # local units to skip after _resume (mid-block, same world size only)
    _done: int = 0  # local units of the finished chunks of the iteration in flight
    _chunk: tuple | None = None  # (length, list iterator) of the chunk being served
    _items: list | None = None  # the list behind _chunk's iterator (rewritten by share updates)
    _stale: bool = False  # the chunk being served was computed before a share update
    _last_run: int | None = None  # run position of the last share update
    _expect: int | None = None  # run position where the next update is expected
    _surprise: bool = True  # the last update landed where no chunk ended
    _ahead: int | None = None  # run position after the last unit computed (None: none)
    _completed: bool = False  # the last iteration ran to its end (state: epoch fully consumed)
    _base: tuple[int, int] = (0, 0)  # (_resume, _skip) the last iteration started from
    _started: bool = False  # a pass from the epoch's start began since set_epoch / a load
    _origin: Origin | None = None  # the run before an epoch, from a compacted share history
    _loaded: bool = False  # a state was loaded and neither set_epoch nor a pass followed
    _cursor: Any = None  # publishes (epoch, _resume) to copies in other processes (a reader's)

    def _config(self) -> Config:
        raise NotImplementedError

    def _total(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's plan. Call it before every epoch (as for ``DistributedSampler``):
        without it every epoch repeats the same plan.

        Setting the epoch a loaded state belongs to keeps its resume point; any other epoch
        starts from the beginning.
        """
        epoch = check_int("epoch", epoch, 0, self._max_epoch())
        self._check_epoch(epoch)
        if self._loaded and epoch != self.epoch and not self._next_after_done(epoch):
            warnings.warn(
                f"{type(self).__name__}: set_epoch({epoch}) drops the loaded state (epoch "
                f"{self.epoch}, {self._resume} of {self._total()} consumed) before any item was "
                f"drawn, so the resumed run replays or skips data; call set_epoch({self.epoch}) "
                "to resume (with torchdata.nodes, build the SamplerWrapper with "
                "initial_epoch=sampler.epoch)",
                ResumeDiscardedWarning,
                stacklevel=_user_stacklevel(),
            )
        self._loaded = False
        if epoch != self.epoch:
            self._resume = self._skip = 0
        self.epoch = epoch
        self._done, self._chunk, self._completed = 0, None, False
        self._started = False
        self._publish()

    def _publish(self) -> None:
        """The epoch or the resume point changed, or a pass starts: tell copies of this sampler
        in other processes (a persistent DataLoader worker's copy is as old as the worker)."""
        if self._cursor is not None:
            self._cursor.publish(self.epoch, self._resume)

    def _next_after_done(self, epoch: int) -> bool:
        """``epoch`` follows the current one, which was consumed to its end."""
        return epoch == self.epoch + 1 and self._resume >= self._total()

    def _check_epoch(self, epoch: int) -> None:
        """Refuse an epoch this sampler cannot plan: one before its compacted share history's
        origin (a loaded state, or ``set_epoch`` folding old updates)."""
        if self._origin is not None and epoch < self._origin.epoch:
            raise before_origin(epoch, self._origin.epoch)

    def _max_epoch(self) -> int:
        """Largest epoch whose member streams stay inside the int64 plan arithmetic."""
        return MAX_SIZE // max(1, 2 * self._draws())

    def _draws(self) -> int:
        """Dataset indices one epoch's plan draws (the member streams advance by this much)."""
        return self._total()

    # -- layout of the current iteration --------------------------------------------------
    def _remaining(self) -> int:
        return max(0, self._total() - self._resume)

    def _local_length(self) -> int:
        return max(0, self._shard.length(self._remaining(), self.drop_last) - self._skip)

    def _local_units(self, start: int, stop: int) -> np.ndarray:
        """Plan units (global) of local indices ``[start, stop)`` of the current iteration."""
        length = self._shard.length(self._remaining(), self.drop_last)
        return self._resume + self._shard.positions(length, start + self._skip, stop + self._skip)

    @property
    def _yielded(self) -> int:
        """Local units handed out by the iteration in flight, exact between any two items.

        Items are served with ``yield from`` over a list iterator (no per-item bookkeeping);
        the iterator's length hint tells how far the consumer got.
        """
        if self._chunk is None:
            return self._done
        length, it = self._chunk
        return self._done + length - it.__length_hint__()

    def _serve(self, chunk: int, compute, first: int | None = None, per_list: int = 1) -> Iterator:
        """Serve this rank's share: ``compute(units)`` gives an array of items (one row each), or
        a list of Python lists when rows differ in length (token-budget batches).

        Chunks start at ``first`` units (default ``chunk``) and double up to ``chunk``, so the
        first item waits for a small chunk only. A chunk's array becomes Python objects
        ``_SLICE // per_list`` rows at a time (``per_list``: ints in a row): ints made in
        cache-sized slices reuse the memory of those the consumer already dropped. Items flow
        through ``itertools.chain`` (no Python frame resumed per item); the bookkeeping runs
        once per slice, and ``_yielded`` stays exact through the list iterator's length hint.
        """
        rows = max(1, _SLICE // per_list)
        return itertools.chain.from_iterable(self._slices(chunk, compute, first or chunk, rows))

    def _slices(self, chunk: int, compute, first: int, rows: int) -> Iterator[Iterator]:
        n, size = self._local_length(), first
        self._done, self._chunk, self._completed, self._ahead = 0, None, False, None
        self._base = (self._resume, self._skip)
        self._loaded = False
        self._publish()
        if self._base == (0, 0):
            if self._started:
                warnings.warn(
                    f"{type(self).__name__}: epoch {self.epoch} is iterated from its start again "
                    "without set_epoch, so it repeats the same plan; call "
                    "sampler.set_epoch(epoch) before every epoch (set_epoch with the same epoch "
                    "replays it on purpose)",
                    EpochNotSetWarning,
                    stacklevel=_user_stacklevel(),
                )
            self._started = True
        lo = 0
        while lo < n:
            hi = self._chunk_end(lo, min(n, lo + size))
            units = self._local_units(lo, hi)
            arr = compute(units)
            self._stale = False
            self._ahead = self.epoch * self._total() + int(units[-1]) + 1
            for at in range(0, len(arr), rows):
                part = arr[at : at + rows]  # an array, or a list of ragged rows (lists)
                items = part if isinstance(part, list) else part.tolist()
                it = iter(items)
                self._chunk, self._items = (len(items), it), items  # _items: for share updates
                yield it
                self._done += len(items)  # a share update may have cut the list short
                self._chunk = None
                if self._stale:  # the plan changed: what was computed ahead is dropped
                    break
            else:
                lo, size = hi, min(chunk, 2 * size)
                continue
            # Recompute from the first item not handed out; in small chunks again after an
            # update nobody expected there (little is wasted if another follows soon).
            lo, size = self._done, first if self._surprise else size
        self._finish()

    def _drop_ahead(self, run: int) -> None:
        """The plan changes from run position ``run`` (``epoch * _total() + unit``) on: drop
        what was computed for it but not handed out.

        The list being served is cut before its first item at or past ``run`` (the items
        before it are the same under the new plan), so the consumer's iterator ends there and
        the serving loop recomputes from that item on: O(1) here. The next update is expected
        as far past this one as this one was past the last, and chunks end there, so updates
        every ``k`` steps waste nothing; after an update that came elsewhere, chunks start
        small again (little is wasted if another follows soon). Items handed out stay as they
        were.

        Trap: a loader that iterates the sampler in a worker process holds its own copy of
        it, which never sees the update.
        """
        self._surprise = run != self._expect  # the chunks did not end where it landed
        if self._last_run is not None and run > self._last_run:
            self._expect = run + (run - self._last_run)
        self._last_run = run
        if self._ahead is not None and run >= self._ahead:
            return  # nothing computed reaches it (an update placed ahead with at=)
        self._stale = True
        if self._chunk is None or self._items is None:
            return
        length, it = self._chunk
        handed = length - it.__length_hint__()
        first = self._done  # local index of the list's first item
        units = self._local_units(first + handed, first + length)
        keep = handed + int(np.searchsorted(units, run - self.epoch * self._total()))
        del self._items[keep:]
        self._chunk = (keep, it)

    def _chunk_end(self, lo: int, hi: int) -> int:
        """``hi``, or the local index where the next update is expected if it falls inside."""
        if self._expect is None:
            return hi
        units = self._expect - self.epoch * self._total() - self._resume
        cap = -(-units // self._shard.world) - self._skip  # about this rank's share before it
        return cap if lo < cap < hi else hi

    def _finish(self) -> None:
        """An iteration ran to its end: the next one replays the epoch from its start."""
        self._resume = self._skip = self._done = 0
        self._completed, self._ahead = True, None

    def __len__(self) -> int:
        """Local items of the next iteration (equal on every rank)."""
        return self._local_length()

    def __repr__(self) -> str:
        fields = {k: v for k, v in self._config().items() if k != "plan_version"}
        fields.update(num_replicas=self._shard.world, rank=self._shard.rank)
        if self._shard.block_size != 1:
            fields["block_size"] = self._shard.block_size
        body = ", ".join(
            f"{k}={v}" if not isinstance(v, str) else f"{k}={v!r}" for k, v in fields.items()
        )
        return f"{type(self).__name__}({body})"

    # -- state -----------------------------------------------------------------------------
    def state_dict(self, consumed: int | None = None) -> dict:
        """The resume point: plain ints and strings (``torch.save``/JSON safe).

        Args:
            consumed: local items (indices, or batches for a batch sampler) of the current
                iteration that the training loop has really used. Default: the items this
                sampler handed out, which runs ahead of the loop when a ``DataLoader`` with
                ``num_workers > 0`` prefetches; pass the loop's own count then.

        Call it at a global-step boundary (every rank consumed the same number of items); such
        a state resumes under any world size.
        """
        if consumed is None and self._completed:
            return self._state(self._total(), 0)
        if consumed is None:
            consumed = self._yielded
        # A prefetching loader may have exhausted the iterator while the loop is still short
        # of the end: count from where that pass started, not from the reset that followed.
        resume, skip0 = self._base if self._completed else (self._resume, self._skip)
        local = skip0 + check_int("consumed", consumed, 0)
        length = self._shard.length(max(0, self._total() - resume), self.drop_last)
        covered = self._shard.covered(length, local)
        skip = 0
        if covered is None:  # mid-block: only this world size can resume it
            skip = local % self._shard.block_size
            covered = self._shard.covered(length, local - skip)
            assert covered is not None  # a block boundary is always covered
        return self._state(min(self._total(), resume + covered), skip)

    def _state(self, consumed: int, skip: int) -> dict:
        return {
            "version": STATE_VERSION,
            "sampler": type(self).__name__,
            "config": dict(self._config()),
            "epoch": int(self.epoch),
            "consumed": int(consumed),
            "skip": int(skip),
            "world_size": int(self._shard.world),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`: the next iteration continues the same global stream.

        Raises ``ValueError`` if the state belongs to another sampler type, seed, dataset or
        plan-shaping argument. The world size may differ (the rest of the epoch is dealt
        round-robin from rank 0), unless the state was saved mid-block.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state should be a dict, but got {type(state).__name__}")
        missing = {"version", "sampler", "config", "epoch", "consumed"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}; not a distsampler state")
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"state has version {state['version']!r}, written by another distsampler "
                f"release; this one reads version {STATE_VERSION} (plans changed between them, "
                "so the old resume point would continue a different stream)"
            )
        if state["sampler"] != type(self).__name__:
            raise ValueError(f"state belongs to {state['sampler']}, not to {type(self).__name__}")
        if not isinstance(state["config"], dict):
            raise TypeError(
                f"state['config'] should be a dict, got {type(state['config']).__name__}"
            )
        diff = config_diff(state["config"], self._config())
        if diff:
            raise ValueError(
                "state was saved under another configuration; these fields differ:\n  "
                + "\n  ".join(diff)
            )
        skip = check_int("state['skip']", state.get("skip", 0), 0)
        if skip and int(state.get("world_size", -1)) != self._shard.world:
            raise ValueError(
                f"state was saved mid-block under world_size={state.get('world_size')}; "
                f"it can only resume under the same world size, not {self._shard.world}. "
                "Save at a block boundary (block_size=batch size) to change the world size."
            )
        self.epoch = check_int("state['epoch']", state["epoch"], 0, self._max_epoch())
        self._resume = check_int("state['consumed']", state["consumed"], 0, self._total())
        self._skip = skip
        self._done, self._chunk, self._completed = 0, None, False
        self._started, self._loaded = False, True
        self._publish()

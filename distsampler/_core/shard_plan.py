"""Shard-local plans: the stratified plan read where the data lives.

Over sharded storage (tar shards, Parquet row groups) one random read costs a whole shard, so a
plan must read each shard about once per epoch. This module keeps every promise of the
stratified plan (exact class counts per epoch, members in cycles, one global stream for every
world size, resume by an integer) and adds locality:

* **Lanes.** The plan is defined for ``L`` independent readers. Global position ``q`` belongs to
  lane ``(q // B) % L`` (``B``: the block size, one local batch), at lane position
  ``(q // (B L)) B + q % B``. A rank of ``W`` (``W`` divides ``L``) reads blocks ``r, r + W, ...``
  and so exactly the lanes ``l % W == r``; the stream itself never depends on ``W``.
* **Resident and local classes.** A class drawn more often than it has members in an epoch
  (oversampled) cannot be read shard-locally without repeating members in a burst while their
  shard is open, so its members are *resident* (kept by the reader) and drawn from one
  stratified stream of the resident classes, spread evenly over every lane. Every other class is
  *local*: its members are read when their shard is.
* **Systematic selection.** A local class ``c`` of ``s`` members drawn ``n <= s`` times an epoch
  takes member ``t`` (its rank in the class, in dataset order) ``F(t + 1) - F(t)`` times, with
  ``F(t) = floor((t n + U_e) / s)`` and ``U_e = (U + e n) mod s`` (``U`` keyed per class): exactly
  ``n`` draws an epoch, counted per shard in closed form from the class ranks at the shard
  offsets, and the pattern moves by one member an epoch, so every member is drawn within
  ``ceil(s / n)`` epochs.
* **Lane cuts.** Each epoch the shards are put in a keyed random order; the local draws, in that
  order, are cut into ``L`` runs of exactly the lengths the lanes need (a lane's positions less
  its share of the resident draws). A shard is read by one lane, except the at most ``L - 1``
  shards a cut falls into.
* **Windows.** Inside a lane, the draw of the lane's ``o``-th shard gets the key
  ``o + k u`` (``u`` a keyed uniform, ``k = cache_shards``) and the lane reads its draws in key
  order: at any time only ``k`` consecutive shards are open (shard ``o`` opens when shard
  ``o - k`` closes), and consecutive positions mix the draws of ``k`` shards. Resident draws sit
  evenly between them (a Bresenham line); lane ``l`` takes positions ``l, l + L, ...`` of the
  resident stream, so the resident classes follow one stratified order across the lanes.

Trade-off: with class-mixed shards every window holds every class in proportion; with
class-pure shards (data written class by class) a window holds at most ``k`` local classes, so
per-batch balance of the local classes grows with ``cache_shards`` (resident classes stay even).

Streams (the third part of every key): ``ORDER`` the shard order of an epoch, ``PHASE`` each
class's systematic phase, ``JITTER`` the window keys, ``RESIDENT`` the resident class order.
Changing what a function here returns for a key changes users' resumed runs: bump
:data:`SHARD_PLAN_VERSION`; ``tests/test_shard_plan.py`` pins the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .checks import check_int
from .index_store import GroupStore as GroupIndex
from .keyed import make_key, permute, uniform
from .plan import CYCLE, STRATUM, cycled_members
from .strata import stratified_ranks

__all__ = [
    "SHARD_PLAN_VERSION",
    "LaneLayout",
    "ShardOptions",
    "ShardedStratified",
    "class_ranks",
]

SHARD_PLAN_VERSION = 1
ORDER, PHASE, JITTER, RESIDENT = 16, 17, 18, 19  # streams of their own (plan.py uses 0-5)
_MAX_PRODUCT = 1 << 62  # t * n + U must fit an int64


@dataclass(frozen=True)
class ShardOptions:
    """How a plan reads shards: ``lanes`` readers, each with ``cache_shards`` open at a time,
    and a budget of ``resident`` members (``None``: every oversampled member)."""

    lanes: int
    cache_shards: int = 4
    resident: int | None = None

    def __post_init__(self) -> None:
        check_int("lanes", self.lanes, 1)
        check_int("cache_shards", self.cache_shards, 1)
        if self.resident is not None:
            check_int("resident", self.resident, 0)


@dataclass(frozen=True)
class LaneLayout:
    """Global positions <-> (lane, lane position): blocks of ``block`` dealt round-robin."""

    lanes: int
    block: int = 1

    def split(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lane, lane position)`` of each global position."""
        blk, off = np.divmod(q, self.block)
        rnd, lane = np.divmod(blk, self.lanes)
        return lane, rnd * self.block + off

    def check_world(self, world: int) -> None:
        """A world size must divide the lanes, so each rank serves whole lanes."""
        if self.lanes % world:
            ok = [w for w in range(1, self.lanes + 1) if self.lanes % w == 0]
            raise ValueError(
                f"num_replicas={world} does not divide lanes={self.lanes}: a rank must serve "
                f"whole lanes; run on {ok} ranks, or start a new run with lanes= a multiple of "
                f"{world} (a state keeps its lanes)"
            )

    def served(self, world: int, rank: int, start_block: int = 0) -> tuple[int, ...]:
        """Lanes a rank reads when its iteration starts at global block ``start_block``."""
        first = (start_block + rank) % world
        return tuple(range(first, self.lanes, world))


def class_ranks(index: GroupIndex, classes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``T[s, j]``: members of class ``classes[j]`` with a dataset index below ``offsets[s]``.

    ``(num_shards + 1, len(classes))``, int32 below ``2**31`` samples: the class ranks at the
    shard boundaries, so the members of class ``c`` in shard ``s`` are its ranks
    ``[T[s, c], T[s + 1, c])``. Members are stored sorted, so this is a binary search per class,
    never a pass over the dataset.
    """
    dtype = np.int32 if len(offsets) and int(offsets[-1]) < (1 << 31) else np.int64
    out = np.empty((len(offsets), len(classes)), dtype=dtype)
    for j, c in enumerate(classes):
        c = int(c)
        if index.members is None:  # a range: members offsets[c] + [0, size)
            lo, hi = int(index.offsets[c]), int(index.offsets[c + 1])
            out[:, j] = np.clip(offsets, lo, hi) - lo
        else:
            out[:, j] = np.searchsorted(index.group(c), offsets, side="left")
    return out


@dataclass
class _Epoch:
    """One epoch's lane cuts: shards in draw order, their draw counts, each lane's run."""

    order: np.ndarray  # shard ids with local draws, in the epoch's keyed order
    cum: np.ndarray  # cumulative local draws before each entry of ``order`` (len + 1)
    cuts: np.ndarray  # local draw ordinal where each lane starts (lanes + 1)
    resident: np.ndarray  # resident draws of each lane
    phase: np.ndarray  # U_e of each local class


@dataclass
class ShardedStratified:
    """The stratified plan over shards (see the module docstring): ``draw`` maps sorted global
    positions of an epoch to dataset indices; ``schedule`` gives a lane's shards in the order it
    opens them. ``counts`` are the class draws of an epoch of ``num_samples`` positions (a
    multiple of ``lanes * block``); classes with more draws than members are resident, as many
    as ``options.resident`` allows (the most oversampled first)."""

    index: GroupIndex
    offsets: np.ndarray
    counts: np.ndarray
    num_samples: int
    options: ShardOptions
    block: int
    seed: int
    replacement: bool = True
    resident_classes: np.ndarray = field(init=False)
    local_classes: np.ndarray = field(init=False)
    overflow: tuple[int, int] = field(init=False)  # (classes, members) over the budget
    _epochs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        lanes = self.options.lanes
        if self.num_samples % (lanes * self.block):
            raise ValueError(
                f"num_samples={self.num_samples} should be a multiple of lanes x block "
                f"({lanes} x {self.block})"
            )
        self.layout = LaneLayout(lanes, self.block)
        sizes = self.index.sizes
        counts = np.asarray(self.counts, dtype=np.int64)
        self.counts = counts
        over = np.flatnonzero((counts > sizes) & (counts > 0))
        # The most oversampled classes first (draws per member), ties by class id.
        over = over[np.lexsort((over, -(counts[over] / sizes[over])))]
        budget = self.options.resident
        fits = np.cumsum(sizes[over]) <= (np.inf if budget is None else budget)
        fits = np.logical_and.accumulate(fits) if fits.size else fits
        self.resident_classes = np.sort(over[fits])
        spill = over[~fits]
        self.overflow = (int(spill.size), int(sizes[spill].sum()))
        local = np.flatnonzero(counts > 0)
        self.local_classes = local[~np.isin(local, self.resident_classes)]
        lc = self.local_classes
        if lc.size and int((sizes[lc] * (counts[lc] + 1)).max()) >= _MAX_PRODUCT:
            raise ValueError("a class is too large for the shard plan's integer arithmetic")
        self._ranks = class_ranks(self.index, lc, np.asarray(self.offsets, dtype=np.int64))
        # U of each local class: uniform in [0, size), keyed by the class id.
        u = uniform(make_key(self.seed, PHASE), lc.astype(np.int64))
        self._phase0 = np.minimum((u * sizes[lc]).astype(np.int64), sizes[lc] - 1)
        self._res_counts = counts[self.resident_classes]
        self._res_total = int(self._res_counts.sum())

    # -- one epoch's cuts -------------------------------------------------------------------
    def _select(self, t: np.ndarray, j: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """``F(t)`` of local class slot ``j``: systematic draws of ranks below ``t``."""
        c = self.local_classes[j]
        return (t * self.counts[c] + phase[j]) // self.index.sizes[c]

    def epoch(self, epoch: int) -> _Epoch:
        got = self._epochs.get(epoch)
        if got is not None:
            return got
        lc = self.local_classes
        n, s = self.counts[lc], self.index.sizes[lc]
        phase = (self._phase0 + (epoch * n) % np.maximum(s, 1)) % np.maximum(s, 1)
        num_shards = len(self._ranks) - 1
        draws = np.zeros(num_shards, dtype=np.int64)  # local draws of each shard
        for j in range(len(lc)):  # a column at a time: O(shards) temporaries
            F = self._select(self._ranks[:, j].astype(np.int64), np.int64(j), phase)
            draws += np.diff(F)
        perm = permute(np.arange(num_shards), num_shards, make_key(self.seed, epoch, ORDER))
        order = perm[draws[perm] > 0]
        cum = np.concatenate([[0], np.cumsum(draws[order])])
        lanes = self.options.lanes
        per_lane = self.num_samples // lanes
        # Resident stream position i L + l is lane l's i-th resident draw: every lane reads a
        # slice of the whole stratified stream, and the stream's order is the global order.
        r, extra = divmod(self._res_total, lanes)
        res = np.full(lanes, r, np.int64)
        res[:extra] += 1
        cuts = np.concatenate([[0], np.cumsum(per_lane - res)])
        assert cuts[-1] == cum[-1], "local draws and lane lengths disagree"
        got = _Epoch(order, cum, cuts, res, phase)
        if len(self._epochs) > 4:
            self._epochs.clear()
        self._epochs[epoch] = got
        return got

    def _lane_span(self, ep: _Epoch, lane: int) -> tuple[int, int]:
        """Entries ``[lo, hi)`` of ``ep.order`` that lane ``lane`` reads."""
        a, b = int(ep.cuts[lane]), int(ep.cuts[lane + 1])
        if a == b:
            return 0, 0
        lo = int(np.searchsorted(ep.cum, a, side="right")) - 1
        hi = int(np.searchsorted(ep.cum, b, side="left"))
        return lo, hi

    def schedule(self, epoch: int, lane: int) -> np.ndarray:
        """Shard ids of ``lane`` in the order it opens them this epoch."""
        ep = self.epoch(epoch)
        lo, hi = self._lane_span(ep, lane)
        return ep.order[lo:hi].copy()

    def resident_members(self) -> np.ndarray:
        """Sorted dataset indices of the resident classes' members."""
        if not self.resident_classes.size:
            return np.zeros(0, np.int64)
        parts = [self.index.group(int(c)) for c in self.resident_classes]
        return np.unique(np.concatenate(parts).astype(np.int64))

    # -- draws of shards ----------------------------------------------------------------------
    def shard_draws(self, shards: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local draws of ``shards`` (ids): ``(entry, index)`` sorted by entry, then dataset
        index (a member drawn twice appears twice in a row)."""
        T = self._ranks
        lo, hi = T[shards].astype(np.int64), T[shards + 1].astype(np.int64)  # (shards, classes)
        e, j = np.nonzero(hi > lo)
        lo, hi = lo[e, j], hi[e, j]
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        start = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        t = start + np.arange(total)
        e, j = np.repeat(e, lengths), np.repeat(j, lengths)
        d = self._select(t + 1, j, phase) - self._select(t, j, phase)
        keep = np.flatnonzero(d > 0)
        d = d[keep]
        e = np.repeat(e[keep], d)
        idx = self.index.member(self.local_classes[np.repeat(j[keep], d)], np.repeat(t[keep], d))
        srt = np.lexsort((idx, e))
        return e[srt], idx[srt]

    def _lane_local(self, epoch: int, lane: int, p0: int, p1: int) -> np.ndarray:
        """Dataset indices at local ordinals ``[p0, p1)`` of ``lane`` (window key order)."""
        ep = self.epoch(epoch)
        k = self.options.cache_shards
        lo, hi = self._lane_span(ep, lane)
        a_lane = int(ep.cuts[lane])
        # Cumulative draws of the lane before its o-th shard (the first and last are partial).
        cum_l = np.clip(ep.cum[lo : hi + 1] - a_lane, 0, int(ep.cuts[lane + 1]) - a_lane)
        n_l = hi - lo
        y = int(np.searchsorted(cum_l, p0, side="right")) - 1  # cum_l[y] <= p0
        z = int(np.searchsorted(cum_l, p1, side="left")) + k - 1  # cum_l[z - k + 1] >= p1
        first, last = max(0, y - k + 1), min(n_l, z)
        e, idx = self.shard_draws(ep.order[lo + first : lo + last], ep.phase)
        # Each generated shard's draws, cut to the lane's part of it.
        entry_start = np.searchsorted(e, np.arange(last - first + 1))
        pos_in_shard = np.arange(len(e)) - entry_start[e]
        glob = ep.cum[lo + first + e] + pos_in_shard  # draw ordinal in the epoch's order
        mine = (glob >= a_lane) & (glob < int(ep.cuts[lane + 1]))
        e, idx, glob = e[mine], idx[mine], glob[mine]
        copy = _copy_numbers(glob, idx)
        u = uniform(make_key(self.seed, epoch, JITTER), idx + copy * len(self.index))
        key = (e + first) + k * u
        before = int(cum_l[first]) + int(np.count_nonzero(key < y))
        sel = np.flatnonzero(key >= y)
        sel = sel[np.argsort(key[sel], kind="stable")]
        out = idx[sel[p0 - before : p1 - before]]
        assert len(out) == p1 - p0, "lane window arithmetic"
        return out

    # -- the plan -----------------------------------------------------------------------------
    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        assert seed == self.seed, "a shard plan is built for one seed"
        # Past the epoch (equal lengths after a resume under another world size leave at most
        # W x B - 1 such positions): the epoch's first positions again, as DistributedSampler pads.
        positions = np.asarray(positions, dtype=np.int64) % self.num_samples
        out = np.empty(len(positions), dtype=np.int64)
        ep = self.epoch(epoch)
        lane, j = self.layout.split(positions)
        m = self.num_samples // self.options.lanes
        res = ep.resident[lane]
        before = (j * res) // m  # resident positions of the lane before j (Bresenham)
        is_res = ((j + 1) * res) // m > before
        local = ~is_res
        for ln in np.unique(lane[local]):
            sel = np.flatnonzero(local & (lane == ln))
            ordinal = j[sel] - before[sel]
            p0, p1 = int(ordinal.min()), int(ordinal.max()) + 1
            got = self._lane_local(epoch, int(ln), p0, p1)
            out[sel] = got[ordinal - p0]
        if is_res.any():
            sel = np.flatnonzero(is_res)
            rpos = before[sel] * self.options.lanes + lane[sel]
            out[sel] = self._resident(epoch, rpos)
        return out

    def _resident(self, epoch: int, rpos: np.ndarray) -> np.ndarray:
        """Members at resident stream positions ``rpos``: a stratified order of the resident
        classes, members in cycles that continue across epochs."""
        order = np.argsort(rpos, kind="stable")
        counts = self._res_counts
        cls_ids = self.resident_classes
        sizes = self.index.sizes[cls_ids]
        base = epoch * counts
        key = make_key(self.seed, epoch, RESIDENT)
        slot, k = stratified_ranks(rpos[order], counts, sizes, base, key, STRATUM)
        c = cls_ids[slot]
        members = cycled_members(self.index, c, base[slot] + k, make_key(self.seed, CYCLE))
        out = np.empty(len(rpos), dtype=np.int64)
        out[order] = members
        return out


def _copy_numbers(glob: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """0 for a member's first draw in a shard, 1 for its second, ... (draws sorted by ordinal,
    a member's draws adjacent)."""
    if not len(idx):
        return np.zeros(0, np.int64)
    new = np.ones(len(idx), dtype=bool)
    new[1:] = (idx[1:] != idx[:-1]) | (glob[1:] != glob[:-1] + 1)
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(idx)), 0))
    return np.arange(len(idx)) - run_start

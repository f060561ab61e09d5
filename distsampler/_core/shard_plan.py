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
from .keyed import derive, make_key, permute, uniform
from .plan import CYCLE, QUOTA, STRATUM, cycled_members, largest_remainder
from .strata import stratified_ranks

__all__ = [
    "SHARD_PLAN_VERSION",
    "LaneLayout",
    "ShardOptions",
    "LocalDraws",
    "ShardedQuota",
    "ShardedStratified",
    "choose_resident",
    "class_ranks",
    "merge_schedules",
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


def choose_resident(
    counts: np.ndarray, sizes: np.ndarray, budget: int | None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Classes to keep resident: those drawn more often than they have members, the most
    oversampled first (ties by class id) while their members fit ``budget``; and the
    ``(classes, members)`` left over the budget."""
    over = np.flatnonzero((counts > sizes) & (counts > 0))
    over = over[np.lexsort((over, -(counts[over] / sizes[over])))]
    fits = np.cumsum(sizes[over]) <= (np.inf if budget is None else budget)
    fits = np.logical_and.accumulate(fits) if fits.size else fits
    spill = over[~fits]
    return np.sort(over[fits]), (int(spill.size), int(sizes[spill].sum()))


@dataclass
class _Cuts:
    """One epoch's cuts of a :class:`LocalDraws`: shards in draw order and each lane's run."""

    order: np.ndarray  # shard ids with draws, in the epoch's keyed order
    cum: np.ndarray  # cumulative draws before each entry of ``order`` (len + 1)
    cuts: np.ndarray  # draw ordinal where each lane starts (lanes + 1)
    phase: np.ndarray  # U_e of each class


@dataclass
class LocalDraws:
    """Members of ``classes`` read where they live (see the module docstring): class ``j`` is
    drawn ``counts[j]`` times an epoch by systematic selection, the draws in the epoch's shard
    order are cut into runs of ``lane_counts[l]`` for lane ``l``, and a lane reads its run in
    window-key order. ``(seed, epoch)`` and these arguments determine everything."""

    index: GroupIndex
    offsets: np.ndarray
    classes: np.ndarray
    counts: np.ndarray
    lane_counts: np.ndarray
    cache_shards: int
    seed: int
    _epochs: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        c = self.classes = np.asarray(self.classes, dtype=np.int64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.lane_counts = np.asarray(self.lane_counts, dtype=np.int64)
        if int(self.lane_counts.sum()) != int(self.counts.sum()):
            raise ValueError("lane counts and class counts disagree")
        sizes = self._sizes = self.index.sizes[c]
        if c.size and int((sizes * (self.counts + 1)).max()) >= _MAX_PRODUCT:
            raise ValueError("a class is too large for the shard plan's integer arithmetic")
        self._ranks = class_ranks(self.index, c, np.asarray(self.offsets, dtype=np.int64))
        # U of each class: uniform in [0, size), keyed by the class id.
        u = uniform(make_key(self.seed, PHASE), c)
        self._phase0 = np.minimum((u * sizes).astype(np.int64), np.maximum(sizes - 1, 0))

    def _select(self, t: np.ndarray, j: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """``F(t)`` of class slot ``j``: systematic draws of its ranks below ``t``."""
        return (t * self.counts[j] + phase[j]) // self._sizes[j]

    def cuts(self, epoch: int) -> _Cuts:
        got = self._epochs.get(epoch)
        if got is not None:
            return got
        n, s = self.counts, np.maximum(self._sizes, 1)
        phase = (self._phase0 + (epoch * n) % s) % s
        num_shards = len(self._ranks) - 1
        draws = np.zeros(num_shards, dtype=np.int64)  # draws of each shard
        for j in range(len(self.classes)):  # a column at a time: O(shards) temporaries
            F = self._select(self._ranks[:, j].astype(np.int64), np.int64(j), phase)
            draws += np.diff(F)
        perm = permute(np.arange(num_shards), num_shards, make_key(self.seed, epoch, ORDER))
        order = perm[draws[perm] > 0]
        cum = np.concatenate([[0], np.cumsum(draws[order])])
        cuts = np.concatenate([[0], np.cumsum(self.lane_counts)])
        got = _Cuts(order, cum, cuts, phase)
        if len(self._epochs) > 4:
            self._epochs.clear()
        self._epochs[epoch] = got
        return got

    def span(self, ep: _Cuts, lane: int) -> tuple[int, int]:
        """Entries ``[lo, hi)`` of ``ep.order`` that lane ``lane`` reads."""
        a, b = int(ep.cuts[lane]), int(ep.cuts[lane + 1])
        if a == b:
            return 0, 0
        lo = int(np.searchsorted(ep.cum, a, side="right")) - 1
        hi = int(np.searchsorted(ep.cum, b, side="left"))
        return lo, hi

    def schedule(self, epoch: int, lane: int) -> tuple[np.ndarray, np.ndarray]:
        """Shard ids of ``lane`` in the order it opens them, and the fraction of the lane's
        run read when each opens."""
        ep = self.cuts(epoch)
        lo, hi = self.span(ep, lane)
        a, total = int(ep.cuts[lane]), int(self.lane_counts[lane])
        k = self.cache_shards
        # Shard o opens when the lane reaches the draws of shard o - k + 1 (window keys).
        opens = np.clip(ep.cum[np.maximum(np.arange(lo, hi) - k + 1, lo)] - a, 0, None)
        return ep.order[lo:hi].copy(), opens / max(total, 1)

    def shard_draws(self, shards: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draws of ``shards`` (ids): ``(entry, index)`` sorted by entry, then dataset index
        (a member drawn twice appears twice in a row)."""
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
        idx = self.index.member(self.classes[np.repeat(j[keep], d)], np.repeat(t[keep], d))
        srt = np.lexsort((idx, e))
        return e[srt], idx[srt]

    def read(self, epoch: int, lane: int, p0: int, p1: int) -> np.ndarray:
        """Dataset indices at ordinals ``[p0, p1)`` of ``lane``'s run (window key order)."""
        ep = self.cuts(epoch)
        k = self.cache_shards
        lo, hi = self.span(ep, lane)
        a_lane, b_lane = int(ep.cuts[lane]), int(ep.cuts[lane + 1])
        # Cumulative draws of the lane before its o-th shard (the first and last are partial).
        cum_l = np.clip(ep.cum[lo : hi + 1] - a_lane, 0, b_lane - a_lane)
        n_l = hi - lo
        y = int(np.searchsorted(cum_l, p0, side="right")) - 1  # cum_l[y] <= p0
        z = int(np.searchsorted(cum_l, p1, side="left")) + k - 1  # cum_l[z - k + 1] >= p1
        first, last = max(0, y - k + 1), min(n_l, z)
        e, idx = self.shard_draws(ep.order[lo + first : lo + last], ep.phase)
        # Each generated shard's draws, cut to the lane's part of it.
        entry_start = np.searchsorted(e, np.arange(last - first + 1))
        glob = ep.cum[lo + first + e] + (np.arange(len(e)) - entry_start[e])
        mine = (glob >= a_lane) & (glob < b_lane)
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


def merge_schedules(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One lane's shards over several draw streams, by the fraction of the lane read when each
    opens (a shard in two streams: its first opening)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, np.int64)
    shards = np.concatenate([p[0] for p in parts])
    when = np.concatenate([p[1] for p in parts])
    order = np.argsort(when, kind="stable")
    _, first = np.unique(shards[order], return_index=True)
    return shards[order][np.sort(first)]


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

    def __post_init__(self) -> None:
        lanes = self.options.lanes
        if self.num_samples % (lanes * self.block):
            raise ValueError(
                f"num_samples={self.num_samples} should be a multiple of lanes x block "
                f"({lanes} x {self.block})"
            )
        self.layout = LaneLayout(lanes, self.block)
        counts = self.counts = np.asarray(self.counts, dtype=np.int64)
        self.resident_classes, self.overflow = choose_resident(
            counts, self.index.sizes, self.options.resident
        )
        drawn = np.flatnonzero(counts > 0)
        self.local_classes = drawn[~np.isin(drawn, self.resident_classes)]
        self._res_counts = counts[self.resident_classes]
        # Resident stream position i L + l is lane l's i-th resident draw: every lane reads a
        # slice of the whole stratified stream, and the stream's order is the global order.
        r, extra = divmod(int(self._res_counts.sum()), lanes)
        self._resident = np.full(lanes, r, np.int64)
        self._resident[:extra] += 1
        self.local = LocalDraws(
            self.index,
            self.offsets,
            self.local_classes,
            counts[self.local_classes],
            self.num_samples // lanes - self._resident,
            self.options.cache_shards,
            self.seed,
        )

    def schedule(self, epoch: int, lane: int) -> np.ndarray:
        """Shard ids of ``lane`` in the order it opens them this epoch."""
        return self.local.schedule(epoch, lane)[0]

    def resident_members(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Sorted dataset indices in ``[lo, hi)`` of the resident classes' members."""
        return _members_of(self.index, self.resident_classes, lo, hi)

    # -- the plan -----------------------------------------------------------------------------
    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        assert seed == self.seed, "a shard plan is built for one seed"
        # Past the epoch (equal lengths after a resume under another world size leave at most
        # W x B - 1 such positions): the epoch's first positions again, as DistributedSampler pads.
        positions = np.asarray(positions, dtype=np.int64) % self.num_samples
        out = np.empty(len(positions), dtype=np.int64)
        lane, j = self.layout.split(positions)
        m = self.num_samples // self.options.lanes
        res = self._resident[lane]
        before = (j * res) // m  # resident positions of the lane before j (Bresenham)
        is_res = ((j + 1) * res) // m > before
        local = ~is_res
        for ln in np.unique(lane[local]):
            sel = np.flatnonzero(local & (lane == ln))
            ordinal = j[sel] - before[sel]
            p0, p1 = int(ordinal.min()), int(ordinal.max()) + 1
            out[sel] = self.local.read(epoch, int(ln), p0, p1)[ordinal - p0]
        if is_res.any():
            sel = np.flatnonzero(is_res)
            rpos = before[sel] * self.options.lanes + lane[sel]
            out[sel] = self._resident_draws(epoch, rpos)
        return out

    def _resident_draws(self, epoch: int, rpos: np.ndarray) -> np.ndarray:
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


@dataclass
class ShardedQuota:
    """Quota batches over shards: global micro-batch ``m`` belongs to lane ``m % L`` and is its
    ``m // L``-th batch. Every batch holds ``quotas[g]`` members of each named group ``g`` and
    ``batch_size - sum(quotas)`` members of the groups not named (``free``), read together.

    A named group drawn more often than it has members in an epoch is resident: its members
    cycle (``cycled_members``, continuing across epochs) at stream positions
    ``epoch * M q + m q + slot``. Every other named group, and the free groups together, are
    :class:`LocalDraws` streams cut so that each lane holds exactly ``q`` draws per batch; batch
    ``b`` of a lane takes ordinals ``[b q, (b + 1) q)`` of each stream. So named quotas are exact
    in every batch; the free groups' counts are exact per epoch, and their mix within a batch
    follows the shards a lane has open."""

    index: GroupIndex
    offsets: np.ndarray
    batch_size: int
    quotas: np.ndarray  # int count per batch of each named group, 0 for the others
    free: np.ndarray  # bool: groups that share the remaining slots
    epoch_batches: int
    options: ShardOptions
    seed: int
    shuffle: bool = True

    def __post_init__(self) -> None:
        lanes, M = self.options.lanes, self.epoch_batches
        if M % lanes:
            raise ValueError(f"epoch_batches={M} should be a multiple of lanes={lanes}")
        self.layout = LaneLayout(lanes, 1)
        sizes = self.index.sizes
        q = self.quotas = np.asarray(self.quotas, dtype=np.int64)
        free = self.free = np.asarray(self.free, dtype=bool)
        self.free_slots = self.batch_size - int(q[~free].sum())
        counts = np.where(free, 0, q * M)
        if free.any() and self.free_slots:
            counts[free] = largest_remainder(M * self.free_slots, sizes[free].astype(np.float64))
        self.counts = counts
        named = np.flatnonzero(~free & (q > 0))
        over = named[counts[named] > sizes[named]]
        need = int(sizes[over].sum())
        budget = self.options.resident
        if budget is not None and need > budget:
            names = [self.index.names[int(g)] for g in over]
            raise ValueError(
                f"resident={budget} cannot hold the quota groups {names!r} that need it: they "
                f"are drawn more often than they have members each epoch ({need} members in "
                "all); raise resident= (a quota group read with its shards would repeat its "
                "members within every batch of a window)"
            )
        # A group not named is read with its shards; drawn up to twice a member an epoch (an
        # epoch rounded up past the largest group), a member repeats at most once in its window.
        crowded = np.flatnonzero(free & (counts > 2 * sizes))
        if crowded.size:
            g = int(crowded[0])
            raise ValueError(
                f"group {self.index.names[g]!r} is not named in quotas but fills {counts[g]} "
                f"slots an epoch, more than twice its {sizes[g]} members; with shards= name it "
                "in quotas with an int count, so it is kept resident"
            )
        self.resident_classes = np.sort(over)
        self.overflow = (0, 0)
        per_lane = M // lanes
        self.streams: list[tuple[np.ndarray, int, LocalDraws]] = []  # (groups, per batch, draws)
        for g in named[counts[named] <= sizes[named]]:
            self._add_stream(np.array([g]), int(q[g]), per_lane)
        if free.any() and self.free_slots:
            self._add_stream(np.flatnonzero(free & (counts > 0)), self.free_slots, per_lane)

    def _add_stream(self, groups: np.ndarray, per_batch: int, per_lane: int) -> None:
        lane_counts = np.full(self.options.lanes, per_lane * per_batch, np.int64)
        draws = LocalDraws(
            self.index,
            self.offsets,
            groups,
            self.counts[groups],
            lane_counts,
            self.options.cache_shards,
            self.seed,
        )
        self.streams.append((groups, per_batch, draws))

    def schedule(self, epoch: int, lane: int) -> np.ndarray:
        """Shard ids of ``lane`` in the order it opens them this epoch (all its streams)."""
        return merge_schedules([d.schedule(epoch, lane) for _, _, d in self.streams])

    def resident_members(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Sorted dataset indices in ``[lo, hi)`` of the resident classes' members."""
        return _members_of(self.index, self.resident_classes, lo, hi)

    def per_epoch_counts(self) -> np.ndarray:
        """Draws of each group in one epoch, exact."""
        return self.counts.copy()

    def draw(self, seed: int, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """Global micro-batches (past the epoch: its first ones again) as ``(n, batch_size)``."""
        assert seed == self.seed, "a shard plan is built for one seed"
        M, bs = self.epoch_batches, self.batch_size
        m = np.asarray(micro_batches, dtype=np.int64) % M
        lane, b = self.layout.split(m)
        out = np.empty((len(m), bs), dtype=np.int64)
        col = 0
        for g in self.resident_classes:  # cycled members at m q + slot, across epochs
            q = int(self.quotas[g])
            stream = epoch * int(self.counts[g]) + m[:, None] * q + np.arange(q)[None, :]
            cls = np.full(stream.shape, g, dtype=np.int64)
            out[:, col : col + q] = cycled_members(
                self.index, cls.ravel(), stream.ravel(), make_key(self.seed, CYCLE)
            ).reshape(len(m), q)
            col += q
        for _, q, draws in self.streams:
            for ln in np.unique(lane):
                sel = np.flatnonzero(lane == ln)
                ordinal = b[sel, None] * q + np.arange(q)[None, :]
                p0, p1 = int(ordinal.min()), int(ordinal.max()) + 1
                out[sel, col : col + q] = draws.read(epoch, int(ln), p0, p1)[ordinal - p0]
            col += q
        assert col == bs, "quota columns"
        if self.shuffle:
            key = make_key(seed, epoch, QUOTA, 0)
            order = permute(np.arange(bs)[None, :], bs, derive(key, 1, m[:, None]))
            out = np.take_along_axis(out, order, axis=1)
        return out


def _members_of(
    index: GroupIndex, classes: np.ndarray, lo: int = 0, hi: int | None = None
) -> np.ndarray:
    """Sorted members of ``classes`` in ``[lo, hi)``: a binary search per class (members are
    stored sorted), so a shard's range costs its own members only, never the whole list."""
    hi = index.num_samples if hi is None else hi
    parts = []
    for c in classes:
        if index.members is None:  # a range: offsets[c] + [0, size)
            a, b = (int(np.clip(x, index.offsets[c], index.offsets[c + 1])) for x in (lo, hi))
            parts.append(np.arange(a, b, dtype=np.int64))
            continue
        members = index.group(int(c))
        a, b = np.searchsorted(members, [lo, hi])
        parts.append(np.asarray(members[a:b], dtype=np.int64))
    if not parts:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(parts))


def _copy_numbers(glob: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """0 for a member's first draw in a shard, 1 for its second, ... (draws sorted by ordinal,
    a member's draws adjacent)."""
    if not len(idx):
        return np.zeros(0, np.int64)
    new = np.ones(len(idx), dtype=bool)
    new[1:] = (idx[1:] != idx[:-1]) | (glob[1:] != glob[:-1] + 1)
    run_start = np.maximum.accumulate(np.where(new, np.arange(len(idx)), 0))
    return np.arange(len(idx)) - run_start

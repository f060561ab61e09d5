"""Epoch plans: which dataset index sits at each position, as a pure function.

A plan maps ``(seed, epoch, position) -> dataset index`` (:class:`Plan`), or for the quota
sampler ``(seed, epoch, micro-batch) -> batch`` (:class:`~distsampler._core.quota_plan.
QuotaPlan`). Positions ``>= num_samples`` are the continuation of the same stream (used to give
every rank the same length). Every random decision of distsampler is made in this package, from
keys of :mod:`~distsampler._core.keyed`; the samplers only decide which positions a rank asks
for.

=============================  ==================================================  ==========
plan                           what a position holds                               cost/draw
=============================  ==================================================  ==========
:class:`WeightedIID`           i.i.d. index with probability ~ its weight          O(1)
:class:`ClassIID`              i.i.d. class by its share, then a uniform member    O(1)
:class:`Stratified`            exact class counts per epoch, members in cycles     O(1) amort.
:class:`WeightedWithoutReplacement`  successive weighted draws, no repeats         O(N) / epoch
=============================  ==================================================  ==========

Streams (the third part of every key) keep independent decisions independent:

=============  ==============================================================
``IID``        i.i.d. draws (the uniform behind a weighted or class draw)
``MEMBER``     member of a class drawn uniformly (class-first i.i.d.)
``CYCLE``      the permutation of a class's members for each cycle
``STRATA``     the class order of a stratified epoch
``WOR``        exponential keys of weighted sampling without replacement
``QUOTA``      the quota batch plan (:mod:`~distsampler._core.quota_plan`)
=============  ==============================================================

Changing what any function here returns for a given key changes every user's resumed runs:
bump :data:`PLAN_VERSION`; ``tests/test_golden.py`` pins the plans.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .index_store import GroupStore as GroupIndex
from .index_store import WeightStore as WeightIndex
from .index_store import guided_search
from .keyed import derive, make_key, permute, uniform
from .origin import before_origin
from .sorting import sort_by_key, sorted_unique
from .strata import _tree, stratified_ranks

__all__ = [
    "PLAN_VERSION",
    "ClassIID",
    "Plan",
    "Stratified",
    "Timeline",
    "WeightedIID",
    "WeightedWithoutReplacement",
    "class_first",
    "cycled_members",
    "largest_remainder",
]

#: Version of what a seed produces (1: distsampler 0.1; 2: faster keyed bijection, without-
#: replacement padding continues its round, float quota shares spread evenly, weights with few
#: distinct values drawn by value). A state records it and refuses another version.
PLAN_VERSION = 2

IID, MEMBER, CYCLE, STRATA, WOR, QUOTA = range(6)
#: A stratified epoch is shuffled within windows of this many positions (and between member
#: cycle ends), each window's class mix within one of its share: batches of 16, 32, ... positions
#: barely vary while the order inside a window is random.
STRATUM = 16
_WOR_CHUNK = 1 << 22
#: Segments remembered (a few KB each at 1,000 classes) before the memo starts over.
_MEMO = 4096
_KEY_STEP = 1 << 16
_FEW = 8  # groups up to which a draw's group is found by comparisons, not a search


class Plan(Protocol):
    """An epoch's stream of dataset indices: ``num_samples`` positions, then its continuation."""

    @property
    def num_samples(self) -> int: ...

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """Dataset indices (int64) at the sorted global ``positions`` of ``epoch``'s plan."""
        ...


def largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing exactly to ``total``, each within one of ``total * share``.

    Whole parts first, then one more to the largest remainders (ties to the lower index).
    """
    shares = np.asarray(shares, dtype=np.float64)
    quota = total * shares / shares.sum()
    counts = np.floor(quota).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def class_first(
    index: GroupIndex, shares: np.ndarray, seed: int, epoch: int, positions: np.ndarray
) -> np.ndarray:
    """i.i.d. draws: a group by its share, then a member of it uniformly. O(1) a draw.

    Needs no array of size ``N``: a draw reads the ``C`` cumulative shares and one member.
    """
    cum = np.cumsum(shares)
    last = int(np.flatnonzero(shares > 0)[-1])
    x = uniform(make_key(seed, epoch, IID), positions)
    x *= cum[-1]
    # The group: searchsorted(cum, x, "right") capped at the last positive share (u * total
    # can round up to total), i.e. how many of cum[:last] are <= x.
    if last <= _FEW:
        cls = np.zeros(len(x), dtype=np.intp)
        for edge in cum[:last]:
            cls += edge <= x
    else:
        cls = np.minimum(np.searchsorted(cum, x, side="right"), last)
    sizes = index.sizes
    j = uniform(make_key(seed, epoch, MEMBER), positions)
    j *= sizes.astype(np.float64)[cls]
    j = j.astype(np.int64)
    if int(sizes.max()) >= 2**53:  # below, u <= 1 - 2**-53 keeps round(u * size) < size
        np.minimum(j, (sizes - 1)[cls], out=j)
    return index.member(cls, j)


@dataclass(frozen=True)
class WeightedIID:
    """i.i.d. draws with probability proportional to per-sample weights (with replacement).

    Two layouts of :class:`~distsampler.WeightIndex`, both O(1) a draw and free of the 2**24
    category limit: few distinct weight values draw a value group by its mass, then a member
    (:func:`class_first`); other weights search the float64 cumulative weights from a guide
    table bucket (two random reads expected).
    """

    index: WeightIndex
    num_samples: int

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        if self.index.groups is not None:
            mass = self.index.values * self.index.groups.sizes
            return class_first(self.index.groups, mass, seed, epoch, positions)
        cum, guide = self.index.cumulative, self.index.guide
        assert cum is not None and guide is not None  # the cumulative layout (no value groups)
        x = uniform(make_key(seed, epoch, IID), positions) * cum[-1]
        idx = guided_search(cum, guide, self.index.step, x)
        # u * total can round up to total; the last positive weight takes that draw.
        last = int(np.searchsorted(cum, cum[-1], side="left"))
        return np.minimum(idx, last)


@dataclass(frozen=True)
class ClassIID:
    """Class-first i.i.d. draws: a class by its share, then a member uniformly. O(1) a draw.

    With a ``timeline`` the shares of a position are those in force at its run position (the
    same uniforms, so positions before a change are drawn exactly as without it).
    """

    index: GroupIndex
    shares: np.ndarray
    num_samples: int
    timeline: Timeline | None = None

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        if self.timeline is None or not self.timeline.points:
            return class_first(self.index, self.shares, seed, epoch, positions)
        out = np.empty(len(positions), dtype=np.int64)
        starts = self.timeline.segments(epoch)
        edges = np.array([a for a, _ in starts[1:]], dtype=np.int64)
        seg = np.searchsorted(edges, positions, side="right")
        for j in sorted_unique(seg):
            sel = seg == j
            share = starts[int(j)][1]
            share = self.shares if share is None else share
            out[sel] = class_first(self.index, share, seed, epoch, positions[sel])
        return out


@dataclass
class Timeline:
    """Shares as a function of the run position ``epoch * num_samples + position``.

    ``points`` are ``(run_position, shares)`` pairs (a step schedule and the updates made during
    the run, in the order they were given; at one position the last one wins); the shares in
    force at a run position are those of the last point at or before it, or the plan's own
    shares before the first point. ``planned`` are the run positions known in advance (a
    schedule): a segment is planned to end at the next planned point or at the epoch's end, and
    an update made during the run cuts it short there.
    """

    num_samples: int
    seed: int
    points: list = field(default_factory=list)
    planned: tuple = ()
    _index: tuple | None = field(default=None, repr=False)  # (runs, shares) sorted, merged

    def add(self, run: int, shares: np.ndarray) -> None:
        """An update from ``run`` on (not before the last point: updates only move forward)."""
        self.points.append((int(run), np.asarray(shares, dtype=np.float64)))
        self._index = None

    def pop(self) -> None:
        """Forget the last point added (an update that was refused)."""
        self.points.pop()
        self._index = None

    def reset(self, points: list) -> None:
        """Start over from ``points`` (a loaded state)."""
        self.points = list(points)
        self._index = None

    def _sorted(self) -> tuple[list[int], list]:
        """Run positions (increasing, one per position: the last point given wins) and their
        shares; cached, so a lookup costs O(log points)."""
        if self._index is None:
            merged: dict[int, np.ndarray] = {}
            for run, share in self.points:
                merged[run] = share
            runs = sorted(merged)
            self._index = (runs, [merged[r] for r in runs])
        return self._index

    def in_force(self, run: int):
        """Shares in force at ``run`` (``None``: the plan's own shares, before any point)."""
        runs, shares = self._sorted()
        i = bisect.bisect_right(runs, run)
        return shares[i - 1] if i else None

    def segments(self, epoch: int) -> list:
        """``[(start, shares)]`` of block 0 of ``epoch``: starts in ``[0, num_samples)``, the
        first 0; shares ``None`` means the plan's own shares."""
        n = self.num_samples
        lo, hi = epoch * n, (epoch + 1) * n
        runs, shares = self._sorted()
        i, j = bisect.bisect_right(runs, lo), bisect.bisect_left(runs, hi)
        return [(0, self.in_force(lo))] + [(runs[k] - lo, shares[k]) for k in range(i, j)]

    def planned_end(self, epoch: int, start: int) -> int:
        """Where a segment starting at ``start`` of ``epoch`` is planned to end."""
        lo = epoch * self.num_samples
        for at in self.planned:
            if at - lo > start:
                return min(at - lo, self.num_samples)
        return self.num_samples

    def change_epochs(self) -> list[int]:
        """Epochs whose shares are not simply those the previous epoch ended with."""
        runs, _ = self._sorted()
        return sorted({at // self.num_samples for at in runs})


def reusable_segments(old: tuple, new: list, same, served: np.ndarray) -> tuple[int, np.ndarray]:
    """``(j0, served)``: of the segments planned for ``old = (starts, segments, total)``, the
    first ``j0`` hold for starts ``new`` (those before the first start that differs by position
    or by ``same`` on its shares, less the one before it, which now ends elsewhere; all when
    nothing differs), and ``served`` is what they drew (a segment's item 3 is what was drawn
    before it)."""
    starts, segs, total = old
    k = 0
    while (
        k < min(len(starts), len(new))
        and starts[k][0] == new[k][0]
        and same(starts[k][1], new[k][1])
    ):
        k += 1
    j0 = k if k == len(starts) == len(new) else max(0, k - 1)
    if j0 == len(segs):
        return j0, total.copy()
    return j0, segs[j0][3].copy() if j0 else served


def cycled_members(index: GroupIndex, cls: np.ndarray, stream: np.ndarray, key: int) -> np.ndarray:
    """Member at class-stream index ``stream`` of each class: cycle ``q`` is a fresh permutation.

    Within one cycle (``stream // size`` fixed) every member appears once, so a class walked in
    stream order shows all its members before any repeats, and the walk continues across epochs.
    """
    sizes = index.sizes[cls]
    q, r = np.divmod(stream, sizes)
    q0, num = int(q.min()), len(index.sizes)
    span = int(q.max()) - q0 + 1
    if num * span <= len(q):  # few (class, cycle) pairs: derive their round keys once each
        pair_cls, pair_q = np.divmod(np.arange(num * span), span)
        keys = derive(key, pair_cls, pair_q + q0)
        j = permute(r, sizes, keys, group=cls * span + (q - q0))
    else:
        j = permute(r, sizes, derive(key, cls, q))
    return index.member(cls, j)


@dataclass
class Stratified:
    """Exact class counts per epoch in a random order; members cycle without replacement.

    Each epoch (and each continuation block of ``num_samples`` positions past its end) holds
    ``largest_remainder(num_samples, shares)`` draws of each class; the order comes from
    :func:`~distsampler._core.strata.stratified_ranks`, shuffled within windows of ``STRATUM``
    positions whose class mix stays within one of the shares.

    * ``replacement=True``: class ``c`` walks one endless member stream across epochs (block
      ``b`` of epoch ``e`` continues where the previous left off), so the fewest epochs see every
      member, and no member repeats before its cycle is used up.
    * ``replacement=False``: every class takes a fresh permutation per epoch (and per
      continuation block), so no index repeats within the first ``num_samples`` positions.

    Trap: a class so small that its member cycle ends inside a window cuts that window, and
    its draws then sit unevenly across the window's offsets (a 7-member class at a 10% share:
    0.083 to 0.129 by offset; at 50 members 0.097 to 0.105). A rank that always reads the same
    offset (``block_size=1`` with a world size that is a multiple of 16) sees that bias; a
    ``block_size`` that is a multiple of 16 (a batch size of 32, say) reads whole windows.

    ``shares_for_epoch(epoch)`` gives the class shares; ``epoch_dependent`` says whether they
    change with the epoch (a schedule), in which case the member streams of epoch ``e`` start
    after the draws of every earlier epoch.

    Segments (``timeline``): block 0 of an epoch is cut at the points of the timeline. A segment
    starting at ``s`` is planned to its planned end ``p`` (the next schedule point, or the
    epoch's end): ``largest_remainder(p - s, shares)`` draws in the stratified order of its own
    key. An update cuts it short at ``u``: positions ``[s, u)`` stay exactly as planned (what was
    served stays served), and class ``c``'s member stream continues after the draws of ``c`` the
    segment made before ``u`` (counted exactly: the Beatty prefix up to the window holding
    ``u``, plus the classes of at most ``STRATUM - 1`` positions). A segment without such a cut
    holds exact counts for its length. The first segment of an epoch without points is the
    plain epoch (same key), so a plan with no points is exactly the plan without a timeline.
    """

    index: GroupIndex
    shares_for_epoch: Callable[[int], np.ndarray]
    num_samples: int
    replacement: bool = True
    epoch_dependent: bool = False
    timeline: Timeline | None = None
    _counts: dict = field(default_factory=dict, repr=False)
    _bases: dict = field(default_factory=dict, repr=False)
    _segs: dict = field(default_factory=dict, repr=False)
    _remaps: dict = field(default_factory=dict, repr=False)
    _made: dict = field(default_factory=dict, repr=False)  # segments by their arguments
    _prefix: dict = field(default_factory=dict, repr=False)  # last segments of each epoch
    _pending: dict = field(default_factory=dict, repr=False)  # earlier cuts pending, by epoch
    #: ``(epoch, stream bases, pending remaps)`` of a compacted state: the run before ``epoch``
    #: reduced to where each class's member stream stands and the cut windows not drawn past.
    origin: tuple | None = None

    def reset(self) -> None:
        """Forget cached segments (the timeline changed)."""
        self._bases.clear()
        self._segs.clear()
        self._remaps.clear()
        self._pending.clear()

    def _segmented(self) -> bool:
        return self.timeline is not None and bool(self.timeline.points)

    def counts(self, epoch: int) -> np.ndarray:
        """Draws of each class in one epoch (exact, largest remainder); with segments, the sum
        of the draws each segment makes before its end."""
        if self._segmented():
            return self._epoch_segments(epoch)[1]
        if epoch not in self._counts:
            self._counts[epoch] = largest_remainder(self.num_samples, self.shares_for_epoch(epoch))
        return self._counts[epoch]

    def _plain_counts(self, epoch: int) -> np.ndarray:
        if epoch not in self._counts:
            self._counts[epoch] = largest_remainder(self.num_samples, self.shares_for_epoch(epoch))
        return self._counts[epoch]

    def _epoch_segments(self, epoch: int) -> tuple[list, np.ndarray, np.ndarray]:
        """``([(start, end, planned counts, served before, key)], epoch total, counts of the
        continuation blocks)`` of ``epoch``; records the stream remaps of its cuts."""
        if epoch in self._segs:
            return self._segs[epoch]
        tl = self.timeline
        assert tl is not None
        n, seed = self.num_samples, tl.seed
        starts = tl.segments(epoch)
        served = np.zeros(len(self.index.sizes), dtype=np.int64)
        epoch_base = self._stream_base(epoch) if self.replacement else served.copy()
        # Reuse the segments before the first start that changed (an update only appends a
        # start and cuts the segment before it short): an update costs O(1) segments.
        j0, segs, rems = 0, [], []
        old = self._prefix.get(epoch)
        if old is not None and np.array_equal(old[3], epoch_base):
            old_starts, old_segs, old_rems, _, old_total = old
            same = lambda a, b: a is b  # noqa: E731
            j0, served = reusable_segments((old_starts, old_segs, old_total), starts, same, served)
            segs, rems = old_segs[:j0], old_rems[:j0]
        for j in range(j0, len(starts)):
            s, share = starts[j]
            share = self.shares_for_epoch(epoch) if share is None else share
            end = starts[j + 1][0] if j + 1 < len(starts) else n
            planned = tl.planned_end(epoch, s)
            key = make_key(seed, epoch, STRATA, 0, s) if s else make_key(seed, epoch, STRATA, 0)
            counts, made, remaps = self._segment(s, end, planned, share, epoch_base + served, key)
            segs.append((s, end, counts, served.copy(), key))
            rems.append(remaps)
            served += made
        for j, remaps in enumerate(rems):
            if remaps is not None:
                self._remaps[(epoch, j)] = remaps
        last = starts[-1][1]
        last = self.shares_for_epoch(epoch) if last is None else last
        cont = largest_remainder(n, last)
        self._prefix[epoch] = (starts, segs, rems, epoch_base, served)
        self._segs[epoch] = (segs, served, cont)
        return self._segs[epoch]

    def _segment(self, s: int, end: int, planned: int, share: np.ndarray, base, key: int):
        """``(planned counts, draws made before end, remaps or None)`` of the segment ``[s,
        end)`` planned to ``planned``, whose member streams start at ``base``: a pure function
        of its arguments, remembered, so an update recomputes only the segment it cuts."""
        memo = (s, end, planned, share.tobytes(), base.tobytes(), key)
        if memo in self._made:
            return self._made[memo]
        if len(self._made) > _MEMO:
            self._made.clear()
        counts = largest_remainder(planned - s, share)
        if end == planned:
            self._made[memo] = (counts, counts, None)
            return self._made[memo]
        # Cut short at ``cut``: [s, s + w) is whole windows (a prefix of every class's ranks,
        # from the tree); the window holding the cut was served in part, in a random order.
        cut = end - s
        w = cut - cut % STRATUM
        made = _tree(counts.tobytes(), int(key)).counts_before(w)
        remaps = None
        if cut != w:
            hi = min(w + STRATUM, int(counts.sum()))
            cycle = self.index.sizes if self.replacement else np.ones_like(counts)
            cls, k = stratified_ranks(
                np.arange(w, hi, dtype=np.int64), counts, cycle, base, key, STRATUM
            )
            t = base[cls] + k  # the window's stream indices (a contiguous range per class)
            used = np.zeros(len(cls), dtype=bool)
            used[: cut - w] = True
            remaps = []
            for c in np.unique(cls):
                mine = cls == c
                nu = int((mine & used).sum())
                free = np.sort(t[mine & ~used])  # drawn next, in stream order: none lost
                if len(free):
                    lo = int(t[mine].min()) + nu
                    remaps.append((int(c), lo, free))
                made[c] += nu
        self._made[memo] = (counts, made, remaps)
        return self._made[memo]

    def _remap(self, t: np.ndarray, cls: np.ndarray, epoch: int, seg: int) -> np.ndarray:
        """Stream indices after the cuts made before segment ``seg`` of ``epoch`` (latest first):
        a cut's unserved window ranks are taken first, so no member is lost or repeated."""
        keys = [k for k in self._remaps if k[0] == epoch and k[1] < seg]
        # Earlier epochs' cuts: only those still pending at this epoch's start (cached), so a
        # draw costs O(cuts this epoch + pending), not O(every cut of the run).
        older = self.pending(epoch) if self.replacement else []
        if (not keys and not older) or not len(t):
            return t
        t = t.copy()
        tmin, tmax = int(t.min()), int(t.max())
        chain = [r for key in sorted(keys, reverse=True) for r in self._remaps[key]]
        for c, lo, free in chain + list(older):
            if lo > tmax or lo + len(free) <= tmin:
                continue
            sel = (cls == c) & (t >= lo) & (t < lo + len(free))
            if sel.any():
                # A later cut's free ranks are stream indices before the earlier cuts'
                # remaps: they may fall in an earlier domain below the current bounds.
                t[sel] = free[t[sel] - lo]
                tmin, tmax = int(t.min()), int(t.max())
        return t

    def pending(self, epoch: int) -> list:
        """Remaps (newest first) that can still touch a draw of ``epoch`` or later: those whose
        domain reaches past what each class drew before ``epoch``, and the earlier ones their
        free ranks can fall into. The rest are spent: a compacted state leaves them out."""
        if not self.replacement or not self._segmented():
            return []
        if epoch in self._pending:
            return self._pending[epoch]
        reach = self._stream_base(epoch).copy()  # smallest stream index a later draw can hold
        keys = sorted((k for k in self._remaps if k < (epoch, 0)), reverse=True)
        older = self.origin[2] if self.origin is not None else []
        kept = []
        for c, lo, free in [r for k in keys for r in self._remaps[k]] + list(older):
            if lo + len(free) > reach[c]:
                kept.append((c, lo, free))
                reach[c] = min(reach[c], lo, int(free.min()))
        self._pending[epoch] = kept
        return kept

    def _stream_base(self, epoch: int) -> np.ndarray:
        """Draws of each class in every epoch before ``epoch`` (where its member streams start)."""
        if not self._segmented():
            if not self.epoch_dependent:
                return epoch * self.counts(epoch)
            if epoch not in self._bases:  # a schedule: the sum over earlier epochs, once per epoch
                prior = [self.counts(e) for e in range(epoch)]
                self._bases[epoch] = sum(prior, np.zeros(len(self.index.names), dtype=np.int64))
            return self._bases[epoch]
        if epoch in self._bases:
            return self._bases[epoch]
        e = 0
        total = np.zeros(len(self.index.names), dtype=np.int64)
        if self.origin is not None:
            e, total = self.origin[0], self.origin[1].copy()
            if epoch < e:
                raise before_origin(epoch, e)
        if self.epoch_dependent:
            for ep in range(e, epoch):
                total += self.counts(ep)
        else:  # epochs between two with points repeat the same counts: O(points) work
            assert self.timeline is not None
            for c in self.timeline.change_epochs():
                if c < e:
                    continue
                if c >= epoch:
                    break
                if c > e:
                    total += (c - e) * self.counts(e)
                total += self.counts(c)
                e = c + 1
            if epoch > e:
                total += (epoch - e) * self.counts(e)
        self._bases[epoch] = total
        return total

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        if self._segmented():
            return self._draw_segments(seed, epoch, positions)
        counts = self.counts(epoch)
        sizes = self.index.sizes
        out = np.empty(len(positions), dtype=np.int64)
        blocks = positions // self.num_samples
        for b in sorted_unique(blocks):
            sel = blocks == b
            local = positions[sel] - b * self.num_samples
            key = make_key(seed, epoch, STRATA, int(b))
            if self.replacement:
                base = self._stream_base(epoch) + b * counts
                cls, k = stratified_ranks(local, counts, sizes, base, key, STRATUM)
                out[sel] = cycled_members(self.index, cls, base[cls] + k, make_key(seed, CYCLE))
            else:
                ones = np.ones_like(counts)
                cls, k = stratified_ranks(local, counts, ones, np.zeros_like(counts), key, STRATUM)
                out[sel] = cycled_members(self.index, cls, k, make_key(seed, epoch, CYCLE, int(b)))
        return out

    def _draw_segments(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        assert self.timeline is not None and seed == self.timeline.seed, "timeline of another seed"
        segs, total, cont = self._epoch_segments(epoch)
        sizes = self.index.sizes
        n = self.num_samples
        out = np.empty(len(positions), dtype=np.int64)
        edges = np.array([s for s, *_ in segs[1:]] + [n], dtype=np.int64)
        seg = np.searchsorted(edges, positions, side="right")  # len(segs) + b - 1: block b >= 1
        epoch_base = self._stream_base(epoch) if self.replacement else np.zeros_like(cont)
        for j in sorted_unique(seg):
            j = int(j)
            sel = seg == j
            if j < len(segs):
                s, _, counts, served, key = segs[j]
                local = positions[sel] - s
                base = epoch_base + served
                block = 0
            else:
                block = j - len(segs) + 1
                counts = cont
                local = positions[sel] - block * n
                key = make_key(seed, epoch, STRATA, block)
                base = epoch_base + total + (block - 1) * cont
            if self.replacement:
                cls, k = stratified_ranks(local, counts, sizes, base, key, STRATUM)
                t = self._remap(base[cls] + k, cls, epoch, j)
                out[sel] = cycled_members(self.index, cls, t, make_key(seed, CYCLE))
            else:
                ones = np.ones_like(counts)
                cls, k = stratified_ranks(local, counts, ones, np.zeros_like(counts), key, STRATUM)
                if block == 0:
                    k = self._remap(k + served[cls], cls, epoch, j)
                out[sel] = cycled_members(self.index, cls, k, make_key(seed, epoch, CYCLE, block))
        return out


@dataclass
class WeightedWithoutReplacement:
    """Weighted sampling without replacement (successive draws proportional to what is left).

    Efraimidis-Spirakis: give index ``i`` the key ``E_i / w_i`` with ``E_i ~ Exp(1)`` from a
    counter-based uniform; the order of increasing keys is distributed exactly as
    ``torch.multinomial(w, n, replacement=False)``. A round is that order over all ``P``
    positive weights: positions ``[r P, (r + 1) P)`` read round ``r``, so the padding past
    ``num_samples`` continues the same round while unused positive weights remain and a new
    round (fresh keys) starts only past them.

    Trade-off: the order needs every key, so each rank computes all ``N`` keys once per epoch
    (in cache-sized steps, 4M weights at a time) and keeps the winners it needs, cached for the
    epoch; the labels path (stratified) avoids this. A full round (``num_samples`` at least the
    positive weights) sorts every key with :func:`~distsampler._core.sorting.sort_by_key`.
    """

    weights: np.ndarray
    num_samples: int
    positive: int
    _cache: dict = field(default_factory=dict, repr=False)

    def _chunks(self, key: int):
        """``(indices, keys)`` of the positive weights, 4M weights at a time, indices increasing."""
        for lo in range(0, len(self.weights), _WOR_CHUNK):
            w = np.asarray(self.weights[lo : lo + _WOR_CHUNK], dtype=np.float64)
            idx = np.flatnonzero(w > 0)
            keys = np.empty(len(idx), dtype=np.float64)
            for a in range(0, len(idx), _KEY_STEP):  # cache-sized temporaries
                i = idx[a : a + _KEY_STEP]
                e = keys[a : a + _KEY_STEP]
                np.negative(np.log1p(-uniform(key, i + lo)), out=e)  # Exp(1): uniform < 1
                e /= w[i]
            idx += lo
            yield idx, keys

    def _order(self, seed: int, epoch: int, rnd: int, need: int) -> np.ndarray:
        """At least the first ``need`` indices of round ``rnd``, by increasing key (cached).

        The order's prefix does not depend on ``need``: the ``need`` smallest keys, sorted.
        """
        cached = self._cache.get((seed, epoch, rnd))
        if cached is not None and len(cached) >= need:
            return cached
        self._cache.clear()
        key = make_key(seed, epoch, WOR, rnd)
        need = max(need, min(self.num_samples, self.positive))
        if need >= self.positive:  # every positive weight is drawn: one array, one sort
            small = len(self.weights) < 2**31
            idx = np.empty(self.positive, dtype=np.int32 if small else np.int64)
            keys = np.empty(self.positive, dtype=np.float64)
            at = 0
            for ci, ck in self._chunks(key):  # no N-sized temporaries beside the two
                idx[at : at + len(ci)], keys[at : at + len(ci)] = ci, ck
                at += len(ci)
            order = sort_by_key(keys, idx)
        else:  # keep the `need` smallest keys seen so far
            idx, keys = np.empty(0, dtype=np.int64), np.empty(0)
            for ci, ck in self._chunks(key):
                keys, idx = np.concatenate([keys, ck]), np.concatenate([idx, ci])
                if len(keys) > need:
                    part = np.argpartition(keys, need - 1)[:need]
                    keys, idx = keys[part], idx[part]
            order = idx[sort_by_key(keys, np.arange(len(keys)))]
        self._cache[(seed, epoch, rnd)] = order
        return order

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        rnd, local = np.divmod(positions, self.positive)
        out = np.empty(len(positions), dtype=np.int64)
        for r in sorted_unique(rnd):
            sel = rnd == r
            out[sel] = self._order(seed, epoch, int(r), int(local[sel].max()) + 1)[local[sel]]
        return out

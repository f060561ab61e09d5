"""The quota plan: global micro-batch ``m`` of an epoch, each group's count exact in every batch.

An epoch is ``epoch_batches`` global micro-batches of ``batch_size`` indices (the sampler deals
micro-batch ``m = k * W + r`` to rank ``r``). Batch ``m`` is a pure function of
``(seed, epoch, m)``:

1. **Counts.** Each group's count in batch ``m`` and the number of its draws in the batches
   before (:func:`batch_counts`): integer quotas are the same in every batch; float shares are
   spread so that the epoch holds exactly ``per_epoch`` draws of each group.
2. **Members.** A cycled group walks one endless member stream across epochs (each cycle a fresh
   keyed permutation, :func:`~distsampler._core.plan.cycled_members`), so every member shows up
   once before any shows up twice; a ``"replace"`` group draws a member uniformly.
3. **Order.** Optionally a keyed shuffle of the slots of each batch.

Nothing depends on earlier batches beyond closed-form counts, so any rank computes its batches
alone, and resuming is an integer.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field, replace

import numpy as np

from .index_store import GroupStore as GroupIndex
from .keyed import derive, hash64, make_key, permute, uniform
from .origin import before_origin
from .plan import CYCLE, QUOTA, cycled_members, largest_remainder, reusable_segments
from .sorting import sorted_unique
from .strata import BeattyTree

__all__ = ["QuotaPlan", "QuotaTimeline", "spread_prefix"]

#: Segment counts remembered (a few KB each at 1,000 groups) before the memo starts over.
_MEMO = 4096


def _bresenham(per_epoch: np.ndarray, num_batches: int, k: np.ndarray, phase: np.ndarray):
    """Draws of each group in the first ``k`` batches: ``floor((k e + phase) / M)``.

    Within one of ``k e / M`` for every ``k``, exactly ``e`` at ``k = M``; the increments (the
    counts per batch) are ``floor(e / M)`` or one more, spread as evenly as integers allow.
    """
    return (k * per_epoch + phase) // num_batches


@functools.lru_cache(maxsize=16)
def _fill_tree(counts: bytes, key: int) -> BeattyTree:
    """The tree that splits a block's flexible seats (built once per block, not per chunk)."""
    return BeattyTree.build(np.frombuffer(counts, dtype=np.int64), int(derive(key, 3)))


def spread_prefix(
    per_epoch: np.ndarray,
    num_batches: int,
    fixed: np.ndarray,
    alone: np.ndarray,
    k: np.ndarray,
    key: int,
) -> np.ndarray:
    """Draws of each group in the first ``k`` batches of a block, ``(len(k), C)`` int64.

    ``per_epoch[c]`` draws of group ``c`` over ``num_batches`` batches of equal size:

    * ``fixed`` groups (integer quotas): ``k * per_epoch / M`` exactly.
    * ``alone`` groups (named float shares) follow their own Bresenham line, so every prefix
      of ``k`` batches is within one of ``k * per_epoch / M``: the extra draws are spread
      evenly through the epoch, never bunched in runs.
    * the other groups fill what is left, split by a Beatty tree of their epoch counts (exact
      at the epoch's end, within one per tree level on the way).

    When the named shares could overfill a batch (their rounded-up counts exceed the free
    slots) or nothing else fills the rest, every flexible group goes through the tree.
    """
    per_epoch = np.asarray(per_epoch, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)[:, None]  # (nb, 1)
    big = num_batches
    out = np.where(fixed, k * (per_epoch // big), 0)  # (nb, C)
    flex = ~fixed
    if not flex.any():
        return out
    slots = int(per_epoch[flex].sum()) // big  # flexible slots per batch (exact by design)
    ceil_each = -(-per_epoch // big)
    fill = flex & ~alone
    alone = alone & flex
    tree_groups = flex
    taken = np.zeros_like(k)
    if fill.any() and int(ceil_each[alone].sum()) <= slots and alone.any():
        phase = (hash64(derive(key, 2), np.arange(len(per_epoch))) % np.uint64(big)).astype(
            np.int64
        )
        line = _bresenham(per_epoch, big, k, phase)  # (nb, C)
        out = np.where(alone, line, out)
        taken = (line * alone).sum(axis=1, keepdims=True)
        tree_groups = fill
    members = np.flatnonzero(tree_groups)
    tree = _fill_tree(per_epoch[members].tobytes(), key)
    seats = (k * slots - taken)[:, 0]  # flexible seats of the tree's groups so far
    if len(members) <= 8:
        for leaf, g in enumerate(members):
            out[:, g] = tree.prefix(leaf, seats)
    else:  # many groups: every (seat, leaf) pair in one vectorised descent (same integers)
        leaves = np.arange(len(members), dtype=np.int64)[None, :]
        out[:, members] = tree.prefix_many(leaves, seats[:, None])
    return out


@dataclass(frozen=True)
class QuotaPlan:
    """Global micro-batches with a per-group count in every batch.

    Attributes:
        index: the groups.
        batch_size: indices per micro-batch (the local batch size).
        per_batch: expected draws of each group per batch (floats summing to ``batch_size``;
            whole numbers for integer quotas).
        cycled: per group, walk its members in cycles (``True``) or draw i.i.d. (``False``).
        epoch_batches: global micro-batches per epoch.
        shuffle_within_batch: shuffle the slots of each batch (else grouped by group).
    """

    index: GroupIndex
    batch_size: int
    per_batch: np.ndarray
    cycled: np.ndarray
    epoch_batches: int
    shuffle_within_batch: bool = True
    named: np.ndarray | None = None  # groups with a float share of their own (spread alone)

    @property
    def fixed(self) -> np.ndarray:
        """Groups with an integer count per batch."""
        return np.abs(self.per_batch - np.round(self.per_batch)) < 1e-9

    def per_epoch_counts(self) -> np.ndarray:
        """Draws of each group in one epoch (``epoch_batches`` micro-batches), exact."""
        per, fixed = self.per_batch, self.fixed
        counts = np.where(fixed, np.round(per), 0).astype(np.int64)
        counts *= self.epoch_batches
        flex = ~fixed
        if flex.any():
            slots = self.epoch_batches * self.batch_size - int(counts.sum())
            counts[flex] = largest_remainder(slots, per[flex])
        return counts

    def draw(self, seed: int, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """The sorted global ``micro_batches`` of ``epoch`` as an ``(n, batch_size)`` array."""
        mb = np.asarray(micro_batches, dtype=np.int64)
        big = self.epoch_batches
        per_epoch = self.per_epoch_counts()
        out = np.empty((len(mb), self.batch_size), dtype=np.int64)
        blocks = mb // big
        for b in sorted_unique(blocks):
            sel = blocks == b
            key = make_key(seed, epoch, QUOTA, int(b))
            out[sel] = self.block(seed, mb[sel] - b * big, key, (epoch + int(b)) * per_epoch)
        return out

    def prefix(self, key: int, k: int) -> np.ndarray:
        """Draws of each group in the first ``k`` batches of a block of key ``key``."""
        num = len(self.per_batch)
        named = self.named if self.named is not None else np.zeros(num, dtype=bool)
        return spread_prefix(
            self.per_epoch_counts(), self.epoch_batches, self.fixed, named, np.array([k]), key
        )[0]

    def block(self, seed: int, m: np.ndarray, key: int, base: np.ndarray) -> np.ndarray:
        """Batches ``m`` (sorted, in ``[0, epoch_batches)`` and past it) of a block of key
        ``key`` whose member streams start at ``base`` (per group): ``(len(m), batch_size)``."""
        big, bs = self.epoch_batches, self.batch_size
        per_epoch = self.per_epoch_counts()
        num = len(per_epoch)
        named = self.named if self.named is not None else np.zeros(num, dtype=bool)
        prefix = spread_prefix(per_epoch, big, self.fixed, named, np.append(m, m + 1), key)
        before, after = prefix[: len(m)], prefix[len(m) :]  # (nb, C) each
        counts = after - before
        # Slot s of batch i takes group c where s falls in c's range of the batch.
        start = np.cumsum(counts, axis=1) - counts  # (nb, C)
        flat = (np.arange(len(m))[:, None] * bs + start).ravel()
        slots = np.arange(len(m) * bs)
        f = np.searchsorted(flat, slots, side="right") - 1
        row, g = f // num, f % num
        stream = base[g] + before[row, g] + (slots - flat[f])
        items = self._members(seed, g, stream).reshape(len(m), bs)
        if self.index.multilabel:
            ends = (base + after).reshape(len(m), num)
            member = functools.partial(self._members, seed)
            groups = g.reshape(len(m), bs)
            _distinct_rows(items, groups, ends, member, self.index.sizes)
        if self.shuffle_within_batch:
            order = permute(np.arange(bs)[None, :], bs, derive(key, 1, m[:, None]))
            items = np.take_along_axis(items, order, axis=1)
        return items

    def _members(self, seed: int, g: np.ndarray, stream: np.ndarray) -> np.ndarray:
        """Member at position ``stream`` of group ``g``'s member stream (int64 arrays)."""
        items = np.empty(len(g), dtype=np.int64)
        cyc = self.cycled[g]
        if cyc.any():
            items[cyc] = cycled_members(self.index, g[cyc], stream[cyc], make_key(seed, CYCLE))
        if (~cyc).any():
            gr, sr = g[~cyc], stream[~cyc]
            sizes = self.index.sizes[gr]
            u = uniform(derive(make_key(seed, QUOTA), gr), sr)
            j = np.minimum((u * sizes).astype(np.int64), sizes - 1)
            items[~cyc] = self.index.member(gr, j)
        return items


def _distinct_rows(items: np.ndarray, groups: np.ndarray, ends: np.ndarray, members, sizes) -> None:
    """Replace repeated samples within each batch (multi-label groups overlap), in place.

    The first occurrence in slot order stays; a later one, drawn through group ``g``, takes
    ``g``'s following members (stream positions past the batch's own draws of ``g``) until one
    is new to the batch; if every member of ``g`` is already there (so ``g`` has more than its
    quota), the largest group's following members fill the slot. ``ends[i, g]`` is the stream
    position after batch ``i``'s last draw of ``g``. Batches without a repeat (the usual case)
    cost one sort.
    """
    ordered = np.sort(items, axis=1)
    largest = int(np.argmax(sizes))
    for i in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
        seen: set[int] = set()
        nxt = ends[i].copy()
        for s in range(items.shape[1]):
            x = int(items[i, s])
            if x in seen:
                x = _next_new(int(groups[i, s]), largest, nxt, seen, members, sizes)
                items[i, s] = x
            seen.add(x)


def _next_new(g: int, largest: int, nxt: np.ndarray, seen: set, members, sizes) -> int:
    """The next member of ``g`` (else of ``largest``) not in ``seen``; advances ``nxt``."""
    for h in (g, largest):
        for _ in range(2 * int(sizes[h]) + 1):  # two cycles hold every member
            x = int(members(np.array([h]), nxt[h : h + 1])[0])
            nxt[h] += 1
            if x not in seen:
                return x
    raise ValueError(
        "a batch cannot hold batch_size distinct samples: too few samples belong to a group"
    )


def _same_point(a, b) -> bool:
    """The same ``(per_batch, named)`` point object (or both the plan's own quotas)."""
    if a is None or b is None:
        return a is b
    return a[0] is b[0] and a[1] is b[1]


@dataclass
class QuotaTimeline:
    """Quota plans that change at run positions ``epoch * epoch_batches + m`` (micro-batches).

    ``points`` are ``(run_position, per_batch, named)`` updates in the order given (at one
    position the last wins). Block 0 of an epoch is cut into segments at the points; a segment
    starting at batch ``s`` is planned to the epoch's end (``epoch_batches - s`` batches, key
    ``(seed, epoch, QUOTA, 0, s)``; the first segment is the plain epoch), so integer quotas are
    exact in every batch and float shares are spread within the segment. A later point cuts it
    short; the draws it made before the cut are a prefix of every group's member stream
    (batches hold each group's draws in stream order), and the next segment continues there:
    no member of a cycled group is lost or repeated across an update. Continuation blocks past
    the epoch's end use the last segment's quotas. With no points this is exactly ``plan``.
    """

    plan: QuotaPlan
    seed: int
    points: list = field(default_factory=list)
    _segs: dict = field(default_factory=dict, repr=False)
    _bases: dict = field(default_factory=dict, repr=False)
    # Draws of each group in a segment up to its end, by (epoch, start, end, quotas): a pure
    # function of its key, so an update recomputes only the segment it cuts and the new one.
    _made: dict = field(default_factory=dict, repr=False)
    #: ``(epoch, stream bases)`` of a compacted state: the draws of each group before ``epoch``.
    origin: tuple | None = None
    _index: list | None = field(default=None, repr=False)
    _prefix: dict = field(default_factory=dict, repr=False)  # last segments of each epoch

    def add(self, run: int, per_batch: np.ndarray, named: np.ndarray) -> None:
        self.points.append((int(run), np.asarray(per_batch, float), np.asarray(named, bool)))
        self._segs.clear()
        self._bases.clear()
        self._index = None

    def _sorted(self) -> list:
        """``[(run, (per_batch, named))]`` by run (the last point given wins), cached."""
        if self._index is None:
            merged = {}
            for run, per, named in self.points:
                merged[run] = (per, named)
            self._index = sorted(merged.items())
        return self._index

    def _with(self, point, length: int) -> QuotaPlan:
        if point is None:
            return replace(self.plan, epoch_batches=length)
        per, named = point
        return replace(self.plan, per_batch=per, named=named, epoch_batches=length)

    def segments(self, epoch: int) -> tuple[list, np.ndarray, QuotaPlan]:
        """``([(start, plan, key, served before)], epoch total, continuation plan)``."""
        if epoch in self._segs:
            return self._segs[epoch]
        big = self.plan.epoch_batches
        lo, hi = epoch * big, (epoch + 1) * big
        pts = self._sorted()
        runs = [at for at, _ in pts]
        i, j = bisect.bisect_right(runs, lo), bisect.bisect_left(runs, hi)
        starts = [(0, pts[i - 1][1] if i else None)] + [(at - lo, p) for at, p in pts[i:j]]
        served = np.zeros(len(self.plan.per_batch), dtype=np.int64)
        # Reuse the segments before the first start that changed (an update appends a start
        # and cuts the segment before it short): an update costs O(1) segments.
        j0, segs = 0, []
        old = self._prefix.get(epoch)
        if old is not None:
            j0, served = reusable_segments(old, starts, _same_point, served)
            segs = old[1][:j0]
        for j in range(j0, len(starts)):
            s, p = starts[j]
            plan = self._with(p, big - s)
            key = (
                make_key(self.seed, epoch, QUOTA, 0, s)
                if s
                else make_key(self.seed, epoch, QUOTA, 0)
            )
            segs.append((s, plan, key, served.copy()))
            end = starts[j + 1][0] if j + 1 < len(starts) else big
            served += self._made_in(epoch, s, end, p, plan, key)
        self._prefix[epoch] = (starts, segs, served)
        self._segs[epoch] = (segs, served, self._with(starts[-1][1], big))
        return self._segs[epoch]

    def _made_in(self, epoch: int, s: int, end: int, point, plan: QuotaPlan, key: int):
        """Draws of each group in batches ``[s, end)`` of a segment planned to the epoch's end."""
        tag = None if point is None else (point[0].tobytes(), point[1].tobytes())
        memo = (epoch, s, end, tag)
        if memo not in self._made:
            if len(self._made) > _MEMO:
                self._made.clear()
            big = self.plan.epoch_batches
            self._made[memo] = plan.prefix(key, end - s) if end < big else plan.per_epoch_counts()
        return self._made[memo]

    def in_force(self, run: int):
        """``(per_batch, named)`` in force at ``run`` (``None``: the plan's own quotas)."""
        pts = self._sorted()
        i = bisect.bisect_right([at for at, _ in pts], run)
        return pts[i - 1][1] if i else None

    def _base(self, epoch: int) -> np.ndarray:
        """Draws of each group in every epoch before ``epoch`` (O(points) epochs computed)."""
        if epoch in self._bases:
            return self._bases[epoch]
        big = self.plan.epoch_batches
        total = np.zeros(len(self.plan.per_batch), dtype=np.int64)
        e = 0
        if self.origin is not None:
            e, total = self.origin[0], self.origin[1].copy()
            if epoch < e:
                raise before_origin(epoch, e)
        for c in sorted({at // big for at, _ in self._sorted()}):
            if c < e:
                continue
            if c >= epoch:
                break
            if c > e:
                total += (c - e) * self.segments(e)[1]
            total += self.segments(c)[1]
            e = c + 1
        if epoch > e:
            total += (epoch - e) * self.segments(e)[1]
        self._bases[epoch] = total
        return total

    def draw(self, seed: int, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        if not self.points:
            return self.plan.draw(seed, epoch, micro_batches)
        assert seed == self.seed, "timeline of another seed"
        mb = np.asarray(micro_batches, dtype=np.int64)
        big = self.plan.epoch_batches
        segs, total, cont = self.segments(epoch)
        base = self._base(epoch)
        out = np.empty((len(mb), self.plan.batch_size), dtype=np.int64)
        edges = np.array([s for s, *_ in segs[1:]] + [big], dtype=np.int64)
        seg = np.searchsorted(edges, mb, side="right")
        for j in sorted_unique(seg):
            j = int(j)
            sel = seg == j
            if j < len(segs):
                s, plan, key, served = segs[j]
                out[sel] = plan.block(seed, mb[sel] - s, key, base + served)
            else:
                b = j - len(segs) + 1
                key = make_key(seed, epoch, QUOTA, b)
                start = base + total + (b - 1) * cont.per_epoch_counts()
                out[sel] = cont.block(seed, mb[sel] - b * big, key, start)
        return out

"""The bucket plan: a source's global stream cut into size-homogeneous micro-batches.

Bucketing *reorders, never re-draws*. The source (a weighted index plan or a quota batch plan)
says which sample sits at each position of its global stream; this plan cuts the stream into
**windows** of consecutive positions and, inside a window only, groups samples of similar size
into micro-batches. A window therefore holds exactly the samples the source puts there: class
counts, member cycles and quotas stay exact. Micro-batch ``m`` is a pure function of
``(seed, source seed, epoch, m)``: its window is found in O(1) (fixed batch size) or from a
per-epoch table of counts (token budget), and computing it costs one window of work.

Inside a window (``stream`` ``BUCKET`` of :mod:`~distsampler._core.plan`'s key layout):

1. **Sort.** Samples are ordered by a size key: the size (tokens, frames), or the aspect ratio
   ``height / width`` for ``(N, 2)`` sizes; with ``edges`` by the bucket the key falls in, in a
   keyed random order inside each bucket. Ties are broken by a keyed hash of the slot, so equal
   sizes land in a random order.
2. **Cut.** ``batch_size`` mode: runs of ``batch_size`` consecutive sorted samples. Token
   mode: sorted by decreasing size, a run starting at a sample of size ``s`` holds
   ``floor(b / s)`` samples (its padded cost ``count x max size`` stays within ``b``); the
   budget ``b <= max_tokens`` is the *smallest* that still needs the window's minimal number
   of runs (a bisection), so the window's runs are filled evenly instead of leaving one
   short remnant. Quota source: each window is ``G`` whole source micro-batches, and members
   are traded only between slots of the same group signature (:func:`deal_by_signature`),
   so every batch keeps its exact count of every group.
3. **Shuffle.** The window's micro-batches are put in a keyed random order, and the samples of
   each micro-batch too. Batch sizes are thus shuffled over the epoch: consecutive
   micro-batches are random picks from a window holding the full range of sizes (the lag-1
   autocorrelation of their mean size is about ``-1 / (G - 1)`` for ``G`` batches a window,
   while windows of sorted batches left in order would give nearly 1). With ``align = a``,
   runs of ``a`` consecutive sorted batches are shuffled instead: the ``W`` local batches of
   a global step (``a`` a multiple of ``W``) then have similar sizes, and the order of the
   runs, so of the global steps, is shuffled the same way.

Layout of an epoch (units: source positions, or source micro-batches for a quota source):

* the epoch region ``[0, E)`` is cut into ``max(1, E // S)`` windows of ``S`` units, the last
  one taking the remainder (between ``S`` and ``2 S`` units, so no tiny window is ever cut);
  in ``batch_size`` mode ``E`` is the source's ``num_samples`` rounded up to whole batches,
  the short last batch filled from the source's continuation;
* continuation windows of ``S`` units start at ``E`` (keyed apart from the epoch's windows):
  they fill the micro-batches that round the epoch up to a multiple of the world size.

Trade-off of the token budget: the number of runs of a window depends on its sizes, so the
epoch's micro-batch count ``M`` (which ``len()`` needs on every rank) and the window of a
micro-batch come from one pass over the epoch's sizes, computed at the first access of an
epoch and cached: it draws the source's ``num_samples`` positions and sorts each window
(``O(num_samples)`` time, about a second per 1e7 samples, and ``O(num_samples / S)`` ints of
memory). It does not grow with the resume position; serving a micro-batch is one window of
work. ``batch_size`` mode needs no pass: window ``m // G`` in O(1).

Changing what this module returns for a given key changes every user's resumed runs:
bump :data:`BUCKET_PLAN_VERSION`; ``tests/test_bucketed_golden.py`` pins the plans.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .keyed import derive, hash64, make_key, permute

__all__ = [
    "BUCKET",
    "BUCKET_PLAN_VERSION",
    "BucketPlan",
    "LaneBuckets",
    "deal_by_signature",
    "greedy_runs",
    "min_budget_runs",
    "size_keys",
]

#: Stream id of the bucket plan's keys (apart from the index plans' streams 0-5).
BUCKET = 12
#: Version of what the bucket plan produces for a given configuration.
BUCKET_PLAN_VERSION = 1
#: Token runs searched on each side for a trade that separates copies (a far run's sizes
#: differ, so the budget rarely allows it; the search is bounded).
_REACH = 16
#: Positions drawn at a time by the token-budget pass that counts each window's runs.
_PASS = 1 << 16


def size_keys(sizes: np.ndarray, edges: np.ndarray | None) -> np.ndarray:
    """Sort key of each sample: its size, or ``height / width``; its bucket with ``edges``.

    ``sizes`` is ``(n,)`` or ``(n, 2)``; returns float64 ``(n,)``.
    """
    if sizes.ndim == 2:  # (n, 2): height, width
        key = sizes[:, 0].astype(np.float64) / sizes[:, 1].astype(np.float64)
    else:
        key = sizes.astype(np.float64)
    if edges is not None:
        return np.searchsorted(edges, key, side="right").astype(np.float64)
    return key


def greedy_runs(desc: np.ndarray, budget: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Runs the greedy cut makes in each row of ``desc`` (sizes sorted decreasingly).

    ``desc`` is ``(rows, n)``; a run starting at size ``s`` holds ``floor(budget / s)``
    samples. ``valid[row]`` is the number of real entries of the row (default ``n``). Greedy
    gives the fewest runs of a sorted sequence whose padded costs stay within ``budget``.
    Vectorised over rows: one pass per run.
    """
    rows, n = desc.shape
    valid = np.full(rows, n, dtype=np.int64) if valid is None else valid
    pos = np.zeros(rows, dtype=np.int64)
    runs = np.zeros(rows, dtype=np.int64)
    live = np.flatnonzero(pos < valid)
    while live.size:
        s = desc[live, pos[live]].astype(np.float64)
        pos[live] += np.floor(budget / s).astype(np.int64)
        runs[live] += 1
        live = live[pos[live] < valid[live]]
    return runs


def _cut(desc: np.ndarray, budget: float) -> list[int]:
    """Start of each greedy run of one decreasing row (the cut :func:`greedy_runs` counts)."""
    jumps = np.floor(budget / desc.astype(np.float64)).astype(np.int64)
    starts, at, n = [], 0, len(desc)
    while at < n:
        starts.append(at)
        at += int(jumps[at])
    return starts


def min_budget_runs(desc: np.ndarray, budget: float, integral: bool) -> list[int]:
    """Run starts of one decreasing row: as many runs as ``budget`` needs, filled evenly.

    The budget is lowered by bisection to the smallest that still cuts the row into the same
    number of runs (for integer sizes, the smallest integer budget): every run's padded cost
    is then within that budget, and the last run takes what the others could not.
    """
    need = len(_cut(desc, budget))
    lo, hi = float(desc[0]), float(budget)  # lo: a run of the largest sample alone
    if len(_cut(desc, lo)) <= need:
        return _cut(desc, lo)
    for _ in range(64):  # invariant: hi feasible (<= need runs), lo not
        mid = (lo + hi) / 2
        if integral:
            mid = float(np.floor(mid))
            if mid <= lo:
                break
        if len(_cut(desc, mid)) <= need:
            hi = mid
        else:
            lo = mid
        if hi - lo <= (1.0 if integral else 1e-9 * hi):
            break
    return _cut(desc, hi)


def deal_by_signature(items: np.ndarray, sig: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Trade samples between the rows of ``items`` so each row is homogeneous in ``key``.

    ``items``, ``sig`` and ``key`` are ``(G, B)``: the window's source batches, the group
    signature of each slot and its sort key. Each signature's samples, sorted by key, are
    dealt to its slots in row order: row 0 takes the smallest of every signature, and every
    row keeps its exact count of every signature. Returns the new ``(G, B)`` items.
    """
    g, b = items.shape
    flat_sig, flat_key, flat_items = sig.ravel(), key.ravel(), items.ravel()
    slot_order = np.argsort(flat_sig, kind="stable")  # by signature, then row-major slot
    sample_order = np.lexsort((flat_key, flat_sig))  # by signature, then key
    out = np.empty_like(flat_items)
    out[slot_order] = flat_items[sample_order]
    return out.reshape(g, b)


def _separate_repeats(items: np.ndarray, sig: np.ndarray) -> None:
    """Move a sample repeated within a row to another row, swapping with the same signature.

    Sorting puts the copies of a sample side by side (an oversampled sample, a small cycled
    group), so a cut could put them in one batch although the source spread them; the nearest
    row (rows are in size order: the most similar sizes) that lacks the sample and whose
    swapped sample is new to this row takes the extra copy. In place; rows whose
    repeats no swap can remove (a group smaller than its quota) keep them, as the source did.
    """
    ordered = np.sort(items, axis=1)
    bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if bad.size == 0:
        return
    rows = [set(r.tolist()) for r in items]
    for i in bad.tolist():
        seen: set[int] = set()
        for s in range(items.shape[1]):
            x = int(items[i, s])
            if x not in seen:
                seen.add(x)
                continue
            for j in _nearest(i, len(items)):
                if x in rows[j]:
                    continue
                cand = np.flatnonzero((sig[j] == sig[i, s]) & ~np.isin(items[j], list(rows[i])))
                if cand.size:
                    t = int(cand[0])
                    y = int(items[j, t])
                    items[i, s], items[j, t] = y, x
                    rows[i], rows[j] = set(items[i].tolist()), set(items[j].tolist())
                    seen.add(y)
                    break
            else:
                seen.add(x)


def _separate_repeats_runs(runs: list[list[int]], size: dict, budget: float) -> None:
    """:func:`_separate_repeats` for token-budget runs: a swap must keep both runs in budget.

    ``runs`` are in decreasing size order, each run's samples too; ``size`` maps each sample
    to its size. A run's cost is bounded by its length times the larger of its largest size
    and the incoming sample's; the swapped-in sample is searched from the other run's
    smallest up, and the search stops at the first too large (runs stay nearly sorted). In
    place; runs are searched up to ``_REACH`` away.
    """
    sets = [set(r) for r in runs]
    bad = [i for i, r in enumerate(runs) if len(sets[i]) < len(r)]
    if not bad:
        return
    top = [max(size[x] for x in r) for r in runs]
    for i in bad:
        seen: set[int] = set()
        for s, x in enumerate(runs[i]):
            if x not in seen:
                seen.add(x)
                continue
            cap = budget / len(runs[i])  # a sample larger than this overfills run i
            for j in _nearest(i, len(runs), _REACH):
                if x in sets[j] or len(runs[j]) * max(top[j], size[x]) > budget:
                    continue
                run = runs[j]
                t = next(
                    (
                        t
                        for t in range(len(run) - 1, -1, -1)
                        if size[run[t]] <= cap and run[t] not in sets[i]
                    ),
                    None,
                )
                if t is None or size[run[t]] > cap:
                    continue
                y = run[t]
                runs[i][s], run[t] = y, x
                sets[i], sets[j] = set(runs[i]), set(run)
                top[i], top[j] = max(top[i], size[y]), max(size[v] for v in run)
                seen.add(y)
                break
            else:
                seen.add(x)


def _nearest(i: int, n: int, reach: int | None = None):
    """Rows other than ``i`` by distance to it (the lower first on ties), up to ``reach``."""
    for d in range(1, n if reach is None else min(n, reach + 1)):
        if i - d >= 0:
            yield i - d
        if i + d < n:
            yield i + d


@dataclass
class BucketPlan:
    """Micro-batches of a source's stream, homogeneous in size within windows.

    Attributes:
        sizes: ``(N,)`` sizes or ``(N, 2)`` (height, width), one per dataset sample.
        key: the plan's base key (from the bucketing seed and the source's seed).
        epoch_units: the source's epoch in units (positions, or micro-batches of a quota
            source).
        window: units per window (``S``).
        batch_size: samples per micro-batch (``batch_size`` mode), else ``None``.
        max_tokens: padded-cost budget of a micro-batch (token mode), else ``None``.
        draw_positions: ``(epoch, positions) -> indices`` of a weighted source.
        draw_batches: ``(epoch, micro_batches) -> (n, B)`` of a quota source.
        signature: ``indices -> group signature`` of a quota source's samples.
        edges: bucket boundaries of the size key (``None``: sort by the exact key).
        align: consecutive micro-batches of similar size (runs kept together when shuffling).
    """

    sizes: np.ndarray
    key: tuple[int, ...]
    epoch_units: int
    window: int
    batch_size: int | None = None
    max_tokens: float | None = None
    draw_positions: Callable[[int, np.ndarray], np.ndarray] | None = None
    draw_batches: Callable[[int, np.ndarray], np.ndarray] | None = None
    signature: Callable[[np.ndarray], np.ndarray] | None = None
    edges: np.ndarray | None = None
    align: int = 1
    cache_windows: int = 16
    _windows: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _tables: OrderedDict = field(default_factory=OrderedDict, repr=False)

    # -- layout ------------------------------------------------------------------------------
    @property
    def quota(self) -> bool:
        return self.draw_batches is not None

    @property
    def per_batch(self) -> int:
        """Units per micro-batch in ``batch_size`` mode (1 for a quota source)."""
        return 1 if self.quota else self.size

    @property
    def size(self) -> int:
        """Samples per micro-batch (``batch_size`` mode)."""
        assert self.batch_size is not None
        return self.batch_size

    @property
    def budget(self) -> float:
        """The padded-cost budget (token mode)."""
        assert self.max_tokens is not None
        return self.max_tokens

    def _positions(self, epoch: int, lo: int, hi: int) -> np.ndarray:
        """Dataset indices at the weighted source's positions ``[lo, hi)``."""
        assert self.draw_positions is not None
        return self.draw_positions(epoch, np.arange(lo, hi, dtype=np.int64))

    @property
    def epoch_end(self) -> int:
        """``E``: units of the epoch region (whole batches in ``batch_size`` mode)."""
        if self.max_tokens is not None:
            return self.epoch_units
        b = self.per_batch
        return -(-self.epoch_units // b) * b

    @property
    def num_windows(self) -> int:
        return max(1, self.epoch_end // self.window)

    def window_span(self, region: int, w: int) -> tuple[int, int]:
        """Units ``[lo, hi)`` of window ``w`` of the epoch (region 0) or continuation (1)."""
        s = self.window
        if region == 1:
            lo = self.epoch_end + w * s
            return lo, lo + s
        hi = self.epoch_end if w == self.num_windows - 1 else (w + 1) * s
        return w * s, hi

    def epoch_batches(self, epoch: int) -> int:
        """``M``: micro-batches of the epoch region."""
        if self.max_tokens is None:
            return self.epoch_end // self.per_batch
        return int(self._table(epoch, 0, self.num_windows)[-1])

    # -- token-mode counts -------------------------------------------------------------------
    def _window_sizes(self, epoch: int, region: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.window_span(region, w)
        idx = self._positions(epoch, lo, hi)
        return idx, np.asarray(self.sizes[idx])

    def _counts(self, epoch: int, region: int, w0: int, w1: int) -> np.ndarray:
        """Runs of windows ``[w0, w1)`` of a region, drawing ``_PASS`` positions at a time."""
        out = np.empty(w1 - w0, dtype=np.int64)
        step = max(1, _PASS // self.window)
        for a in range(w0, w1, step):
            b = min(w1, a + step)
            lo, hi = self.window_span(region, a)[0], self.window_span(region, b - 1)[1]
            idx = self._positions(epoch, lo, hi)
            s = np.asarray(self.sizes[idx])
            full = (b - a) if hi - lo == (b - a) * self.window else (b - a - 1)
            if full:
                rows = np.sort(s[: full * self.window].reshape(full, self.window), axis=1)
                out[a - w0 : a - w0 + full] = greedy_runs(rows[:, ::-1], self.budget)
            if full < b - a:  # the epoch's last window, longer than S
                last = np.sort(s[full * self.window :])[::-1][None, :]
                out[b - 1 - w0] = greedy_runs(last, self.budget)[0]
        return out

    def _table(self, epoch: int, region: int, need_windows: int) -> np.ndarray:
        """Cumulative runs of the region's first ``need_windows`` windows (cached per epoch)."""
        tkey = (epoch, region)
        cum = self._tables.get(tkey)
        if cum is None or len(cum) < need_windows:
            have = 0 if cum is None else len(cum)
            extra = self._counts(epoch, region, have, need_windows)
            base = 0 if cum is None or not have else int(cum[-1])
            grown = np.cumsum(extra) + base
            cum = grown if cum is None else np.concatenate([cum, grown])
            self._tables[tkey] = cum
            self._tables.move_to_end(tkey)
            while len(self._tables) > 4:
                self._tables.popitem(last=False)
        return cum

    # -- micro-batch -> window ---------------------------------------------------------------
    def locate(self, epoch: int, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(region, window, offset)`` of each global micro-batch ``m`` (int64 array)."""
        m = np.asarray(m, dtype=np.int64)
        big = self.epoch_batches(epoch)
        region = (m >= big).astype(np.int64)
        rel = np.where(region == 1, m - big, m)
        if self.max_tokens is None:
            g = self.window // self.per_batch
            w = rel // g
            w = np.where(region == 0, np.minimum(w, self.num_windows - 1), w)
            return region, w, rel - w * g
        w = np.empty_like(m)
        off = np.empty_like(m)
        for r in (0, 1):
            sel = region == r
            if not sel.any():
                continue
            x = rel[sel]
            if r == 0:
                cum = self._table(epoch, 0, self.num_windows)
            else:
                n = 1
                cum = self._table(epoch, 1, n)
                while cum[-1] <= int(x.max()):
                    n *= 2
                    cum = self._table(epoch, 1, n)
            wi = np.searchsorted(cum, x, side="right")
            w[sel] = wi
            off[sel] = x - np.where(wi > 0, cum[np.maximum(wi - 1, 0)], 0)
        return region, w, off

    def draw(self, epoch: int, micro_batches: np.ndarray) -> list[list[int]] | np.ndarray:
        """Global ``micro_batches`` of ``epoch``: ``(n, B)`` in ``batch_size`` mode, else lists."""
        m = np.asarray(micro_batches, dtype=np.int64)
        region, w, off = self.locate(epoch, m)
        if self.max_tokens is None:
            out = np.empty((len(m), self.size), dtype=np.int64)
            for r, wi in sorted(set(zip(region.tolist(), w.tolist(), strict=True))):
                sel = (region == r) & (w == wi)
                out[sel] = self._window(epoch, r, wi)[off[sel]]
            return out
        ragged: list[list[int]] = [[] for _ in range(len(m))]
        for r, wi in sorted(set(zip(region.tolist(), w.tolist(), strict=True))):
            batches = self._window(epoch, r, wi)
            for i in np.flatnonzero((region == r) & (w == wi)).tolist():
                ragged[i] = batches[int(off[i])]
        return ragged

    # -- one window --------------------------------------------------------------------------
    def _window(self, epoch: int, region: int, w: int) -> Any:
        ck = (epoch, region, w)
        hit = self._windows.get(ck)
        if hit is not None:
            self._windows.move_to_end(ck)
            return hit
        wkey = make_key(*self.key, epoch, BUCKET, region, w)
        batches: np.ndarray | list[list[int]]  # (G, B), or ragged runs with a token budget
        if self.quota:
            batches = self._quota_window(epoch, region, w, wkey)
        elif self.max_tokens is None:
            batches = self._sized_window(epoch, region, w, wkey)
        else:
            batches = self._token_window(epoch, region, w, wkey)
        self._windows[ck] = batches
        while len(self._windows) > self.cache_windows:
            self._windows.popitem(last=False)
        return batches

    def _order(self, g: int, wkey: int) -> np.ndarray:
        """A keyed order of a window's ``g`` batches (given in size order).

        Runs of ``align`` consecutive batches stay together, in size order, and the runs are
        shuffled: with ``align`` a multiple of the world size, the local batches of a global
        step have similar sizes (no rank waits for a much longer batch). ``align=1`` shuffles
        every batch on its own.
        """
        a = self.align
        if a == 1:
            return permute(np.arange(g), g, derive(wkey, 1))
        runs = g // a  # a short run (the epoch's last window only) goes last: the runs before
        if not runs:  # it stay aligned on global steps
            return np.arange(g)
        first = permute(np.arange(runs), runs, derive(wkey, 1)) * a  # (runs,)
        order = (first[:, None] + np.arange(a)[None, :]).ravel()  # (runs * a,)
        return np.concatenate([order, np.arange(runs * a, g)])

    def _shuffled(self, batches: np.ndarray, wkey: int) -> np.ndarray:
        """The rows in a keyed order, and each row's samples in a keyed order. ``(G, B)``."""
        g, b = batches.shape
        batches = batches[self._order(g, wkey)]
        within = hash64(derive(wkey, 2), np.arange(g * b, dtype=np.int64)).reshape(g, b)
        return np.take_along_axis(batches, np.argsort(within, axis=1), axis=1)

    def _sorted(self, sizes: np.ndarray, wkey: int, descending: bool = False) -> np.ndarray:
        """Order of a window's samples by size key, ties (and buckets) in a keyed order."""
        key = size_keys(sizes, self.edges)
        tie = hash64(derive(wkey, 0), np.arange(len(key), dtype=np.int64))
        return np.lexsort((tie, -key if descending else key))

    def _sized_window(self, epoch: int, region: int, w: int, wkey: int) -> np.ndarray:
        lo, hi = self.window_span(region, w)
        idx = self._positions(epoch, lo, hi)
        order = self._sorted(np.asarray(self.sizes[idx]), wkey)
        rows = idx[order].reshape(-1, self.size)  # (G, B), in size order
        _separate_repeats(rows, np.zeros(rows.shape, dtype=np.int64))  # oversampled copies
        return self._shuffled(rows, wkey)

    def _quota_window(self, epoch: int, region: int, w: int, wkey: int) -> np.ndarray:
        lo, hi = self.window_span(region, w)
        assert self.draw_batches is not None and self.signature is not None
        items = np.asarray(self.draw_batches(epoch, np.arange(lo, hi, dtype=np.int64)))  # (G, B)
        flat = items.ravel()
        key = size_keys(np.asarray(self.sizes[flat]), self.edges)
        tie = hash64(derive(wkey, 0), np.arange(len(flat), dtype=np.int64))
        rank = np.empty(len(flat), dtype=np.float64)
        rank[np.lexsort((tie, key))] = np.arange(len(flat))  # a total order: key, then tie
        sig = self.signature(flat).reshape(items.shape)
        dealt = deal_by_signature(items, sig, rank.reshape(items.shape))
        _separate_repeats(dealt, sig)
        return self._shuffled(dealt, wkey)

    def _token_window(self, epoch: int, region: int, w: int, wkey: int) -> list[list[int]]:
        idx, s = self._window_sizes(epoch, region, w)
        order = self._sorted(s, wkey, descending=True)
        desc = s[order]
        integral = desc.dtype.kind in "iu"
        starts = min_budget_runs(desc, self.budget, integral) + [len(desc)]
        items = idx[order].tolist()
        g = len(starts) - 1
        runs = [items[starts[j] : starts[j + 1]] for j in range(g)]  # in size order
        if len(set(items)) < len(items):  # oversampled copies: spread them over the runs
            size = dict(zip(items, desc.tolist(), strict=True))
            _separate_repeats_runs(runs, size, self.budget)
        out = []
        for j in self._order(g, wkey).tolist():
            run = np.asarray(runs[j], dtype=np.int64)
            within = hash64(derive(wkey, 2, j), np.arange(len(run), dtype=np.int64))
            out.append(run[np.argsort(within)].tolist())
        return out


@dataclass
class LaneBuckets:
    """Bucketing that keeps a sharded source's locality: one :class:`BucketPlan` per lane.

    A shard-local source reads lane ``l`` at its positions (or micro-batches) ``j`` of the
    lane (``to_global(l, j)`` gives the source's global unit). Lane ``l``'s plan cuts windows of
    that lane's stream only, and global micro-batch ``m`` is its lane ``m % L``'s batch
    ``m // L``, so a rank (which reads the lanes ``l % W == rank``) buckets only samples of its
    own lanes' shards. ``batch_size`` mode only: every lane then has the same number of batches.
    """

    lanes: int
    plans: list

    @property
    def quota(self) -> bool:
        return self.plans[0].quota

    @property
    def window(self) -> int:
        return self.plans[0].window

    @property
    def epoch_units(self) -> int:
        return self.lanes * self.plans[0].epoch_units

    @property
    def epoch_end(self) -> int:
        return self.lanes * self.plans[0].epoch_end

    def epoch_batches(self, epoch: int) -> int:
        return self.lanes * self.plans[0].epoch_batches(epoch)

    def draw(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        m = np.asarray(micro_batches, dtype=np.int64)
        b, lane = np.divmod(m, self.lanes)
        out = np.empty((len(m), self.plans[0].size), dtype=np.int64)
        for ln in np.unique(lane).tolist():
            sel = lane == ln
            out[sel] = self.plans[ln].draw(epoch, b[sel])
        return out

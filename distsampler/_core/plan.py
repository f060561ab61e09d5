"""Epoch plans: which dataset index sits at each position, as a pure function.

A plan maps ``(seed, epoch, position) -> dataset index``. Positions ``>= num_samples`` are the
continuation of the same stream (used to give every rank the same length). Every random
decision of distsampler is made here, from keys of :mod:`distsampler.keyed`; the samplers only
decide which positions a rank asks for.

Streams (the third part of every key) keep independent decisions independent:

=============  ==============================================================
``IID``        i.i.d. draws (the uniform behind a weighted or class draw)
``MEMBER``     member of a class drawn uniformly (class-first i.i.d.)
``CYCLE``      the permutation of a class's members for each cycle
``STRATA``     the class order of a stratified epoch
``WOR``        exponential keys of weighted sampling without replacement
``QUOTA``      the quota batch plan (see :mod:`distsampler.quota`)
=============  ==============================================================

Changing what any function here returns for a given key changes every user's resumed runs:
``tests/test_golden.py`` pins them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..groups import GroupIndex
from .keyed import derive, make_key, permute, uniform
from .strata import sorted_unique, stratified_ranks

__all__ = [
    "ClassIID",
    "Stratified",
    "WeightedIID",
    "WeightedWithoutReplacement",
    "largest_remainder",
]

IID, MEMBER, CYCLE, STRATA, WOR, QUOTA = range(6)
#: A stratified epoch is shuffled within windows of this many positions (and between member
#: cycle ends), each window's class mix within one of its share: batches of 16, 32, ... positions
#: barely vary while the order inside a window is random.
STRATUM = 16
_WOR_CHUNK = 1 << 22
_GUIDE_CHUNK = 1 << 22
_WALK = 8  # guide-table steps before bisection


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


def guide_table(cumulative: np.ndarray) -> tuple[np.ndarray, float]:
    """Chen & Asau's guide table over sorted ``cumulative`` weights, one bucket a sample.

    ``guide[b] <= #(cumulative <= b * step)`` with ``step = total / N``: element ``i`` counts
    from bucket ``ceil(c_i / step) + 1`` on (one bucket late at most, whatever the rounding), so
    a search started at ``guide[b]`` never starts past its answer. One O(N) pass in chunks;
    4 bytes a sample (int32 below 2**31 samples).
    """
    n = len(cumulative)
    step = float(cumulative[-1]) / n
    dtype = np.int32 if n < 2**31 else np.int64
    guide = np.zeros(n + 2, dtype=dtype)
    for lo in range(0, n, _GUIDE_CHUNK):
        k = np.ceil(cumulative[lo : lo + _GUIDE_CHUNK] / step).astype(np.int64) + 1
        np.minimum(k, n + 1, out=k)
        guide[k[0] : k[-1] + 1] += np.bincount(k - k[0]).astype(dtype)  # sorted input: k too
    np.cumsum(guide, out=guide)
    return guide[: n + 1], step


def guided_search(
    cumulative: np.ndarray, guide: np.ndarray, step: float, x: np.ndarray
) -> np.ndarray:
    """``np.searchsorted(cumulative, x, side="right")`` exactly, O(1) expected per value.

    Start at the guide entry of ``x``'s bucket and step right while ``cumulative[i] <= x``: a
    bucket holds about one sample on average whatever the weights (Chen & Asau, 1974). Values
    still walking after ``_WALK`` passes (long runs of zero weights) finish by bisection.
    """
    n = len(cumulative)
    b = np.minimum((x / step).astype(np.int64), len(guide) - 1)
    b -= x < b * step  # rounding: never start past the answer
    i = guide[b].astype(np.int64)
    todo = np.flatnonzero(i < n)
    for _ in range(_WALK):
        if not todo.size:
            return i
        todo = todo[cumulative[i[todo]] <= x[todo]]
        i[todo] += 1
        todo = todo[i[todo] < n]
    if todo.size:
        i[todo] = np.searchsorted(cumulative, x[todo], side="right")
    return i


@dataclass(frozen=True)
class WeightedIID:
    """i.i.d. draws with probability proportional to per-sample weights (with replacement).

    Inverse-CDF on the float64 cumulative weights, searched through a guide table: O(1)
    expected a draw (two random reads), no 2**24 category limit; 12 bytes a sample.
    """

    cumulative: np.ndarray
    num_samples: int
    guide: np.ndarray
    step: float

    @classmethod
    def from_weights(cls, weights: np.ndarray, num_samples: int) -> WeightedIID:
        cumulative = np.cumsum(weights, dtype=np.float64)
        return cls(cumulative, num_samples, *guide_table(cumulative))

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        x = uniform(make_key(seed, epoch, IID), positions) * self.cumulative[-1]
        idx = guided_search(self.cumulative, self.guide, self.step, x)
        # u * total can round up to total; the last positive weight takes that draw.
        last = int(np.searchsorted(self.cumulative, self.cumulative[-1], side="left"))
        return np.minimum(idx, last)


@dataclass(frozen=True)
class ClassIID:
    """Class-first i.i.d. draws: a class by its share, then a member uniformly. O(1) a draw."""

    index: GroupIndex
    shares: np.ndarray
    num_samples: int

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        cum = np.cumsum(self.shares)
        u = uniform(make_key(seed, epoch, IID), positions)
        last = int(np.flatnonzero(self.shares > 0)[-1])
        cls = np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), last)
        sizes = self.index.sizes[cls]
        j = (uniform(make_key(seed, epoch, MEMBER), positions) * sizes).astype(np.int64)
        return self.index.members[self.index.offsets[cls] + np.minimum(j, sizes - 1)].astype(
            np.int64
        )


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
    return index.members[index.offsets[cls] + j].astype(np.int64)


@dataclass
class Stratified:
    """Exact class counts per epoch in a random order; members cycle without replacement.

    Each epoch (and each continuation block of ``num_samples`` positions past its end) holds
    ``largest_remainder(num_samples, shares)`` draws of each class; the order comes from
    :func:`distsampler.interleave.stratified_ranks`, shuffled within windows of ``STRATUM``
    positions whose class mix stays within one of the shares.

    * ``replacement=True``: class ``c`` walks one endless member stream across epochs (block
      ``b`` of epoch ``e`` continues where the previous left off), so the fewest epochs see every
      member, and no member repeats before its cycle is used up.
    * ``replacement=False``: every class takes a fresh permutation per epoch (and per
      continuation block), so no index repeats within the first ``num_samples`` positions.
    """

    index: GroupIndex
    shares_for_epoch: object  # callable epoch -> shares (C,)
    num_samples: int
    replacement: bool = True
    _counts: dict = field(default_factory=dict, repr=False)

    def counts(self, epoch: int) -> np.ndarray:
        if epoch not in self._counts:
            self._counts[epoch] = largest_remainder(self.num_samples, self.shares_for_epoch(epoch))
        return self._counts[epoch]

    def _stream_base(self, epoch: int) -> np.ndarray:
        if getattr(self.shares_for_epoch, "epoch_dependent", False):
            return sum((self.counts(e) for e in range(epoch)), np.zeros(len(self.index.names), int))
        return epoch * self.counts(epoch)

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
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


@dataclass
class WeightedWithoutReplacement:
    """Weighted sampling without replacement (successive draws proportional to what is left).

    Efraimidis-Spirakis: give index ``i`` the key ``E_i / w_i`` with ``E_i ~ Exp(1)`` from a
    counter-based uniform; the order of increasing keys is distributed exactly as
    ``torch.multinomial(w, n, replacement=False)``. Positions past ``num_samples`` start a new
    round with fresh keys. Trade-off: the order needs every key, so each rank scans all ``N``
    weights once per epoch (in chunks of 4M) and keeps the ``num_samples`` winners, cached for
    the epoch; the labels path (stratified) avoids this.
    """

    weights: np.ndarray
    num_samples: int
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.positive = int(np.count_nonzero(self.weights))

    def _chunks(self, key: int):
        """``(indices, keys)`` of the positive weights, 4M samples at a time."""
        n = len(self.weights)
        dtype = np.int32 if n < 2**31 else np.int64
        for lo in range(0, n, _WOR_CHUNK):
            w = np.asarray(self.weights[lo : lo + _WOR_CHUNK], dtype=np.float64)
            idx = (np.flatnonzero(w > 0) + lo).astype(dtype)
            e = -np.log1p(-uniform(key, idx))  # Exp(1); uniform < 1 so log1p is finite
            yield idx, e / w[idx - lo]

    def _order(self, seed: int, epoch: int, rnd: int) -> np.ndarray:
        """The round's first ``num_samples`` indices, by increasing key (cached per round)."""
        if (seed, epoch, rnd) in self._cache:
            return self._cache[(seed, epoch, rnd)]
        self._cache.clear()
        key, need = make_key(seed, epoch, WOR, rnd), self.num_samples
        if need >= self.positive:  # every positive weight is drawn: one array, one sort
            parts = list(self._chunks(key))
            idx = np.concatenate([i for i, _ in parts])
            keys = np.concatenate([k for _, k in parts])
            del parts
        else:  # keep the `need` smallest keys seen so far
            idx, keys = np.empty(0, dtype=np.int32), np.empty(0)
            for ci, ck in self._chunks(key):
                keys, idx = np.concatenate([keys, ck]), np.concatenate([idx, ci])
                if len(keys) > need:
                    part = np.argpartition(keys, need - 1)[:need]
                    keys, idx = keys[part], idx[part]
        order = idx[np.argsort(keys, kind="stable")]
        self._cache[(seed, epoch, rnd)] = order
        return order

    def draw(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        rnd, local = np.divmod(positions, self.num_samples)
        out = np.empty(len(positions), dtype=np.int64)
        for r in sorted_unique(rnd):
            sel = rnd == r
            out[sel] = self._order(seed, epoch, int(r))[local[sel]]
        return out

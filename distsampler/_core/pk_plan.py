"""The class-batch plan: ``(seed, epoch, micro-batch) -> P classes x K members``.

Global micro-batch ``m`` holds the class *slots* ``s = m * P + p`` (``p < P``) of one class
sequence per epoch, and ``K`` members of each slot's class.

The class sequence of an epoch (``C`` eligible classes, ``H = C // 2``)
-----------------------------------------------------------------------
Slots are cut into *cycles* of ``C``: slot ``s`` is position ``i = s % C`` of cycle
``c = s // C``. The epoch draws one permutation ``pi`` of the classes (key ``(seed, epoch)``);
its first ``H`` classes are the *front* half ``F``, the other ``C - H`` the *back* half ``B``.
Every cycle ``c`` lists ``F`` in a fresh order (a permutation of ``[0, H)`` keyed by
``(c, 0)``) and then ``B`` in a fresh order (keyed by ``(c, 1)``). So:

* **Each cycle holds every class once**: an epoch of ``L = M * P`` slots is ``L // C`` whole
  cycles and the first ``L % C`` slots of the next, so every class is chosen ``L // C`` or
  ``L // C + 1`` times (every class at least once when ``L >= C``, the default).
* **Any ``H`` consecutive slots hold distinct classes.** Proof: a window of ``D <= H`` slots
  inside one cycle is distinct (a cycle is a permutation). A window across the seam of cycles
  ``c`` and ``c + 1`` takes the last ``a`` slots of cycle ``c`` (positions ``>= C - a >= C - H
  >= H``: all in ``B``) and the first ``D - a <= H`` slots of cycle ``c + 1`` (positions
  ``< H``: all in ``F``); ``F`` and ``B`` are disjoint. A window of ``D <= H < C`` slots spans
  at most one seam. So a global step of ``W`` ranks x ``P`` classes (``W * P`` consecutive
  slots) has ``W * P`` distinct classes whenever ``W * P <= C // 2``, for every ``W``, and the
  plan never needs to know ``W``; ``P <= C // 2`` makes every micro-batch distinct at any ``W``.
  Past the bound (``W * P > C // 2``) a class can sit on two ranks of a step near a seam
  (each local batch still has ``P`` distinct classes).
* The split into halves is redrawn every epoch, so which classes meet in a batch mixes across
  epochs; inside one epoch a class of ``F`` meets one of ``B`` only in batches around the
  middle of a cycle (the price of the seam guarantee at ``C // 2``).

Members
-------
Class ``g`` walks one member stream across the whole run (:func:`~distsampler._core.plan.
cycled_members`: a fresh permutation of its members per member cycle), ``K`` positions per time
it is chosen: the ``t``-th choice of ``g`` (counted from the run's start) reads positions
``t * K .. t * K + K - 1``. Within epoch ``e``, the choice at cycle ``c`` is ``t = base_e[g] +
c``, where ``base_e[g]`` counts ``g``'s choices in epochs ``< e``: ``e * (L // C)`` plus the
epochs whose partial last cycle reached ``g``. That part is a closed form, so resuming any
epoch costs the same: the ``r = L % C`` classes of epoch ``e``'s partial cycle are the window
``e * r .. e * r + r - 1`` (modulo ``C``) of one fixed order of the classes (keyed by the seed
alone), listed first in each half of that cycle; the windows tile the circle, so the class at
position ``q`` of that order had ``max(0, ceil((e * r - q) / C))`` extra choices before ``e``
(and over any ``C`` consecutive epochs every class gets exactly ``r`` of them).
A class with ``>= K`` members shows ``K`` distinct members per batch: when a block
straddles a member-cycle seam, the block takes the first ``K`` distinct members of the
``2K - 1`` positions from its start (the next cycle's first ``K`` are distinct,
so they suffice). A class with ``n < K`` members shows all of them every time it is chosen,
each ``K // n`` or ``K // n + 1`` times, in a fresh order per choice. With multi-label data
a sample chosen through two classes of the same micro-batch appears once: the later slot takes
its class's following members.

With ``class_weights`` (:class:`WeightedPKPlan`) the class sequence is instead built per epoch
with exact counts by largest remainder, spread by stride scheduling; see that class.

Slots past the epoch (``m >= epoch_batches``, the rounding of the last global step) continue
the same cycles; their member blocks overlap the next epoch's first ones (padding, as
everywhere in distsampler).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .index_store import GroupStore as GroupIndex
from .keyed import derive, hash64, make_key, permute, uniform
from .plan import cycled_members, largest_remainder

__all__ = ["PK_PLAN_VERSION", "PKPlan", "WeightedPKPlan"]

#: Version of what a seed gives for class batches (recorded in a state, refused if different).
PK_PLAN_VERSION = 2  # 2: the partial cycle rotates through a fixed order (O(1) resume)
_ORDER, _MEMBERS, _TAILS = 6, 7, 8  # key streams (beside plan.py's 0..5)


class PKPlan:
    """Class batches: ``P`` distinct classes x ``K`` members per global micro-batch.

    Args:
        index: the classes and their members.
        eligible: codes of the classes that can be chosen (sorted; ``2 * P <= len``).
        classes_per_batch: ``P``.
        samples_per_class: ``K``.
        epoch_batches: global micro-batches ``M`` of one epoch.
    """

    def __init__(
        self,
        index: GroupIndex,
        eligible: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        epoch_batches: int,
    ) -> None:
        self.index = index
        self.eligible = np.asarray(eligible, dtype=np.int64)
        self.P, self.K = int(classes_per_batch), int(samples_per_class)
        self.C = len(self.eligible)
        self.H = self.C // 2
        if not 1 <= self.P <= self.H:
            raise ValueError(f"classes_per_batch should be in [1, {self.H}], but got {self.P}")
        self.epoch_batches = int(epoch_batches)
        self.cycles, self.rest = divmod(self.epoch_batches * self.P, self.C)
        self._bases: dict[tuple[int, int], np.ndarray] = {}

    # -- classes ---------------------------------------------------------------------------
    def classes(self, seed: int, epoch: int, slots: np.ndarray) -> np.ndarray:
        """Class code at each epoch slot (int64 array ``>= 0``)."""
        return self._classes_and_tails(seed, epoch, np.asarray(slots, dtype=np.int64))[0]

    def _classes_and_tails(self, seed: int, epoch: int, s: np.ndarray):
        """Class code at each slot, and its position in the run's tail order (``-1``: none)."""
        c, i = np.divmod(s, self.C)
        back = i >= self.H
        local = np.where(back, i - self.H, i)
        n = np.where(back, self.C - self.H, self.H)
        key = make_key(seed, epoch, _ORDER)
        within = permute(local, n, derive(key, 1, c, back.astype(np.int64)))
        if not self.rest:  # every epoch whole cycles: one permutation of the classes
            pos = np.where(back, within + self.H, within)
            return self.eligible[permute(pos, self.C, derive(key, 0))], None
        # The partial cycle (c == cycles) lists the epoch's tail classes first in each half.
        part = c == self.cycles
        if part.any():
            k = np.where(back, max(0, self.rest - self.H), min(self.rest, self.H))[part]
            lp, np_ = local[part], n[part]
            head = lp < k
            sub = derive(key, 5, back[part].astype(np.int64))
            w = np.where(
                head,
                permute(np.where(head, lp, 0), np.maximum(k, 1), sub),
                k + permute(np.where(head, 0, lp - k), np.maximum(np_ - k, 1), derive(sub, 1)),
            )
            within[part] = w
        pos = np.where(back, within + self.H, within)
        q = self._tail_position(seed, epoch, pos)
        return self.eligible[self._sigma(seed, q)], q

    def _tail_position(self, seed: int, epoch: int, pos: np.ndarray) -> np.ndarray:
        """Position in the run's tail order of the class at epoch position ``pos``.

        The epoch's order lists its ``rest`` tail classes (tail positions ``e * rest ..
        e * rest + rest - 1``, modulo ``C``: a window that rotates through one fixed order of
        the classes) first, each part shuffled; so a class's extra choices over the epochs
        before ``e`` are a closed form of its tail position (:meth:`choices`).
        """
        C, r = self.C, self.rest
        key = make_key(seed, epoch, _ORDER)
        start = (epoch % C) * r
        head = pos < r
        off = np.where(
            head,
            permute(np.where(head, pos, 0), r, derive(key, 2)),
            r + permute(np.where(head, 0, pos - r), max(1, C - r), derive(key, 3)),
        )
        return (start + off) % C

    def _sigma(self, seed: int, q: np.ndarray) -> np.ndarray:
        """The run's fixed order of the classes (eligible index at tail position ``q``)."""
        return permute(q, self.C, make_key(seed, _TAILS))

    def _extra_before(self, epoch: int, q: np.ndarray) -> np.ndarray:
        """Epochs before ``epoch`` whose tail window held tail position ``q``: the windows
        tile ``[0, epoch * rest)`` around the circle of ``C`` positions."""
        covered = epoch * self.rest
        return np.maximum(0, -(-(covered - q) // self.C))

    def _classes_and_times(self, seed: int, epoch: int, slots: np.ndarray):
        """Class at each slot and how many times it was chosen before (from the run's start)."""
        cls, q = self._classes_and_tails(seed, epoch, slots)
        before = epoch * self.cycles + (0 if q is None else self._extra_before(epoch, q))
        return cls, before + slots // self.C

    def choices(self, seed: int, epoch: int) -> np.ndarray:
        """Times each class (by code) was chosen in the epochs before ``epoch`` (int64), in
        closed form: ``epoch * cycles`` plus the tail windows that held the class."""
        base = np.zeros(len(self.index.sizes), dtype=np.int64)
        base[self.eligible] = epoch * self.cycles
        if self.rest:
            q = np.arange(self.C, dtype=np.int64)
            base[self.eligible[self._sigma(seed, q)]] += self._extra_before(epoch, q)
        return base

    def _choices_by_sum(self, seed: int, epoch: int) -> np.ndarray:
        """:meth:`choices` summed epoch by epoch (its definition; tests compare the two)."""
        if (seed, epoch) in self._bases:
            return self._bases[(seed, epoch)]
        num = len(self.index.sizes)
        done = [e for (sd, e) in self._bases if sd == seed and e < epoch]
        start = max(done) if done else 0
        base = self._bases[(seed, start)].copy() if done else np.zeros(num, dtype=np.int64)
        per_epoch = np.zeros(num, dtype=np.int64)
        per_epoch[self.eligible] = self.cycles
        tail = self.cycles * self.C + np.arange(self.rest, dtype=np.int64)
        for e in range(start, epoch):
            base += per_epoch
            if self.rest:
                np.add.at(base, self.classes(seed, e, tail), 1)
        _remember(self._bases, (seed, epoch), base)
        return base

    def per_epoch_counts(self, seed: int, epoch: int) -> np.ndarray:
        """Times each class (by code) is chosen in the epoch's ``M * P`` slots (exact)."""
        counts = np.zeros(len(self.index.sizes), dtype=np.int64)
        counts[self.eligible] = self.cycles
        if self.rest:
            tail = self.cycles * self.C + np.arange(self.rest, dtype=np.int64)
            np.add.at(counts, self.classes(seed, epoch, tail), 1)
        return counts

    # -- members ---------------------------------------------------------------------------
    def _blocks(self, seed: int, cls: np.ndarray, start: np.ndarray) -> np.ndarray:
        """``K`` members per (class, stream start): distinct when the class has ``>= K``."""
        K = self.K
        key = make_key(seed, _MEMBERS)
        pos = start[:, None] + np.arange(K)
        out = cycled_members(self.index, np.repeat(cls, K), pos.ravel(), key).reshape(-1, K)
        sizes = self.index.sizes[cls]
        seam = (sizes >= K) & (start % np.maximum(sizes, 1) + K > sizes)
        rows = np.flatnonzero(seam)
        if rows.size and K > 1:
            L = 2 * K - 1
            wide = start[rows, None] + np.arange(L)
            got = cycled_members(self.index, np.repeat(cls[rows], L), wide.ravel(), key)
            got = got.reshape(-1, L)
            first = ~(got[:, :, None] == got[:, None, :]).any(axis=2, where=_lower(L))
            take = np.argsort(~first, axis=1, kind="stable")[:, :K]
            out[rows] = np.take_along_axis(got, take, axis=1)
        rows = np.flatnonzero(sizes < K)
        if rows.size:  # every member, each K // n or K // n + 1 times, a fresh order per choice
            n = sizes[rows, None]
            j = permute(np.arange(K) % n, n, derive(key, 1, cls[rows, None], start[rows, None]))
            out[rows] = self.index.member(cls[rows, None], j)
        return out

    def draw(self, seed: int, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """Global micro-batches as an ``(n, P * K)`` int64 array, class by class."""
        m = np.asarray(micro_batches, dtype=np.int64).reshape(-1)
        P, K = self.P, self.K
        slots = (m[:, None] * P + np.arange(P)).ravel()
        cls, t = self._classes_and_times(seed, epoch, slots)
        items = self._blocks(seed, cls, t * K).reshape(len(m), P * K)
        if self.index.multilabel:
            self._distinct(seed, items, cls.reshape(len(m), P), t.reshape(len(m), P))
        return items

    def _distinct(self, seed: int, items: np.ndarray, cls: np.ndarray, t: np.ndarray) -> None:
        """A sample chosen through two classes of one micro-batch stays once (in place)."""
        K = self.K
        key = make_key(seed, _MEMBERS)
        ordered = np.sort(items, axis=1)
        sizes = self.index.sizes
        for i in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
            seen: set[int] = set()
            for s in range(items.shape[1]):
                x = int(items[i, s])
                if x in seen:
                    g = int(cls[i, s // K])
                    nxt = int(t[i, s // K]) * K + 2 * K  # past the block's own window
                    for _ in range(2 * int(sizes[g]) + 1):  # two cycles hold every member
                        y = int(cycled_members(self.index, np.array([g]), np.array([nxt]), key)[0])
                        nxt += 1
                        if y not in seen:
                            x = y
                            break
                    items[i, s] = x
                seen.add(x)


def _lower(n: int) -> np.ndarray:
    """``[i, j]`` true for ``j < i``: compare each entry with the ones before it."""
    return np.tril(np.ones((n, n), dtype=bool), -1)[None]


class WeightedPKPlan(PKPlan):
    """Class batches with classes chosen in proportion to shares, exact counts per epoch.

    Epoch ``e`` (and each continuation block of ``L = M * P`` slots past it) holds
    ``largest_remainder(L, shares)`` choices of each class. Their order is *stride
    scheduling*: the ``j``-th choice of class ``g`` gets the time ``(j + u_g) / n_g``
    (``u_g`` uniform, keyed by ``(seed, epoch, block, g)``) and the slots list the choices by
    time, so a class's choices sit evenly through the epoch, about ``L / n_g`` slots apart.
    A class never takes more than one slot of a micro-batch (``n_g <= M`` is checked); when
    two choices of a class land in one micro-batch, the later one is swapped with the nearest
    later (else earlier) slot whose class is new to that micro-batch and that takes no repeat
    to the other one.

    Trap: across the ranks of a step the classes are spread, not guaranteed distinct: a class
    chosen more than ``M / W`` times an epoch cannot be once per step of ``W`` ranks. The
    sequence is built per epoch (``O(L log L)``, cached); members cycle across epochs as in
    :class:`PKPlan`.
    """

    def __init__(
        self,
        index: GroupIndex,
        eligible: np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        epoch_batches: int,
        shares: Callable[[int], np.ndarray],
        epoch_dependent: bool = False,
    ) -> None:
        super().__init__(index, eligible, classes_per_batch, samples_per_class, epoch_batches)
        self.shares = shares  # epoch -> shares over all classes (0 where not eligible)
        self.epoch_dependent = epoch_dependent
        self.L = self.epoch_batches * self.P
        self._counts: dict[int, np.ndarray] = {}
        self._seqs: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def per_epoch_counts(self, seed: int, epoch: int) -> np.ndarray:
        if not self.epoch_dependent:
            epoch = 0  # the same counts every epoch
        if epoch in self._counts:
            return self._counts[epoch]
        share = np.zeros(len(self.index.sizes))
        share[self.eligible] = np.asarray(self.shares(epoch), dtype=np.float64)[self.eligible]
        if share.sum() <= 0:
            raise ValueError("class_weights give every eligible class a zero share")
        counts = largest_remainder(self.L, share)
        if counts.max() > self.epoch_batches:
            g = int(np.argmax(counts))
            raise ValueError(
                f"class_weights give class {self.index.names[g]!r} {int(counts[g])} choices "
                f"in an epoch of {self.epoch_batches} micro-batches: more than one per "
                "micro-batch; lower classes_per_batch or flatten the weights"
            )
        _remember(self._counts, epoch, counts)
        return counts

    def choices(self, seed: int, epoch: int) -> np.ndarray:
        if not self.epoch_dependent:
            return epoch * self.per_epoch_counts(seed, 0)
        if (seed, epoch) in self._bases:
            return self._bases[(seed, epoch)]
        done = [e for (sd, e) in self._bases if sd == seed and e < epoch]
        start = max(done) if done else 0
        base = self._bases[(seed, start)].copy() if done else np.zeros_like(self.index.sizes)
        for e in range(start, epoch):  # a schedule: the sum over earlier epochs
            base = base + self.per_epoch_counts(seed, e)
        _remember(self._bases, (seed, epoch), base)
        return base

    def _sequence(self, seed: int, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Class and occurrence number of each slot of one block of ``L`` slots."""
        k = (seed, epoch, block)
        if k not in self._seqs:
            counts = self.per_epoch_counts(seed, epoch)
            cls = np.repeat(np.arange(len(counts)), counts)
            occ = np.arange(len(cls)) - np.repeat(np.cumsum(counts) - counts, counts)
            key = make_key(seed, epoch, _ORDER, block)
            u = uniform(derive(key, 2), np.arange(len(counts)))
            time = (occ + u[cls]) / counts[cls]
            order = np.lexsort((hash64(derive(key, 3), cls), time))
            cls, occ = cls[order], occ[order]
            _repair(cls, occ, self.P)
            if len(self._seqs) > 8:
                self._seqs.clear()
            self._seqs[k] = (cls, occ)
        return self._seqs[k]

    def _classes_and_times(self, seed, epoch, slots):
        block, local = np.divmod(slots, self.L)
        cls = np.empty(len(slots), dtype=np.int64)
        t = np.empty(len(slots), dtype=np.int64)
        counts = self.per_epoch_counts(seed, epoch)
        base = self.choices(seed, epoch)
        for b in np.unique(block):
            sel = block == b
            seq, occ = self._sequence(seed, epoch, int(b))
            cls[sel] = seq[local[sel]]
            t[sel] = base[cls[sel]] + int(b) * counts[cls[sel]] + occ[local[sel]]
        return cls, t

    def classes(self, seed: int, epoch: int, slots: np.ndarray) -> np.ndarray:
        return self._classes_and_times(seed, epoch, np.asarray(slots, dtype=np.int64))[0]


def _remember(cache: dict, key, value: np.ndarray, keep: int = 4) -> None:
    """Cache ``value`` (an array per class) under ``key``, keeping the ``keep`` largest keys
    (a long run must not hold one array per epoch)."""
    cache[key] = value
    for old in sorted(cache)[:-keep]:
        del cache[old]


def _repair(cls: np.ndarray, occ: np.ndarray, P: int) -> None:
    """Swap later choices so that no micro-batch (``P`` slots) holds a class twice (in place)."""
    n = len(cls)
    for m0 in range(0, n, P):
        batch = cls[m0 : m0 + P]
        if len(np.unique(batch)) == len(batch):
            continue
        for s in range(m0, min(m0 + P, n)):
            here = cls[m0 : m0 + P]
            if int(np.sum(here == cls[s])) < 2 or s == m0 + int(np.argmax(here == cls[s])):
                continue
            for s2 in [*range(m0 + P, n), *range(m0)]:  # later slots first, then earlier
                m2 = (s2 // P) * P
                other = np.delete(cls[m2 : m2 + P], s2 - m2)
                if cls[s2] not in here and cls[s] not in other:
                    cls[s], cls[s2] = cls[s2], cls[s]
                    occ[s], occ[s2] = occ[s2], occ[s]
                    break

"""Stratified class order with random access: which class fills each position of a block.

Problem: a block of ``M`` positions must hold exactly ``counts[c]`` draws of class ``c`` in a
random order, and the draws of each class must walk through its member cycles in stream order
(every member of a class once before any twice). The classic answer (permute the multiset) gives
the class at a position in O(1) but not how many draws of that class came before it, which is
what the cycle needs. Materialising the block instead costs O(M) on every rank.

Construction (pure integers, exact):

1. **Beatty tree.** Classes are the leaves of a balanced binary tree. A node with ``n`` draws of
   which ``a`` go left spreads them with a Beatty sequence of random phase ``phi``: among its first
   ``i`` draws, ``floor((i * a + phi) / n)`` go left. This gives, in O(log C) per query and in
   closed form, the class of a position, the number of class-``c`` draws before any position
   (``prefix``) and the position of the ``k``-th class-``c`` draw (``position_of``).
2. **Segments.** The block is cut wherever some class starts a new member cycle (at the
   ``position_of`` its first draw of the cycle). Between two cuts every class stays inside one
   cycle, so the draws of a segment may come in any order: each segment is shuffled with a keyed
   bijection (:func:`distsampler.keyed.permute`). Class counts per segment come from ``prefix``.

3. **Windows** (optional): cuts every ``window`` positions too. The Beatty interleave keeps the
   class mix of every window within one of its share (per tree level), so cutting there makes
   mini-batches of that size nearly exact (stratified sampling proper) while the order inside
   each window stays random.

The result: exact per-block counts, a random order inside segments, cycle order across them,
and per-query cost O(C log C) per segment plus O(log) per position, independent of ``M``.
Segments are short only when a class cycles fast (a tiny class drawn often); a class of one
member never cuts (it has nothing to cycle through).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keyed import derive, hash64, permute

__all__ = ["BeattyTree", "stratified_ranks"]


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique`` of an already sorted array, in one pass (no sort, no hashing)."""
    x = np.asarray(x)
    if x.size == 0:
        return x
    keep = np.empty(x.size, dtype=bool)
    keep[0] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


def _ceil_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -((-x) // y)


@dataclass(frozen=True)
class BeattyTree:
    """Exact interleave of ``counts`` (one block) as a binary tree of Beatty splits.

    Attributes (one entry per node; node 0 is the root): ``n`` draws under the node, ``a`` of
    them to the left child, ``phase`` in ``[0, n)``, ``left`` / ``right`` child ids (-1 at
    leaves) and ``leaf`` class id (-1 at inner nodes). ``paths[c]`` lists ``(node, went_left)``
    from the root down to class ``c``'s leaf.
    """

    n: np.ndarray
    a: np.ndarray
    phase: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    paths: tuple[tuple[tuple[int, bool], ...], ...]

    @classmethod
    def build(cls, counts: np.ndarray, key: int) -> BeattyTree:
        counts = np.asarray(counts, dtype=np.int64)
        n, a, left, right, leaf = [], [], [], [], []
        paths: list[tuple[tuple[int, bool], ...]] = [()] * len(counts)

        def node(lo: int, hi: int, path: tuple[tuple[int, bool], ...]) -> int:
            i = len(n)
            n.append(int(counts[lo:hi].sum()))
            a.append(0)
            left.append(-1)
            right.append(-1)
            leaf.append(-1)
            if hi - lo == 1:
                leaf[i] = lo
                paths[lo] = path
                return i
            mid = (lo + hi) // 2
            a[i] = int(counts[lo:mid].sum())
            left[i] = node(lo, mid, (*path, (i, True)))
            right[i] = node(mid, hi, (*path, (i, False)))
            return i

        node(0, len(counts), ())
        n_arr = np.array(n, dtype=np.int64)
        ph = (hash64(key, np.arange(len(n))) % np.maximum(n_arr, 1).astype(np.uint64)).astype(
            np.int64
        )
        return cls(
            n_arr,
            np.array(a, dtype=np.int64),
            ph,
            np.array(left, dtype=np.int64),
            np.array(right, dtype=np.int64),
            np.array(leaf, dtype=np.int64),
            tuple(paths),
        )

    def _went_left_before(self, node: int, i: np.ndarray, go_left: bool) -> np.ndarray:
        """Draws among the node's first ``i`` that go to the given side."""
        n, a, ph = max(int(self.n[node]), 1), self.a[node], self.phase[node]  # n = 0: no draws
        lcount = (i * a + ph) // n
        return lcount if go_left else i - lcount

    def prefix(self, c: int, p: np.ndarray) -> np.ndarray:
        """Number of class-``c`` draws among positions ``< p`` (``p`` in ``[0, M]``)."""
        i = np.asarray(p, dtype=np.int64)
        for node, go_left in self.paths[c]:
            i = self._went_left_before(node, i, go_left)
        return i

    def position_of(self, c: int, k: np.ndarray) -> np.ndarray:
        """Position of the ``k``-th (0-based) class-``c`` draw."""
        k = np.asarray(k, dtype=np.int64)
        for node, go_left in reversed(self.paths[c]):
            n, a, ph = self.n[node], self.a[node], self.phase[node]
            if go_left:  # smallest i with floor(((i + 1) a + ph) / n) >= k + 1
                k = _ceil_div((k + 1) * n - ph, a) - 1
            else:  # the right side is a Beatty sequence with a' = n - a, ph' = n - 1 - ph
                k = _ceil_div((k + 1) * n - (n - 1 - ph), n - a) - 1
        return k

    def classes(self, p: np.ndarray) -> np.ndarray:
        """Class of each position (the un-shuffled Beatty interleave)."""
        i = np.asarray(p, dtype=np.int64).copy()
        node = np.zeros(i.shape, dtype=np.int64)
        while True:
            inner = self.leaf[node] < 0
            if not inner.any():
                return self.leaf[node]
            nd, ii = node[inner], i[inner]
            n, a, ph = np.maximum(self.n[nd], 1), self.a[nd], self.phase[nd]
            before = (ii * a + ph) // n
            is_left = ((ii + 1) * a + ph) // n > before
            i[inner] = np.where(is_left, before, ii - before)
            node[inner] = np.where(is_left, self.left[nd], self.right[nd])


def stratified_ranks(
    positions: np.ndarray,
    counts: np.ndarray,
    cycle: np.ndarray,
    base: np.ndarray,
    key: int,
    window: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class and per-class rank of each position of one block.

    Args:
        positions: sorted positions in ``[0, M)`` with ``M = counts.sum()``.
        counts: draws of each class in the block.
        cycle: cycle length of each class (its number of members); ``<= 1`` means no cuts.
        base: the class stream index of each class's first draw in this block; cycle ``q`` of
            class ``c`` covers stream indices ``[q * cycle[c], (q + 1) * cycle[c])``.
        key: the block's key (phases and segment shuffles derive from it).
        window: if positive, also cut at every multiple of ``window``: the order is then shuffled
            only within windows, whose class mix the Beatty tree keeps within one of the share
            (per tree level), so batches of ``window`` positions barely vary. Only windows that
            hold a requested position are materialised.

    Returns:
        ``(cls, k)``: class id and rank ``k`` in ``[0, counts[cls])`` of each position. For each
        class the ranks over the whole block are a bijection onto ``[0, counts[c])`` and the
        cycle ``(base + k) // cycle`` never decreases with the position.
    """
    pos = np.asarray(positions, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    num = len(counts)
    total = int(counts.sum())
    if pos.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tree = BeattyTree.build(counts, int(derive(key, 0)))
    lo, hi = int(pos[0]), int(pos[-1]) + 1
    starts, ends, cuts = [0], [total], []
    for c in range(num):
        cyc, cnt, b = int(cycle[c]), int(counts[c]), int(base[c])
        if cyc <= 1 or cnt == 0:
            continue
        k_lo, k_hi = int(tree.prefix(c, lo)), int(tree.prefix(c, hi))
        if k_lo > 0:  # the cycle of the last draw before lo began at or before it
            k_start = (k_lo - 1) - (b + k_lo - 1) % cyc
            if k_start >= 0:
                starts.append(int(tree.position_of(c, k_start)))
        first = k_lo + (-(b + k_lo)) % cyc
        if first < k_hi:
            cuts.append(tree.position_of(c, np.arange(first, k_hi, cyc)))
        nxt = k_hi + (-(b + k_hi)) % cyc
        if nxt < cnt:
            ends.append(int(tree.position_of(c, nxt)))
    if window > 0:
        frames = sorted_unique(pos // window)
        starts.append(int(frames[0]) * window)
        ends.append(min(total, (int(frames[-1]) + 1) * window))
        cuts.append(np.minimum(np.concatenate([frames, frames + 1]) * window, total))
    seg0, seg_end = max(starts), min(ends)
    bounds = np.concatenate([[seg0, seg_end], *cuts]).astype(np.int64)
    bounds.sort()
    bounds = sorted_unique(bounds)
    bounds = bounds[(bounds >= seg0) & (bounds <= seg_end)]
    seg_start, seg_len = bounds[:-1], np.diff(bounds)
    # Per-class counts before each boundary: (J + 1, C).
    pre = np.stack([tree.prefix(c, bounds) for c in range(num)], axis=1)
    seg_counts = np.diff(pre, axis=0)  # (J, C)
    # Slot ranges of each (segment, class) laid end to end; non-decreasing once flattened.
    cls_start = seg_start[:, None] + np.cumsum(seg_counts, axis=1) - seg_counts  # (J, C)
    flat = cls_start.ravel()
    j = np.searchsorted(seg_start, pos, side="right") - 1
    slot = permute(pos - seg_start[j], seg_len[j], derive(key, 1, seg_start[j]))
    f = np.searchsorted(flat, seg_start[j] + slot, side="right") - 1
    cls = f % num
    k = pre[j, cls] + (seg_start[j] + slot - flat[f])
    return cls, k

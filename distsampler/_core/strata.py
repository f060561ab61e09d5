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
   closed form, the class and class rank of a position (:meth:`BeattyTree.locate`), the number of
   class-``c`` draws before any position (``prefix``) and the position of the ``k``-th class-``c``
   draw (``position_of``).
2. **Segments.** The block is cut wherever some class starts a new member cycle (at the
   ``position_of`` its first draw of the cycle). Between two cuts every class stays inside one
   cycle, so the draws of a segment may come in any order: position ``p`` of segment ``[s, e)``
   takes the class and rank of the Beatty position ``s + permute(p - s, e - s)``
   (:func:`distsampler._core.keyed.permute`, one key per segment). The cost per position is the
   shuffle plus one O(log C) descent of the tree, whatever the number of classes or segments.
3. **Windows** (optional): cuts every ``window`` positions too. The Beatty interleave keeps the
   class mix of every window within one of its share (per tree level), so cutting there makes
   mini-batches of that size nearly exact (stratified sampling proper) while the order inside
   each window stays random.

The result: exact per-block counts, a random order inside segments, cycle order across them,
and a cost independent of ``M``: per call O(C log C), plus O(log C) per cycle cut that can bound
a segment asked for, plus per position one shuffle and one O(log C) descent. Segments are short
only when a class cycles fast (a tiny class drawn often); a class of one member never cuts (it
has nothing to cycle through). The tree of a block is built once and cached (a rank asks for its
positions chunk by chunk).

Trade-offs: without windows a rank reading a sparse stride of a long block enumerates every cycle
cut between its first and last position (``share / cycle`` of them a position). With windows, a
class with more cycle starts there than twice the windows asked for finds its cuts window by
window instead (two prefix counts a window), so the work stays O(windows) per class. The
descent costs O(log C) gathers a position: 2 levels for 3 classes, 10 for 1000.

Exact arithmetic: products such as ``i * a`` reach ``M**2``. Up to ``M = 3037000499``
(``M**2 + M < 2**63``) they are plain int64; above it every ``floor((x * y + w) / d)`` is
computed exactly in uint64 from a precomputed ``floor(y * 2**64 / d)`` (a multiply-high, then at
most two corrections of the quotient), so every ``M <= 2**62`` is exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .keyed import derive, hash64, permute
from .sorting import sorted_unique

__all__ = ["BeattyTree", "stratified_ranks"]

#: Largest block with int64-exact products: ``_FAST**2 + _FAST < 2**63``.
_FAST = 3037000499
_CHUNK = 1 << 15
_M32, _S32 = np.uint64(0xFFFFFFFF), np.uint64(32)


def _mulhi(x: np.ndarray, f) -> np.ndarray:
    """High 64 bits of the 128-bit product of uint64 ``x`` and ``f`` (32-bit limbs)."""
    x0, x1 = x & _M32, x >> _S32
    f0, f1 = f & _M32, f >> _S32
    p01, p10 = x0 * f1, x1 * f0
    mid = ((x0 * f0) >> _S32) + (p01 & _M32) + (p10 & _M32)
    return x1 * f1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)


def _divmod_exact(x: np.ndarray, yr, wr, d, f) -> tuple[np.ndarray, np.ndarray]:
    """``divmod(x * yr + wr, d)`` for uint64 ``x < 2**63``, ``yr, wr < d <= 2**62`` and
    ``f = floor(yr * 2**64 / d)`` (arrays or scalars): no 128-bit type needed.

    ``mulhi(x, f)`` is at most ``x / 2**64 + 1 < 1.5`` below ``x * yr / d``, so the true
    remainder of that estimate lies in ``[0, 2.5 d)``: it fits uint64 (wrapping arithmetic gives
    it exactly) and two corrections finish the quotient.
    """
    with np.errstate(over="ignore"):
        q = _mulhi(x, f)
        r = x * yr + wr - q * d
        for _ in range(2):
            c = r >= d
            q += c
            r -= d * c
    return q, r


def _split(y: int, w: int, d: int) -> tuple[int, int, int, int, int]:
    """``(yq, yr, wq, wr, f)`` with ``y = yq d + yr``, ``w = wq d + wr``, ``f = yr 2**64 // d``."""
    yq, yr = divmod(y, d)
    wq, wr = divmod(w, d)
    return yq, yr, wq, wr, (yr << 64) // d


def _floor_lin(x: np.ndarray, y: int, w: int, d: int, xmax: int) -> np.ndarray:
    """``floor((x * y + w) / d)`` exactly for int64 ``0 <= x <= xmax`` and ints ``y, w >= 0``,
    ``d >= 1`` (int64 result)."""
    if xmax * y + w < 2**63:
        return (x * y + w) // d
    yq, yr, wq, wr, f = _split(y, w, d)
    q, _ = _divmod_exact(x.view(np.uint64), np.uint64(yr), np.uint64(wr), np.uint64(d), f)
    return q.view(np.int64) + x * yq + wq


def _table(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass(frozen=True)
class BeattyTree:
    """Exact interleave of ``counts`` (one block) as a binary tree of Beatty splits.

    Attributes (one entry per node; node 0 is the root, children follow their parent): ``n``
    draws under the node, ``a`` of them to the left child, ``phase`` in ``[0, n)``, ``left`` /
    ``right`` child ids (-1 at leaves) and ``leaf`` class id (-1 at inner nodes); :attr:`paths`
    lists each class's ``(node, went_left)`` steps from the root down. Every query is exact
    for totals up to ``2**62`` (see the module docstring).
    """

    n: np.ndarray
    a: np.ndarray
    phase: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    # Per-node tables of the vectorised queries, built once (see build).
    _down: dict = field(repr=False, compare=False, default_factory=dict)
    _up: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.n[0])

    @property
    def exact(self) -> bool:
        """Whether products may pass int64 (the uint64 exact path is used)."""
        return self.total > _FAST

    @property
    def depth(self) -> int:
        return self._down["depth"]

    @classmethod
    def build(cls, counts: np.ndarray, key: int) -> BeattyTree:
        """The tree of ``counts`` (classes split in halves, in order), phases from ``key``.

        Nodes are numbered in pre-order (a node, its left subtree, its right subtree): the
        subtree of ``L`` classes holds ``2 L - 1`` nodes, so a node's children sit at ``i + 1``
        and ``i + 2 (mid - lo)``. The numbering fixes the phases (``hash64(key, node)``), so it
        is part of every stratified plan. Built a level at a time with numpy: O(C) work in
        O(log C) vectorised steps (a 1,000-class tree in well under a millisecond).
        """
        sizes = np.asarray(counts, dtype=np.int64).ravel()
        num = len(sizes)
        shape = _shape(num)  # everything that depends only on the number of classes
        total_nodes = 2 * num - 1
        cs = np.zeros(num + 1, dtype=np.int64)
        np.cumsum(sizes, out=cs[1:])
        n = cs[shape["hi"]] - cs[shape["lo"]]
        a = np.where(shape["is_leaf"], 0, cs[shape["mid"]] - cs[shape["lo"]])
        left, right, leaf, parent = shape["left"], shape["right"], shape["leaf"], shape["parent"]
        ph = (hash64(key, np.arange(total_nodes)) % np.maximum(n, 1).astype(np.uint64)).astype(
            np.int64
        )
        tree = cls(n, a, ph, left, right, leaf)
        is_leaf = shape["is_leaf"]
        # Down tables: a step from node v sends i draws to floor((i * a + ph) / n) on the left.
        # A leaf sends everything "left" to itself (a = n), so descents need no masks.
        nn = np.maximum(n, 1)
        aa = np.where(is_leaf, nn, a)
        down = {
            "a": aa,
            "n": nn,
            "ph": ph,
            "thr": nn - aa,  # left iff rem >= thr
            "child": shape["child"],  # child[2 v + went_left]: one gather a level
            "depth": shape["depth"],
            "leaf": leaf,
            "levels": shape["levels"],
            "path": shape["path"],
            "path_left": shape["path_left"],
            "path_len": shape["path_len"],
        }
        # Up tables: the k-th draw of node v sits at floor((k * y + w) / d) of its parent; the
        # root maps k to itself (y = d = 1, w = 0), so ascents of unequal length need no masks.
        went_left = shape["went_left"]
        ys = n[parent]
        ws = np.where(went_left, ys - 1 - ph[parent], ph[parent])
        ds = np.maximum(np.where(went_left, a[parent], ys - a[parent]), 1)
        ys[0], ws[0], ds[0] = 1, 0, 1
        up = {"y": ys, "w": ws, "d": ds, "parent": parent, "leafnode": shape["leafnode"]}
        if tree.exact:  # uint64 remainders and reciprocals, int64 whole parts
            for t, cols in ((down, (aa, ph, nn)), (up, (ys, ws, ds))):
                per_node = zip(*(v.tolist() for v in cols), strict=True)
                yq, yr, wq, wr, f = zip(*(_split(y, w, d) for y, w, d in per_node), strict=True)
                t.update(yq=np.array(yq, np.int64), wq=np.array(wq, np.int64))
                t.update({k: np.array(v, np.uint64) for k, v in (("yr", yr), ("wr", wr), ("f", f))})
            down["n"], down["ph"], up["d"] = (v.astype(np.uint64) for v in (nn, ph, ds))
        tree._down.update(down)
        tree._up.update(up)
        return tree

    @property
    def paths(self) -> tuple[tuple[tuple[int, bool], ...], ...]:
        """``paths[c]``: ``(node, went_left)`` from the root down to class ``c``'s leaf."""
        return tuple(self._path(c) for c in range(len(self._up["leafnode"])))

    def _path(self, c: int) -> tuple[tuple[int, bool], ...]:
        t = self._down
        k = int(t["path_len"][c])
        return tuple(zip(t["path"][c, :k].tolist(), t["path_left"][c, :k].tolist(), strict=True))

    # -- scalar-class queries (one class, many positions or ranks) ---------------------------
    def prefix(self, c: int, p: np.ndarray) -> np.ndarray:
        """Number of class-``c`` draws among positions ``< p`` (``p`` in ``[0, M]``)."""
        i = np.asarray(p, dtype=np.int64)
        for node, go_left in self._path(c):
            n, a, ph = int(self.n[node]), int(self.a[node]), int(self.phase[node])
            lcount = _floor_lin(i, a, ph, max(n, 1), n)  # n = 0: no draws
            i = lcount if go_left else i - lcount
        return i

    def position_of(self, c: int, k: np.ndarray) -> np.ndarray:
        """Position of the ``k``-th (0-based) class-``c`` draw."""
        k = np.asarray(k, dtype=np.int64)
        return self.positions(np.full(k.shape, c, dtype=np.int64), k)

    # -- vectorised queries --------------------------------------------------------------------
    def _step(self, i: np.ndarray, nd) -> tuple[np.ndarray, np.ndarray]:
        """``divmod(i * a + ph, n)`` at nodes ``nd`` (int64 ``i``; ``nd`` array or int)."""
        t = self._down
        if not self.exact:
            x = i * t["a"][nd] + t["ph"][nd]
            q = x // t["n"][nd]
            return q, x - q * t["n"][nd]
        q, r = _divmod_exact(i.view(np.uint64), t["yr"][nd], t["ph"][nd], t["n"][nd], t["f"][nd])
        return q.view(np.int64) + i * t["yq"][nd], r.view(np.int64)

    def locate(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class of each position and its rank among that class's draws (the un-shuffled
        Beatty interleave): one descent of the tree, O(log C) per position."""
        p = np.asarray(p, dtype=np.int64)
        flat = p.ravel()
        cls, rank = np.empty_like(flat), np.empty_like(flat)
        t = self._down
        for lo in range(0, flat.size, _CHUNK):  # cache-sized pieces
            i = flat[lo : lo + _CHUNK]
            nd = 0  # every position starts at the root: scalars, no gathers
            for _ in range(self.depth):
                if self.exact:
                    q, r = self._step(i, nd)
                else:  # the int64 step inline: one gather per table, in place
                    n = t["n"][nd]
                    q = i * t["a"][nd]
                    q += t["ph"][nd]
                    r = q.copy()
                    q //= n
                    r -= q * n
                go_left = r >= t["thr"][nd]
                i = np.where(go_left, q, i - q)  # left: q draws went left before; right: i - q
                nd = t["child"][2 * nd + go_left]
            cls[lo : lo + _CHUNK] = t["leaf"][nd]
            rank[lo : lo + _CHUNK] = i
        return cls.reshape(p.shape), rank.reshape(p.shape)

    def classes(self, p: np.ndarray) -> np.ndarray:
        """Class of each position (the un-shuffled Beatty interleave)."""
        return self.locate(p)[0]

    def counts_before(self, p: int) -> np.ndarray:
        """``prefix(c, p)`` of every class at one position ``p``: ``(C,)`` int64."""
        cnt = np.zeros(len(self.n), dtype=np.int64)
        cnt[0] = p
        for lvl in self._down["levels"]:  # parents before children
            q, _ = self._step(cnt[lvl], lvl)
            cnt[self.left[lvl]] = q
            cnt[self.right[lvl]] = cnt[lvl] - q
        return cnt[self._up["leafnode"]]

    def prefix_many(self, cls: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``prefix(cls[i], p[i])`` for arrays of classes and positions (broadcast)."""
        return _chunked(self._prefix_many, cls, p)

    def _prefix_many(self, cls: np.ndarray, i: np.ndarray) -> np.ndarray:
        t = self._down
        one = cls.size and cls.min() == cls.max()  # one class: its path as scalars
        for level in range(self.depth):
            at = (int(cls[0]), level) if one else (cls, level)
            q, _ = self._step(i, t["path"][at])
            i = np.where(t["path_left"][at], q, i - q)
        return i

    def positions(self, cls: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Position of the ``k``-th (0-based) draw of class ``cls`` (arrays, broadcast)."""
        return _chunked(self._positions, cls, k)

    def _positions(self, cls: np.ndarray, k: np.ndarray) -> np.ndarray:
        t = self._up
        v = t["leafnode"][cls]
        for _ in range(self.depth):
            if self.exact:
                q, _ = _divmod_exact(
                    k.view(np.uint64), t["yr"][v], t["wr"][v], t["d"][v], t["f"][v]
                )
                k = q.view(np.int64) + k * t["yq"][v] + t["wq"][v]
            else:
                k = (k * t["y"][v] + t["w"][v]) // t["d"][v]
            v = t["parent"][v]
        return k


@functools.lru_cache(maxsize=8)
def _shape(num: int) -> dict:
    """The tree's shape for ``num`` classes (the same for any counts): node ranges, links,
    levels and per-class paths, built a level at a time and shared read-only by every tree."""
    total_nodes = 2 * num - 1
    node_lo = np.zeros(total_nodes, dtype=np.int64)
    node_hi = np.zeros(total_nodes, dtype=np.int64)
    node_mid = np.zeros(total_nodes, dtype=np.int64)
    left = np.full(total_nodes, -1, dtype=np.int64)
    right = np.full(total_nodes, -1, dtype=np.int64)
    leaf = np.full(total_nodes, -1, dtype=np.int64)
    parent = np.zeros(total_nodes, dtype=np.int64)
    depth_of = np.zeros(total_nodes, dtype=np.int64)
    leafnode = np.zeros(num, dtype=np.int64)
    levels: list[np.ndarray] = []  # inner nodes a level at a time, the root first
    ids = np.zeros(1, dtype=np.int64)
    lo, hi = np.zeros(1, dtype=np.int64), np.full(1, num, dtype=np.int64)
    d = 0
    while ids.size:
        node_lo[ids], node_hi[ids] = lo, hi
        depth_of[ids] = d
        one = hi - lo == 1
        leaf[ids[one]] = lo[one]
        leafnode[lo[one]] = ids[one]
        inner = ~one
        ids, lo, hi = ids[inner], lo[inner], hi[inner]
        if ids.size:
            levels.append(ids)
        mid = (lo + hi) // 2
        node_mid[ids] = mid
        lc, rc = ids + 1, ids + 2 * (mid - lo)
        left[ids], right[ids] = lc, rc
        parent[lc] = parent[rc] = ids
        ids, lo, hi = (
            np.concatenate([lc, rc]),
            np.concatenate([lo, mid]),
            np.concatenate([mid, hi]),
        )
        d += 1
    is_leaf = leaf >= 0
    depth = int(depth_of[leafnode].max())
    everyone = np.arange(total_nodes)
    child = np.stack(
        [np.where(is_leaf, everyone, right), np.where(is_leaf, everyone, left)], axis=1
    ).ravel()
    # Paths as (C, depth) tables (root first), padded with the leaf (a fixed point that goes
    # "left"): filled from each leaf upwards.
    path = np.repeat(leafnode[:, None], max(depth, 1), axis=1)[:, :depth]
    path_left = np.ones((num, depth), dtype=bool)
    v = leafnode.copy()
    rows = np.arange(num)
    for _ in range(depth):
        live = depth_of[v] > 0
        lvl = depth_of[v[live]] - 1
        p = parent[v[live]]
        path[rows[live], lvl] = p
        path_left[rows[live], lvl] = left[p] == v[live]
        v = np.where(live, parent[v], v)
    shape = {
        "lo": node_lo,
        "hi": node_hi,
        "mid": node_mid,
        "left": left,
        "right": right,
        "leaf": leaf,
        "parent": parent,
        "is_leaf": is_leaf,
        "went_left": left[parent] == everyone,
        "leafnode": leafnode,
        "child": child,
        "levels": levels,
        "depth": depth,
        "path": path,
        "path_left": path_left,
        "path_len": depth_of[leafnode],
    }
    for value in [*shape.values(), *levels]:
        if isinstance(value, np.ndarray):
            value.flags.writeable = False  # shared by every tree of this many classes
    return shape


def _chunked(fn, cls, x) -> np.ndarray:
    """``fn(cls, x)`` on flat int64 copies of the broadcast inputs, ``_CHUNK`` at a time (cache-
    sized temporaries); the result has the broadcast shape."""
    cls, x = np.broadcast_arrays(np.asarray(cls, dtype=np.int64), np.asarray(x, np.int64))
    shape, cls, x = x.shape, cls.ravel(), x.ravel()
    out = np.empty(x.size, dtype=np.int64)
    for lo in range(0, x.size, _CHUNK):
        out[lo : lo + _CHUNK] = fn(cls[lo : lo + _CHUNK], x[lo : lo + _CHUNK].copy())
    return out.reshape(shape)


@functools.lru_cache(maxsize=16)
def _tree(counts: bytes, key: int) -> BeattyTree:
    """The block's tree, built once per block (a rank asks for its positions chunk by chunk)."""
    return BeattyTree.build(np.frombuffer(counts, dtype=np.int64), int(derive(key, 0)))


def _cycle_cuts(
    tree: BeattyTree,
    lo: int,
    hi: int,
    counts: np.ndarray,
    cycle: np.ndarray,
    base: np.ndarray,
    pos: np.ndarray,
    window: int,
) -> tuple[int, int, np.ndarray]:
    """Cycle starts of every class around ``[lo, hi)``: ``(start, end, cuts)``.

    ``start``: the last cut at or before ``lo`` (0 if none), ``end``: the first cut at or after
    ``hi`` (``M`` if none), ``cuts``: the cuts in ``[lo, hi)`` (unsorted) that can bound a
    segment holding one of the positions ``pos``. With a ``window``, a class with more cycle
    starts in ``[lo, hi)`` than twice the positions gives only those inside the windows of the
    positions, found from its prefix counts at the window edges: a sparse rank of a long block
    then pays per window, not per cycle of a tiny class.
    """
    total = int(counts.sum())
    act = np.flatnonzero((cycle > 1) & (counts > 0))
    if act.size == 0:
        return 0, total, np.zeros(0, dtype=np.int64)
    cyc, cnt = cycle[act], counts[act]
    b = base[act] % cyc  # the cycle phase of the block's first draw (base may be huge)
    k_lo, k_hi = tree.counts_before(lo)[act], tree.counts_before(hi)[act]
    # Start of the cycle of the last draw before lo; first cycle start at or after lo / hi.
    k_start = (k_lo - 1) - (b + k_lo - 1) % cyc
    nxt = k_hi + (-(b + k_hi)) % cyc
    has_start, has_end = (k_lo > 0) & (k_start >= 0), nxt < cnt
    cls = [act[has_start], act[has_end]]
    ks = [k_start[has_start], nxt[has_end]]
    # Every cycle start with rank in [k0, k1) of its class, for (class, k0, k1) triples.
    rk0, rk1, rc = k_lo, k_hi, np.arange(act.size)
    dense = (k_hi - k_lo) > 2 * cyc * pos.size if window > 0 else np.zeros(act.size, bool)
    if dense.any():  # more cuts than window edges: only those inside the windows asked for
        frames = sorted_unique(pos // window)
        w0, w1 = frames * window, np.minimum(frames * window + window, total)
        rc = np.concatenate([np.flatnonzero(~dense), np.repeat(np.flatnonzero(dense), w0.size)])
        wc = act[np.repeat(np.flatnonzero(dense), w0.size)]
        reps = int(dense.sum())
        rk0 = np.concatenate([k_lo[~dense], tree.prefix_many(wc, np.tile(w0, reps))])
        rk1 = np.concatenate([k_hi[~dense], tree.prefix_many(wc, np.tile(w1, reps))])
    rcyc, rb = cyc[rc], b[rc]
    first = rk0 + (-(rb + rk0)) % rcyc
    num = np.where(first < rk1, (rk1 - first + rcyc - 1) // rcyc, 0)
    offs = np.arange(int(num.sum())) - np.repeat(np.cumsum(num) - num, num)
    cls.append(act[np.repeat(rc, num)])
    ks.append(np.repeat(first, num) + offs * np.repeat(rcyc, num))
    pos = tree.positions(np.concatenate(cls), np.concatenate(ks))
    s, e = int(has_start.sum()), int(has_start.sum() + has_end.sum())
    return int(pos[:s].max(initial=0)), int(pos[s:e].min(initial=total)), pos[e:]


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
        positions: sorted positions in ``[0, M)`` with ``M = counts.sum() <= 2**62``.
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
    if pos.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    total = int(counts.sum())
    tree = _tree(counts.tobytes(), int(key))
    lo, hi = int(pos[0]), int(pos[-1]) + 1
    seg0, seg_end, cuts = _cycle_cuts(
        tree,
        lo,
        hi,
        counts,
        np.asarray(cycle, dtype=np.int64),
        np.asarray(base, dtype=np.int64),
        pos,
        window,
    )
    # The segment [start, end) of each position: between the cuts around it (seg0 and seg_end
    # beyond the first and last), clipped to its window.
    cuts = cuts[(cuts > seg0) & (cuts < seg_end)]  # windowed cuts may lie before lo
    cuts.sort()  # few: one per cycle start in [lo, hi) (or in the windows)
    around = np.concatenate([[seg0], cuts, [seg_end]])
    before = np.searchsorted(cuts, pos, side="right")  # cuts at or below each position
    start, end = around[before], around[before + 1]
    if window > 0:
        edge = pos - pos % window
        np.maximum(start, edge, out=start)
        edge += window
        np.minimum(end, edge, out=end)
        np.minimum(end, total, out=end)
    new = np.empty(pos.size, dtype=bool)  # the first position of each segment (pos sorted)
    new[0] = True
    np.not_equal(start[1:], start[:-1], out=new[1:])
    keys = derive(key, 1, start[new])  # one key per segment asked for
    slot = permute(pos - start, end - start, keys, group=np.cumsum(new) - 1)
    return tree.locate(start + slot)

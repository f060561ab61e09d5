"""Direct tests of the plan kernels: permute, sorted_unique, sort_by_key, the Beatty tree and
stratified_ranks.

Exactness at scale (sizes up to 2**62) is checked against Python ints, which never overflow;
bijections are checked in full on small domains and by invariants on huge ones. Statistical
checks use fixed keys and bounds derived from the chi-square distribution.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import GroupIndex
from distsampler._core.keyed import _SMALL, bit_length, derive, make_key, permute, uniform
from distsampler._core.plan import IID, MEMBER, WOR, WeightedWithoutReplacement, class_first
from distsampler._core.sorting import sort_by_key, sorted_unique
from distsampler._core.strata import BeattyTree, _divmod_exact, _floor_lin, stratified_ranks

fixed = settings(derandomize=True, deadline=None, max_examples=60)
keys = st.integers(0, 2**64 - 1)


# -- permute -----------------------------------------------------------------------------------
EDGES = sorted(
    {1, 2, 3, _SMALL - 1, _SMALL, _SMALL + 1, 100, 1000}
    | {v for k in (4, 5, 6, 8, 12, 16) for v in (2**k - 1, 2**k, 2**k + 1)}
)


@pytest.mark.parametrize("n", EDGES)
def test_permute_is_a_bijection_at_the_edges(n):
    # 2**k, 2**k +- 1 and both sides of the hash-rank / Feistel switch, three keys each.
    for key in (0, make_key(1), 2**64 - 1):
        p = permute(np.arange(n), n, key)
        assert np.array_equal(np.sort(p), np.arange(n))


@fixed
@given(st.integers(1, 3000), keys)
def test_permute_is_a_bijection(n, key):
    assert np.array_equal(np.sort(permute(np.arange(n), n, key)), np.arange(n))


@fixed
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), keys)
def test_per_element_domains_and_the_group_variant(sizes, key):
    # Many domains in one call equal one call per domain; group= equals passing key[group];
    # either path (a rank table per key, or per element) gives the same numbers.
    sizes = np.array(sizes)
    ks = derive(key, np.arange(sizes.size))
    group = np.repeat(np.arange(sizes.size), sizes)
    idx = np.concatenate([np.arange(s) for s in sizes])
    n = sizes[group]
    joint = permute(idx, n, ks, group=group)
    assert np.array_equal(joint, permute(idx, n, ks[group]))
    for g, s in enumerate(sizes):
        alone = permute(np.arange(s), int(s), ks[g])
        assert np.array_equal(joint[group == g], alone)
        assert np.array_equal(np.sort(alone), np.arange(s))
    # One element of each domain only (the per-element path for every size).
    firsts = np.cumsum(sizes) - sizes
    assert np.array_equal(permute(idx[firsts], sizes, ks), joint[firsts])


def test_permute_mixes_methods_and_round_counts_in_one_call():
    # Hash ranks (n <= 32), 6-round and 4-round Feistel domains side by side, and no elements.
    sizes = np.array([1, 5, 32, 33, 2**16 - 1, 2**16, 10**9, 2**62])
    ks = derive(make_key(5), np.arange(sizes.size))
    idx = np.array([[0, s // 3, s - 1] for s in sizes])  # (8, 3)
    joint = permute(idx, sizes[:, None], ks[:, None])
    for row, (s, k) in enumerate(zip(sizes, ks, strict=True)):
        assert np.array_equal(joint[row], permute(idx[row], int(s), k))
    assert permute(np.zeros((0, 3), dtype=np.int64), 7, 1).shape == (0, 3)


def test_permute_broadcasts_a_key_per_row():
    # The batch-shuffle shape: (1, B) indices against (rows, 1) keys.
    ks = derive(make_key(2), np.arange(40))[:, None]
    for bs in (8, 32, 256):
        table = permute(np.arange(bs)[None, :], bs, ks)
        assert table.shape == (40, bs)
        for r in (0, 17, 39):
            assert np.array_equal(table[r], permute(np.arange(bs), bs, ks[r, 0]))


@pytest.mark.parametrize("n", [2**32, 2**32 + 1, 2**40, 2**40 + 1, 10**10, 2**62 - 1, 2**62])
def test_permute_at_huge_domains(n):
    # Random access at sizes no test can enumerate: images in range, distinct inputs give
    # distinct images, the same call gives the same answer.
    rng = np.random.default_rng(0)
    x = np.unique(np.concatenate([rng.integers(0, n, 5000, dtype=np.int64), [0, 1, n - 1]]))
    y = permute(x, n, make_key(9))
    assert ((y >= 0) & (y < n)).all()
    assert np.unique(y).size == x.size
    assert np.array_equal(permute(x[::7], n, make_key(9)), y[::7])


def test_bit_length_is_exact_to_63_bits():
    # Float64 rounds 2**k - 1 up to 2**k past 53 bits; the integer fix undoes it.
    vals = [0, 1, 2, 3] + [v for k in range(2, 63) for v in (2**k - 1, 2**k, 2**k + 1)]
    vals.append(2**63 - 1)
    got = bit_length(np.array(vals, dtype=np.uint64))
    assert got.tolist() == [v.bit_length() for v in vals]


def _sample_perms(n: int, reps: int) -> np.ndarray:
    """``(reps, n)``: the permutations of ``reps`` fixed keys."""
    ks = derive(make_key(77), np.arange(reps))
    return permute(np.tile(np.arange(n), reps), n, np.repeat(ks, n)).reshape(reps, n)


def _chi2(observed: np.ndarray, expected: float) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


def _chi2_bound(dof: int, sigmas: float = 5.0) -> float:
    """Mean plus ``sigmas`` standard deviations of a chi-square with ``dof`` degrees."""
    return dof + sigmas * math.sqrt(2 * dof)


@pytest.mark.parametrize("n", [3, 5, 8, 16, 17, 31, 32])
def test_small_domains_are_uniform(n):
    # Hash ranks are exactly uniform: every position of every input, and the joint image of
    # two inputs (pairwise independence), pass a chi-square test at 5 sigma.
    reps = 20000
    p = _sample_perms(n, reps)
    for x in range(n):
        assert _chi2(np.bincount(p[:, x], minlength=n), reps / n) < _chi2_bound(n - 1)
    for x, y in ((0, 1), (0, n - 1), (n // 2, n // 2 - 1)):
        if x == y:
            continue
        cells = np.bincount(p[:, x] * n + p[:, y], minlength=n * n).reshape(n, n)
        off = cells[~np.eye(n, dtype=bool)]
        assert _chi2(off, reps / (n * (n - 1))) < _chi2_bound(n * (n - 1) - 1)


@pytest.mark.parametrize(("n", "ratio"), [(33, 2.5), (64, 1.6), (100, 1.3), (256, 1.2)])
def test_feistel_domains_first_positions_and_pairs(n, ratio):
    # First positions are uniform (5 sigma). Pairs: the chi-square of the gap pi(y) - pi(x) mod
    # n, over 16 input pairs, averages within `ratio` of its degrees of freedom. A random
    # permutation averages 1 +- 0.05 here; the 4-round power-of-two network used before
    # averaged 2.5 to 5 at n = 33..100 (and 500 at n = 8).
    reps = 20000
    p = _sample_perms(n, reps)
    xs = np.linspace(0, n - 1, 5).astype(int)
    for x in xs:
        assert _chi2(np.bincount(p[:, x], minlength=n), reps / n) < _chi2_bound(n - 1)
    stats = []
    for x in xs:
        for y in xs:
            if x != y:
                gap = (p[:, y] - p[:, x]) % n
                stats.append(_chi2(np.bincount(gap, minlength=n)[1:], reps / (n - 1)) / (n - 2))
    assert np.mean(stats) < ratio


@pytest.mark.parametrize("n", [2**16, 10**6, 2**40 + 3])
def test_four_round_domains_pairs(n):
    # From 2**16 elements the network runs 4 rounds: the gap pi(y) - pi(x) mod n, in 100 equal
    # buckets, over 20 input pairs (neighbours, far apart, both halves' edges) has a chi-square
    # averaging 1 +- 0.05 of its degrees of freedom for a random permutation; 1.15 is 3 sigma.
    reps, buckets = 20000, 100
    xs = np.array([0, 1, 2, n // 2, n - 1])
    ks = derive(make_key(78), np.arange(reps))
    p = permute(np.tile(xs, reps), n, np.repeat(ks, xs.size)).reshape(reps, xs.size)
    edges = (
        np.arange(buckets + 1) * (n - 1)
    ) // buckets  # gap g in 1..n-1 -> bucket (g-1)*B//(n-1)
    expected = np.diff(edges) / (n - 1) * reps
    stats = []
    for i in range(xs.size):
        for j in range(xs.size):
            if i != j:
                gap = (p[:, j] - p[:, i]) % n
                got = np.bincount(((gap - 1) * buckets) // (n - 1), minlength=buckets)
                stats.append(_chi2(got, expected) / (buckets - 1))
    assert np.mean(stats) < 1.15


# -- sorted_unique -----------------------------------------------------------------------------
@fixed
@given(st.lists(st.integers(-(2**62), 2**62), max_size=60))
def test_sorted_unique_equals_np_unique(values):
    x = np.sort(np.array(values, dtype=np.int64))
    assert np.array_equal(sorted_unique(x), np.unique(x))


# -- sort_by_key -------------------------------------------------------------------------------
# Keys drawn from a few values collide in every bit (exact ties), keys close together collide
# in their packed high bits only (the tie repair), and inf / +0.0 sit at the ends of the range.
close = st.floats(1.0, 1.0 + 2**-30)
key_lists = st.lists(
    st.one_of(st.sampled_from([0.0, 0.5, 3.0, np.inf]), close, st.floats(0, 1e300)),
    min_size=1,
    max_size=200,
)


@fixed
@given(key_lists, st.data())
def test_sort_by_key_equals_stable_argsort(raw, data):
    keys = np.array(raw, dtype=np.float64)
    gaps = data.draw(st.lists(st.integers(1, 2**20), min_size=len(raw), max_size=len(raw)))
    values = np.cumsum(gaps) - 1  # strictly increasing, wide or narrow
    assert np.array_equal(sort_by_key(keys, values), values[np.argsort(keys, kind="stable")])


def test_sort_by_key_at_a_million_keys_with_ties():
    # Exact ties every 1000th key: about a thousand keys for the repair pass to put in order.
    rng = np.random.default_rng(5)
    keys = rng.exponential(size=1 << 20) / rng.choice([0.5, 16.0], size=1 << 20)
    keys[::1000] = keys[7]
    values = np.flatnonzero(rng.random(3 << 20) < 1 / 3)[: 1 << 20]
    keys = keys[: len(values)]
    assert np.array_equal(sort_by_key(keys, values), values[np.argsort(keys, kind="stable")])


def test_sort_by_key_allocates_only_the_packed_words():
    # 8 bytes a key for the packed words (returned as the order), nothing else of size n: the
    # tie repair must not cast int32 values to int64 (a hidden copy at 1e8 keys: 800 MB).
    n = 1 << 21
    rng = np.random.default_rng(2)
    keys = rng.choice([0.5, 16.0], size=n) * rng.exponential(size=n)
    keys[::500] = keys[3]  # exact ties: the repair runs
    values = np.arange(n, dtype=np.int32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sort_by_key(keys, values)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 * n + (4 << 20)  # step temporaries: a few MB; a cast copy: 16 MB


def test_sort_by_key_wide_values_fall_back():
    keys, values = np.array([2.0, 1.0, 2.0]), np.array([0, 2**41, 2**42])
    assert sort_by_key(keys, values).tolist() == [2**41, 0, 2**42]


# -- exact arithmetic ------------------------------------------------------------------------
@fixed
@given(st.integers(1, 2**62), st.data())
def test_divmod_exact_matches_python_ints(d, data):
    x = data.draw(st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=8))
    yr, wr = data.draw(st.integers(0, d - 1)), data.draw(st.integers(0, d - 1))
    q, r = _divmod_exact(
        np.array(x, dtype=np.uint64), np.uint64(yr), np.uint64(wr), np.uint64(d), (yr << 64) // d
    )
    assert list(zip(q.tolist(), r.tolist(), strict=True)) == [divmod(v * yr + wr, d) for v in x]


@fixed
@given(st.integers(1, 2**62), st.data())
def test_floor_lin_matches_python_ints(d, data):
    y, w = data.draw(st.integers(0, 2**62)), data.draw(st.integers(0, 2**62))
    xmax = min(2**62, 2**62 * d // max(y, 1))  # the result stays below 2**63
    x = data.draw(st.lists(st.integers(0, xmax), min_size=1, max_size=8))
    got = _floor_lin(np.array(x, dtype=np.int64), y, w, d, xmax)
    assert got.tolist() == [(v * y + w) // d for v in x]


# -- the Beatty tree -----------------------------------------------------------------------------
def _py_prefix(tree: BeattyTree, c: int, p: int) -> int:
    """The closed form in Python ints (no overflow at any size)."""
    for node, went_left in tree.paths[c]:
        n, a, ph = int(tree.n[node]), int(tree.a[node]), int(tree.phase[node])
        left = (p * a + ph) // max(n, 1)
        p = left if went_left else p - left
    return p


@fixed
@given(st.lists(st.integers(0, 30), min_size=1, max_size=9).filter(lambda c: sum(c) > 0), keys)
def test_beatty_tree_closed_forms_match_a_brute_force_count(counts, key):
    counts = np.array(counts)
    tree = BeattyTree.build(counts, key)
    m = int(counts.sum())
    cls, rank = tree.locate(np.arange(m))
    assert np.array_equal(tree.classes(np.arange(m)), cls)
    assert np.array_equal(np.bincount(cls, minlength=counts.size), counts)
    for c in range(counts.size):
        mine = cls == c
        brute = np.concatenate([[0], np.cumsum(mine)])  # class-c draws before each position
        assert np.array_equal(tree.prefix(c, np.arange(m + 1)), brute)
        assert np.array_equal(tree.prefix_many(np.full(m + 1, c), np.arange(m + 1)), brute)
        assert np.array_equal(tree.position_of(c, np.arange(counts[c])), np.flatnonzero(mine))
        assert np.array_equal(rank[mine], np.arange(counts[c]))  # ranks count up in order
    for p in (0, m // 3, m):
        assert np.array_equal(
            tree.counts_before(p), [_py_prefix(tree, c, p) for c in range(counts.size)]
        )


@pytest.mark.parametrize("total", [2**40, 3037000499, 3037000500, 10**10, 2**62 - 12345, 2**62])
@pytest.mark.parametrize("num", [1, 2, 3, 7])
def test_beatty_tree_is_exact_at_scale(total, num):
    # Past M = 3037000499 products overflow int64 (the exact uint64 path takes over): the
    # closed forms must agree with Python ints, and prefix, position_of and locate must invert
    # each other at every sampled position.
    rng = np.random.default_rng(num)
    w = rng.random(num) + 0.05
    counts = [int(total * v / w.sum()) for v in w]
    counts[-1] = total - sum(counts[:-1])
    tree = BeattyTree.build(np.array(counts), int(rng.integers(2**62)))
    assert tree.exact == (total > 3037000499)
    ps = np.unique(np.concatenate([rng.integers(0, total, 300, dtype=np.int64), [0, 1, total - 1]]))
    for c in range(num):
        assert tree.prefix(c, ps).tolist() == [_py_prefix(tree, c, int(p)) for p in ps]
        ks = np.unique(
            np.concatenate([rng.integers(0, counts[c], 100, dtype=np.int64), [0, counts[c] - 1]])
        )
        at = tree.position_of(c, ks)
        assert np.array_equal(tree.prefix(c, at), ks)  # k draws before the k-th ...
        assert np.array_equal(tree.prefix(c, at + 1), ks + 1)  # ... and it sits at `at`
    cls, rank = tree.locate(ps)
    assert np.array_equal(tree.prefix_many(cls, ps), rank)
    assert np.array_equal(tree.positions(cls, rank), ps)
    before = np.stack([tree.prefix(c, ps) for c in range(num)])
    assert np.array_equal(before.sum(axis=0), ps)  # every position holds exactly one draw
    assert tree.counts_before(total).tolist() == counts


# -- stratified_ranks ------------------------------------------------------------------------------
def _check_contract(counts, cycle, base, cls, k, window):
    for c in range(len(counts)):
        kc = k[cls == c]
        assert np.array_equal(np.sort(kc), np.arange(counts[c]))  # a bijection per class
        if cycle[c] > 1:  # member cycles never go backwards in stream order
            assert (np.diff((base[c] + kc) // cycle[c]) >= 0).all()
    m = int(np.sum(counts))
    if window:  # every window holds each class within one of its share per tree level
        depth = max(1, math.ceil(math.log2(len(counts)))) if len(counts) > 1 else 1
        for lo in range(0, m - window + 1, window):
            got = np.bincount(cls[lo : lo + window], minlength=len(counts))
            assert (np.abs(got - window * np.asarray(counts) / m) <= depth + 1e-9).all()


@fixed
@given(
    st.lists(st.integers(0, 300), min_size=1, max_size=12).filter(lambda c: sum(c) > 0),
    st.integers(0, 2**20),
    st.sampled_from([0, 16, 32]),
    st.integers(2, 60),
    keys,
)
def test_stratified_ranks_contract_and_random_access(counts, seed, window, stride, key):
    rng = np.random.default_rng(seed)
    counts = np.array(counts)
    cycle = rng.integers(1, 12, counts.size)  # tiny cycles: many cuts
    base = rng.integers(0, 2**62, counts.size)  # a stream far along (phase via base % cycle)
    m = int(counts.sum())
    cls, k = stratified_ranks(np.arange(m), counts, cycle, base, key, window)
    _check_contract(counts, cycle, base, cls, k, window)
    # A sparse stride (a rank of many) sees the same order: with windows, classes with more
    # cycle starts than windows find their cuts window by window.
    for r in (0, stride // 2):
        sub = np.arange(r, m, stride)
        if sub.size:
            c2, k2 = stratified_ranks(sub, counts, cycle, base, key, window)
            assert np.array_equal(c2, cls[sub]) and np.array_equal(k2, k[sub])


@pytest.mark.parametrize("total", [2**40, 10**10, 2**62])
def test_stratified_ranks_at_scale(total):
    # 3 sources (0.6 / 0.3 / 0.1; the last one cycles every 7 draws), rank 0 of 1024 and a
    # window of 16: classes and ranks in range, ranks distinct per class, cycles in order,
    # random access, and (class, rank) is the Beatty draw of a position in the same segment.
    shares = np.array([0.6, 0.3, 0.1])
    counts = np.floor(shares * total).astype(np.int64)
    counts[0] += total - int(counts.sum())
    cycle, base = np.array([10**9, 5000, 7]), counts // 3 + 5
    # A stride of 1024 visiting every offset of the 16-position windows in turn.
    pos = np.arange(0, 4096 * 1024, 1024, dtype=np.int64) + np.arange(4096) % 16
    pos += total // 2 if total > 2**41 else 0
    cls, k = stratified_ranks(pos, counts, cycle, base, 11, 16)
    assert ((k >= 0) & (k < counts[cls])).all()
    for c in range(3):
        kc = k[cls == c]
        assert np.unique(kc).size == kc.size
        assert (np.diff((base[c] % cycle[c] + kc) // cycle[c]) >= 0).all()
    c2, k2 = stratified_ranks(pos[1::3], counts, cycle, base, 11, 16)
    assert np.array_equal(c2, cls[1::3]) and np.array_equal(k2, k[1::3])
    tree = BeattyTree.build(counts, int(derive(11, 0)))
    at = tree.positions(cls, k)  # where the draw sits in the un-shuffled interleave
    assert (at // 16 == pos // 16).all()  # shuffled only within its window
    # Shares over all offsets: binomial, 5 sigma. (At one fixed offset they need not match: the
    # tiny class's cycle starts cut windows, and a draw's segment depends on its offset.)
    sigma = np.sqrt(4096 * shares * (1 - shares))
    assert (np.abs(np.bincount(cls, minlength=3) - 4096 * shares) < 5 * sigma).all()


# -- class_first -------------------------------------------------------------------------------
@fixed
@given(
    st.lists(st.sampled_from([0.0, 0.0, 1e-3, 0.25, 1.0, 7.0]), min_size=1, max_size=12),
    st.integers(0, 2**32),
)
def test_class_first_is_search_then_uniform_member(shares, seed):
    # The definition, written plainly: the group is searchsorted(cum, u * total, "right")
    # capped at the last positive share; the member is floor(u' * size), capped at size - 1.
    # Zero shares (first, middle, last) and up to 12 groups cover both ways of finding it.
    shares = np.array(shares)
    if not (shares > 0).any():
        shares[-1] = 1.0
    sizes = np.arange(1, len(shares) + 1) * 3
    if seed % 3 == 0:  # a range index of huge groups: the member clamp past 2**53 is exercised
        sizes[-1], sizes[0] = 2**60 + 7, 2**53 - 1
    index = GroupIndex.from_sizes(dict(enumerate(sizes.tolist())))
    pos = np.arange(0, 4000, 3, dtype=np.int64)
    cum = np.cumsum(shares)
    last = int(np.flatnonzero(shares > 0)[-1])
    u = uniform(make_key(seed, 2, IID), pos) * cum[-1]
    cls = np.minimum(np.searchsorted(cum, u, side="right"), last)
    j = (uniform(make_key(seed, 2, MEMBER), pos) * sizes[cls]).astype(np.int64)
    want = index.member(cls, np.minimum(j, sizes[cls] - 1))
    assert np.array_equal(class_first(index, shares, seed, 2, pos), want)


# -- weighted order without replacement --------------------------------------------------------
@pytest.mark.parametrize("need", [150_000, 5_000])
def test_without_replacement_round_is_the_stable_order_of_exponential_keys(need):
    # The definition, written plainly over all weights at once: key_i = Exp(1)_i / w_i from the
    # uniform of counter i, positive weights only, increasing key, ties by index. More weights
    # than one key step and zeros among them: the chunked keys and the packed sort must agree.
    rng = np.random.default_rng(11)
    w = rng.choice([0.0, 0.5, 2.0, 16.0], size=200_000) * rng.random(200_000)
    plan = WeightedWithoutReplacement(w, need, int(np.count_nonzero(w)))
    key = make_key(3, 1, WOR, 0)
    idx = np.flatnonzero(w > 0)
    keys = -np.log1p(-uniform(key, idx)) / w[idx]
    want = idx[np.argsort(keys, kind="stable")]
    got = plan._order(3, 1, 0, need)
    assert np.array_equal(got[:need], want[:need])


@pytest.mark.parametrize("torch_sort_up_to", [0, 1 << 25])  # numpy's in-place sort / torch.sort
def test_sort_by_key_is_the_stable_argsort_on_both_sort_paths(monkeypatch, torch_sort_up_to):
    from distsampler._core import sorting

    monkeypatch.setattr(sorting, "_TORCH_SORT", torch_sort_up_to)
    rng = np.random.default_rng(5)
    keys = np.concatenate([rng.exponential(size=5000), np.full(300, 0.25), [np.inf] * 3])
    rng.shuffle(keys)
    values = np.arange(0, 3 * len(keys), 3)
    expected = values[np.argsort(keys, kind="stable")]
    assert np.array_equal(sorting.sort_by_key(keys, values), expected)

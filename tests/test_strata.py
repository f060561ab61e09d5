"""The stratified class order: exact counts, per-class ranks, cycle order, random access."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler._core.strata import BeattyTree, stratified_ranks

case = st.integers(1, 6).flatmap(
    lambda c: st.tuples(
        st.lists(st.integers(0, 40), min_size=c, max_size=c).filter(lambda x: sum(x) > 0),
        st.lists(st.integers(1, 25), min_size=c, max_size=c),
        st.lists(st.integers(0, 60), min_size=c, max_size=c),
        st.integers(0, 2**63 - 1),
    )
)


@settings(max_examples=150, deadline=None)
@given(case)
def test_beatty_tree_is_exact_and_invertible(args):
    counts, _, _, key = args
    counts = np.array(counts)
    tree = BeattyTree.build(counts, key)
    m = counts.sum()
    cls = tree.classes(np.arange(m))
    assert np.array_equal(np.bincount(cls, minlength=len(counts)), counts)
    for c in range(len(counts)):
        expect = np.concatenate([[0], np.cumsum(cls == c)])
        assert np.array_equal(tree.prefix(c, np.arange(m + 1)), expect)
        assert np.array_equal(tree.position_of(c, np.arange(counts[c])), np.flatnonzero(cls == c))


@settings(max_examples=200, deadline=None)
@given(case, st.integers(2, 5), st.sampled_from([0, 1, 4, 16]))
def test_stratified_ranks_contract(args, stride, window):
    counts, cycle, base = (np.array(a) for a in args[:3])
    key = args[3]
    m = int(counts.sum())
    cls, k = stratified_ranks(np.arange(m), counts, cycle, base, key, window)
    for c in range(len(counts)):
        kc = k[cls == c]
        assert np.array_equal(np.sort(kc), np.arange(counts[c]))  # a bijection per class
        if cycle[c] > 1:  # member cycles never go backwards in stream order
            assert (np.diff((base[c] + kc) // cycle[c]) >= 0).all()
    if window:  # every window holds each class within one of its share per tree level
        depth = int(np.ceil(np.log2(len(counts)))) if len(counts) > 1 else 0
        for lo in range(0, m - window + 1, window):
            got = np.bincount(cls[lo : lo + window], minlength=len(counts))
            assert (np.abs(got - window * counts / m) <= max(depth, 1) + 1e-9).all()
    # Random access: any subset of positions (a rank's stride) gives the same answers.
    for r in range(stride):
        sub = np.arange(r, m, stride)
        if sub.size:
            c2, k2 = stratified_ranks(sub, counts, cycle, base, key, window)
            assert np.array_equal(c2, cls[sub]) and np.array_equal(k2, k[sub])


def test_order_is_shuffled_inside_segments():
    # Two large classes, no cycle ends inside the block: one segment, fully shuffled. The
    # number of class changes of a random order is ~ m/2; the Beatty pattern alone gives m - 1.
    counts = np.array([500, 500])
    cls, _ = stratified_ranks(np.arange(1000), counts, np.array([10**6] * 2), np.zeros(2), 1)
    runs = np.count_nonzero(np.diff(cls))
    assert 400 < runs < 600  # mean 500, sd ~ 16


def _reference_tree(sizes: list[int]):
    """The tree by its definition: classes split in halves, nodes numbered in pre-order."""
    n, a, left, right, leaf, paths = [], [], [], [], [], [()] * len(sizes)

    def node(lo, hi, path):
        i = len(n)
        n.append(sum(sizes[lo:hi]))
        a.append(0)
        left.append(-1)
        right.append(-1)
        leaf.append(-1)
        if hi - lo == 1:
            leaf[i], paths[lo] = lo, path
            return i
        mid = (lo + hi) // 2
        a[i] = sum(sizes[lo:mid])
        left[i] = node(lo, mid, (*path, (i, True)))
        right[i] = node(mid, hi, (*path, (i, False)))
        return i

    node(0, len(sizes), ())
    return n, a, left, right, leaf, tuple(paths)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=70), st.integers(0, 2**63 - 1))
def test_vectorised_build_matches_the_recursive_definition(sizes, key):
    # The node numbering fixes every phase, so it is part of the plans: the level-at-a-time
    # build must number and split exactly as the recursive definition does.
    tree = BeattyTree.build(np.array(sizes), key)
    n, a, left, right, leaf, paths = _reference_tree(sizes)
    assert tree.n.tolist() == n and tree.a.tolist() == a
    assert tree.left.tolist() == left and tree.right.tolist() == right
    assert tree.leaf.tolist() == leaf and tree.paths == paths
    assert tree.depth == max(len(p) for p in paths)

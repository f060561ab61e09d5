"""The pure numbers behind ``distsampler inspect``: hand cases, and the closed forms against
Monte Carlo estimates with derived bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distsampler.groups import GroupIndex
from distsampler.inspect import diagnostics as D
from distsampler.inspect import streams as S
from distsampler.inspect.tally import Tally


def test_batch_composition_and_shares_hand_case():
    codes = np.array([0, 0, 1, 1, 2])
    batches = np.array([[0, 2, 4], [1, 1, -1], [3, 3, 3]])  # -1: a short batch
    comp = D.batch_composition(batches, codes, 3)
    np.testing.assert_array_equal(comp, [[1, 1, 1], [2, 0, 0], [0, 3, 0]])
    np.testing.assert_allclose(D.batch_shares(comp, 1), [1 / 3, 0, 1])
    np.testing.assert_allclose(D.batch_shares(comp, 1, batch_size=3), [1 / 3, 1])  # full only
    stats = D.ShareStats.of(D.batch_shares(comp, 1))
    assert (stats.min, stats.median, stats.max, stats.none) == (0, 1 / 3, 1, 1 / 3)


SETS = [["a"], [], ["a", "b"], ["b"], ["c", "a"]]  # sample 1 holds no class


def test_membership_of_label_sets_hand_case():
    m = D.Membership.of(GroupIndex.from_label_sets(SETS))
    assert m.multilabel and m.num_samples == 5 and m.num_classes == 3
    assert m.counts().tolist() == [1, 0, 2, 1, 2]
    assert m.count(np.arange(5)).tolist() == [3, 2, 1]
    assert m.count(np.array([2, 2, 1, 4])).tolist() == [3, 2, 1]  # repeats count
    assert m.per_class(np.arange(5) / 2).tolist() == [(0 + 2 + 4) / 2, (2 + 3) / 2, 4 / 2]
    assert m.holds(0).tolist() == [True, False, True, False, True]
    assert m.samples(1).tolist() == [2, 3]
    which, cls = m.pairs(np.array([2, 1, 4]))
    assert which.tolist() == [0, 0, 2, 2] and cls.tolist() == [0, 1, 0, 2]
    # a sample holding two classes counts in both: rows sum to more than the batch
    comp = m.composition(np.array([[0, 2, -1], [4, 1, 3]]))
    np.testing.assert_array_equal(comp, [[2, 1, 0], [1, 1, 1]])


def test_membership_of_single_labels_is_the_codes():
    m = D.Membership.of(GroupIndex.from_labels(["y", "x", "y"]))
    assert not m.multilabel and m.classes.tolist() == [1, 0, 1]
    assert m.composition(np.array([[0, 1], [2, -1]])).tolist() == [[1, 1], [0, 1]]


def test_tally_counts_draws_containing_each_class_and_full_batches_only():
    m = D.Membership.of(GroupIndex.from_label_sets(SETS))
    tally = Tally(m, minority=2, batch_size=2)
    tally.add_epoch(np.array([[[0, 2]], [[4, -1]]]))  # 2 iterations, 1 rank; the last is short
    r = tally.summary(("a", "b", "c"), np.array([0.5, 0.25, 0.25]))
    # draws 0, 2, 4 contain a three times, b once (sample 2), c once (sample 4): sum > 1
    assert r["realised_share"] == pytest.approx({"a": 1.0, "b": 1 / 3, "c": 1 / 3})
    assert r["draws"] == {"a": [3], "b": [1], "c": [1]}
    assert r["coverage"] == {"a": [1.0], "b": [0.5], "c": [1.0]}
    assert r["coverage_all"] == [0.75]  # 3 of the 4 samples that hold a class
    # only the full batch [0, 2] counts: no c in it; the short batch [4] (all c) is left out
    assert r["minority_share"]["full_batches"] == 1
    assert r["minority_share"]["max"] == 0.0 and r["no_minority_fraction"] == 1.0
    assert tally.times_seen(0).tolist() == [1, 1, 1]
    np.testing.assert_array_equal(tally.head, [[2, 1, 0], [1, 0, 1]])


def test_coverage_curve_first_seen_repeats_hand_case():
    codes = np.array([0, 0, 1, 1])
    stream = np.array([3, 1, 3, 0, 2])
    np.testing.assert_array_equal(D.first_seen(stream, 4), [3, 1, 4, 0])
    np.testing.assert_array_equal(D.repeats(stream, 5), [1, 1, 1, 2, 0])
    curve = D.coverage_curve(stream, codes, 2)
    np.testing.assert_allclose(curve, [[0, 0.5], [0.5, 0.5], [0.5, 0.5], [1, 0.5], [1, 1]])
    np.testing.assert_allclose(D.coverage_curve(stream, codes, 2, at=[0, 2, 99])[:, 0], [0, 0.5, 1])
    x, f = D.ecdf(np.array([2, 0, 2, 5]))
    assert x.tolist() == [0, 2, 5] and f.tolist() == [0.25, 0.75, 1.0]


def test_epoch_layout_deals_blocks_like_the_sampler():
    stream = np.arange(12)
    # 3 ranks, blocks of 2, batches of 3: rank r takes positions 2r, 2r+1, 6+2r, 6+2r+1
    layout = S.epoch_layout(stream, 3, 3, block_size=2)
    assert layout.shape == (2, 3, 3)
    np.testing.assert_array_equal(layout[0, 1], [2, 3, 8])
    np.testing.assert_array_equal(layout[1, 1], [9, -1, -1])
    with pytest.raises(ValueError, match="multiple of world_size=5"):
        S.deal(stream, 5)


@pytest.mark.parametrize("n", [1, 2, 10, 63, 64, 65, 1000, 10**6])
def test_harmonic_numbers(n):
    exact = math.fsum(1 / i for i in range(1, n + 1))
    assert float(D.harmonic(n)) == pytest.approx(exact, rel=1e-12)


# Monte Carlo: R replicates of k uniform draws from n members. The seen fraction of one
# replicate is a mean of n indicators with P(seen) = p that are negatively correlated
# (P(both unseen) = (1 - 2/n)^k <= (1 - 1/n)^(2k)), so its variance is <= p(1 - p)/n and the
# mean of R replicates has std <= sqrt(p(1 - p) / (n R)). Allowed error: 4 of those (fixed seed).
@pytest.mark.parametrize(
    ("n", "k"), [(1, 0), (1, 3), (5, 0), (5, 1), (5, 12), (50, 50), (400, 1200)]
)
def test_expected_coverage_matches_monte_carlo(n, k):
    reps = 2000
    rng = np.random.default_rng(n * 1000 + k)
    draws = rng.integers(0, n, size=(reps, k))
    hit = np.zeros((reps, n), dtype=bool)
    hit[np.repeat(np.arange(reps), k), draws.ravel()] = True
    measured = hit.mean()
    p = float(D.expected_coverage(n, k))
    assert p == pytest.approx(1 - (1 - 1 / n) ** k)
    assert abs(measured - p) <= 4 * math.sqrt(p * (1 - p) / (n * reps)) + 1e-12


# Coupon collector: T = draws until all n members were seen, E[T] = n H_n and
# Var[T] = n^2 sum 1/i^2 - n H_n <= pi^2 n^2 / 6; the mean of R runs is within 4 std of E[T].
@pytest.mark.parametrize("n", [1, 2, 10, 60])
def test_coupon_collector_matches_monte_carlo(n):
    reps = 2000
    rng = np.random.default_rng(n)
    length = int(n * math.log(n + 1) + 25 * n + 10)  # P(T > length) <= e^-25 per run
    draws = rng.integers(0, n, size=(reps, length))
    first = np.full((reps, n), length, dtype=np.int64)
    rows = np.repeat(np.arange(reps), length)
    np.minimum.at(first, (rows, draws.ravel()), np.tile(np.arange(length), reps))
    cover = first.max(axis=1) + 1
    assert cover.max() < length
    expected = float(D.expected_draws_to_cover(n))
    assert abs(cover.mean() - expected) <= 4 * math.sqrt(math.pi**2 * n**2 / 6 / reps)

"""Class weighting strategies: hand-computed cases, validation, and shares through the sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distsampler import DistributedWeightedSampler
from distsampler import weights as W
from distsampler._core.plan import largest_remainder

# -- hand-computed weights -----------------------------------------------------------------------
R2 = math.sqrt(2.0)

WEIGHT_CASES = [
    # (strategy, counts, epoch, expected per-sample weight per class)
    (W.balanced, [4, 1, 0], 0, [0.25, 1.0, 0.0]),  # empty class: weight 0, not inf
    (W.instance, [4, 1, 0], 0, [1.0, 1.0, 0.0]),
    (W.Temperature(1.0), [4, 1], 0, [1.0, 1.0]),  # T = 1: the data's own mix
    (W.Temperature(2.0), [4, 1], 0, [0.5, 1.0]),  # shares sqrt(4) : sqrt(1) = 2 : 1
    (W.sqrt_frequency, [9, 1], 0, [1 / 3, 1.0]),
    (W.Temperature(3), [8, 1], 0, [0.25, 1.0]),  # int temperature accepted
    # Cui et al.: (1 - b) / (1 - b^n); b = 0.5: n=1 -> 1, n=2 -> .5/.75, n=3 -> .5/.875
    (W.EffectiveNumber(0.5), [1, 2, 3], 0, [1.0, 2 / 3, 4 / 7]),
    (W.EffectiveNumber(0.0), [5, 1], 0, [1.0, 1.0]),  # beta = 0: instance-balanced
    # Kang et al.: (1 - t/T) * instance + t/T * balanced shares, counts (3, 1):
    # instance shares (.75, .25), balanced (.5, .5); per-sample weight = share / n.
    (W.Progressive(4), [3, 1], 0, [0.75 / 3, 0.25]),  # t = 0: instance
    (W.Progressive(4), [3, 1], 2, [0.625 / 3, 0.375]),  # halfway
    (W.Progressive(4), [3, 1], 4, [0.5 / 3, 0.5]),  # t = T: balanced
    (W.Progressive(4), [3, 1], 9, [0.5 / 3, 0.5]),  # after T: stays balanced
    # start sqrt (2/3, 1/3), end instance (.8, .2), t/T = 1/2
    (
        W.Progressive(2, start="sqrt", end="instance"),
        [4, 1],
        1,
        [(2 / 3 + 0.8) / 8, (1 / 3 + 0.2) / 2],
    ),
    (W.target_shares({"a": 0.3, "b": 0.7}).bind(("a", "b")), [3, 7], 0, [0.1, 0.1]),
    (W.target_shares({"b": 1}).bind(("a", "b")), [3, 7], 0, [0.0, 1 / 7]),  # unnamed: share 0
]


@pytest.mark.parametrize(("strategy", "counts", "epoch", "expected"), WEIGHT_CASES)
def test_strategy_weights_match_hand_computed(strategy, counts, epoch, expected):
    got = strategy(np.asarray(counts), epoch)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_effective_number_interpolates_between_instance_and_balanced():
    counts = np.array([1000, 10])
    shares = [W.class_shares(W.EffectiveNumber(b), counts, 0)[1] for b in (0, 0.9, 0.999, 0.9999)]
    assert shares[0] == pytest.approx(10 / 1010)  # beta = 0: the data's mix
    assert np.all(np.diff(shares) > 0)  # larger beta, more minority
    assert shares[-1] < 0.5
    # Large n and beta near 1 stay finite (expm1 / log form).
    w = W.EffectiveNumber(0.999999)(np.array([10**9, 1]))
    assert np.isfinite(w).all() and w[1] == pytest.approx(1.0)


REPEAT_CASES = [
    # (image categories, threshold, expected per-image factor)
    # f_1 = 3/4 -> max(1, sqrt(.5/.75)) = 1; f_2 = 1/4 -> sqrt(2); no category -> 1
    ([[1], [1, 2], [1], []], 0.5, [1.0, R2, 1.0, 1.0]),
    # a category repeated in one image counts once: f_2 = 1/4 still
    ([[2, 2, 2], [1], [1], [1]], 0.5, [R2, 1.0, 1.0, 1.0]),
    # image factor is the max over its categories: f_a = 1/8 -> 2, f_b = 2/8 -> sqrt(2)
    ([["a", "b"], ["b"], ["c"], ["c"], ["c"], ["c"], ["c"], ["c"]], 0.5, [2, R2, 1, 1, 1, 1, 1, 1]),
    ([[7], [7]], 1.0, [1.0, 1.0]),  # every image holds 7: f = 1, t = 1 -> 1
    ((np.array([3]), (4,), {5}), 1e-3, [1.0, 1.0, 1.0]),  # any iterables; common: no repeat
]


@pytest.mark.parametrize(("cats", "threshold", "expected"), REPEAT_CASES)
def test_repeat_factors_match_hand_computed(cats, threshold, expected):
    np.testing.assert_allclose(W.repeat_factors(cats, threshold), expected, rtol=1e-12)


def test_coco_image_categories_in_file_order():
    coco = {
        "images": [{"id": 10}, {"id": 3}, {"id": 7}],
        "annotations": [
            {"image_id": 3, "category_id": 2},
            {"image_id": 10, "category_id": 1},
            {"image_id": 3, "category_id": 1},
            {"image_id": 99, "category_id": 1},  # image not listed: ignored
        ],
    }
    ids, cats = W.coco_image_categories(coco)
    assert ids.tolist() == [10, 3, 7]
    assert cats == [[1], [2, 1], []]
    with pytest.raises(ValueError, match="no 'annotations' list"):
        W.coco_image_categories({"images": []})


def test_class_weights_from_shares_still_torch_convention():
    labels = ["a"] * 3 + ["b"] * 7
    assert W.class_weights_from_shares({"a": 0.3, "b": 0.7}, labels) == pytest.approx(
        {"a": 0.1, "b": 0.1}
    )


# -- validation ----------------------------------------------------------------------------------
BAD = [
    # (call, exception, message)
    (lambda: W.EffectiveNumber(1.5), ValueError, r"beta should be in \[0, 1\), but got beta=1.5"),
    (lambda: W.EffectiveNumber(1.0), ValueError, r"beta should be in \[0, 1\)"),  # edge: open
    (lambda: W.EffectiveNumber(-0.1), ValueError, r"but got beta=-0.1"),
    (lambda: W.EffectiveNumber(float("nan")), ValueError, r"beta=nan"),
    (lambda: W.EffectiveNumber(True), TypeError, r"beta should be a real number.*beta=True"),
    (lambda: W.EffectiveNumber("0.9"), TypeError, r"beta should be a real number"),
    (lambda: W.Temperature(0), ValueError, r"temperature should be in \(0, inf\)"),
    (lambda: W.Temperature(float("inf")), ValueError, r"temperature=inf"),
    (lambda: W.Temperature(False), TypeError, r"temperature=False"),
    (lambda: W.Progressive(0), ValueError, r"epochs should be a positive integer.*epochs=0"),
    (lambda: W.Progressive(2.5), TypeError, r"epochs should be a positive integer.*2.5"),
    (lambda: W.Progressive(True), TypeError, r"epochs=True"),  # bool is not an int here
    (lambda: W.Progressive(3, start="nope"), ValueError, r"start should be one of"),
    (lambda: W.Progressive(3, end=5), TypeError, r"end should be a strategy"),
    (lambda: W.repeat_factors([[1]], 0), ValueError, r"threshold should be in \(0, 1\]"),
    (lambda: W.repeat_factors([[1]], 1.5), ValueError, r"threshold=1.5"),
    (lambda: W.repeat_factors([[1]], True), TypeError, r"threshold=True"),
    (lambda: W.repeat_factors("ab"), TypeError, r"image_categories should be a sequence"),
    (lambda: W.repeat_factors([]), ValueError, r"image_categories should not be empty"),
    (lambda: W.repeat_factors([[1], 2]), TypeError, r"image_categories\[1\] should be"),
    (lambda: W.target_shares({"a": -1}), ValueError, r"shares\['a'\] should be finite and >= 0"),
    (lambda: W.target_shares({"a": True}), TypeError, r"shares\['a'\] should be a number"),
    (lambda: W.target_shares({"a": 0}), ValueError, r"all are zero"),
    (lambda: W.resolve("nope", ("a",)), ValueError, r"class_weights should be one of"),
    (lambda: W.resolve(3, ("a",)), TypeError, r"class_weights should be a string"),
    (lambda: W.target_shares({"z": 1}).bind(("a",)), ValueError, r"\['z'\] that are not in"),
]


@pytest.mark.parametrize(("call", "exc", "message"), BAD)
def test_bad_parameters_raise_naming_the_argument(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# -- through the sampler -------------------------------------------------------------------------
LABELS = np.array([0] * 700 + [1] * 250 + [2] * 50)
SIZES = np.array([700, 250, 50])
STRATEGIES = [
    pytest.param("balanced", id="balanced"),
    pytest.param("instance", id="instance"),
    pytest.param(W.sqrt_frequency, id="sqrt"),
    pytest.param(W.Temperature(5), id="temperature5"),
    pytest.param(W.EffectiveNumber(0.99), id="effective0.99"),
    pytest.param(W.target_shares({0: 0.2, 2: 0.8}), id="shares"),
    pytest.param(W.Progressive(3), id="progressive"),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stratified_sampler_draws_exact_counts_of_each_strategy(strategy):
    sampler = DistributedWeightedSampler(
        labels=LABELS, class_weights=strategy, num_samples=999, num_replicas=1, rank=0
    )
    bound = W.resolve(strategy, (0, 1, 2))
    for epoch in range(4):  # Progressive moves with set_epoch; the others do not
        sampler.set_epoch(epoch)
        got = np.bincount(LABELS[np.fromiter(sampler, dtype=np.int64)], minlength=3)
        share = W.class_shares(bound, SIZES, epoch)
        np.testing.assert_array_equal(got, largest_remainder(999, share))
        assert np.all(np.abs(got - 999 * share) < 1)


def test_progressive_moves_from_instance_to_balanced_through_set_epoch():
    sampler = DistributedWeightedSampler(
        labels=LABELS, class_weights=W.Progressive(2), num_replicas=1, rank=0
    )
    minority = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        minority.append(int(np.sum(LABELS[np.fromiter(sampler, dtype=np.int64)] == 2)))
    # epoch 0: 5% of 1000 = 50; epoch 1: (5% + 33.3%) / 2; epochs 2, 3: a third (333 or 334)
    assert minority[0] == 50
    assert minority[1] == pytest.approx(1000 * (0.05 + 1 / 3) / 2, abs=1)
    assert minority[2] == minority[3] == pytest.approx(1000 / 3, abs=1)


@pytest.mark.parametrize("strategy", [W.EffectiveNumber(0.999), W.Temperature(2)])
def test_iid_sampler_matches_shares_within_binomial_bound(strategy):
    n = 20_000
    sampler = DistributedWeightedSampler(
        labels=LABELS, class_weights=strategy, stratify=False, num_samples=n, num_replicas=1, rank=0
    )
    got = np.bincount(LABELS[sampler.indices(np.arange(n), 0)], minlength=3) / n
    share = W.class_shares(W.resolve(strategy, (0, 1, 2)), SIZES, 0)
    # Each class count is Binomial(n, p): 4 standard deviations of the share, fixed seed.
    assert np.all(np.abs(got - share) <= 4 * np.sqrt(share * (1 - share) / n))


def test_repeat_factors_as_sampler_weights():
    # 90 common images; 10 images also hold a rare category: f = 0.1, t = 0.4 -> r = 2.
    cats = [["common"]] * 90 + [["common", "rare"]] * 10
    w = W.repeat_factors(cats, 0.4)
    assert w[:90].tolist() == [1.0] * 90 and w[90:].tolist() == [2.0] * 10
    n = 20_000
    sampler = DistributedWeightedSampler(w, num_samples=n, num_replicas=1, rank=0)
    rare = np.mean(sampler.indices(np.arange(n), 0) >= 90)
    p = 20 / 110  # weight mass of the rare images
    assert abs(rare - p) <= 4 * math.sqrt(p * (1 - p) / n)  # 4-sigma binomial bound


def test_named_strategies_and_stable_repr():
    assert W.resolve("instance", ("a", "b")) is W.instance
    assert W.resolve("sqrt", ("a", "b")) is W.sqrt_frequency
    # A state's configuration may include the strategy: its repr holds no object address.
    assert repr(W.Progressive(3)) == "Progressive(epochs=3, start=instance, end=balanced)"
    assert repr(W.Progressive(3, end="sqrt")).endswith("end=Temperature(temperature=2.0))")

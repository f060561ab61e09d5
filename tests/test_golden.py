"""Pinned plans: the same seed must give the same samples in every release.

Policy (as grain's cross-version determinism test): users resume long runs from a saved
(seed, epoch, consumed) state, so any change to what the plan returns for a given
configuration silently changes their data order. If a change here is intended, it is a
breaking change: bump ``PLAN_VERSION`` in ``distsampler/_core/plan.py`` (states of the old
version are then refused with a clear error), regenerate these values on purpose, and say so in
the README's changelog. Plan version 2 (distsampler 0.2) changed every stratified and quota
plan (a faster keyed bijection), the padding of sampling without replacement and the spread of
float quota shares.
"""

import numpy as np
import pytest

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS
from distsampler import GroupIndex, weights
from distsampler._core.plan import PLAN_VERSION

CARS = [0] * 2246 + [1] * 77
WEIGHTS = np.linspace(0, 1, 500)  # 500 distinct values: one value group each
CLASS_WEIGHTS = np.where(np.arange(600) % 7 == 0, 5.0, 1.0)  # two values: drawn by value
RANDOM_WEIGHTS = np.random.default_rng(7).random(5000)  # many values: cumulative search
LABEL_SETS = [[i % 3, (i * 7) % 5] if i % 4 else [] for i in range(300)]  # overlapping groups
SOURCES = {"web": 6_000_000_000, "books": 3_000_000_000, "code": 1_000_000_000}

GOLDEN = {
    "labels-stratified": (
        dict(labels=CARS),
        [1177, 1349, 2310, 2313, 2275, 531, 308, 1559, 2312, 2295],
    ),
    "labels-iid": (
        dict(labels=CARS, stratify=False),
        [218, 2263, 2315, 2284, 973, 2272, 1226, 2085, 289, 2247],
    ),
    "weights-iid": (dict(weights=WEIGHTS), [293, 397, 431, 467, 168, 401, 123, 276, 352, 451]),
    "weights-by-value": (
        dict(weights=CLASS_WEIGHTS),
        [59, 133, 539, 294, 260, 203, 327, 557, 78, 7],
    ),
    "weights-cumulative": (
        dict(weights=RANDOM_WEIGHTS),
        [1729, 3126, 3667, 4368, 558, 3194, 297, 1523, 2458, 4043],
    ),
    "weights-wor": (
        dict(weights=WEIGHTS, replacement=False, num_samples=400),
        [187, 411, 239, 363, 343, 409, 379, 329, 58, 221],
    ),
    "labels-wor": (
        dict(labels=CARS, replacement=False, num_samples=150),
        [320, 653, 2319, 2259, 2308, 2099, 946, 1085, 2321, 2312],
    ),
    "multilabel-stratified": (
        dict(labels=GroupIndex.from_label_sets(LABEL_SETS, background="none")),
        [188, 257, 110, 141, 162, 47, 9, 20, 186, 293],
    ),
    "sources-stratified": (
        dict(
            labels=GroupIndex.from_sizes(SOURCES),
            class_weights=weights.target_shares({"web": 0.6, "books": 0.3, "code": 0.1}),
            num_samples=10**6,
        ),
        [
            2890901205,
            6178011171,
            807486817,
            4849562783,
            7136395059,
            3607510458,
            9094115712,
            9947821927,
            7494454286,
            4618151456,
        ],
    ),
}

QUOTA_GOLDEN = {
    "recipe-a": (
        (["defect"] * 36 + ["normal"] * 1164, 8, {"defect": 3}),
        dict(policies={"defect": "replace"}),
        [[1042, 34, 12, 834, 115, 99, 21, 422], [967, 58, 569, 14, 993, 8, 868, 30]],
    ),
    "float-share": (
        (["a"] * 300 + ["b"] * 700 + ["c"] * 50, 8, {"a": 0.35}),
        {},
        [[655, 61, 425, 1023, 522, 957, 209, 721], [368, 652, 329, 263, 968, 62, 353, 183]],
    ),
    "multilabel": (
        (GroupIndex.from_label_sets(LABEL_SETS, background="none"), 8, {4: 2}),
        {},
        [[246, 35, 238, 232, 142, 17, 234, 277], [289, 8, 242, 151, 46, 51, 87, 190]],
    ),
}


def test_plan_version():
    assert PLAN_VERSION == 2  # bump together with the values below, never alone


@pytest.mark.parametrize("mode", GOLDEN)
def test_weighted_plan_is_pinned(mode):
    kwargs, expect = GOLDEN[mode]
    s = DWS(**kwargs, seed=2024, num_replicas=1, rank=0)
    s.set_epoch(3)
    assert s.indices(np.arange(10)).tolist() == expect


@pytest.mark.parametrize("mode", QUOTA_GOLDEN)
def test_quota_plan_is_pinned(mode):
    args, kwargs, expect = QUOTA_GOLDEN[mode]
    q = DQ(*args, **kwargs, seed=2024, num_replicas=1, rank=0)
    q.set_epoch(3)
    assert q.batches(np.arange(2)).tolist() == expect

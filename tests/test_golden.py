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
        [485, 617, 810, 509, 2300, 2287, 2259, 2026, 2316, 34],
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
        [545, 1886, 2218, 1514, 2261, 2296, 2252, 1832, 2276, 1702],
    ),
    "multilabel-stratified": (
        dict(labels=GroupIndex.from_label_sets(LABEL_SETS, background="none")),
        [281, 231, 262, 206, 229, 184, 208, 23, 292, 171],
    ),
    "sources-stratified": (
        dict(
            labels=GroupIndex.from_sizes(SOURCES),
            class_weights=weights.target_shares({"web": 0.6, "books": 0.3, "code": 0.1}),
            num_samples=10**6,
        ),
        [
            5832719371,
            1772823975,
            2377113542,
            2998158215,
            196629432,
            9802477408,
            6420946860,
            5020180962,
            9758034052,
            5635305144,
        ],
    ),
}

QUOTA_GOLDEN = {
    "recipe-a": (
        (["defect"] * 36 + ["normal"] * 1164, 8, {"defect": 3}),
        dict(policies={"defect": "replace"}),
        [[12, 34, 849, 1064, 21, 729, 314, 411], [30, 258, 14, 8, 1107, 1157, 49, 421]],
    ),
    "float-share": (
        (["a"] * 300 + ["b"] * 700 + ["c"] * 50, 8, {"a": 0.35}),
        {},
        [[717, 13, 532, 566, 118, 1026, 544, 511], [240, 874, 281, 52, 572, 458, 852, 349]],
    ),
    "multilabel": (
        (GroupIndex.from_label_sets(LABEL_SETS, background="none"), 8, {4: 2}),
        {},
        [[1, 255, 166, 262, 42, 212, 155, 187], [121, 9, 130, 81, 278, 204, 127, 207]],
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

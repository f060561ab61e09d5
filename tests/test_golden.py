"""Pinned plans: the same seed must give the same samples in every release.

Policy (as grain's cross-version determinism test): users resume long runs from a saved
(seed, epoch, consumed) state, so any change to what the plan returns for a given
configuration silently changes their data order. If a change here is intended, it is a
breaking change: bump the state ``STATE_VERSION`` in ``_state.py`` (old states are then
refused with a clear error), update these values, and say so in the changelog.
"""

import numpy as np
import pytest

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS

CARS = [0] * 2246 + [1] * 77
WEIGHTS = np.linspace(0, 1, 500)

GOLDEN = {
    "labels-stratified": (
        dict(labels=CARS),
        [2052, 2269, 2317, 1334, 1463, 2277, 2286, 378, 2268, 2312],
    ),
    "labels-iid": (
        dict(labels=CARS, stratify=False),
        [218, 2263, 2315, 2284, 973, 2272, 1226, 2085, 289, 2247],
    ),
    "weights-iid": (dict(weights=WEIGHTS), [293, 397, 431, 467, 168, 401, 123, 276, 352, 451]),
    "weights-wor": (
        dict(weights=WEIGHTS, replacement=False, num_samples=400),
        [187, 411, 239, 363, 343, 409, 379, 329, 58, 221],
    ),
    "labels-wor": (
        dict(labels=CARS, replacement=False, num_samples=150),
        [955, 2300, 2278, 1349, 369, 2268, 2311, 1620, 2307, 2261],
    ),
}


@pytest.mark.parametrize("mode", GOLDEN)
def test_weighted_plan_is_pinned(mode):
    kwargs, expect = GOLDEN[mode]
    s = DWS(**kwargs, seed=2024, num_replicas=1, rank=0)
    s.set_epoch(3)
    assert list(s)[:10] == expect


def test_quota_plan_is_pinned():
    labels = ["defect"] * 36 + ["normal"] * 1164
    q = DQ(
        labels, 8, {"defect": 3}, policies={"defect": "replace"}, seed=2024, num_replicas=1, rank=0
    )
    q.set_epoch(3)
    assert list(q)[:2] == [
        [21, 614, 12, 705, 609, 845, 34, 793],
        [481, 750, 30, 54, 467, 14, 8, 298],
    ]

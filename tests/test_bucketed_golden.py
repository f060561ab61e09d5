"""Pinned bucket plans: the same seeds must give the same batches in every release.

Policy (as tests/test_golden.py): a resumed run continues from (seed, epoch, consumed), so a
change to what the bucket plan returns silently changes users' data order. If a change is
intended, bump ``BUCKET_PLAN_VERSION`` in ``distsampler/_core/bucket_plan.py`` (old states are
then refused), regenerate these values on purpose and say so in the changelog.
"""

import numpy as np
import pytest

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
)
from distsampler._core.bucket_plan import BUCKET_PLAN_VERSION

LENGTHS = np.arange(2000) * 7919 % 997 + 3
HW = np.stack([np.arange(2000) * 31 % 500 + 200, np.arange(2000) * 17 % 450 + 250], axis=1)
LABELS = np.where(np.arange(2000) % 25 == 0, "defect", "normal")


def sources():
    weighted = DistributedWeightedSampler(labels=LABELS, num_replicas=1, rank=0, seed=3)
    quota = DistributedQuotaBatchSampler(LABELS, 4, {"defect": 1}, num_replicas=1, rank=0, seed=3)
    return weighted, quota


GOLDEN = {
    "lengths": [[1695, 1363, 1625, 1800], [175, 875, 525, 350], [725, 1425, 900, 1075]],
    "tokens": [
        [1050, 298, 1575, 1400],
        [975, 975, 1325, 1045, 975, 975, 975, 1150, 975, 118, 48, 1010, 975, 800, 975],
        [1005, 1425, 900, 1250, 1075, 725, 78],
    ],
    "aspect-quota": [[227, 517, 550, 1131], [240, 980, 900, 1644], [1982, 575, 86, 1861]],
    "buckets": [[1004, 975, 1565, 1100], [429, 385, 886, 725], [175, 750, 1787, 1950]],
}
CONFIGS = {
    "lengths": (0, LENGTHS, dict(batch_size=4)),
    "tokens": (0, LENGTHS, dict(max_tokens=4000)),
    "aspect-quota": (1, HW, {}),
    "buckets": (0, HW, dict(batch_size=4, buckets=[0.8, 1.25])),
}


def test_plan_version():
    assert BUCKET_PLAN_VERSION == 1


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_first_batches_are_pinned(name):
    which, sizes, kw = CONFIGS[name]
    source = sources()[which]
    sampler = DistributedBucketBatchSampler(source, sizes, num_replicas=1, rank=0, seed=5, **kw)
    got = [np.asarray(b).tolist() for b in sampler.batches(np.arange(3), epoch=1)]
    assert got == GOLDEN[name]

"""Scale: 1e8 samples, past torch.multinomial's 2**24 limit, no O(N) plan array per rank.

tracemalloc sees numpy's allocations, so the peak traced while a rank starts an epoch and
takes its first items bounds the plan's working memory: it must stay far below one array of
the epoch (1e8 int64 = 800 MB); the bound here is 64 MB (DESIGN.md's scale row).
"""

import tracemalloc

import numpy as np
import pytest

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS

N = 10**8
LIMIT = 64 * 2**20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def labels():
    y = np.zeros(N, dtype=np.int8)
    y[::33] = 1  # 3% minority
    return y


def first_items(sampler, k):
    tracemalloc.start()
    try:
        sampler.set_epoch(1)
        it = iter(sampler)
        items = [next(it) for _ in range(k)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return items, peak


@pytest.mark.parametrize("stratify", [True, False])
def test_labels_1e8(labels, stratify):
    s = DWS(labels=labels, stratify=stratify, num_replicas=64, rank=63)
    assert len(s) == N // 64
    items, peak = first_items(s, 100_000)
    assert peak < LIMIT
    items = np.array(items)
    assert ((items >= 0) & (items < N)).all()
    assert 0.4 < labels[items].mean() < 0.6  # balanced
    # Random access far into the epoch, without computing what comes before.
    late = s.indices(np.array([N - 1, N - 2]))
    assert ((late >= 0) & (late < N)).all()


def test_weights_1e8(labels):
    w = np.where(labels == 1, 30.0, 1.0)  # > 2**24 categories: torch.multinomial refuses
    s = DWS(weights=w, num_replicas=8, rank=3)
    items, peak = first_items(s, 100_000)
    assert peak < LIMIT
    assert 0.4 < labels[np.array(items)].mean() < 0.6


def test_quota_1e8(labels):
    q = DQ(labels, 32, {1: 8}, num_replicas=64, rank=5)
    batches, peak = first_items(q, 100)
    assert peak < LIMIT
    assert all(int(labels[b].sum()) == 8 for b in batches)

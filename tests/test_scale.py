"""Scale: 1e8 samples, past torch.multinomial's 2**24 limit, no O(N) plan array per rank.

tracemalloc sees numpy's allocations, so the peak traced while a rank starts an epoch and
takes its first items bounds the plan's working memory: it must stay far below one array of
the epoch (1e8 int64 = 800 MB); the bound here is 64 MB (the scale row of docs/design.md).
Sources as ranges (``GroupIndex.from_sizes``) go to 1e10 samples with no array of size N, and
the plan arithmetic stays exact near 2**62.
"""

import tracemalloc

import numpy as np
import pytest

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS
from distsampler import GroupIndex, WeightIndex, weights

N = 10**8
LIMIT = 64 * 2**20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def labels():
    y = np.zeros(N, dtype=np.int8)
    y[::33] = 1  # 3% minority
    return y


def take(sampler, k):
    sampler.set_epoch(1)
    it = iter(sampler)
    return [next(it) for _ in range(k)]


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


SOURCES = {"web": 6 * 10**9, "books": 3 * 10**9, "code": 10**9}
SHARES = {"web": 0.6, "books": 0.3, "code": 0.1}


def test_sources_1e10_as_ranges():
    """N = 1e10 in three sources, W = 1024: no array of size N, exact shares per window."""
    tracemalloc.start()
    try:
        index = GroupIndex.from_sizes(SOURCES)
        s = DWS(
            labels=index,
            class_weights=weights.target_shares(SHARES),
            num_replicas=1024,
            rank=0,
            block_size=16,
        )
        items = take(s, 16 * 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < LIMIT and len(s) == 10**10 // 1024
    items = np.array(items, dtype=np.int64)
    source = np.searchsorted(index.offsets, items, side="right") - 1  # range of each index
    # Each block of 16 (one window of the stratified order) holds each source within 2 of
    # 16 * share (one per level of the 3-leaf Beatty tree).
    per_window = np.stack([(source.reshape(-1, 16) == g).sum(1) for g in range(3)], 1)
    assert (np.abs(per_window - 16 * np.array([0.6, 0.3, 0.1])) <= 2).all()
    # Members cycle without replacement: no index twice in what rank 0 read.
    assert len(np.unique(items)) == len(items)


@pytest.mark.parametrize("stratify", [True, False])
def test_ranges_give_the_same_plan_as_labels(stratify):
    sizes = {"a": 300, "b": 50, "c": 7}
    labels = np.repeat(list(sizes), list(sizes.values()))
    kw = dict(stratify=stratify, num_samples=999, num_replicas=3, rank=2, seed=5)
    ranges, explicit = DWS(labels=GroupIndex.from_sizes(sizes), **kw), DWS(labels=labels, **kw)
    for e in (0, 1):
        ranges.set_epoch(e)
        explicit.set_epoch(e)
        assert list(ranges) == list(explicit)
    qa = DQ(GroupIndex.from_sizes(sizes), 8, {"c": 1}, num_replicas=2, rank=1)
    qb = DQ(labels, 8, {"c": 1}, num_replicas=2, rank=1)
    assert list(qa) == list(qb)


@pytest.mark.parametrize("where", [2**40, 2**62 - 4096])
def test_int64_positions_near_the_limit(where):
    """Positions, counts and cycles at 2**40 and near 2**62: exact, in range, no repeats."""
    index = GroupIndex.from_sizes({"a": 2**61, "b": 2**61})
    s = DWS(labels=index, num_samples=2**62, num_replicas=1, rank=0)
    counts = s._plan.counts(0)
    assert counts.tolist() == [2**61, 2**61]  # largest remainder in exact integers
    pos = np.arange(where, where + 4096, dtype=np.int64)
    got = s.indices(pos)
    assert ((got >= 0) & (got < 2**62)).all()
    assert len(np.unique(got)) == len(got)  # both sources far inside their first cycle
    in_a = (got < 2**61).reshape(-1, 16).sum(1)
    assert (np.abs(in_a - 8) <= 1).all()  # each window of 16 within one of its half
    assert np.array_equal(s.indices(pos), got)  # a pure function of the position


def _final_bytes(index) -> int:
    """Bytes of the arrays an index adds (the caller's weights or labels not counted)."""
    if isinstance(index, WeightIndex):
        if index.by_value:
            return index.groups.members.nbytes
        return index.cumulative.nbytes + index.guide.nbytes
    return index.members.nbytes


BUILDS = {
    "labels-2": (lambda n: (np.arange(n) % 33 == 0).astype(np.int8), GroupIndex.from_labels),
    "labels-1000": (lambda n: (np.arange(n) % 1000).astype(np.int16), GroupIndex.from_labels),
    "weights-by-value": (
        lambda n: np.where(np.arange(n) % 33, 1.0, 30.0),
        WeightIndex.from_weights,
    ),
    "weights-cumulative": (lambda n: np.linspace(1, 2, n), WeightIndex.from_weights),
}


@pytest.mark.parametrize("kind", BUILDS)
def test_building_an_index_peaks_at_most_twice_its_size(kind):
    """Built once per node and memory-mapped by the ranks: building must not need much more
    memory than the result (N = 1e7; the input exists before tracing starts)."""
    make_input, build = BUILDS[kind]
    data = make_input(10**7)
    tracemalloc.start()
    try:
        index = build(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2 * _final_bytes(index)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A label index and a weight index of N = 1e7, saved once (as local rank 0 would)."""
    root = tmp_path_factory.mktemp("node")
    y = (np.arange(10**7) % 33 == 0).astype(np.int8)
    GroupIndex.from_labels(y).save(root / "labels")
    WeightIndex.from_weights(np.linspace(1, 2, 10**7)).save(root / "weights")
    return root


@pytest.mark.parametrize("mode", ["weights", "stratified", "iid", "quota"])
def test_ranks_share_the_mapped_copy(saved, mode):
    """A rank on a memory-mapped index allocates nothing of size N (traced memory: the mapped
    pages are the page cache's, shared by every rank of the node)."""
    tracemalloc.start()
    try:
        if mode == "weights":
            s = DWS(weights=WeightIndex.load(saved / "weights", mmap=True), num_replicas=8, rank=0)
        elif mode == "quota":
            s = DQ(GroupIndex.load(saved / "labels", mmap=True), 32, {1: 8}, num_replicas=8, rank=0)
        else:
            index = GroupIndex.load(saved / "labels", mmap=True)
            s = DWS(labels=index, stratify=mode == "stratified", num_replicas=8, rank=0)
        take(s, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # far below one array of N (1e7 int32 = 40 MB)

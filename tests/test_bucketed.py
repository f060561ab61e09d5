"""DistributedBucketBatchSampler: the issue's properties, in one process (ranks looped).

1. equal ``len`` on every rank, that many batches, every epoch, with and without drop_last;
2. the micro-batch stream is the same for every world size; no batch is empty;
3. resume at any step, under the same or another world size, continues the stream;
4. the epoch's samples are the source's; quotas exact in every batch; counts per window;
5. batch sizes shuffled over the epoch (lag-1 autocorrelation), different between epochs;
6. bad input gets a clear error naming the argument.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
)
from distsampler._core.bucket_plan import deal_by_signature, greedy_runs, min_budget_runs

RNG = np.random.default_rng(0)
N = 3000
LENGTHS = np.maximum(1, RNG.lognormal(4, 1, N)).astype(np.int64)
LABELS = np.where(RNG.random(N) < 0.05, 1, 0)
FACTORY = np.where(np.arange(N) % 40 == 0, "defect", "normal")
HW = np.stack([RNG.integers(300, 900, N), RNG.integers(300, 900, N)], axis=1)


def make(source, sizes, world, rank, **kw):
    return DistributedBucketBatchSampler(source, sizes, num_replicas=world, rank=rank, **kw)


def streams(source, sizes, world, epoch=0, **kw):
    """Each rank's batches of one epoch, and the samplers."""
    samplers = [make(source, sizes, world, r, **kw) for r in range(world)]
    out = []
    for s in samplers:
        s.set_epoch(epoch)
        out.append(list(s))
    return out, samplers


def interleaved(ranks):
    return [ranks[k % len(ranks)][k // len(ranks)] for k in range(len(ranks) * len(ranks[0]))]


def weighted(**kw):
    return DistributedWeightedSampler(labels=LABELS, num_replicas=1, rank=0, **kw)


def quota():
    return DistributedQuotaBatchSampler(
        FACTORY, 8, {"defect": 1}, policies={"defect": "replace"}, num_batches=300
    )


MODES = {
    "batch": dict(batch_size=16, window=256),
    "tokens": dict(max_tokens=3000, window=500),
}


# -- 1, 2: equal lengths, the same stream for every W, no empty batch ---------------------------
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(40, 400),
    sigma=st.floats(0.1, 2.0),
    world=st.integers(1, 8),
    mode=st.sampled_from(["batch", "tokens", "quota"]),
    drop_last=st.booleans(),
    align=st.sampled_from([1, 1, 3, 4]),
    seed=st.integers(0, 2**32),
)
def test_equal_lengths_and_one_stream_for_every_world(
    n, sigma, world, mode, drop_last, align, seed
):
    rng = np.random.default_rng(seed)
    sizes = np.maximum(1, rng.lognormal(3, sigma, n)).astype(np.int64)
    labels = np.r_[0, 1, rng.integers(0, 3, n - 2)]  # groups 0 and 1 have members
    source = DistributedWeightedSampler(labels=labels, num_replicas=1, rank=0, seed=seed % 1000)
    if mode == "quota":  # exact counts of group 0 (an int) and group 1 (a float share)
        bs = int(rng.integers(3, 9))
        quotas = {0: 1, 1: 0.25}
        source = DistributedQuotaBatchSampler(labels, bs, quotas, num_replicas=1, rank=0)
        plain = np.asarray(source.batches(np.arange(source.epoch_batches)))
    kw = (
        dict(batch_size=int(rng.integers(1, 9)) if mode == "batch" else bs, window=None)
        if mode != "tokens"
        else dict(max_tokens=int(sizes.max() * rng.integers(1, 6)), window=int(rng.integers(8, 90)))
    )
    if kw["window"] is None:
        kw["window"] = kw["batch_size"] * align * int(rng.integers(1, 6))
    kw["align"] = align
    ranks, samplers = streams(source, sizes, world, drop_last=drop_last, **kw)
    one, _ = streams(source, sizes, 1, drop_last=False, **kw)
    lengths = {len(r) for r in ranks} | {len(s) for s in samplers}
    assert len(lengths) == 1  # every rank reports and yields the same count
    big = samplers[0].epoch_batches
    assert lengths == {big // world if drop_last else -(-big // world)}
    stream = interleaved(ranks)
    assert stream == one[0][: len(stream)] or len(stream) > len(one[0])
    # past the epoch (the continuation that rounds up to W) the 1-process plan continues too
    assert stream == [list(b) for b in samplers[0].batches(np.arange(len(stream)))]
    assert all(len(b) > 0 for b in stream)
    if mode == "tokens":
        assert all(len(b) * sizes[b].max() <= kw["max_tokens"] for b in stream)
    else:
        assert all(len(b) == kw["batch_size"] for b in stream)
    if mode == "quota":  # every batch keeps its group counts; the epoch holds the source's
        assert all(sum(labels[i] == 0 for i in b) == 1 for b in stream)
        ones = [sum(labels[i] == 1 for i in b) for b in stream]
        share = 0.25 * kw["batch_size"]
        assert all(np.floor(share) <= c <= np.ceil(share) for c in ones)
        if not drop_last:
            got = Counter(i for b in stream[: len(plain)] for i in b)
            assert got == Counter(plain.ravel().tolist())


# -- 3: resume ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["batch", "tokens", "quota"])
@pytest.mark.parametrize(("world", "again"), [(4, 4), (4, 2), (2, 3), (1, 8)])
def test_resume_at_any_step_under_any_world(mode, world, again):
    source, sizes, kw = (
        (quota(), LENGTHS, {}) if mode == "quota" else (weighted(), LENGTHS, MODES[mode])
    )
    full = [list(b) for b in make(source, LENGTHS, 1, 0, **kw).batches(np.arange(400), epoch=1)]
    length = len(make(source, sizes, world, 0, **kw))
    for k in sorted({0, 1, length // 3, length - 1, length}):
        state = None
        for r in range(world):
            s = make(source, sizes, world, r, **kw)
            s.set_epoch(1)
            it = iter(s)
            for _ in range(k):
                next(it)
            state = s.state_dict()
        resumed = []
        for r in range(again):
            s = make(source, sizes, again, r, **kw)
            s.set_epoch(1)
            s.load_state_dict(state)
            s.set_epoch(1)
            resumed.append(list(s))
        got = interleaved(resumed) if resumed[0] else []
        start = k * world
        assert got == full[start : start + len(got)]
        assert state["consumed"] == min(start, s.epoch_batches)  # an integer: no replay


@pytest.mark.parametrize("mode", ["batch", "tokens"])
def test_resume_cost_does_not_grow_with_the_position(mode):
    """Positions of the source drawn to serve the first batch after a resume: the same near
    the start and near the end of the epoch (one window, or the token pass plus one)."""
    source = weighted(num_samples=20000)
    drawn = []

    def resumed_at(k):
        s = make(source, LENGTHS, 4, 0, **MODES[mode])
        s.load_state_dict(make(source, LENGTHS, 4, 0, **MODES[mode]).state_dict() | {"consumed": k})
        plain = s._source_positions
        count = [0]

        def counting(epoch, positions):
            count[0] += len(positions)
            return plain(epoch, positions)

        s._plan.draw_positions = counting
        next(iter(s))
        drawn.append(count[0])

    m = make(source, LENGTHS, 4, 0, **MODES[mode]).epoch_batches
    resumed_at(4)
    resumed_at(4 * (m // 4 - 2))
    assert 0 < drawn[1] <= drawn[0] + 2 * MODES[mode]["window"]


# -- 4: the source's samples, quotas exact ------------------------------------------------------
@pytest.mark.parametrize("mode", ["batch", "tokens"])
def test_epoch_holds_the_sources_samples_window_by_window(mode):
    source = weighted(num_samples=2500)
    s = make(source, LENGTHS, 1, 0, **MODES[mode])
    s.set_epoch(2)
    batches = list(s)
    got = np.concatenate([np.asarray(b) for b in batches])
    end = len(got)  # whole batches: the source's epoch, the last batch filled past its end
    assert end == 2500 if mode == "tokens" else end == -(-2500 // 16) * 16
    want = source.indices(np.arange(end), epoch=2)
    assert Counter(got.tolist()) == Counter(want.tolist())
    # window by window: exactly the source's samples there (so the class counts too)
    plan, at = s._plan, 0
    for w in range(plan.num_windows):
        lo, hi = plan.window_span(0, w)
        inside = Counter(want[lo:hi].tolist())
        taken = Counter()
        while sum(taken.values()) < hi - lo:
            taken.update(batches[at])
            at += 1
        assert taken == inside


def test_quota_source_keeps_exact_quotas_in_every_batch_and_the_sources_samples():
    source = quota()
    for world in (1, 3):
        ranks, samplers = streams(source, HW, world, epoch=1)
        for b in interleaved(ranks):
            assert len(b) == 8
            assert sum(FACTORY[i] == "defect" for i in b) == 1
    one = list(make(source, HW, 1, 0))
    want = np.asarray(source.batches(np.arange(len(one)), epoch=0))
    assert Counter(np.concatenate(one).tolist()) == Counter(want.ravel().tolist())


def test_quota_source_multilabel_counts_and_no_repeat_in_a_batch():
    sets = [[i % 3] + ([3] if i % 7 == 0 else []) for i in range(600)]
    index = GroupIndex.from_label_sets(sets)
    source = DistributedQuotaBatchSampler(index, 6, {3: 2, 0: 1})
    sizes = RNG.integers(1, 100, 600)
    plain = np.asarray(source.batches(np.arange(source.epoch_batches)))
    batches = list(make(source, sizes, 1, 0, window=6 * 10))
    for b in batches:
        assert len(set(b)) == len(b)
        assert sum(3 in sets[i] for i in b) >= 2 and sum(0 in sets[i] for i in b) >= 1
    assert Counter(np.concatenate(batches).tolist()) == Counter(plain.ravel().tolist())


def test_quota_source_over_ranges_of_a_mixture():
    index = GroupIndex.from_sizes({"web": 2000, "books": 900, "code": 100})
    source = DistributedQuotaBatchSampler(index, 10, {"code": 1, "books": 3})
    sizes = np.arange(3000) % 97 + 1
    for b in make(source, sizes, 2, 1):
        assert sum(i >= 2900 for i in b) == 1 and sum(2000 <= i < 2900 for i in b) == 3


def test_small_group_copies_are_spread_over_batches():
    """A 5-member group with quota 2 repeats inside a window; sorting by size would put the
    copies of one member side by side (one batch); they are traded apart."""
    labels = ["rare"] * 5 + ["common"] * 995
    source = DistributedQuotaBatchSampler(labels, 4, {"rare": 2}, num_batches=100)
    sizes = np.arange(1, 1001)
    for b in make(source, sizes, 1, 0):
        assert len(set(b)) == 4
        assert sum(i < 5 for i in b) == 2


def test_deal_keeps_every_rows_signature_counts():
    rng = np.random.default_rng(3)
    items = rng.permutation(1000)[:96].reshape(12, 8)  # distinct: a sample has one signature
    sig = rng.integers(0, 3, (12, 8))
    key = rng.random((12, 8))
    dealt = deal_by_signature(items, sig, key)
    lookup = dict(zip(items.ravel().tolist(), sig.ravel().tolist(), strict=False))
    assert sorted(dealt.ravel().tolist()) == sorted(items.ravel().tolist())
    for row, srow in zip(dealt, sig, strict=True):
        assert Counter(lookup[x] for x in row.tolist()) == Counter(srow.tolist())


# -- 5: shuffled batch sizes ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["batch", "tokens"])
def test_batch_sizes_are_shuffled_over_the_epoch_and_differ_between_epochs(mode):
    sizes = np.maximum(1, np.random.default_rng(5).lognormal(4, 1, 40000)).astype(np.int64)
    source = DistributedWeightedSampler(weights=np.ones(40000), num_replicas=1, rank=0)
    kw = dict(batch_size=16) if mode == "batch" else dict(max_tokens=int(sizes.max()) * 2)
    s = make(source, sizes, 1, 0, **kw)
    means = []
    for epoch in (0, 1):
        s.set_epoch(epoch)
        means.append(np.array([sizes[b].mean() for b in s]))
    x = np.log(means[0])
    r1 = np.corrcoef(x[:-1], x[1:])[0, 1]
    # Independent batch orders give r1 ~ N(0, 1 / n), |r1| < 0.03 here; sorted windows left in
    # order would give ~ 0.9.
    assert abs(r1) <= 0.1
    assert x.std() > 0.3  # the batches really are homogeneous (sizes differ between them)
    assert len(means[0]) != len(means[1]) or not np.array_equal(means[0], means[1])


@pytest.mark.parametrize("world", [4, 8])
def test_align_gives_similar_batches_in_a_step_and_shuffled_steps(world):
    sizes = np.maximum(1, np.random.default_rng(7).lognormal(4, 1, 40000)).astype(np.int64)
    source = DistributedWeightedSampler(weights=np.ones(40000), num_replicas=1, rank=0)
    ranks, _ = streams(source, sizes, world, batch_size=16, align=8)
    steps = np.array([[sizes[r[k]].max() for r in ranks] for k in range(len(ranks[0]))])
    skew = steps.max(axis=1) / steps.mean(axis=1)
    plain, _ = streams(source, sizes, world, batch_size=16)
    plain_steps = np.array([[sizes[r[k]].max() for r in plain] for k in range(len(plain[0]))])
    plain_skew = plain_steps.max(axis=1) / plain_steps.mean(axis=1)
    # The local batches of a step pad alike (align=8 covers W=4 and 8); align=1 mixes them.
    # The longest run of a window (the lognormal tail) still varies: the median step is even.
    assert np.median(skew) < 1.05 and skew.mean() < 1.25 < 1.8 < plain_skew.mean()
    x = np.log(steps.mean(axis=1))
    if world == 8:  # one run a step: the runs' order is shuffled like single batches
        assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) <= 0.1


# -- padding and balance --------------------------------------------------------------------------
def test_oversampled_copies_are_spread_over_batches():
    """A balanced source repeats each minority sample ~10 times an epoch; sorted by size the
    copies sit side by side, and are traded to the nearest batches."""
    source = weighted()
    for b in make(source, LENGTHS, 2, 1, batch_size=16):
        assert len(set(b)) == 16


def test_bucketing_pads_less_than_random_batches():
    source = weighted()
    s = make(source, LENGTHS, 1, 0, batch_size=16)
    ours = sum(len(b) * LENGTHS[b].max() for b in s) / sum(LENGTHS[b].sum() for b in s)
    flat = source.indices(np.arange(len(s) * 16))
    rand = flat.reshape(-1, 16)
    random = (16 * LENGTHS[rand].max(axis=1)).sum() / LENGTHS[rand].sum()
    assert (ours - 1) * 3 < random - 1


def test_token_batches_fill_the_budget_evenly():
    budget = 40 * int(np.exp(4))  # ~40 samples of median length
    lengths = np.random.default_rng(6).lognormal(4, 1, 30000)
    sizes = np.clip(lengths, 1, budget).astype(np.int64)  # truncated upstream
    source = DistributedWeightedSampler(weights=np.ones(30000), num_replicas=1, rank=0)
    s = make(source, sizes, 1, 0, max_tokens=budget)
    costs = np.array([len(b) * sizes[b].max() for b in s if len(b) >= 25])
    assert costs.max() <= budget
    assert np.percentile(costs, 1) >= 0.9 * budget


def test_min_budget_runs_same_count_and_within_budget():
    rng = np.random.default_rng(1)
    for _ in range(50):
        desc = np.sort(rng.integers(1, 60, rng.integers(1, 300)))[::-1]
        budget = int(desc[0]) * int(rng.integers(1, 9))
        need = int(greedy_runs(desc[None, :], budget)[0])
        starts = min_budget_runs(desc, budget, integral=True) + [len(desc)]
        assert len(starts) - 1 == need
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            assert b - a > 0 and (b - a) * desc[a] <= budget


# -- aspect ratio ---------------------------------------------------------------------------------
def test_aspect_ratio_batches_group_by_ratio_and_buckets():
    source = weighted()
    s = make(source, HW, 1, 0, batch_size=8)
    ratio = HW[:, 0] / HW[:, 1]
    spread = np.mean([np.ptp(ratio[b]) for b in s])
    rand = source.indices(np.arange(len(s) * 8)).reshape(-1, 8)
    assert spread < 0.2 * np.mean(np.ptp(ratio[rand], axis=1))
    plain = DistributedWeightedSampler(
        weights=np.ones(N), replacement=False, num_replicas=1, rank=0
    )
    two = make(plain, HW, 1, 0, batch_size=8, buckets=[1.0])  # no repeats to trade apart
    mixed = [b for b in two if len({bool(ratio[i] >= 1) for i in b}) > 1]
    assert len(mixed) <= two._plan.num_windows  # at most one batch a window straddles it


# -- 6: errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sizes", "kw", "match"),
    [
        (np.where(np.arange(N) == 7, 0, 5), dict(batch_size=4), r"sizes\[7\]=0"),
        (np.where(np.arange(N) == 9, np.nan, 5.0), dict(batch_size=4), r"sizes\[9\]=nan"),
        (np.ones(N - 1), dict(batch_size=4), r"len\(sizes\).*3000"),
        (LENGTHS, {}, "exactly one of batch_size"),
        (LENGTHS, dict(batch_size=4, max_tokens=100), "exactly one of batch_size"),
        (LENGTHS, dict(max_tokens=100), rf"sizes\[{int(np.argmax(LENGTHS))}\].*max_tokens=100"),
        (HW, dict(max_tokens=10**9), r"\(height, width\).*batch_size"),
        (LENGTHS, dict(batch_size=4, window=10), "window should be a multiple"),
        (LENGTHS, dict(batch_size=4, window=8, align=4), r"align x batch_size = 4 x 4"),
        (LENGTHS, dict(batch_size=4, buckets=[3, 2]), "buckets should be increasing"),
        (np.ones((N, 3)), dict(batch_size=4), r"shape \(3000, 3\)"),
    ],
)
def test_bad_input_names_the_argument(sizes, kw, match):
    with pytest.raises(ValueError, match=match):
        make(weighted(), sizes, 1, 0, **kw)


def test_bad_source_and_types():
    with pytest.raises(TypeError, match="source should be"):
        make(list(range(N)), LENGTHS, 1, 0, batch_size=4)
    with pytest.raises(TypeError, match="batch_size should be an integer"):
        make(weighted(), LENGTHS, 1, 0, batch_size=True)
    with pytest.raises(ValueError, match="max_tokens= cannot go with"):
        make(quota(), LENGTHS, 1, 0, max_tokens=1000)
    with pytest.raises(ValueError, match="the quota source's batch size 8"):
        make(quota(), LENGTHS, 1, 0, batch_size=4)


def test_sizes_from_a_memory_mapped_file(tmp_path):
    path = tmp_path / "lengths.npy"
    np.save(path, LENGTHS.astype(np.int32))
    s = make(weighted(), str(path), 1, 0, batch_size=16)
    assert isinstance(s.sizes, np.memmap)
    assert list(s)[:5] == list(make(weighted(), LENGTHS, 1, 0, batch_size=16))[:5]


def test_state_is_checked_against_the_configuration():
    s = make(weighted(), LENGTHS, 2, 0, batch_size=16)
    state = s.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        make(weighted(), LENGTHS, 2, 0, batch_size=8).load_state_dict(state)
    with pytest.raises(ValueError, match="source.data"):
        other = DistributedWeightedSampler(labels=1 - LABELS, num_replicas=1, rank=0)
        make(other, LENGTHS, 2, 0, batch_size=16).load_state_dict(state)


def test_float_durations_and_a_float_budget():
    """Speech: sizes in seconds, a budget of 30 s of padded audio a batch."""
    seconds = np.random.default_rng(8).uniform(0.5, 12.0, N)
    s = make(weighted(), seconds, 3, 2, max_tokens=30.0)
    batches = list(s)
    assert batches and all(len(b) * seconds[b].max() <= 30.0 for b in batches)
    with pytest.raises(ValueError, match=r"max_tokens=5.0"):
        make(weighted(), seconds, 1, 0, max_tokens=5.0)


def test_seeds_change_the_cut_not_the_samples():
    source = weighted()
    a = make(source, LENGTHS, 1, 0, batch_size=16, seed=1)
    b = make(source, LENGTHS, 1, 0, batch_size=16, seed=2)
    first, second = list(a), list(b)
    assert first != second
    assert Counter(np.concatenate(first).tolist()) == Counter(np.concatenate(second).tolist())

"""The shard-local plan (``DistributedWeightedSampler(shards=...)``): every promise of the
stratified plan, plus locality.

Properties (one process, ranks simulated and interleaved; the real processes are at the end):
world-size invariance for every W dividing ``lanes``, equal lengths, exact class counts per
epoch, resume mid-epoch under another W, epochs differ, a pinned plan; locality (each rank's
stream replayed through a cache of ``cache_shards`` shards loads at most ``1.1 x shards +
lanes x cache_shards`` an epoch, class-mixed and class-pure shards); no bursts; per-block balance
at least as good as i.i.d. draws; coverage of an undersampled class; clear errors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import interleave

from benchmarks.shards import belady_loads as plan_aware_loads  # the reader's eviction: Belady
from distsampler import DistributedWeightedSampler as DWS
from distsampler import weights as W
from distsampler._core.shard_plan import SHARD_PLAN_VERSION
from distsampler.shards import ShardLayout

SHARDS, PER = 60, 50
LANES = 4


def make_labels(pure: bool, seed: int = 0) -> np.ndarray:
    """3% rare, 12% middle, 85% common; shuffled within the data set or written class by class."""
    n = SHARDS * PER
    labels = np.repeat([0, 1, 2], [int(0.85 * n), int(0.12 * n), n - int(0.85 * n) - int(0.12 * n)])
    if not pure:
        labels = np.random.default_rng(seed).permutation(labels)
    return labels


MIXED, PURE = make_labels(False), make_labels(True)
LAYOUT = ShardLayout.from_sizes([PER] * SHARDS)


def make(world=1, rank=0, labels=MIXED, **kw):
    kw.setdefault("lanes", LANES)
    kw.setdefault("cache_shards", 3)
    kw.setdefault("seed", 11)
    return DWS(labels=labels, shards=LAYOUT, num_replicas=world, rank=rank, **kw)


def global_stream(world, epoch=0, block=1, **kw) -> list[int]:
    streams = []
    for r in range(world):
        s = make(world, r, block_size=block, **kw)
        s.set_epoch(epoch)
        streams.append(list(s))
    assert len({len(x) for x in streams}) == 1, "equal lengths"
    return interleave(streams, block)


def shard_of(idx) -> np.ndarray:
    return np.searchsorted(np.asarray(LAYOUT.offsets), np.asarray(idx), side="right") - 1


def resumed_streams(make, before: int, after: int, consumed: int, epoch: int, **kw) -> list:
    """Each of ``after`` ranks' rest of ``epoch``, resumed from a state saved when each of
    ``before`` ranks had consumed ``consumed`` items (``make(world, rank, **kw)`` builds)."""
    first = [make(before, r, **kw) for r in range(before)]
    for s in first:
        s.set_epoch(epoch)
        it = iter(s)
        for _ in range(consumed):
            next(it)
    state = first[0].state_dict(consumed=consumed)
    rest = []
    for r in range(after):
        s = make(after, r, **kw)
        s.load_state_dict(state)
        s.set_epoch(epoch)
        rest.append(list(s))
    return rest


# -- the stream's contract -------------------------------------------------------------------
@pytest.mark.parametrize("block", [1, 4])
@pytest.mark.parametrize("labels", [MIXED, PURE], ids=["mixed", "pure"])
def test_one_stream_for_every_world_size_dividing_lanes(block, labels):
    one = global_stream(1, block=block, labels=labels)
    for world in (2, 4):
        assert global_stream(world, block=block, labels=labels) == one, world
    assert len(one) % (LANES * block) == 0


def test_world_size_that_does_not_divide_lanes_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"num_replicas=3 does not divide lanes=4.*\[1, 2, 4\]"):
        make(3, 0)


@pytest.mark.parametrize("weights", ["balanced", "sqrt", W.target_shares({0: 0.5, 1: 0.3, 2: 0.2})])
def test_class_counts_are_exact_every_epoch(weights):
    s = make(class_weights=weights)
    from distsampler._core.plan import largest_remainder

    target = largest_remainder(
        s.num_samples, W.class_shares(W.resolve(weights, (0, 1, 2)), np.bincount(MIXED), 0)
    )
    for e in range(3):
        s.set_epoch(e)
        assert np.bincount(MIXED[list(s)], minlength=3).tolist() == target.tolist()


def test_epochs_differ_and_the_seed_matters():
    assert global_stream(1, 0) != global_stream(1, 1)
    assert global_stream(1, 0) != global_stream(1, 0, seed=12)
    assert global_stream(1, 0) == global_stream(1, 0)


@pytest.mark.parametrize(("before", "after"), [(1, 4), (4, 2), (2, 1)])
def test_resume_mid_epoch_under_another_world_size(before, after):
    block = 5
    full = global_stream(1, epoch=1, block=block)
    consumed_local = 3 * block  # a global-step boundary
    rest = resumed_streams(make, before, after, consumed_local, epoch=1, block_size=block)
    expected = full[consumed_local * before :]
    got = interleave(rest, block)
    assert got[: len(expected)] == expected
    # Equal lengths: what is left may not split evenly over the new world; the padding is
    # the epoch's first positions again (fewer than after x block of them).
    assert got[len(expected) :] == full[: len(got) - len(expected)]
    assert len(got) - len(expected) < after * block


def test_default_lanes_are_the_world_size_and_a_state_keeps_them():
    a = DWS(labels=MIXED, shards=LAYOUT, num_replicas=4, rank=0, seed=1)
    assert a.lanes == 4
    state = a.state_dict()
    b = DWS(labels=MIXED, shards=LAYOUT, num_replicas=2, rank=1, seed=1)
    assert b.lanes == 2
    b.load_state_dict(state)  # lanes left at the default: adopted from the state
    assert b.lanes == 4 and b.lanes_served() == (1, 3)
    c = DWS(labels=MIXED, shards=LAYOUT, num_replicas=2, rank=1, seed=1, lanes=2)
    with pytest.raises(ValueError, match="lanes"):
        c.load_state_dict(state)  # lanes given explicitly: a different plan is refused


def test_the_plan_is_pinned():
    """A changed plan breaks users' resumed runs: bump SHARD_PLAN_VERSION and update on purpose."""
    assert SHARD_PLAN_VERSION == 1
    s = make(block_size=2)
    s.set_epoch(3)
    assert list(s)[:16] == PINNED


PINNED = [2370, 2948, 90, 554, 2195, 1522, 599, 931, 2610, 2396, 796, 1291, 2534, 1199, 1611, 2080]


# -- locality, bursts, balance, coverage -------------------------------------------------------
@pytest.mark.parametrize("labels", [MIXED, PURE], ids=["mixed", "pure"])
@pytest.mark.parametrize("k", [1, 3])
def test_each_rank_loads_about_each_shard_once(labels, k):
    for e in range(2):
        total = 0
        for r in range(LANES):
            s = make(LANES, r, labels=labels, cache_shards=k)
            s.set_epoch(e)
            stream = np.array(list(s))
            local = stream[~np.isin(stream, s.resident_indices())]
            total += plan_aware_loads(shard_of(local), k)
            # The schedule the reader follows lists exactly the shards the lane reads.
            (schedule,) = s.shard_schedule().values()
            assert set(schedule.tolist()) == set(shard_of(local).tolist())
        assert total <= 1.1 * SHARDS + LANES * k, (e, total)


def test_no_index_repeats_in_a_burst():
    s = make(LANES, 0, cache_shards=2)
    s.set_epoch(0)
    stream = np.array(list(s))
    draws_per_epoch = np.bincount(np.array(global_stream(1)), minlength=len(MIXED))
    window = min(2000, len(stream))
    for start in range(0, len(stream) - window + 1, 100):
        part = stream[start : start + window]
        counts = np.bincount(part, minlength=len(MIXED))
        expected = window * draws_per_epoch / s.num_samples
        assert (counts <= np.maximum(4, 3 * expected + 2)).all()


def binomial_mad(n: int, p: float) -> float:
    """E|X - n p| for X ~ Binomial(n, p), summed exactly."""
    out = 0.0
    for x in range(n + 1):
        logpmf = (
            math.lgamma(n + 1)
            - math.lgamma(x + 1)
            - math.lgamma(n - x + 1)
            + (x * math.log(p) if x else 0.0)
            + ((n - x) * math.log1p(-p) if x < n else 0.0)
        )
        out += math.exp(logpmf) * abs(x - n * p)
    return out


def test_block_balance_at_least_as_good_as_iid_draws_with_mixed_shards():
    """Blocks of 500 positions of a rank: the mean absolute deviation of each class's count from
    its share is at most the i.i.d. (WeightedRandomSampler) expectation, summed over classes.
    The mean runs over 12 blocks of 2 epochs and 4 ranks, so its noise is small next to the
    gap: the resident classes are spread evenly (deviation below 1) and the local draws of a
    window are a random sample without replacement."""
    block = 500
    devs = []
    shares = np.full(3, 1 / 3)
    for e in range(2):
        for r in range(LANES):
            s = make(LANES, r, block_size=1)
            s.set_epoch(e)
            labels = MIXED[np.array(list(s))]
            for b in range(len(labels) // block):
                counts = np.bincount(labels[b * block : (b + 1) * block], minlength=3)
                devs.append(np.abs(counts - block * shares).sum())
    iid = sum(binomial_mad(block, p) for p in shares)
    assert np.mean(devs) <= iid, (np.mean(devs), iid)


def test_an_undersampled_class_is_covered_within_ceil_size_over_draws_epochs():
    s = make(class_weights="balanced")
    common = np.flatnonzero(MIXED == 0)
    draws = int(np.count_nonzero(MIXED[global_stream(1)] == 0))
    epochs = math.ceil(len(common) / draws)
    seen: set[int] = set()
    for e in range(epochs):
        s.set_epoch(e)
        stream = np.array(list(s))
        seen |= set(stream[MIXED[stream] == 0].tolist())
    assert seen == set(common.tolist())


def test_oversampled_classes_are_resident_and_cycle_their_members():
    s = make(class_weights="balanced")
    resident = s.resident_indices()
    assert set(resident.tolist()) == set(np.flatnonzero(MIXED != 0).tolist())
    # Members cycle: over any number of epochs each rare member is drawn floor or ceil of
    # (draws / members) times, as cycles of the class's members continuing across epochs give.
    rare = np.flatnonzero(MIXED == 2)
    counts = np.zeros(len(MIXED), dtype=np.int64)
    for e in range(3):
        s.set_epoch(e)
        stream = np.array(list(s))
        counts += np.bincount(stream, minlength=len(MIXED))
        draws = counts[rare].sum()
        lo, hi = draws // len(rare), -(-draws // len(rare))
        assert lo <= counts[rare].min() and counts[rare].max() <= hi, e


def test_resident_indices_of_a_range_are_those_of_the_whole_list():
    s = make(class_weights="balanced")
    whole = s.resident_indices()
    for lo, hi in [(0, 50), (120, 975), (2990, 3000), (7, 7)]:
        part = s.resident_indices(lo, hi)
        assert part.tolist() == whole[(whole >= lo) & (whole < hi)].tolist()


def test_a_resident_budget_too_small_warns_with_the_numbers():
    with pytest.warns(
        UserWarning, match=r"resident=100 holds 90 members; 1 more oversampled class"
    ):
        make(class_weights="balanced", resident=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(class_weights="balanced", resident=10_000)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cache_shards": 0}, ValueError, "cache_shards"),
        ({"lanes": 0}, ValueError, "lanes"),
        ({"resident": -1}, ValueError, "resident"),
        ({"stratify": False}, ValueError, "stratify=True"),
        (
            {"class_weights": W.StepSchedule([(0, {0: 1, 1: 1, 2: 1})])},
            ValueError,
            "fixed class_weights",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_layout_and_labels_must_describe_one_dataset():
    with pytest.raises(
        ValueError, match=r"shards holds 3000 samples but the labels \(or weights\) describe 2999"
    ):
        DWS(labels=MIXED[:-1], shards=LAYOUT, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match=r"\(or weights\) describe 2999"):
        DWS(np.ones(len(MIXED) - 1), shards=LAYOUT, num_replicas=1, rank=0)
    with pytest.raises(TypeError, match="ShardLayout"):
        DWS(labels=MIXED, shards=[50] * 60, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="at most 4096 distinct values"):
        DWS(np.arange(5000) + 1.0, shards=ShardLayout.from_sizes([100] * 50), num_replicas=1)
    with pytest.raises(ValueError, match="replacement=True"):
        DWS(np.ones(len(MIXED)), shards=LAYOUT, replacement=False, num_replicas=1, rank=0)


def test_weights_with_few_values_draw_each_value_exactly_and_locally():
    """Per-sample weights of a few distinct values (repeat factors, per-class weights): each
    value's samples are a class; draws per value exact every epoch, in proportion to
    value x count; the heavy value oversampled and resident; one stream for every W."""
    w = np.where(MIXED == 2, 20.0, np.where(MIXED == 1, 2.0, 1.0))
    streams = []
    for world in (1, 2, 4):
        ranks = [
            DWS(w, shards=LAYOUT, lanes=LANES, cache_shards=3, seed=2, num_replicas=world, rank=r)
            for r in range(world)
        ]
        for s in ranks:
            s.set_epoch(1)
        streams.append(interleave([list(s) for s in ranks]))
    assert streams[0] == streams[1] == streams[2]
    s = ranks[0]
    mass = np.array([w[c == MIXED].sum() for c in (0, 1, 2)])
    from distsampler._core.plan import largest_remainder

    expected = largest_remainder(s.num_samples, mass / mass.sum())
    assert np.bincount(MIXED[streams[0]], minlength=3).tolist() == expected.tolist()
    # Drawn more often than they have members: the weight-20 and the weight-2 samples.
    assert set(s.resident_indices().tolist()) == set(np.flatnonzero(MIXED != 0).tolist())


def test_update_shares_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="not supported with shards="):
        make().update_shares({0: 1.0, 1: 1.0, 2: 1.0}, at=0)

"""Quota batches over shards (``DistributedQuotaBatchSampler(shards=...)``), and the shard
plans in real processes.

One process: one stream for every W dividing ``lanes``, every named quota exact in every
batch, exact per-epoch counts, resume under another W, locality, a pinned plan, clear errors.
Real processes (spawned, gloo): both samplers, built from the process group, give every rank
the same length, disjoint global positions whose interleaving is the one-process stream, and a
state saved on two ranks resumes on four.
"""

from __future__ import annotations

import numpy as np
import pytest
from _dist import run
from test_shard_plan import LAYOUT, SHARDS, plan_aware_loads, resumed_streams, shard_of

from distsampler import DistributedQuotaBatchSampler as Q
from distsampler import DistributedWeightedSampler as DWS

LANES = 4
GROUPS = np.repeat(["neg", "mid", "defect"], [2550, 360, 90])
MIXED = np.random.default_rng(4).permutation(GROUPS)
PURE = GROUPS  # written class by class


def make(world=1, rank=0, labels=MIXED, quotas=None, **kw):
    kw.setdefault("lanes", LANES)
    kw.setdefault("cache_shards", 2)
    kw.setdefault("seed", 5)
    quotas = {"defect": 2} if quotas is None else quotas
    return Q(labels, 8, quotas, shards=LAYOUT, num_replicas=world, rank=rank, **kw)


def weighted(world: int = 1, rank: int = 0, block: int = 4) -> DWS:
    """The weighted sampler over the same shards (lanes 4, a cache of 2 shards, seed 5)."""
    return DWS(
        labels=MIXED,
        shards=LAYOUT,
        lanes=LANES,
        cache_shards=2,
        seed=5,
        block_size=block,
        num_replicas=world,
        rank=rank,
    )


def global_batches(world, epoch=0, **kw) -> list[list[int]]:
    samplers = [make(world, r, **kw) for r in range(world)]
    streams = []
    for s in samplers:
        s.set_epoch(epoch)
        streams.append(list(s))
    assert len({len(x) for x in streams}) == 1, "equal lengths"
    return [b for step in zip(*streams, strict=True) for b in step]


@pytest.mark.parametrize("labels", [MIXED, PURE], ids=["mixed", "pure"])
@pytest.mark.parametrize("quotas", [{"defect": 2}, {"defect": 2, "mid": 3}])
def test_one_stream_every_quota_exact_every_batch(labels, quotas):
    one = global_batches(1, labels=labels, quotas=quotas)
    for world in (2, 4):
        assert global_batches(world, labels=labels, quotas=quotas) == one
    for batch in one:
        names = labels[batch]
        for g, q in quotas.items():
            assert int((names == g).sum()) == q
    s = make(labels=labels, quotas=quotas)
    counts = {g: int((labels[np.concatenate(one)] == g).sum()) for g in s.index.names}
    assert [counts[g] for g in s.index.names] == s.per_epoch_counts().tolist()
    assert len(one) == s.epoch_batches and s.epoch_batches % LANES == 0


def test_epochs_differ_and_defects_cycle_across_epochs():
    a, b = global_batches(1, 0), global_batches(1, 1)
    assert a != b
    defects = np.flatnonzero(MIXED == "defect")
    seen = np.concatenate([np.concatenate(a), np.concatenate(b)])
    counts = np.bincount(seen, minlength=len(MIXED))[defects]
    assert counts.max() - counts.min() <= 1  # cycles continue across the epoch boundary


@pytest.mark.parametrize(("before", "after"), [(1, 4), (4, 2)])
def test_resume_mid_epoch_under_another_world_size(before, after):
    full = global_batches(1, epoch=1)
    steps = 5
    rest = resumed_streams(make, before, after, steps, epoch=1)
    got = [b for step in zip(*rest, strict=True) for b in step]
    expected = full[steps * before :]
    assert got[: len(expected)] == expected
    assert got[len(expected) :] == full[: len(got) - len(expected)]  # padding: the start again


@pytest.mark.parametrize("labels", [MIXED, PURE], ids=["mixed", "pure"])
def test_each_lane_loads_about_each_shard_once(labels):
    """Replayed in slot order (``shuffle_within_batch=False``): a shuffle only permutes the
    slots of a batch, which a loader fetches together."""
    total = 0
    for r in range(LANES):
        s = make(LANES, r, labels=labels, shuffle_within_batch=False)
        s.set_epoch(0)
        flat = np.concatenate(list(s))
        local = flat[~np.isin(flat, s.resident_indices())]
        total += plan_aware_loads(shard_of(local), 2)
        (schedule,) = s.shard_schedule().values()
        assert set(schedule.tolist()) == set(shard_of(local).tolist())
    assert total <= 1.1 * SHARDS + LANES * 2, total


def test_the_quota_plan_is_pinned():
    s = make()
    s.set_epoch(2)
    assert next(iter(s)) == PINNED


PINNED = [1975, 1985, 910, 1993, 1842, 1960, 1982, 1952]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"quotas": {"defect": 0.25}}, "must be int counts"),
        ({"policies": {"neg": "replace"}}, "policies 'cycle'"),
        ({"resident": 10}, r"resident=10 cannot hold the quota groups \['defect'\]"),
        ({"cache_shards": 0}, "cache_shards"),
        ({"world": 3}, "does not divide lanes=4"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_update_shares_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="not supported with shards="):
        make().update_shares({"defect": 3}, at=0)


# -- real processes ----------------------------------------------------------------------------
def scenario(kind: str, epoch: int, state: dict | None, steps: int) -> dict:
    """In a gloo process group: build from the group, read ``steps`` items (-1: all)."""
    import torch.distributed as dist

    if kind == "weighted":
        s = DWS(labels=MIXED, shards=LAYOUT, lanes=LANES, cache_shards=2, seed=5, block_size=4)
    else:
        s = Q(MIXED, 8, {"defect": 2}, shards=LAYOUT, lanes=LANES, cache_shards=2, seed=5)
    assert (s.num_replicas, s.rank) == (dist.get_world_size(), dist.get_rank())
    s.set_epoch(epoch)
    if state is not None:
        s.load_state_dict(state)
        s.set_epoch(epoch)
    items = []
    for x in s:
        items.append(x)
        if len(items) == steps:
            break
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, {"items": items, "len": len(s), "state": s.state_dict()})
    return {"ranks": out, "lanes": s.lanes_served()}


def one_process(kind: str, epoch: int) -> list:
    s = weighted(block=4) if kind == "weighted" else make()
    s.set_epoch(epoch)
    return list(s)


def interleave(ranks: list, block: int) -> list:
    out = []
    for i in range(0, len(ranks[0]["items"]), block):
        for r in ranks:
            out.extend(r["items"][i : i + block])
    return out


def launch(kind: str, world: int, state: dict | None, steps: int) -> list:
    """``scenario`` on ``world`` spawned gloo processes, epoch 1."""
    return run(
        "call",
        world,
        timeout=120,
        module="test_shard_quota",
        function="scenario",
        kind=kind,
        epoch=1,
        state=state,
        steps=steps,
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["weighted", "quota"])
def test_real_ranks_read_the_one_process_stream_and_resume_on_another_world(kind):
    block = 4 if kind == "weighted" else 1
    full = one_process(kind, 1)
    two = launch(kind, 2, None, -1)
    ranks = two[0]["ranks"]
    assert len({r["len"] for r in ranks}) == 1 and len(ranks[0]["items"]) == ranks[0]["len"]
    assert interleave(ranks, block) == full
    assert [t["lanes"] for t in two] == [(0, 2), (1, 3)]
    # Stop after 3 blocks on two ranks, resume on four.
    state = launch(kind, 2, None, 3 * block)[0]["ranks"][0]["state"]
    four = launch(kind, 4, state, -1)
    rest = interleave(four[0]["ranks"], block)
    done = 2 * 3 * block
    assert rest[: len(full) - done] == full[done:]


# -- bucketing over a sharded source; class batches refuse shards= -------------------------------
def bucketed_stream(world, quota=False):
    from distsampler import DistributedBucketBatchSampler as BB

    lengths = np.random.default_rng(2).integers(1, 500, size=len(MIXED))
    out = []
    for r in range(world):
        src = make(world, r) if quota else weighted(world, r, block=8)
        b = BB(src, lengths, batch_size=8, window=64, num_replicas=world, rank=r)
        b.set_epoch(0)
        src.set_epoch(0)
        out.append((list(b), src))
    assert len({len(x) for x, _ in out}) == 1
    return [x for step in zip(*[x for x, _ in out], strict=True) for x in step], out, lengths


@pytest.mark.parametrize("quota", [False, True], ids=["weighted", "quota"])
def test_bucketing_a_sharded_source_keeps_its_samples_and_each_ranks_shards(quota):
    one, _, lengths = bucketed_stream(1, quota)
    four, ranks, _ = bucketed_stream(LANES, quota)
    assert four == one  # one stream for every world size dividing lanes
    src = make() if quota else weighted(block=8)
    src.set_epoch(0)
    drawn = np.concatenate([np.ravel(b) for b in src]) if quota else np.array(list(src))
    assert sorted(np.concatenate(one).tolist()) == sorted(drawn.tolist())  # reorders only
    for rank, (batches, s) in enumerate(ranks):
        flat = np.concatenate(batches)
        local = flat[~np.isin(flat, s.resident_indices())]
        (schedule,) = s.shard_schedule().values()
        assert set(shard_of(local).tolist()) <= set(schedule.tolist()), rank  # its lanes only
        if quota:
            assert all(int((MIXED[b] == "defect").sum()) == 2 for b in batches)
    padded = np.mean([lengths[b].max() * len(b) / lengths[b].sum() for b in one])
    assert padded < 1.6  # bucketed (random batches of these lengths pad about 2x)


@pytest.mark.parametrize("quota", [False, True], ids=["weighted", "quota"])
def test_bucketing_moves_its_sources_epoch_for_the_reader(quota):
    """A ``ShardedDataset`` follows the source (the bucketing draws from its plan without
    iterating it): ``set_epoch`` and ``load_state_dict`` on the bucketing move the source's
    epoch, so the schedule the reader fetches by is the epoch the batches come from (it stayed
    at epoch 0: every later epoch read outside its windows)."""
    from distsampler import DistributedBucketBatchSampler as BB

    lengths = np.random.default_rng(2).integers(1, 500, size=len(MIXED))
    src = make(2, 1) if quota else weighted(2, 1, block=8)
    b = BB(src, lengths, batch_size=8, window=64, num_replicas=2, rank=1)
    for epoch in (3, 1):
        b.set_epoch(epoch)
        assert src.epoch == epoch
        flat = np.concatenate(list(b))
        local = flat[~np.isin(flat, src.resident_indices())]
        shards = np.concatenate(list(src.shard_schedule().values()))
        assert set(shard_of(local).tolist()) <= set(shards.tolist())
    b.set_epoch(2)
    it = iter(b)
    next(it)
    state = b.state_dict()
    src2 = make(2, 1) if quota else weighted(2, 1, block=8)
    b2 = BB(src2, lengths, batch_size=8, window=64, num_replicas=2, rank=1)
    b2.load_state_dict(state)
    assert src2.epoch == 2


def test_bucketing_a_sharded_source_needs_whole_batches_per_lane():
    from distsampler import DistributedBucketBatchSampler as BB

    src = DWS(labels=MIXED, shards=LAYOUT, lanes=LANES, block_size=4, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="block_size equal to the batch size 8"):
        BB(src, np.ones(len(MIXED)), batch_size=8)
    with pytest.raises(ValueError, match="max_tokens= cannot bucket a source built with shards="):
        BB(src, np.ones(len(MIXED)), max_tokens=64)


def test_class_batches_refuse_shards_with_the_reason():
    from distsampler import DistributedClassBatchSampler

    with pytest.raises(ValueError, match="cannot read shard by shard"):
        DistributedClassBatchSampler(MIXED, 2, 4, shards=LAYOUT, num_replicas=1, rank=0)

"""Token budgets with another per-sample cost: every batch within budget, the samples kept."""

from __future__ import annotations

import numpy as np
import pytest

from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler

RNG = np.random.default_rng(0)
SIZES = np.maximum(1, RNG.lognormal(4, 1, 3000)).astype(np.int64)
SOURCE = DistributedWeightedSampler(weights=np.ones(3000), seed=1, num_replicas=1, rank=0)
COSTS = {
    "tokens": (lambda s: s, 4096),
    "quadratic": (lambda s: s * s, 4_000_000),
    "overhead": (lambda s: s + 64, 8192),
}


def _ranks(cost, budget, world):
    return [
        list(
            DistributedBucketBatchSampler(
                SOURCE, SIZES, max_tokens=budget, cost=cost, num_replicas=world, rank=r
            )
        )
        for r in range(world)
    ]


@pytest.mark.parametrize("name", COSTS)
@pytest.mark.parametrize("world", [1, 3])
def test_every_batch_within_budget_in_its_cost(name, world):
    fn, budget = COSTS[name]
    cost = fn if name == "overhead" else name
    ranks = _ranks(cost, budget, world)
    assert len({len(r) for r in ranks}) == 1  # equal lengths on every rank
    for batches in ranks:
        for b in batches:
            assert b and len(b) * fn(int(SIZES[b].max())) <= budget
    one = _ranks(cost, budget, 1)[0]
    stream = [ranks[k % world][k // world] for k in range(world * len(ranks[0]))]
    assert stream[: len(one)] == one[: len(stream)]  # the same stream for every world size


@pytest.mark.parametrize("name", COSTS)
def test_the_epoch_holds_exactly_the_sources_samples(name):
    fn, budget = COSTS[name]
    sampler = DistributedBucketBatchSampler(
        SOURCE,
        SIZES,
        max_tokens=budget,
        cost=fn if name == "overhead" else name,
        num_replicas=1,
        rank=0,
    )
    epoch = sampler.batches(np.arange(sampler.epoch_batches))
    drawn = np.sort(np.concatenate([np.asarray(b) for b in epoch]))
    SOURCE.set_epoch(0)
    assert np.array_equal(drawn, np.sort(np.asarray(list(SOURCE))))  # reordered, never re-drawn


@pytest.mark.parametrize(
    ("cost", "match"),
    [
        ("cubic", "cost should be one of"),
        (3, "cost should be a name or a callable"),
        (lambda s: -s, "finite costs > 0"),
        (lambda s: 1e9 - s, "non-decreasing"),
        (lambda s: np.ones(3), "one per size"),
    ],
)
def test_bad_costs_are_refused(cost, match):
    with pytest.raises((TypeError, ValueError), match=match):
        DistributedBucketBatchSampler(
            SOURCE, SIZES, max_tokens=10**9, cost=cost, num_replicas=1, rank=0
        )


def test_a_sample_over_budget_in_cost_units_is_named():
    big = int(SIZES.argmax())
    with pytest.raises(ValueError, match=rf"sizes\[{big}\]=.* costs .*cost='quadratic'"):
        DistributedBucketBatchSampler(
            SOURCE, SIZES, max_tokens=4096, cost="quadratic", num_replicas=1, rank=0
        )


def test_cost_is_part_of_the_configuration():
    a = DistributedBucketBatchSampler(SOURCE, SIZES, max_tokens=10**8, num_replicas=1, rank=0)
    b = DistributedBucketBatchSampler(
        SOURCE, SIZES, max_tokens=10**8, cost="quadratic", num_replicas=1, rank=0
    )
    with pytest.raises(ValueError, match="cost"):
        b.load_state_dict(a.state_dict())

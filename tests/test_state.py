"""States are data: field-by-field mismatch errors, versions, bounds, and a fuzz of bad input.

Every public entry point either works or raises ``ValueError`` / ``TypeError`` naming the bad
argument: never an ``OverflowError`` from numpy during iteration, never a silent truncation.
"""

import json
import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS
from distsampler._core.plan import PLAN_VERSION
from distsampler._core.state import STATE_VERSION

LABELS = [0] * 90 + [1] * 10


def test_mismatch_names_each_field_with_both_values():
    state = DWS(labels=LABELS, seed=0, num_replicas=1, rank=0).state_dict()
    other = DWS(labels=LABELS, seed=1, num_samples=50, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="another configuration") as err:
        other.load_state_dict(state)
    message = str(err.value)
    assert "seed: saved 0, this 1" in message
    assert "num_samples: saved 100, this 50" in message
    assert "replacement" not in message  # only the fields that differ


def test_quota_mismatch_names_the_group():
    state = DQ(LABELS, 4, {1: 1}, num_replicas=1, rank=0).state_dict()
    with pytest.raises(ValueError, match=r"quota\[1\]: saved '1.0', this '2.0'"):
        DQ(LABELS, 4, {1: 2}, num_replicas=1, rank=0).load_state_dict(state)


def test_state_is_plain_data_that_survives_json_and_weights_only_load(tmp_path):
    s = DQ(LABELS, 4, {1: 0.3}, num_replicas=2, rank=0)
    s.set_epoch(2)
    next(iter(s))
    state = s.state_dict()
    assert state["version"] == STATE_VERSION and state["config"]["plan_version"] == PLAN_VERSION
    torch.save(state, tmp_path / "s.pt")
    for loaded in (json.loads(json.dumps(state)), torch.load(tmp_path / "s.pt", weights_only=True)):
        t = DQ(LABELS, 4, {1: 0.3}, num_replicas=1, rank=0)
        t.load_state_dict(loaded)
        assert t.epoch == 2


def test_a_version_1_state_is_refused_clearly():
    old = {
        "version": 1,
        "sampler": "DistributedWeightedSampler",
        "config": "DistributedWeightedSampler(data=labels:..., seed=0)",
        "epoch": 3,
        "consumed": 10,
    }
    with pytest.raises(ValueError, match="version 1.*another distsampler release"):
        DWS(labels=LABELS, num_replicas=1, rank=0).load_state_dict(old)


def test_another_plan_version_is_refused():
    s = DWS(labels=LABELS, num_replicas=1, rank=0)
    state = s.state_dict()
    state["config"]["plan_version"] = PLAN_VERSION - 1
    with pytest.raises(ValueError, match=f"plan_version: saved {PLAN_VERSION - 1}"):
        s.load_state_dict(state)


def test_repr_spells_out_the_configuration():
    text = repr(DQ(LABELS, 4, {1: 1}, policies={1: "replace"}, num_replicas=2, rank=1))
    assert "policy[1]='replace'" in text and "policy[0]='cycle'" in text
    assert "num_replicas=2, rank=1" in text


# -- sizes beyond the int64 plan arithmetic are refused up front ----------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_samples=2**63), "num_samples"),
        (dict(num_samples=2**62 + 1), "num_samples"),
        (dict(seed=2**63), "seed"),
        (dict(num_replicas=2**63, rank=0), "num_replicas"),
        (dict(block_size=2**63), "block_size"),
    ],
)
def test_sizes_beyond_int64_are_refused_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} should be at most"):
        DWS(labels=LABELS, **{"num_replicas": 1, "rank": 0, **kwargs})


def test_quota_sizes_beyond_int64_are_refused():
    with pytest.raises(ValueError, match="num_batches should be at most"):
        DQ(LABELS, 4, {1: 1}, num_batches=2**63, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="batch_size should be at most"):
        DQ(LABELS, 2**63, {1: 1}, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="more than 4611686018427387904 indices"):
        DQ(LABELS, 2**20, {1: 1}, num_batches=2**40, num_replicas=2**10, rank=0)


def test_epoch_beyond_the_plan_arithmetic_is_refused():
    s = DWS(labels=LABELS, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="epoch should be at most"):
        s.set_epoch(2**62)
    s.set_epoch(10**12)  # far, but inside: works
    assert len(list(s)) == 100


# -- fuzz: anything but a working sampler must be a ValueError or TypeError ---------------------
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.ascii_letters, max_size=3),
    st.lists(st.integers(-3, 3), max_size=4),
    st.dictionaries(st.integers(0, 2), st.integers(-2, 9), max_size=3),
)
small = st.one_of(st.integers(-2, 12), junk)


def _exercise(sampler) -> None:
    """Use a sampler the way a loop does: epochs, iteration, state, resume."""
    sampler.set_epoch(1)
    items = list(sampler)
    assert len(items) == len(sampler)
    state = sampler.state_dict()
    sampler.load_state_dict(state)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    num_samples=small,
    replacement=st.one_of(st.booleans(), junk),
    stratify=st.one_of(st.none(), st.booleans(), junk),
    seed=small,
    world=small,
    rank=small,
    block_size=small,
    drop_last=st.one_of(st.booleans(), junk),
    use_weights=st.booleans(),
    weights=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=6),
)
def test_fuzz_weighted_constructor(
    num_samples,
    replacement,
    stratify,
    seed,
    world,
    rank,
    block_size,
    drop_last,
    use_weights,
    weights,
):
    kwargs = dict(
        num_samples=num_samples,
        replacement=replacement,
        seed=seed,
        num_replicas=world,
        rank=rank,
        block_size=block_size,
        drop_last=drop_last,
    )
    try:
        if use_weights:
            s = DWS(weights=weights, **kwargs)
        else:
            s = DWS(labels=LABELS[:30] + LABELS[-5:], stratify=stratify, **kwargs)
    except (ValueError, TypeError):
        return
    _exercise(s)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    batch_size=small,
    quota=st.one_of(st.integers(-1, 5), st.floats(-1, 2), junk),
    policy=st.one_of(st.sampled_from(["cycle", "replace"]), junk),
    num_batches=st.one_of(st.none(), small),
    seed=small,
    world=small,
    rank=small,
)
def test_fuzz_quota_constructor(batch_size, quota, policy, num_batches, seed, world, rank):
    try:
        s = DQ(
            LABELS,
            batch_size,
            {1: quota},
            policies={1: policy},
            num_batches=num_batches,
            seed=seed,
            num_replicas=world,
            rank=rank,
        )
    except (ValueError, TypeError):
        return
    _exercise(s)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    state=st.fixed_dictionaries(
        {},
        optional={
            "version": st.one_of(st.just(STATE_VERSION), junk),
            "sampler": st.one_of(st.just("DistributedWeightedSampler"), junk),
            "config": st.one_of(st.dictionaries(st.text(max_size=3), junk), junk),
            "epoch": small,
            "consumed": small,
            "skip": small,
            "world_size": small,
        },
    )
)
def test_fuzz_states(state):
    s = DWS(labels=LABELS, num_replicas=2, rank=1)
    if state.get("config") == "good":
        state["config"] = s.state_dict()["config"]
    try:
        s.load_state_dict(state)
    except (ValueError, TypeError):
        return
    _exercise(s)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(epoch=small, consumed=small, skip=small, world_size=small)
def test_fuzz_well_formed_states_with_bad_numbers(epoch, consumed, skip, world_size):
    s = DWS(labels=LABELS, num_replicas=2, rank=1, block_size=3)
    state = s.state_dict() | dict(epoch=epoch, consumed=consumed, skip=skip, world_size=world_size)
    try:
        s.load_state_dict(state)
    except (ValueError, TypeError):
        return
    _exercise(s)

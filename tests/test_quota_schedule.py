"""StepSchedule on the quota sampler: points at global micro-batch run positions."""

from __future__ import annotations

import numpy as np
import pytest

from distsampler import DistributedQuotaBatchSampler
from distsampler.weights import StepSchedule

LABELS = ["a"] * 300 + ["b"] * 60
SCHEDULE = StepSchedule([(0, {"a": 0.75, "b": 0.25}), (20, {"a": 0.5, "b": 0.5}), (70, "balanced")])


def make(world: int = 1, rank: int = 0, schedule=SCHEDULE) -> DistributedQuotaBatchSampler:
    return DistributedQuotaBatchSampler(
        LABELS, 8, {"b": 2}, schedule=schedule, num_replicas=world, rank=rank
    )


def stream(world: int, epoch: int) -> list[list[int]]:
    ranks = []
    for r in range(world):
        s = make(world, r)
        s.set_epoch(epoch)
        ranks.append(list(s))
    return [ranks[k % world][k // world] for k in range(world * len(ranks[0]))]


def minority(batches) -> list[int]:
    return [sum(i >= 300 for i in b) for b in batches]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_points_take_effect_at_their_run_position_for_every_world_size(world):
    one = stream(1, 0)
    got = stream(world, 0)
    assert got[: len(one)] == one  # the same stream for every W (W = 4 pads the last round)
    counts = minority(one)
    M = make().epoch_batches  # 30 micro-batches an epoch: the second point at 20
    assert counts[:20] == [2] * 20 and counts[20:M] == [4] * (M - 20)
    # epoch 2 holds run positions 60..89: the third point (70, balanced: 4 of 8) from m = 10
    assert minority(stream(world, 2))[:10] == [4] * 10


def test_resume_under_another_world_size_continues_the_scheduled_stream():
    full = stream(1, 0)
    s = make(2, 0)
    it = iter(s)
    for _ in range(12):  # 12 local steps: 24 global micro-batches, past the second point
        next(it)
    state = s.state_dict()
    rest = []
    for r in range(3):
        t = make(3, r)
        t.load_state_dict(state)
        rest.append(list(t))
    merged = [rest[k % 3][k // 3] for k in range(sum(map(len, rest)))]
    assert merged[: len(full) - 24] == full[24:]


def test_the_schedule_is_configuration():
    other = StepSchedule([(0, {"a": 0.75, "b": 0.25}), (21, {"a": 0.5, "b": 0.5})])
    with pytest.raises(ValueError, match="schedule"):
        make(schedule=other).load_state_dict(make().state_dict())
    with pytest.raises(ValueError, match="schedule"):
        make(schedule=None).load_state_dict(make().state_dict())


def test_a_schedule_must_be_a_step_schedule():
    with pytest.raises(TypeError, match="schedule should be a weights.StepSchedule"):
        make(schedule=[(0, {"a": 1.0, "b": 1.0})])


def test_no_schedule_is_the_plain_plan():
    plain = DistributedQuotaBatchSampler(LABELS, 8, {"b": 2}, num_replicas=1, rank=0)
    assert np.array_equal(plain.batches(np.arange(30)), make(schedule=None).batches(np.arange(30)))

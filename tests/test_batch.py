"""The batch-sampler base: round-robin micro-batches, equal lengths, resume, loud mis-wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distsampler import DistributedQuotaBatchSampler
from distsampler._batch import BatchPlanSampler
from distsampler._core.state import config_value


class Ragged(BatchPlanSampler):
    """Micro-batch m holds 1 + m % 3 indices starting at 10 * m: ragged rows, any m."""

    def __init__(self, epoch_batches: int, **kw) -> None:
        self._init_batches(
            num_replicas=kw.get("num_replicas"),
            rank=kw.get("rank"),
            seed=kw.get("seed", 0),
            drop_last=kw.get("drop_last", False),
        )
        self.epoch_batches = epoch_batches
        self._batch_hint = 2
        self._chunk_batches = 4  # several chunks per epoch: the chunk seams are exercised

    @property
    def dataset_size(self) -> int:
        return 1 << 20

    def _draw(self, epoch: int, micro_batches: np.ndarray) -> list[list[int]]:
        return [
            [int(1000 * epoch + 10 * m + j) for j in range(1 + int(m) % 3)] for m in micro_batches
        ]

    def _config(self) -> dict:
        return {"plan_version": 1, "seed": config_value(self.seed), "M": self.epoch_batches}

    def _draws(self) -> int:
        return 2 * self.epoch_batches


def _stream(world: int, total: int, drop_last: bool = False) -> list[list[list[int]]]:
    return [
        list(Ragged(total, num_replicas=world, rank=r, drop_last=drop_last)) for r in range(world)
    ]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("total", [1, 7, 16, 17])
def test_ragged_round_robin_equal_lengths_and_invariance(world, total):
    ranks = _stream(world, total)
    lengths = {len(r) for r in ranks}
    assert lengths == {-(-total // world)}  # equal on every rank, the epoch rounded up
    interleaved = [ranks[k % world][k // world] for k in range(world * len(ranks[0]))]
    one = list(Ragged(len(interleaved), num_replicas=1, rank=0))
    assert interleaved == one  # the stream read in order is the 1-process stream
    assert all(batch for batch in interleaved)  # no empty batch


@pytest.mark.parametrize("world", [2, 3, 4])
def test_drop_last_trims_to_whole_rounds(world):
    ranks = _stream(world, 10, drop_last=True)
    assert {len(r) for r in ranks} == {10 // world}
    assert all(len(r) == len(s) for r, s in zip(ranks, _stream(world, 10, True), strict=True))


@pytest.mark.parametrize(("world", "world2"), [(2, 2), (2, 3), (4, 1), (1, 4)])
@pytest.mark.parametrize("steps", [0, 1, 3, 6])
def test_resume_under_another_world_continues_the_stream(world, world2, steps):
    total = 24
    full = list(Ragged(total, num_replicas=1, rank=0))
    samplers = [Ragged(total, num_replicas=world, rank=r) for r in range(world)]
    its = [iter(s) for s in samplers]
    for _ in range(steps):
        for it in its:
            next(it)
    state = samplers[0].state_dict()
    assert state["consumed"] == steps * world
    resumed = []
    for r in range(world2):
        s = Ragged(total, num_replicas=world2, rank=r)
        s.load_state_dict(state)
        resumed.append(list(s))
    rest = [resumed[k % world2][k // world2] for k in range(sum(map(len, resumed)))]
    assert rest[: total - steps * world] == full[steps * world :]


def test_batches_rejects_negative_micro_batches():
    with pytest.raises(ValueError, match="micro_batches should be >= 0"):
        Ragged(4, num_replicas=1, rank=0).batches([-1])


def _quota(**kw) -> DistributedQuotaBatchSampler:
    labels = ["normal"] * 90 + ["defect"] * 10
    return DistributedQuotaBatchSampler(
        labels, batch_size=8, quotas={"defect": 2}, num_replicas=1, rank=0, **kw
    )


def test_batch_sampler_passed_as_sampler_is_refused():
    dataset = TensorDataset(torch.arange(100))
    loader = DataLoader(dataset, batch_size=8, sampler=_quota())
    with pytest.raises(TypeError, match="batch_sampler=sampler"):
        next(iter(loader))
    loader = DataLoader(dataset, batch_size=8, sampler=_quota(), drop_last=True)
    with pytest.raises(TypeError, match="batch_sampler=sampler"):
        next(iter(loader))


def test_batch_sampler_wired_right_still_works():
    dataset = TensorDataset(torch.arange(100))
    sampler = _quota()
    (x,) = next(iter(DataLoader(dataset, batch_sampler=sampler)))
    assert x.shape == (8,)
    assert int((x >= 90).sum()) == 2  # the quota: indices 90.. are the defects


@pytest.mark.parametrize(("given", "ok"), [(100, True), (99, False), (101, False)])
def test_dataset_size_is_checked(given, ok):
    if ok:
        assert _quota(dataset_size=given).dataset_size == 100
    else:
        with pytest.raises(
            ValueError, match=f"dataset_size={given}, but the sampler indexes 100 samples"
        ):
            _quota(dataset_size=given)


def test_quota_drop_last_is_configuration():
    kept, dropped = _quota(num_batches=3), _quota(num_batches=3, drop_last=True)
    assert "drop_last" not in kept.state_dict()["config"]  # 0.2 states still load
    with pytest.raises(ValueError, match="drop_last"):
        dropped.load_state_dict(kept.state_dict())

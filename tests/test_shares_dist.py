"""update_shares and GroupStats under real processes (spawn, gloo, FileStore: tests/_dist.py).

Ranks hand out different amounts before an update (a prefetching loader runs ahead): the
update lands at the first global step boundary no rank has handed out, the same on every rank,
and the global stream equals the 1-process stream with the update at that position. Ranks that
pass different shares all raise, naming the disagreeing ranks.
"""

import _dist
import numpy as np
import pytest
from conftest import interleave

from distsampler import DistributedWeightedSampler as DWS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LABELS = np.array([0] * 300 + [1] * 40 + [2] * 9)
B = {0: 0.2, 1: 0.3, 2: 0.5}


def agreeing(stratify: bool) -> dict:
    import torch.distributed as dist

    from distsampler.feedback import GroupStats

    rank = dist.get_rank()
    s = DWS(labels=LABELS, num_samples=200, block_size=4, seed=3, stratify=stratify)
    it = iter(s)
    head = [next(it) for _ in range(3 + 5 * rank)]  # rank r handed out 3 + 5r indices
    run = s.update_shares(B)
    tail = list(it)
    stats = GroupStats([0, 1, 2])
    stats.add(np.array([rank, 2]), np.array([1.0, 10.0 * (rank + 1)]))
    red = stats.reduce()
    return {"run": run, "stream": head + tail, "sum": red["sum"].tolist()}


def quota_agreeing() -> dict:
    import torch.distributed as dist

    from distsampler import DistributedQuotaBatchSampler

    rank = dist.get_rank()
    s = DistributedQuotaBatchSampler(LABELS, 8, {0: 4, 1: 3, 2: 1}, seed=3)
    it = iter(s)
    head = [list(next(it)) for _ in range(1 + 2 * rank)]
    run = s.update_shares({0: 0.5, 1: 0.25, 2: 0.25}, accumulation_steps=2)
    return {"run": run, "stream": head + [list(b) for b in it]}


def disagreeing() -> str:
    import torch.distributed as dist

    rank = dist.get_rank()
    s = DWS(labels=LABELS, num_samples=200, block_size=4)
    shares = dict(B)
    if rank == 1:
        shares[2] = 0.6
    try:
        s.update_shares(shares)
    except ValueError as e:
        return str(e)
    return "no error"


@pytest.mark.parametrize("stratify", [True, False])
def test_ranks_agree_on_the_boundary_and_give_the_one_process_stream(stratify):
    world = 2
    res = _dist.run(
        "call", world, module="test_shares_dist", function="agreeing", stratify=stratify
    )
    runs = {r["run"] for r in res}
    # rank 1 handed out 8 local = its 2nd block (global positions 12..15): next boundary 16
    assert runs == {16}
    got = interleave([r["stream"] for r in res], 4)
    one = DWS(labels=LABELS, num_samples=200, seed=3, stratify=stratify, num_replicas=1, rank=0)
    one.update_shares(B, at=16)
    assert got == list(one)
    assert res[0]["sum"] == res[1]["sum"] == [1.0, 1.0, 30.0]  # one all-reduce: both ranks


def test_ranks_passing_different_shares_all_raise():
    res = _dist.run("call", 3, module="test_shares_dist", function="disagreeing")
    for msg in res:
        assert "ranks [1]" in msg, msg


def test_quota_ranks_agree_on_the_optimizer_step_boundary():
    from distsampler import DistributedQuotaBatchSampler

    res = _dist.run("call", 2, module="test_shares_dist", function="quota_agreeing")
    # rank 1 handed out its 3rd batch (global micro-batch 5): steps of 2 x 2 -> 8
    assert {r["run"] for r in res} == {8}
    got = interleave([r["stream"] for r in res])
    one = DistributedQuotaBatchSampler(LABELS, 8, {0: 4, 1: 3, 2: 1}, seed=3, num_replicas=1)
    one.update_shares({0: 0.5, 1: 0.25, 2: 0.25}, at=8)
    want = [list(b) for b in one]
    assert len(got) == len(want) + 1  # 75 batches, rounded up to 2 ranks
    assert got[: len(want)] == want

"""DistributedBucketBatchSampler under real processes: spawn, gloo, FileStore (tests/_dist.py).

Each rank builds the sampler with no ``num_replicas``/``rank`` (the world comes from the
process group); all ranks must report the same ``len``, yield exactly that many batches,
together give the 1-process stream, and resume under another world size.
"""

import _dist
import numpy as np
import pytest
from conftest import interleave

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

B = "DistributedBucketBatchSampler"
N = 1500
LENGTHS = (np.arange(N) * 7919 % 997 + 3).tolist()
LABELS = [1 if i % 30 == 0 else 0 for i in range(N)]
FACTORY = ["defect" if i % 30 == 0 else "normal" for i in range(N)]


def configs():
    # weights= (a stratified labels= source holds a closure and does not pickle to the ranks)
    weights = [30.0 if label else 1.0 for label in LABELS]
    weighted = DistributedWeightedSampler(weights, num_replicas=1, rank=0)
    quota = DistributedQuotaBatchSampler(FACTORY, 8, {"defect": 1}, num_replicas=1, rank=0)
    return [
        (B, (weighted, LENGTHS), dict(batch_size=8, window=64)),
        (B, (weighted, LENGTHS), dict(max_tokens=4000, window=300)),
        (B, (weighted, LENGTHS), dict(max_tokens=4000, window=300, drop_last=True)),
        (B, (quota, LENGTHS), dict(window=80)),
    ]


def single_process(args, kwargs, epoch):
    from distsampler import DistributedBucketBatchSampler

    s = DistributedBucketBatchSampler(*args, **kwargs, num_replicas=1, rank=0)
    s.set_epoch(epoch)
    return [list(b) for b in s.batches(np.arange(len(s) + 8))]


@pytest.mark.parametrize("world", [3, 4])
def test_equal_lengths_and_one_stream_over_gloo(world):
    cfgs = configs()
    results = _dist.run("contract", world, configs=cfgs, epochs=[0, 1])
    for c, (_, args, kwargs) in enumerate(cfgs):
        for e in (0, 1):
            gathered = results[0][c][e]
            streams = [g["stream"] for g in gathered]
            lens = {g["len"] for g in gathered}
            assert len(lens) == 1 and {len(s) for s in streams} == lens  # no DDP hang
            assert all(len(b) > 0 for s in streams for b in s)
            got = interleave(streams)
            assert got == single_process(args, kwargs, e)[: len(got)]
            if c == 3:  # the quota: one defect in every local batch on every rank
                assert all(sum(FACTORY[i] == "defect" for i in b) == 1 for b in got)


def test_resume_in_fresh_processes_under_another_world_size():
    _, args, kwargs = configs()[1]
    first = _dist.run("resume", 4, kind=B, args=args, kwargs=kwargs, epoch=2, state=None, steps=5)
    state = first[0][0]["state"]
    assert all(g["state"] == state for g in first[0]) and state["consumed"] == 20
    second = _dist.run(
        "resume", 3, kind=B, args=args, kwargs=kwargs, epoch=2, state=state, steps=-1
    )
    rest = [g["items"] for g in second[0]]
    assert len({len(r) for r in rest}) == 1
    got = interleave([g["items"] for g in first[0]]) + interleave(rest)
    assert got == single_process(args, kwargs, 2)[: len(got)]

"""The contract with real processes: spawn, gloo, FileStore rendezvous, all_gather, timeouts.

Each launch checks many configurations at once to keep CI fast (a launch costs seconds).
The in-process tests (test_weighted.py, test_quota.py) cover the bulk of the cases.
"""

import _dist
import numpy as np
import pytest
from conftest import interleave

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CARS = [0] * 2246 + [1] * 77
FACTORY = ["defect"] * 36 + ["normal"] * 1164
W = "DistributedWeightedSampler"
Q = "DistributedQuotaBatchSampler"
CONFIGS = [
    (W, (), dict(labels=CARS)),  # stratified
    (W, (), dict(labels=CARS, stratify=False)),  # class-first i.i.d.
    (W, (np.linspace(0, 1, 500).tolist(),), dict(num_samples=777)),  # weights i.i.d.
    (
        W,
        (np.linspace(0, 1, 500).tolist(),),
        dict(replacement=False, num_samples=400, drop_last=True),
    ),
    (W, (), dict(labels=CARS, replacement=False, num_samples=150, drop_last=True)),
    (W, (), dict(labels=CARS, block_size=8)),
    (Q, (FACTORY, 8, {"defect": 3}), dict(policies={"defect": "replace"})),
    (Q, (FACTORY, 8, {"defect": 0.3}), {}),
]
EPOCHS = [0, 1]


def single_process(kind, args, kwargs, epoch):
    import distsampler

    s = getattr(distsampler, kind)(*args, **kwargs, num_replicas=1, rank=0)
    s.set_epoch(epoch)
    return list(s)


@pytest.fixture(scope="module")
def runs():
    """Launches shared by the tests below: W = 2, 3, 4, and W = 2 once more."""
    return {
        world: _dist.run("contract", world, configs=CONFIGS, epochs=EPOCHS) for world in (2, 3, 4)
    } | {"again": _dist.run("contract", 2, configs=CONFIGS, epochs=EPOCHS)}


@pytest.mark.parametrize("world", [2, 3, 4])
def test_contract_over_gloo(runs, world):
    results = runs[world]
    for c, (kind, args, kwargs) in enumerate(CONFIGS):
        block = kwargs.get("block_size", 1)
        for e in EPOCHS:
            gathered = results[0][c][e]  # all_gather: every rank saw the same
            assert all(r[c][e] == gathered for r in results)
            lens = {g["len"] for g in gathered}
            streams = [g["stream"] for g in gathered]
            # equal length, as len() promised, on every rank
            assert len(lens) == 1 and {len(s) for s in streams} == lens
            # world-size invariance: the ranks interleaved are the 1-process stream
            ref = single_process(kind, args, kwargs, e)
            got = interleave(streams, block)
            assert got[: len(ref)] == ref[: len(got)]
            if kwargs.get("drop_last"):
                assert len(ref) - len(got) < world
            else:
                assert 0 <= len(got) - len(ref) < world * block
            if kwargs.get("replacement") is False:  # disjoint indices across ranks
                flat = [i for s in streams for i in s]
                assert len(set(flat)) == len(flat)
        # epoch 0 differs from epoch 1
        assert results[0][c][0] != results[0][c][1]


def test_same_stream_in_two_separate_runs(runs):
    assert runs[2] == runs["again"]


def test_quota_batches_exact_on_every_rank(runs):
    for world in (2, 3, 4):
        c = 6  # 3 defects in every batch of 8
        for g in runs[world][0][c][0]:
            assert all(sum(FACTORY[i] == "defect" for i in b) == 3 for b in g["stream"])


@pytest.mark.parametrize(
    "kind, args, kwargs, steps",
    [
        (W, (), dict(labels=CARS), 300),
        (Q, (FACTORY, 8, {"defect": 3}), dict(policies={"defect": "replace"}), 20),
    ],
)
def test_resume_in_fresh_processes_under_another_world_size(kind, args, kwargs, steps):
    # 4 ranks take `steps` items each and save; 2 fresh ranks restore and finish the epoch.
    first = _dist.run(
        "resume", 4, kind=kind, args=args, kwargs=kwargs, epoch=3, state=None, steps=steps
    )
    taken = [g["items"] for g in first[0]]
    state = first[0][0]["state"]
    assert all(g["state"] == state for g in first[0])
    assert state["consumed"] == 4 * steps
    second = _dist.run(
        "resume", 2, kind=kind, args=args, kwargs=kwargs, epoch=3, state=state, steps=-1
    )
    rest = [g["items"] for g in second[0]]
    assert len({len(r) for r in rest}) == 1
    full = single_process(kind, args, kwargs, 3)
    got = interleave(taken) + interleave(rest)
    assert got[: len(full)] == full  # nothing lost, nothing repeated
    assert len(got) - len(full) < 2

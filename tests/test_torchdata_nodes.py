"""torchdata.nodes: resume through the real ``Loader``, under the same and another world size.

torchdata's ``SamplerWrapper(sampler)`` calls ``sampler.set_epoch(0)`` when a fresh graph
starts, which used to drop a state loaded into our sampler without a word: a run resumed under
another world size replayed epoch 0. ``sampler_node`` / ``map_style_batches`` start at the
sampler's epoch, and the plain wrapper now makes the sampler warn (``ResumeDiscardedWarning``).
"""

from __future__ import annotations

import warnings

import _dist
import pytest
import torch
from conftest import interleave

pytest.importorskip("torchdata.nodes")
from torchdata.nodes import Batcher, Loader, SamplerWrapper

from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
)
from distsampler._core.state import ResumeDiscardedWarning
from distsampler.integrations.torchdata import find_sampler_state, map_style_batches, sampler_node

N, B, STOP, EPOCHS = 96, 4, 3, 3  # 24 global batches an epoch; stop after 3 local ones
LABELS = [int(i % 5 == 0) for i in range(N)]
LENGTHS = [1 + (i * 37) % 29 for i in range(N)]
DATASET = torch.utils.data.TensorDataset(torch.arange(N))


def ids(samples: list) -> list[int]:
    """The dataset indices of a batch (the collate function of these tests)."""
    return [int(x[0]) for x in samples]


def make(kind: str, world: int | None = None, rank: int | None = None):
    """A sampler of ``kind``; without world/rank it reads them from the process group."""
    kw = dict(num_replicas=world, rank=rank)
    if kind == "weighted":
        return DistributedWeightedSampler(
            labels=LABELS, class_weights="balanced", block_size=B, seed=3, **kw
        )
    if kind == "quota":
        return DistributedQuotaBatchSampler(LABELS, B, {1: 1}, seed=3, **kw)
    source = DistributedWeightedSampler(labels=LABELS, seed=3, **kw)
    return DistributedBucketBatchSampler(source, LENGTHS, batch_size=B, seed=3, **kw)


def graph(sampler, workers: int = 0):
    size = B if isinstance(sampler, DistributedWeightedSampler) else None
    return map_style_batches(DATASET, sampler, batch_size=size, collate_fn=ids, num_workers=workers)


def continues(streams: list[list], expected: list) -> bool:
    """The ranks' batches, read in sharding order, are ``expected``; the last round may be
    padded (every rank gets the same number of batches)."""
    got = interleave(streams)
    return got[: len(expected)] == expected and len(got) - len(expected) < len(streams)


def uninterrupted(kind: str, world: int, rank: int, workers: int = 0) -> list[list]:
    loader = Loader(graph(make(kind, world, rank), workers))
    return [list(loader) for _ in range(EPOCHS)]  # each iter() is the next epoch


def stop_in_epoch_1(kind: str, world: int, rank: int, workers: int = 0) -> tuple[list, dict]:
    """Epoch 0, then ``STOP`` batches of epoch 1: those batches and ``loader.state_dict()``."""
    loader = Loader(graph(make(kind, world, rank), workers))
    list(loader)
    it = iter(loader)
    taken = [next(it) for _ in range(STOP)]
    return taken, loader.state_dict()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["weighted", "quota", "bucket"])
def test_resume_in_fresh_objects_continues_the_same_batches(kind, workers):
    """Same world size: ``Loader.load_state_dict`` on a fresh graph, the rest as uninterrupted."""
    world = 2
    for rank in range(world):
        full = uninterrupted(kind, world, rank, workers)
        taken, state = stop_in_epoch_1(kind, world, rank, workers)
        assert taken == full[1][:STOP]
        loader = Loader(graph(make(kind, world, rank), workers))
        loader.load_state_dict(state)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResumeDiscardedWarning)
            rest, later = list(loader), list(loader)
        assert rest == full[1][STOP:]
        assert later == full[2]


@pytest.mark.parametrize("kind", ["weighted", "quota", "bucket"])
@pytest.mark.parametrize(("old", "new"), [(2, 3), (3, 1)])
def test_resume_under_another_world_size_continues_the_global_stream(kind, old, new):
    """The saved state, loaded into each new rank's sampler; a fresh graph from
    ``map_style_batches``: the new ranks together continue the 1-process stream."""
    one = uninterrupted(kind, 1, 0)
    saved = [stop_in_epoch_1(kind, old, r) for r in range(old)]
    assert interleave([t for t, _ in saved]) == one[1][: old * STOP]
    rest, later = [], []
    for r in range(new):
        sampler = make(kind, new, r)
        sampler.load_state_dict(find_sampler_state(saved[r % old][1]))
        loader = Loader(graph(sampler))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResumeDiscardedWarning)
            rest.append(list(loader))
            later.append(list(loader))
    assert continues(rest, one[1][old * STOP :])
    assert continues(later, one[2])


def test_plain_sampler_wrapper_drops_a_loaded_state_and_the_sampler_warns():
    """torchdata's own SamplerWrapper starts at epoch 0: the loaded epoch 1 is replaced by
    epoch 0, through the real Loader; the warning names this file's line."""
    one = uninterrupted("weighted", 1, 0)
    _, state = stop_in_epoch_1("weighted", 2, 0)
    sampler = make("weighted", 1, 0)
    sampler.load_state_dict(find_sampler_state(state))
    loader = Loader(Batcher(SamplerWrapper(sampler), batch_size=B, drop_last=False))
    with pytest.warns(ResumeDiscardedWarning, match=r"set_epoch\(0\) drops the loaded state") as w:
        replayed = [ids([DATASET[i] for i in b]) for b in loader]
    assert w[0].filename == __file__
    assert replayed == one[0]  # the silent replay the warning is about

    sampler = make("weighted", 1, 0)
    sampler.load_state_dict(find_sampler_state(state))
    loader = Loader(Batcher(sampler_node(sampler), batch_size=B, drop_last=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeDiscardedWarning)
        resumed = [ids([DATASET[i] for i in b]) for b in loader]
    assert resumed == one[1][2 * STOP :]


def test_a_state_saved_at_an_epoch_end_moves_on_without_a_warning():
    """A fully consumed epoch followed by the next one is not a dropped state."""
    full = uninterrupted("quota", 2, 1)
    loader = Loader(graph(make("quota", 2, 1)))
    list(loader)
    state = loader.state_dict()  # the end of epoch 0
    fresh = Loader(graph(make("quota", 2, 1)))
    fresh.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeDiscardedWarning)
        assert list(fresh) == full[1]


def test_set_epoch_after_a_load_warns_only_when_it_drops_the_state():
    sampler = make("weighted", 2, 0)
    sampler.set_epoch(1)
    it = iter(sampler)
    [next(it) for _ in range(B)]
    state = sampler.state_dict()
    for epoch, warns in [(0, True), (2, True), (1, False)]:
        s = make("weighted", 2, 0)
        s.load_state_dict(state)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s.set_epoch(epoch)
            s.set_epoch(epoch + 1)  # once set, later epochs are the caller's choice
        assert [x.category for x in w] == [ResumeDiscardedWarning] * warns, epoch
        assert w[0].filename == __file__ if warns else True
    done = make("weighted", 2, 0)
    done.set_epoch(1)
    list(done)
    s = make("weighted", 2, 0)
    s.load_state_dict(done.state_dict())  # epoch 1 fully consumed
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeDiscardedWarning)
        s.set_epoch(2)


def test_map_style_batches_checks_batch_size():
    with pytest.raises(ValueError, match="yields indices: pass batch_size"):
        map_style_batches(DATASET, make("weighted", 1, 0))
    with pytest.raises(ValueError, match="batch_size should be None for Distributed"):
        map_style_batches(DATASET, make("quota", 1, 0), batch_size=B)


def test_find_sampler_state_in_a_nodes_loader_state():
    _, state = stop_in_epoch_1("quota", 2, 0, workers=2)
    found = find_sampler_state(state)
    assert found["sampler"] == "DistributedQuotaBatchSampler"
    assert (found["epoch"], found["consumed"]) == (1, 2 * STOP)


# -- real processes: resume under another world size through torchdata.nodes ---------------
def gloo_run(kind: str, state: dict | None, stop: int, workers: int) -> dict:
    """In a rank of a gloo group: a graph over a sampler that reads the world from the group;
    from ``state`` (a loader state of another world size) or from scratch up to ``stop``
    batches of epoch 1. Returns this rank's batches and its loader state."""
    import torch.distributed as dist

    sampler = make(kind)
    assert sampler.num_replicas == dist.get_world_size()
    if state is not None:
        sampler.load_state_dict(find_sampler_state(state))
    loader = Loader(graph(sampler, workers))
    if state is None:
        list(loader)  # epoch 0
        it = iter(loader)
        return {"batches": [next(it) for _ in range(stop)], "state": loader.state_dict()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeDiscardedWarning)
        return {"batches": [list(loader), list(loader)], "state": loader.state_dict()}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_gloo_resume_under_another_world_size_through_nodes():
    """Save on 2 processes mid-epoch 1, resume on 3: the global stream continues."""
    one = uninterrupted("weighted", 1, 0)
    first = _dist.run(
        "call", 2, 120, module=__name__, function="gloo_run",
        kind="weighted", state=None, stop=STOP, workers=2,
    )  # fmt: skip
    assert interleave([r["batches"] for r in first]) == one[1][: 2 * STOP]
    second = _dist.run(
        "call", 3, 120, module=__name__, function="gloo_run",
        kind="weighted", state=first[0]["state"], stop=0, workers=0,
    )  # fmt: skip
    assert continues([r["batches"][0] for r in second], one[1][2 * STOP :])
    assert continues([r["batches"][1] for r in second], one[2])

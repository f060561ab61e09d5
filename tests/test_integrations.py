"""distsampler.integrations and framework code paths, in one process (no launches).

Accelerate's real sharding code runs here with an explicit world (``prepare_data_loader(...,
num_processes=W, process_index=r)`` for each r), so every rank of a W-process job is checked
without starting W processes; tests/test_launch.py does the real launches.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler
from distsampler.integrations import (
    AccelerateBatches,
    DoubleShardingError,
    SamplerCheckpoint,
    check_dataset_size,
    check_lightning_trainer,
    check_not_double_sharded,
    find_sampler_state,
    prepare_for_accelerate,
)

accelerate_data_loader = pytest.importorskip("accelerate.data_loader")

N, B = 101, 4  # dataset size (prime: uneven shards), local batch size
LABELS = np.array([1] * 9 + [0] * (N - 9))
DATASET = TensorDataset(torch.arange(N))
KINDS = ["weighted", "quota"]


def make(kind: str, world: int, rank: int, seed: int = 3):
    """A sampler of ``kind`` for rank ``rank`` of ``world`` (block_size=B: Accelerate's layout)."""
    if kind == "weighted":
        return DistributedWeightedSampler(
            labels=LABELS, num_replicas=world, rank=rank, seed=seed, block_size=B
        )
    return DistributedQuotaBatchSampler(LABELS, B, {1: 1}, num_replicas=world, rank=rank, seed=seed)


def loader(kind: str, sampler, **kwargs) -> DataLoader:
    if kind == "weighted":
        return DataLoader(DATASET, batch_size=B, sampler=sampler, **kwargs)
    return DataLoader(DATASET, batch_sampler=sampler, **kwargs)


def native(kind: str, world: int, rank: int, epoch: int) -> list[list[int]]:
    """Rank ``rank``'s batches under torchrun: the sampler alone, batched like a DataLoader."""
    s = make(kind, world, rank)
    s.set_epoch(epoch)
    if kind == "quota":
        return list(s)
    stream = list(s)
    return [stream[i : i + B] for i in range(0, len(stream), B)]


def items(batches) -> list[list[int]]:
    return [b[0].tolist() for b in batches]


def prepared(kind: str, world: int, rank: int, **kwargs):
    """What ``accelerator.prepare`` gives rank ``rank``: Accelerate's own prepare_data_loader."""
    s = make(kind, world, rank)
    dl = DataLoader(DATASET, batch_sampler=AccelerateBatches(s, B, world), **kwargs)
    return s, accelerate_data_loader.prepare_data_loader(
        dl, num_processes=world, process_index=rank
    )


# -- Accelerate --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world", [2, 3])
def test_accelerate_sharding_is_a_pass_through(kind: str, world: int) -> None:
    """Under Accelerate's BatchSamplerShard every rank gets exactly its torchrun batches, the
    same count on every rank (no loop-back padding), and set_epoch reaches the sampler."""
    lengths = set()
    for rank in range(world):
        _, dl = prepared(kind, world, rank)
        check_not_double_sharded(dl)
        got = {}
        for epoch in (0, 1):
            dl.set_epoch(epoch)  # what the training loop calls on the prepared loader
            got[epoch] = items(dl)
            assert got[epoch] == native(kind, world, rank, epoch)
        assert got[0] != got[1]
        lengths.add((len(dl), len(got[0])))
    assert len(lengths) == 1 and len({n for pair in lengths for n in pair}) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_skip_first_batches_resumes_same_world(kind: str) -> None:
    """accelerator.skip_first_batches (the function it calls) skips this rank's first k batches."""
    for rank in range(2):
        _, dl = prepared(kind, 2, rank)
        dl.set_epoch(1)
        skipped = accelerate_data_loader.skip_first_batches(dl, 3)
        assert items(skipped) == native(kind, 2, rank, 1)[3:]


def test_accelerate_batches_checks_its_world() -> None:
    with pytest.raises(
        ValueError, match="num_replicas=2 ranks but Accelerate runs num_processes=3"
    ):
        AccelerateBatches(make("quota", 2, 0), num_processes=3)
    with pytest.raises(ValueError, match="batch_size is required"):
        AccelerateBatches(make("weighted", 2, 0), num_processes=2)
    with pytest.raises(
        TypeError, match="DistributedWeightedSampler or one of distsampler.s batch samplers"
    ):
        AccelerateBatches(DistributedSampler(DATASET, num_replicas=2, rank=0), B, 2)


# -- a plain accelerator.prepare(DataLoader(...)) of our samplers -------------------------------
# tests/test_accelerate_prepare.py runs these wirings in a real 2-process accelerate launch.


def plain_prepared(dl: DataLoader, world: int, rank: int, **kwargs):
    """``accelerator.prepare(dl)`` on rank ``rank`` of ``world``: Accelerate's own function."""
    return accelerate_data_loader.prepare_data_loader(
        dl, num_processes=world, process_index=rank, **kwargs
    )


def quota(world: int, rank: int, **kwargs) -> DistributedQuotaBatchSampler:
    return DistributedQuotaBatchSampler(
        LABELS, B, {1: 1}, num_replicas=world, rank=rank, seed=3, **kwargs
    )


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("even_batches", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
def test_plain_prepare_deals_a_batch_sampler_exactly(world, even_batches, drop_last) -> None:
    """batch_sampler=ours under accelerator.prepare: every rank gets exactly its torchrun
    batches, len(loader) counts them, skip_first_batches skips this rank's own."""
    for rank in range(world):
        sampler = quota(world, rank, drop_last=drop_last)
        dl = DataLoader(DATASET, batch_sampler=sampler)
        dl = plain_prepared(dl, world, rank, even_batches=even_batches)
        twin = quota(world, rank, drop_last=drop_last)
        twin.set_epoch(1)
        want = list(twin)
        dl.set_epoch(1)
        assert items(dl) == want and len(dl) == len(want) == len(sampler)
        sampler.set_epoch(1)  # the same epoch once more, on purpose
        skipped = accelerate_data_loader.skip_first_batches(dl, 2)
        assert items(skipped) == want[2:] and len(skipped) == len(want) - 2


def test_plain_prepare_deals_a_global_plan_as_before() -> None:
    """num_replicas=1: one global plan, which Accelerate deals out itself (k * W + r)."""
    plan = list(
        DistributedQuotaBatchSampler(LABELS, B, {1: 1}, num_batches=8, num_replicas=1, rank=0)
    )
    for rank in range(2):
        s = DistributedQuotaBatchSampler(LABELS, B, {1: 1}, num_batches=8, num_replicas=1, rank=0)
        dl = plain_prepared(DataLoader(DATASET, batch_sampler=s), 2, rank)
        assert items(dl) == plan[rank::2] and len(dl) == 4


REFUSED = [
    # Accelerate's shard cuts every local batch into W pieces
    (
        "split_batches",
        lambda: DataLoader(DATASET, batch_sampler=quota(2, 0)),
        2,
        dict(split_batches=True),
        "split_batches=True",
    ),
    # another world, or another rank, than the sampler's
    ("world", lambda: DataLoader(DATASET, batch_sampler=quota(2, 0)), 3, {}, "num_processes=3"),
    ("rank", lambda: DataLoader(DATASET, batch_sampler=quota(2, 1)), 2, {}, "process_index=0"),
    # a wrapper between our batch sampler and the shard: the shard deals the wrapper's batches
    (
        "wrapped",
        lambda: DataLoader(
            DATASET, batch_sampler=accelerate_data_loader.SkipBatchSampler(quota(2, 0), 0)
        ),
        2,
        {},
        "SkipBatchSampler around it",
    ),
    # dispatch_batches: process 0 iterates its sampler alone, and the ranks split its batches
    (
        "dispatch",
        lambda: DataLoader(DATASET, batch_sampler=quota(2, 0)),
        2,
        dict(dispatch_batches=True, put_on_device=True),
        "dispatch_batches=True",
    ),
    (
        "dispatch+weighted",
        lambda: loader("weighted", make("weighted", 2, 0)),
        2,
        dict(dispatch_batches=True, put_on_device=True),
        "dispatch_batches=True",
    ),
    ("weighted", lambda: loader("weighted", make("weighted", 2, 0)), 2, {}, "every 2th"),
    (
        "BatchSampler(weighted)",
        lambda: DataLoader(DATASET, batch_sampler=BatchSampler(make("weighted", 2, 0), B, False)),
        2,
        {},
        "every 2th",
    ),
]


@pytest.mark.parametrize(
    "name, factory, world, kwargs, reason",
    REFUSED,
    ids=[case[0] for case in REFUSED],
)
def test_plain_prepare_refuses_other_wirings_at_the_first_batch(
    name, factory, world, kwargs, reason
) -> None:
    dl = plain_prepared(factory(), world, 0, **kwargs)
    with pytest.raises(DoubleShardingError) as caught:
        next(iter(dl))
    message = str(caught.value)
    assert reason in message, message
    assert "distsampler.integrations.accelerate.prepare_for_accelerate(" in message, message


def _run(loop, ckpt, steps: int) -> list[list[int]]:
    out = []
    for batch in ckpt.track(loop):
        out.append(batch[0].tolist())
        if len(out) == steps:
            break
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.timeout(60)
def test_prepare_for_accelerate_save_and_load_state(kind: str, tmp_path) -> None:
    """One process: the registered SamplerCheckpoint rides in save_state and resumes exactly."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    sampler = make(kind, 1, 0)
    dl, ckpt = prepare_for_accelerate(acc, DATASET, sampler, batch_size=B, num_workers=2)
    assert ckpt in acc._custom_objects
    dl.set_epoch(1)
    seen = []
    for batch in ckpt.track(dl):
        seen.append(batch[0].tolist())
        if len(seen) == 5:
            acc.save_state(str(tmp_path))  # mid-epoch, workers prefetching ahead
    assert seen == native(kind, 1, 0, 1)

    acc2 = Accelerator(cpu=True)
    dl2, ckpt2 = prepare_for_accelerate(acc2, DATASET, make(kind, 1, 0), batch_size=B)
    acc2.load_state(str(tmp_path))
    dl2.set_epoch(1)
    assert _run(dl2, ckpt2, -1) == seen[5:]


def test_prepare_for_accelerate_refuses_traps(monkeypatch) -> None:
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    with pytest.raises(ValueError, match="num_replicas=2 ranks but Accelerate runs"):
        prepare_for_accelerate(acc, DATASET, make("quota", 2, 0))
    with pytest.raises(TypeError, match="shuffle is set by prepare_for_accelerate"):
        prepare_for_accelerate(acc, DATASET, make("quota", 1, 0), shuffle=True)
    # labels of another length than the dataset: a subset silently, or an IndexError later
    short = TensorDataset(torch.arange(N - 1))
    with pytest.raises(ValueError, match=f"has {N} labels but the dataset has {N - 1} samples"):
        prepare_for_accelerate(acc, short, make("quota", 1, 0))
    # two processes launched but Accelerate sees one (docs/design.md): each would train alone
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=1"):
        prepare_for_accelerate(acc, DATASET, make("quota", 1, 0))


@pytest.mark.parametrize(
    ("sampler", "size", "match"),
    [
        # labels shorter than the dataset: only a prefix of the dataset would ever be drawn
        (lambda: make("weighted", 1, 0), N + 5, "only the first 101 samples"),
        # labels longer: indices past the end would fail inside the dataset
        (lambda: make("quota", 1, 0), N - 1, "IndexError"),
        # per-sample weights, i.i.d. and without replacement
        (lambda: DistributedWeightedSampler(np.ones(N), num_replicas=1, rank=0), 7, "weights"),
        (
            lambda: DistributedWeightedSampler(
                np.ones(N), replacement=False, num_replicas=1, rank=0
            ),
            N + 1,
            "101 weights",
        ),
    ],
)
def test_check_dataset_size(sampler, size: int, match: str) -> None:
    s = sampler()
    check_dataset_size(s, range(N))  # one label or weight per sample: fine
    with pytest.raises(ValueError, match=match):
        check_dataset_size(s, range(size))
    check_dataset_size(s, iter(range(size)))  # no len(): nothing to compare
    check_dataset_size(DistributedSampler(DATASET, 1, 0), range(size))  # not ours: not checked


def test_check_lightning_trainer_refuses_the_wrapping_trainer() -> None:
    """Lightning's default use_distributed_sampler=True would wrap (re-shard) our sampler."""
    lightning = pytest.importorskip("lightning")
    kwargs = dict(accelerator="cpu", strategy="ddp", devices=2, logger=False)
    kwargs.update(enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        check_lightning_trainer(lightning.Trainer(**kwargs))
    check_lightning_trainer(lightning.Trainer(**kwargs, use_distributed_sampler=False))


# -- the double-sharding detector ------------------------------------------------------------
def _accelerate_shard(inner, world: int = 2, split: bool = False):
    shard = accelerate_data_loader.BatchSamplerShard(inner, world, 0, split_batches=split)
    return DataLoader(DATASET, batch_sampler=shard)


def _lightning_wrapper(sampler):
    fabric = pytest.importorskip("lightning.fabric.utilities.distributed")
    wrapped = fabric.DistributedSamplerWrapper(sampler, num_replicas=2, rank=0, shuffle=False)
    return DataLoader(DATASET, batch_size=B, sampler=wrapped)


# (name, loader factory, expected: "error" | "warn" | "ok")
DETECTOR_CASES = [
    # a batch sampler directly under Accelerate's shard of its own world: served exactly
    ("accelerate+quota(W=2)", lambda: _accelerate_shard(make("quota", 2, 0)), "ok"),
    # ... but not when the shard cuts each batch (split_batches) or has another world
    (
        "accelerate split+quota(W=2)",
        lambda: _accelerate_shard(make("quota", 2, 0), 2, True),
        "error",
    ),
    ("accelerate(W=3)+quota(W=2)", lambda: _accelerate_shard(make("quota", 2, 0), 3), "error"),
    # same with an index sampler under a torch BatchSampler
    (
        "accelerate+weighted(W=2)",
        lambda: _accelerate_shard(BatchSampler(make("weighted", 2, 0), B, False)),
        "error",
    ),
    # Lightning's default use_distributed_sampler=True wraps our sampler once more
    (
        "lightning wrapper+weighted(W=2)",
        lambda: _lightning_wrapper(make("weighted", 2, 0)),
        "error",
    ),
    # the recipe: AccelerateBatches makes Accelerate's shard a pass-through
    (
        "accelerate+AccelerateBatches",
        lambda: _accelerate_shard(AccelerateBatches(make("quota", 2, 0), num_processes=2)),
        "ok",
    ),
    # AccelerateBatches built for 2 processes under a 3-process shard
    (
        "AccelerateBatches world mismatch",
        lambda: _accelerate_shard(AccelerateBatches(make("quota", 2, 0), num_processes=2), 3),
        "error",
    ),
    # AccelerateBatches in a plain DataLoader: every batch would be trained on W times
    (
        "AccelerateBatches without Accelerate",
        lambda: DataLoader(DATASET, batch_sampler=AccelerateBatches(make("quota", 2, 0), None, 2)),
        "error",
    ),
    # one global plan (num_replicas=1) dealt by Accelerate: fine when batches divide evenly
    (
        "accelerate+global plan, even",
        lambda: _accelerate_shard(DistributedQuotaBatchSampler(LABELS, B, {1: 1}, num_batches=8)),
        "ok",
    ),
    # ... and a warning when Accelerate will loop back to repeat the first batches
    (
        "accelerate+global plan, uneven",
        lambda: _accelerate_shard(DistributedQuotaBatchSampler(LABELS, B, {1: 1}, num_batches=9)),
        "warn",
    ),
    # torchrun: our sampler alone, and a plain DistributedSampler
    ("native quota", lambda: DataLoader(DATASET, batch_sampler=make("quota", 2, 0)), "ok"),
    (
        "torch DistributedSampler",
        lambda: loader("weighted", DistributedSampler(DATASET, 2, 0)),
        "ok",
    ),
]


@pytest.mark.parametrize(
    "name, factory, expected", DETECTOR_CASES, ids=[c[0] for c in DETECTOR_CASES]
)
def test_check_not_double_sharded(name: str, factory, expected: str) -> None:
    dl = factory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if expected == "error":
            with pytest.raises(DoubleShardingError, match="shards it again|repeats (every )?batch"):
                check_not_double_sharded(dl)
        else:
            check_not_double_sharded(dl)
    mine = [w for w in caught if "Accelerate will repeat" in str(w.message)]
    assert bool(mine) == (expected == "warn")


# -- resume points with prefetching loaders ---------------------------------------------------
def assert_plan_prefix(kind: str, epoch: int, taken: list[list[int]]) -> None:
    """``taken`` (batches of all ranks and runs) is exactly a prefix of the epoch's global plan
    that covers the epoch: nothing lost, nothing repeated (extra positions only continue it)."""
    ref = make(kind, 1, 0)
    if kind == "quota":  # plan units are micro-batches
        assert len(taken) >= ref.epoch_batches
        plan = ref.batches(np.arange(len(taken)), epoch).tolist()
    else:  # plan units are positions
        taken = [[i] for batch in taken for i in batch]
        assert len(taken) >= ref.num_samples
        plan = [[i] for i in ref.indices(np.arange(len(taken)), epoch).tolist()]
    assert sorted(taken) == sorted(plan)


def _phase(kind: str, world: int, state: dict | None, steps: int, prefetch: int):
    """Every rank of ``world`` loads ``state``, runs ``steps`` steps (-1: to the end) with two
    prefetching workers; returns the batches and the ranks' SamplerCheckpoint states."""
    taken, states = [], []
    for rank in range(world):
        s = make(kind, world, rank)
        if state is not None:
            s.load_state_dict(state)
        s.set_epoch(2)
        ckpt = SamplerCheckpoint(s, B)
        dl = loader(kind, s, num_workers=2, prefetch_factor=prefetch)
        taken += _run(dl, ckpt, steps)
        states.append(ckpt.state_dict())
        if 0 < steps < len(dl):
            assert s.state_dict() != states[-1]  # the sampler's own count ran ahead of the loop
    assert all(st == states[0] for st in states)  # a global-step boundary: one state
    return taken, states[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.timeout(60)
def test_sampler_checkpoint_counts_the_loop_not_the_prefetch(kind: str) -> None:
    """Stop 2 ranks after 3 steps with prefetching workers, resume on 3 ranks whose workers
    drain the sampler before the loop stops after 1 step, resume on 1: nothing lost or repeated."""
    first, state = _phase(kind, 2, None, 3, prefetch=4)
    second, state = _phase(kind, 3, state, 1, prefetch=16)
    rest, _ = _phase(kind, 1, state, -1, prefetch=2)
    assert_plan_prefix(kind, 2, first + second + rest)


def test_sampler_checkpoint_refuses_misuse() -> None:
    s = make("quota", 1, 0)
    ckpt = SamplerCheckpoint(s)
    list(loader("quota", s))  # a pass the checkpoint did not count
    with pytest.raises(RuntimeError, match="track"):
        ckpt.state_dict()
    w = make("weighted", 1, 0)
    with pytest.raises(ValueError, match="batch_size is required"):
        SamplerCheckpoint(w)
    with pytest.raises(ValueError, match="differs from the loader's 4"):
        SamplerCheckpoint(w, 8, loader("weighted", w))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.timeout(60)
def test_stateful_dataloader_mid_epoch(kind: str) -> None:
    """torchdata's StatefulDataLoader (2 workers) saves mid-epoch and restores exactly; the
    state survives torch.load(weights_only=True) and also resumes under another world size."""
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def build(world: int, rank: int):
        s = make(kind, world, rank)
        s.set_epoch(1)
        if kind == "quota":
            return s, sdl.StatefulDataLoader(DATASET, batch_sampler=s, num_workers=2)
        return s, sdl.StatefulDataLoader(DATASET, batch_size=B, sampler=s, num_workers=2)

    _, dl = build(2, 0)
    it = iter(dl)
    first = [next(it)[0].tolist() for _ in range(4)]
    buf = io.BytesIO()
    torch.save(dl.state_dict(), buf)
    rest = [b[0].tolist() for b in it]
    assert first + rest == native(kind, 2, 0, 1)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    _, dl2 = build(2, 0)
    dl2.load_state_dict(state)
    assert items(dl2) == rest  # same world, same workers: the loader's own restore
    s3, _ = build(2, 0)
    s3.set_epoch(2)
    dl3 = loader(kind, s3, num_workers=2)
    assert items(dl3) == native(kind, 2, 0, 2)  # the next epoch after a resume is a fresh plan

    # another world size: our sampler's state, found in the loader's, resumes every rank
    sampler_state = find_sampler_state(state)
    assert sampler_state["consumed"] == 4 * 2 * (B if kind == "weighted" else 1)
    resumed = []
    for rank in range(3):
        s = make(kind, 3, rank)
        s.load_state_dict(sampler_state)
        s.set_epoch(1)
        resumed += items(loader(kind, s))
    done = native(kind, 2, 0, 1)[:4] + native(kind, 2, 1, 1)[:4]
    assert_plan_prefix(kind, 1, done + resumed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow  # DataLoader worker processes
@pytest.mark.timeout(60)
def test_persistent_workers_follow_set_epoch(kind: str) -> None:
    """The sampler runs in the main process: persistent workers still get each epoch's plan."""
    s = make(kind, 2, 1)
    dl = loader(kind, s, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in (0, 1, 2):
        s.set_epoch(epoch)
        seen.append(items(dl))
        assert seen[-1] == native(kind, 2, 1, epoch)
    assert seen[0] != seen[1] != seen[2]

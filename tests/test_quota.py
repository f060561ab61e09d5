"""DistributedQuotaBatchSampler: exact quotas per local batch, from one global plan."""

import io
import json

import numpy as np
import pytest
import torch
from conftest import interleave, rank_streams
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler._core.quota_plan import spread_prefix
from distsampler.groups import from_coco

# A defect detector's data: 3% defects.
FACTORY = np.array(["defect"] * 36 + ["normal"] * 1164)
RECIPE_A = dict(quotas={"defect": 3}, policies={"defect": "replace"})  # 3 defects in every 8


def make(labels, bs, **kwargs):
    return lambda world, rank: DQ(labels, bs, **kwargs, num_replicas=world, rank=rank)


def defects(batch) -> int:
    return int((FACTORY[batch] == "defect").sum())


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_recipe_a_every_batch_exact_on_every_rank(world):
    streams = rank_streams(make(FACTORY, 8, **RECIPE_A), world, epoch=1)
    assert len({len(s) for s in streams}) == 1
    for s in streams:
        assert all(len(b) == 8 and defects(b) == 3 for b in s)
    # Normals are cycled: across all ranks and across epochs, every 1164 consecutive normals
    # are all the normals (no repeat until the group is used up). Read unshuffled batches: a
    # batch is a set, shuffling only permutes within it.
    plain = [
        rank_streams(make(FACTORY, 8, **RECIPE_A, shuffle_within_batch=False), world, e)
        for e in (0, 1)
    ]
    assert [sorted(b) for s in plain[1] for b in s] == [sorted(b) for s in streams for b in s]
    # The plan's M = 233 micro-batches per epoch; the < W padding batches continue the stream
    # into the next epoch's start (world-size invariance), so they are left out here.
    m = DQ(FACTORY, 8, **RECIPE_A, num_replicas=world, rank=0).epoch_batches
    normals = [i for ep in plain for b in interleave(ep)[:m] for i in b if FACTORY[i] == "normal"]
    for q in range(len(normals) // 1164):
        assert len(set(normals[q * 1164 : (q + 1) * 1164])) == 1164
    # Default epoch: enough global batches to draw the normals once (ceil(1164 / 5)).
    assert len(streams[0]) == -(-233 // world)


@pytest.mark.parametrize("share", [0.3, 0.125, 0.55])
def test_float_share_within_one_every_batch_and_exact_per_epoch(share):
    s = DQ(FACTORY, 8, {"defect": share}, num_replicas=1, rank=0)
    per_epoch = s.per_epoch_counts()
    for e in range(3):
        s.set_epoch(e)
        counts = np.array([defects(b) for b in s])
        assert (np.abs(counts - 8 * share) < 1).all()
        assert counts.sum() == per_epoch[0]
        assert abs(per_epoch[0] - 8 * share * s.epoch_batches) <= 1


@pytest.mark.parametrize("share", [0.3, 0.0625])
def test_float_share_on_a_rank_is_within_one_per_batch_not_per_prefix(share):
    # What holds on each rank of 2: every batch within one of 8 x share. What does not (the
    # documented trap): 0.0625 x 8 = 1/2 alternates in the global stream, so one rank takes
    # every extra draw and the other none, each drifting half a draw per batch from its line.
    counts = []
    for rank in (0, 1):
        s = DQ(FACTORY, 8, {"defect": share}, num_replicas=2, rank=rank)
        counts.append(np.array([defects(b) for b in s]))
        assert (np.abs(counts[-1] - 8 * share) < 1).all()
    drift = [np.abs(np.cumsum(c) - 8 * share * np.arange(1, len(c) + 1)).max() for c in counts]
    if share == 0.0625:
        assert min(drift) >= len(counts[0]) / 2 - 1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    per_batch=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    extra=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    kinds=st.lists(st.sampled_from(["fixed", "alone", "fill"]), min_size=5, max_size=5),
    batches=st.integers(1, 40),
    key=st.integers(0, 2**32),
)
def test_spread_prefix(per_batch, extra, kinds, batches, key):
    """Counts per batch: exact per epoch, equal totals per batch, never negative, and every
    prefix of a named float share (``alone``) within one of its line k * e / M."""
    num = min(len(per_batch), len(extra))
    fixed = np.array([k == "fixed" for k in kinds[:num]])
    alone = np.array([k == "alone" for k in kinds[:num]])
    per_epoch = np.where(fixed, np.array(per_batch[:num]) * batches, np.array(extra[:num]))
    flex_total = int(per_epoch[~fixed].sum())
    per_epoch[np.flatnonzero(~fixed)[:1]] += (-flex_total) % batches  # whole slots per batch
    k = np.arange(batches + 1)
    prefix = spread_prefix(per_epoch, batches, fixed, alone, k, key)  # (M + 1, C)
    counts = np.diff(prefix, axis=0)
    assert (counts >= 0).all()  # never negative: a valid batch
    assert np.array_equal(prefix[0], np.zeros(num)) and np.array_equal(prefix[-1], per_epoch)
    assert len(set(counts.sum(axis=1).tolist())) == 1  # every batch equally full
    assert (np.abs(counts[:, fixed] - per_epoch[fixed] / batches) == 0).all()  # exact ints
    fills = ~fixed & ~alone
    free = per_epoch[~fixed].sum() // batches
    if fills.any() and (-(-per_epoch[alone] // batches)).sum() <= free:
        line = k[:, None] * per_epoch[alone] / batches
        assert (np.abs(prefix[:, alone] - line) < 1).all()  # Bresenham: within one, always


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    bs=st.integers(1, 9),
    q=st.integers(0, 3),
    world=st.integers(1, 5),
    replace=st.booleans(),
)
def test_equal_lengths_and_quotas(sizes, bs, q, world, replace):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    q = min(q, bs)
    kwargs = dict(quotas={0: q}, policies={0: "replace" if replace else "cycle"})
    if replace and q == bs:  # the other groups get no slot: nothing cycled, no natural end
        with pytest.raises(ValueError, match="num_batches is required"):
            DQ(labels, bs, **kwargs, num_replicas=world, rank=0)
        return
    streams = rank_streams(make(labels, bs, **kwargs), world)
    n = {len(s) for s in streams}
    assert len(n) == 1 and n == {len(DQ(labels, bs, **kwargs, num_replicas=world, rank=0))}
    for s in streams:
        for b in s:
            assert len(b) == bs and int((labels[b] == 0).sum()) == q


@pytest.mark.parametrize(
    "kwargs",
    [
        RECIPE_A,
        dict(quotas={"defect": 0.3}),
        dict(quotas={"defect": 2}, num_batches=5),  # per rank: compared with 1 x (5 * W)
    ],
)
def test_world_size_invariance(kwargs):
    for world in (2, 3, 4):
        single = dict(kwargs)
        if "num_batches" in kwargs:
            single["num_batches"] = kwargs["num_batches"] * world
        ref = rank_streams(make(FACTORY, 8, **single), 1, 2)[0]
        got = interleave(rank_streams(make(FACTORY, 8, **kwargs), world, 2))
        assert got[: len(ref)] == ref
        assert len(got) - len(ref) < world


def test_epochs_differ_and_seed_matters():
    s = DQ(FACTORY, 8, **RECIPE_A, num_replicas=1, rank=0)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    assert list(DQ(FACTORY, 8, **RECIPE_A, seed=1, num_replicas=1, rank=0)) != e0
    s.set_epoch(0)
    assert list(s) == e0


def test_recipe_b_all_positives_and_a_fresh_quarter_of_negatives():
    labels = np.array(["positive"] * 32 + ["negative"] * 384)
    fractions = {"positive": 1.0, "negative": 0.25}
    for world in (1, 2, 4):
        samplers = [
            DQ.with_epoch_fractions(labels, 8, fractions, num_replicas=world, rank=r)
            for r in range(world)
        ]
        negatives = []
        for e in range(4):
            epoch = []
            for s in samplers:
                s.set_epoch(e)
                epoch += [i for b in s for i in b]
            assert sorted(i for i in epoch if labels[i] == "positive") == list(range(32))
            negatives += [i for i in epoch if labels[i] == "negative"]
        assert sorted(negatives) == list(range(32, 416))  # every negative exactly once


def test_shuffle_within_batch():
    plain = DQ(FACTORY, 8, {"defect": 3}, shuffle_within_batch=False, num_replicas=1, rank=0)
    assert all(defects(b[:3]) == 3 for b in plain)  # grouped in label order
    mixed = DQ(FACTORY, 8, {"defect": 3}, num_replicas=1, rank=0)
    assert any(defects(b[:3]) < 3 for b in mixed)
    assert [sorted(b) for b in plain] == [sorted(b) for b in mixed]


def test_matches_accelerate_batch_sampler_shard():
    from accelerate.data_loader import BatchSamplerShard

    for world in (2, 3):
        # The 1-process plan sharded by Accelerate == our native sharding, batch for batch.
        kwargs = dict(RECIPE_A, num_batches=10)
        single = DQ(FACTORY, 8, **kwargs | {"num_batches": 10 * world}, num_replicas=1, rank=0)
        for r in range(world):
            theirs = list(BatchSamplerShard(single, num_processes=world, process_index=r))
            ours = list(DQ(FACTORY, 8, **kwargs, num_replicas=world, rank=r))
            assert theirs == ours


def test_resume_same_and_other_world_size():
    for world, new_world, steps in [(2, 2, 7), (4, 2, 5), (2, 3, 11), (3, 1, 0)]:
        full = rank_streams(make(FACTORY, 8, **RECIPE_A), 1, 3)[0]
        ranks = [DQ(FACTORY, 8, **RECIPE_A, num_replicas=world, rank=r) for r in range(world)]
        taken = []
        for s in ranks:
            s.set_epoch(3)
            it = iter(s)
            taken.append([next(it) for _ in range(steps)])
        buf = io.BytesIO()
        torch.save(ranks[0].state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        assert state["consumed"] == steps * world
        rest = []
        for r in range(new_world):
            s = DQ(FACTORY, 8, **RECIPE_A, num_replicas=new_world, rank=r)
            s.load_state_dict(state)
            s.set_epoch(3)
            rest.append(list(s))
        assert len({len(x) for x in rest}) == 1
        got = interleave(taken) + interleave(rest)
        assert got[: len(full)] == full
        assert len(got) - len(full) < new_world


def test_state_from_another_configuration_is_refused():
    st = DQ(FACTORY, 8, {"defect": 3}, num_replicas=1, rank=0).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        DQ(FACTORY, 8, {"defect": 2}, num_replicas=1, rank=0).load_state_dict(st)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((8, {"defect": 9}), {}, ValueError, "more than batch_size=8"),
        ((8, {"defect": 0.7, "normal": 0.5}), {}, ValueError, "more than batch_size"),
        ((8, {"scratch": 1}), {}, ValueError, r"quotas names group 'scratch'"),
        ((8, {"defect": 1}), {"policies": {"scratch": "cycle"}}, ValueError, "policies names"),
        ((8, {"defect": -1}), {}, ValueError, r"quotas\['defect'\] should be >= 0"),
        ((8, {"defect": 1.5}), {}, ValueError, r"share should be in \(0, 1\)"),
        ((8, {"defect": 3.0}), {}, ValueError, "did you mean the count 3"),
        ((8, {"defect": 0.0}), {}, ValueError, r"share should be in \(0, 1\)"),
        ((8, {"defect": True}), {}, TypeError, "should be an int or a float"),
        ((8, {"defect": "3"}), {}, TypeError, "should be an int or a float"),
        ((8, {"defect": 1}), {"num_batches": 0}, ValueError, "num_batches should be a positive"),
        ((8, {"defect": 1}), {"policies": {"defect": "often"}}, ValueError, "one of"),
        ((0, {"defect": 1}), {}, ValueError, "batch_size should be a positive"),
        ((8, [3]), {}, TypeError, "quotas should be a mapping"),
        ((8, {"defect": 4, "normal": 2}), {}, ValueError, "nothing fills the rest"),
        (
            (8, {"defect": 3, "normal": 5}),
            {"policies": {"defect": "replace", "normal": "replace"}},
            ValueError,
            "num_batches is required",
        ),
        ((8, {"defect": 1}), {"shuffle_within_batch": 1}, TypeError, "boolean"),
    ],
)
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DQ(FACTORY, *args, **kwargs, num_replicas=1, rank=0)


@pytest.mark.parametrize(
    "fractions, match",
    [
        ({"positive": 0.25}, "whole number"),  # 7.5 of 30
        ({"positive": 1.5}, r"should be in \(0, 1\]"),
        ({"nope": 1.0}, "fractions names group"),
        ({"positive": 1.0, "negative": 0.25}, "not a multiple"),
    ],
)
def test_epoch_fractions_bad_input(fractions, match):
    labels = np.array(["positive"] * 30 + ["negative"] * 384)
    with pytest.raises((ValueError, TypeError), match=match):
        DQ.with_epoch_fractions(labels, 8, fractions, num_replicas=1, rank=0)


def test_labels_from_npy_memory_mapped(tmp_path):
    np.save(tmp_path / "labels.npy", (FACTORY == "defect").astype(np.int8))
    s = DQ(str(tmp_path / "labels.npy"), 8, {1: 3}, num_replicas=1, rank=0)
    assert all(int(((FACTORY == "defect")[b]).sum()) == 3 for b in s)


def test_from_coco(tmp_path):
    coco = {
        "images": [{"id": 10}, {"id": 11}, {"id": 12}, {"id": 13}],
        "annotations": [
            {"image_id": 10, "category_id": 3},
            {"image_id": 11, "category_id": 2},
            {"image_id": 11, "category_id": 3},
            {"image_id": 13, "category_id": 1},
        ],
        "categories": [{"id": 1}, {"id": 2}, {"id": 3}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    ids, labels = from_coco(path, {"defect": [1, 2]}, default="normal")
    assert ids.tolist() == [10, 11, 12, 13]
    assert labels.tolist() == ["normal", "defect", "normal", "defect"]
    ids, labels = from_coco(coco, {"defect": [1, 2]})  # no default: unmatched images left out
    assert ids.tolist() == [11, 13]
    with pytest.raises(ValueError, match="category id 9"):
        from_coco(coco, {"defect": [9]})
    with pytest.raises(ValueError, match="COCO"):
        from_coco({"images": []}, {"defect": [1]})


def test_state_under_explicit_num_batches_needs_the_same_epoch_length():
    # num_batches is per rank, so the epoch (and the plan) depends on the world size there.
    st = DQ(FACTORY, 8, {"defect": 3}, num_batches=5, num_replicas=2, rank=0).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        DQ(FACTORY, 8, {"defect": 3}, num_batches=5, num_replicas=4, rank=0).load_state_dict(st)

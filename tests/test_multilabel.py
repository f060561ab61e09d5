"""Multi-label data: overlapping groups through both samplers, with the usual guarantees.

A sample belongs to every group it names. Class-aware sampling draws a class by its share, then
a member through that class's cycle; a quota is a minimum of *distinct* samples containing the
class in every local batch, with no sample twice in a batch.
"""

import json
import math
from pathlib import Path

import _dist
import numpy as np
import pytest
from conftest import interleave, rank_streams
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS
from distsampler import GroupIndex
from distsampler.groups import from_coco


def containing(label_sets, c) -> set[int]:
    return {i for i, s in enumerate(label_sets) if c in s}


label_sets_strategy = st.lists(
    st.lists(st.integers(0, 5), max_size=3), min_size=12, max_size=80
).filter(lambda sets: sum(1 for s in sets if s) >= 10 and len({x for s in sets for x in s}) >= 2)


# -- the index ------------------------------------------------------------------------------------
def test_label_sets_and_multi_hot_agree():
    sets = [["scratch"], [], ["scratch", "dent"], ["dent", "dent"]]
    a = GroupIndex.from_label_sets(sets, background="ok")
    hot = np.array([[1, 0], [0, 0], [1, 1], [0, 1]], dtype=bool)
    b = GroupIndex.from_label_sets(hot, names=["scratch", "dent"], background="ok")
    for idx in (a, b):
        assert len(idx) == 4 and idx.multilabel
        assert idx.names == ("dent", "ok", "scratch")
        assert [idx.group(g).tolist() for g in range(3)] == [[2, 3], [1], [0, 2]]
        assert idx.sizes.tolist() == [2, 1, 2]  # samples containing the group (dent once in 3)


def test_no_background_leaves_unlabelled_samples_out():
    idx = GroupIndex.from_label_sets([[1], [], [1, 2]])
    assert len(idx) == 3 and idx.names == (1, 2)
    s = DWS(labels=idx, num_samples=300, num_replicas=1, rank=0)
    assert 1 not in set(s)  # sample 1 has no label and no background: never drawn


@pytest.mark.parametrize(
    ("label_sets", "kwargs", "exc", "match"),
    [
        ("scratch", {}, TypeError, "one iterable of labels per sample"),  # a bare string
        ([["a"], "b"], {}, TypeError, r"label_sets\[1\] should be an iterable"),
        ([["a"], [1]], {}, TypeError, "mixes int and str"),
        ([[1.5]], {}, TypeError, "should be ints or strings"),
        ([["a"], []], {"background": "a"}, ValueError, "also a label"),
        ([["a"]], {"names": ["a"]}, TypeError, "multi-hot"),
        (np.ones((3, 2)), {}, TypeError, "bool or int"),  # floats are not multi-hot
        (np.ones((3, 2), bool), {"names": ["a"]}, ValueError, "1 entries for 2 columns"),
        ([[], []], {}, ValueError, "no sample has a label"),
        ([], {}, ValueError, "should not be empty"),
    ],
)
def test_label_sets_bad_input(label_sets, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GroupIndex.from_label_sets(label_sets, **kwargs)


def test_save_load_keeps_multilabel(tmp_path):
    idx = GroupIndex.from_label_sets([[0], [0, 1], [], [1]], background=9)
    idx.save(tmp_path)
    back = GroupIndex.load(tmp_path, mmap=True)
    assert back.names == idx.names and isinstance(back.members, np.memmap)
    assert np.array_equal(back.members, idx.members)
    assert (len(back), back.multilabel) == (4, True)


# -- the quota sampler --------------------------------------------------------------------------
@settings(max_examples=15, deadline=None, derandomize=True)
@given(sets=label_sets_strategy, bs=st.integers(2, 6), q=st.integers(1, 2), world=st.integers(1, 8))
def test_quota_batches_hold_distinct_samples_of_each_class(sets, bs, q, world):
    idx = GroupIndex.from_label_sets(sets)
    rare = int(np.argmin(idx.sizes))
    name = idx.names[rare]
    quota = min(q, bs, int(idx.sizes[rare]))
    if len({i for g in range(len(idx.names)) for i in idx.group(g).tolist()}) < bs:
        return  # fewer labelled samples than a batch: refused elsewhere
    make = lambda w, r: DQ(idx, bs, {name: quota}, num_replicas=w, rank=r)  # noqa: E731
    streams = rank_streams(make, world, epoch=1)
    assert len({len(s) for s in streams}) == 1  # equal lengths
    has = containing(sets, name)
    for s in streams:
        for batch in s:
            assert len(batch) == bs and len(set(batch)) == bs  # no sample twice in a batch
            assert len(set(batch) & has) >= quota  # the quota: distinct samples containing it
    # World-size invariance: the ranks' batches interleave to the one-process stream (which
    # continues past the epoch's end where the ranks need padding).
    whole = interleave(streams)
    assert whole == make(1, 0).batches(np.arange(len(whole)), epoch=1).tolist()


def test_quota_resume_under_another_world_size():
    sets = [[i % 4, (i * 3) % 7] if i % 5 else [] for i in range(400)]
    idx = GroupIndex.from_label_sets(sets, background="bg")
    make = lambda w, r: DQ(idx, 4, {6: 1, 3: 1}, num_replicas=w, rank=r)  # noqa: E731
    full = rank_streams(make, 1, epoch=2)[0]
    first = [make(3, r) for r in range(3)]
    taken = []
    for s in first:
        s.set_epoch(2)
        it = iter(s)
        taken.append([next(it) for _ in range(5)])
    state = first[0].state_dict(consumed=5)  # a global-step boundary: 15 micro-batches
    second = [make(2, r) for r in range(2)]
    for s in second:
        s.load_state_dict(state)
        s.set_epoch(2)
    rest = interleave([list(s) for s in second])
    assert interleave(taken) + rest == full  # nothing lost, nothing repeated


def test_quota_smaller_class_than_quota_is_refused():
    idx = GroupIndex.from_label_sets([[0], [0, 1], [1], [1], [2], [2]])
    with pytest.raises(ValueError, match=r"quotas\[0\]=3 asks for more distinct samples"):
        DQ(idx, 4, {0: 3}, num_replicas=1, rank=0)


# -- the weighted sampler: class-aware -----------------------------------------------------------
@settings(max_examples=20, deadline=None, derandomize=True)
@given(sets=label_sets_strategy, world=st.integers(1, 8), num=st.integers(20, 200))
def test_class_aware_stratified_counts_and_coverage(sets, world, num):
    idx = GroupIndex.from_label_sets(sets)
    make = lambda w, r: DWS(labels=idx, num_samples=num, num_replicas=w, rank=r)  # noqa: E731
    one = make(1, 0)
    counts = one._plan.counts(0)  # exact draws *through* each class per epoch
    assert counts.sum() == num and (np.abs(counts - num / len(idx.names)) < 1).all()
    # World-size invariance and equal lengths.
    streams = rank_streams(make, world, epoch=0)
    assert len({len(s) for s in streams}) == 1
    whole = interleave(streams)
    assert whole[:num] == list(one)[:num] or whole == one.indices(np.arange(len(whole))).tolist()
    # Coverage: every member of the rarest class within ceil(size / draws per epoch) epochs.
    rare = int(np.argmin(idx.sizes))
    size, per_epoch = int(idx.sizes[rare]), int(counts[rare])
    if per_epoch:
        epochs = math.ceil(size / per_epoch)
        seen = set()
        for e in range(epochs):
            seen.update(one.indices(np.arange(num), epoch=e).tolist())
        assert set(idx.group(rare).tolist()) <= seen


def test_draws_through_class_are_exact_per_epoch():
    """Realised draws *through* each class equal the plan's counts; a sample of two classes
    is counted by both when we look at what batches *contain* (the realised share)."""
    sets = [[0, 1]] * 10 + [[0]] * 90 + [[2]] * 300
    idx = GroupIndex.from_label_sets(sets)
    s = DWS(labels=idx, num_samples=300, num_replicas=1, rank=0)
    stream = np.array(list(s))
    # Class 1 (10 samples, all also in class 0) gets 100 draws through it; class 0 gets 100.
    assert s._plan.counts(0).tolist() == [100, 100, 100]
    contains0 = np.isin(stream, np.arange(100)).sum()
    assert contains0 == 200  # realised share of class 0: its own draws plus class 1's


# -- a COCO file with overlapping categories, real processes ---------------------------------------
def _coco(tmp_path) -> str:
    rng = np.random.default_rng(3)
    images = [{"id": 1000 + i} for i in range(240)]
    cats = [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}, {"id": 3, "name": "crack"}]
    anns = []
    for i in range(240):
        for c, p in ((1, 0.4), (2, 0.2), (3, 0.05)):
            if rng.random() < p:
                anns.append({"id": len(anns), "image_id": 1000 + i, "category_id": c})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def test_from_coco_multilabel_order_and_groups(tmp_path):
    path = _coco(tmp_path)
    ids, idx = from_coco(path, multilabel=True, background="empty")
    coco = json.loads(Path(path).read_text())
    assert ids.tolist() == [img["id"] for img in coco["images"]]
    for g, name in enumerate(idx.names):
        cat = {"scratch": 1, "dent": 2, "crack": 3}.get(name)
        expect = sorted(
            {a["image_id"] - 1000 for a in coco["annotations"] if a["category_id"] == cat}
        )
        if name == "empty":
            annotated = {a["image_id"] - 1000 for a in coco["annotations"]}
            expect = sorted(set(range(240)) - annotated)
        assert idx.group(g).tolist() == expect


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_coco_multilabel_both_samplers_over_gloo(tmp_path):
    path = _coco(tmp_path)
    bs, quotas, epochs = 4, {"crack": 1, "dent": 1}, [0, 1]
    results = _dist.run(
        "coco_multilabel", 2, timeout=150, path=path, batch_size=bs, quotas=quotas, epochs=epochs
    )
    _, idx = from_coco(path, multilabel=True, background="empty")
    for e_i, e in enumerate(epochs):
        gathered = results[0][e_i]
        one_w = DWS(labels=idx, num_replicas=1, rank=0)
        one_q = DQ(idx, bs, quotas, num_replicas=1, rank=0)
        one_w.set_epoch(e)
        one_q.set_epoch(e)
        w_streams = [g["weighted"] for g in gathered]
        q_streams = [g["quota"] for g in gathered]
        assert len(w_streams[0]) == len(w_streams[1]) and len(q_streams[0]) == len(q_streams[1])
        w_all, q_all = interleave(w_streams, block=bs), interleave(q_streams)
        assert w_all == one_w.indices(np.arange(len(w_all))).tolist()
        assert q_all == one_q.batches(np.arange(len(q_all))).tolist()
        crack = set(idx.group(idx.code("crack", "t")).tolist())
        dent = set(idx.group(idx.code("dent", "t")).tolist())
        for s in q_streams:
            for batch in s:
                assert len(set(batch)) == bs
                assert len(set(batch) & crack) >= 1 and len(set(batch) & dent) >= 1
    # Epochs differ.
    assert results[0][0][0]["quota"] != results[0][1][0]["quota"]

"""Shares that change during the run: StepSchedule and update_shares on the weighted sampler.

One process (ranks simulated, updates placed with ``at=``); the agreement collective and real
ranks are in test_shares_dist.py.
"""

import numpy as np
import pytest
import torch
from conftest import interleave
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import DistributedWeightedSampler as DWS
from distsampler import weights as W
from distsampler._core.plan import largest_remainder

LABELS = np.array([0] * 500 + [1] * 60 + [2] * 13 + [3] * 7)
N = 400
A = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
B = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}


def make(world=1, rank=0, **kw):
    kw.setdefault("labels", LABELS)
    kw.setdefault("num_samples", N)
    return DWS(num_replicas=world, rank=rank, seed=7, **kw)


def run_stream(world, epochs, updates=(), block=1, **kw):
    """The global stream of ``epochs`` epochs read round-robin, updates applied by ``at=``."""
    samplers = [make(world, r, block_size=block, **kw) for r in range(world)]
    for s in samplers:
        for at, shares in updates:
            s.update_shares(shares, at=at)
    out = []
    for e in range(epochs):
        streams = []
        for s in samplers:
            s.set_epoch(e)
            streams.append(list(s))
        out.extend(interleave(streams, block)[:N])
    return out


def test_no_update_is_todays_plan():
    for kw in (dict(), dict(stratify=False)):
        a = make(**kw)
        b = make(**kw)
        b.update_shares(A, at=10**9)  # far in the future: nothing changes before it
        assert list(a) == list(b)


@pytest.mark.parametrize("stratify", [True, False])
@pytest.mark.parametrize("world,block", [(2, 1), (4, 1), (2, 8), (4, 5)])
def test_same_updates_same_stream_under_any_world_size(stratify, world, block):
    updates = [(130, B), (N + 57, A), (2 * N + 3, B)]
    one = run_stream(1, 3, updates, stratify=stratify)
    assert run_stream(world, 3, updates, block=block, stratify=stratify) == one


def cycles_intact(stream, labels):
    """Each class's members, in stream order, come in whole cycles: no member lost or repeated
    before its cycle ends."""
    for c in np.unique(labels):
        members = set(np.flatnonzero(labels == c).tolist())
        seq = [i for i in stream if labels[i] == c]
        n = len(members)
        for q in range(len(seq) // n):
            assert set(seq[q * n : (q + 1) * n]) == members, (c, q)
        tail = seq[(len(seq) // n) * n :]
        assert len(set(tail)) == len(tail)


@pytest.mark.parametrize("ats", [[37], [130, 131, 299], [N - 1], [N + 16, 2 * N + 250]])
def test_member_cycles_run_on_across_updates(ats):
    updates = [(at, B if i % 2 == 0 else A) for i, at in enumerate(ats)]
    stream = run_stream(1, 4, updates)
    cycles_intact(stream, LABELS)


def test_stepschedule_segments_have_exact_counts():
    points = [(0, "instance"), (150, B), (N + 20, "balanced"), (3 * N, A)]
    s = make(class_weights=W.StepSchedule(points))
    sched = W.StepSchedule(points).shares((0, 1, 2, 3), np.bincount(LABELS))
    stream = []
    for e in range(4):
        s.set_epoch(e)
        stream.extend(list(s))
    stream = np.asarray(stream)
    run_points = [p for p, _ in sched] + [4 * N]
    for (p, share), q in zip(sched, run_points[1:], strict=False):
        for lo in range(p, q, N):  # a segment crossing epoch ends is cut into epoch parts
            hi = min(q, (lo // N + 1) * N)
            got = np.bincount(LABELS[stream[lo:hi]], minlength=4)
            np.testing.assert_array_equal(got, largest_remainder(hi - lo, share))
    cycles_intact(stream.tolist(), LABELS)


def test_stepschedule_world_invariance_and_config():
    sched = W.StepSchedule([(0, "instance"), (150, "balanced")], interpolate=True, pieces=4)
    one = run_stream(1, 2, class_weights=sched)
    assert run_stream(3, 2, block=4, class_weights=sched) == one
    state = make(class_weights=sched).state_dict()
    other = make(class_weights=W.StepSchedule([(0, "instance"), (151, "balanced")]))
    with pytest.raises(ValueError, match="class_shares"):
        other.load_state_dict(state)


def test_interpolation_is_piecewise_constant():
    sched = W.StepSchedule([(0, {0: 1, 1: 0}), (100, {0: 0, 1: 1})], interpolate=True, pieces=4)
    pts = sched.shares((0, 1), np.array([5, 5]))
    assert [p for p, _ in pts] == [0, 25, 50, 75, 100]
    np.testing.assert_allclose(pts[2][1], [0.5, 0.5])


def test_update_mid_iteration_redraws_what_was_computed_ahead():
    s = make()
    it = iter(s)
    got = [next(it) for _ in range(150)]  # the chunk computed ahead holds old-share positions
    assert s.update_shares(B) == 150  # block 1, world 1: the next position
    got += list(it)
    old = list(make())
    assert got[:150] == old[:150]
    ref2 = make()
    ref2.update_shares(B, at=150)
    assert got == list(ref2)


def test_update_lands_at_the_next_global_step_boundary():
    s = make(world=2, rank=0, block_size=4)
    it = iter(s)
    for _ in range(5):  # local 5 -> last handed global position (1 * 8 + 0) = 8
        next(it)
    assert s.update_shares(B) == 16  # steps of 2 ranks x 4 = 8: the boundary after 8
    s2 = make(world=2, rank=0, block_size=4)
    it = iter(s2)
    for _ in range(5):
        next(it)
    assert s2.update_shares(B, accumulation_steps=3) == 24  # optimizer steps of 24 positions


def test_gradient_accumulation_never_mixes_shares_in_one_step():
    labels = np.array([0] * 100 + [1] * 100)
    step = 2 * 4 * 3  # 2 ranks, local batch 4, 3 micro-batches
    s = [DWS(labels=labels, num_replicas=2, rank=r, block_size=4, seed=1) for r in range(2)]
    its = [iter(x) for x in s]
    for r in range(2):
        for _ in range(10):  # each rank handed out part of a step
            next(its[r])
    runs = {x.update_shares({0: 0, 1: 1}, accumulation_steps=3) for x in s}
    assert runs == {step}  # both ranks: the end of the first optimizer step
    streams = [[next(its[r]) for _ in range(2 * 12 - 10)] for r in range(2)]
    full = interleave([[None] * 10 + st for st in streams], 4)
    new = full[step : 2 * step]
    assert all(labels[i] == 1 for i in new)


def test_resume_after_update_under_another_world_size():
    updates = [(96, B)]
    want = run_stream(1, 2, updates, block=8)
    a = make(world=2, rank=0, block_size=8)
    b = make(world=2, rank=1, block_size=8)
    for s in (a, b):
        s.update_shares(B, at=96)
    ia, ib = iter(a), iter(b)
    for _ in range(64):  # 128 global positions: after the update
        next(ia)
        next(ib)
    state = a.state_dict()
    assert state["updates"] == [[96, [float(x) for x in np.array([0.1, 0.2, 0.3, 0.4])]]]
    torch_state = torch.load(_roundtrip(state), weights_only=True)
    rest = []
    streams = []
    for r in range(4):
        s = make(world=4, rank=r, block_size=8)
        s.load_state_dict(torch_state)
        streams.append(list(s))
    rest = interleave(streams, 8)
    assert want[128 : 128 + len(rest)][: N - 128] == rest[: N - 128]


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_resume_with_prefetch_and_update():
    """A DataLoader with num_workers=2 prefetches: the update lands after what was handed out,
    and a state saved with the loop's own count resumes the same stream."""
    from torch.utils.data import DataLoader

    ds = list(range(len(LABELS)))
    s = make(block_size=4)
    loader = DataLoader(ds, batch_size=4, sampler=s, num_workers=2, prefetch_factor=2)
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(3)]
    run = s.update_shares(B)
    assert run >= 12 and run % 4 == 0
    state = s.state_dict(consumed=12)
    seen += [b.tolist() for b in it]
    flat = [i for b in seen for i in b]
    ref = make(block_size=4)
    ref.update_shares(B, at=run)
    assert flat == list(ref)
    r = make(block_size=4)
    r.load_state_dict(state)
    assert list(r) == flat[12:]


def test_chi_square_of_iid_segments():
    chi2 = pytest.importorskip("scipy.stats").chi2

    s = make(stratify=False, num_samples=20000)
    s.update_shares(B, at=5000)
    got = np.asarray(list(s))
    for lo, hi, share in ((0, 5000, np.full(4, 0.25)), (5000, 20000, np.array([1, 2, 3, 4]) / 10)):
        obs = np.bincount(LABELS[got[lo:hi]], minlength=4)
        exp = (hi - lo) * share
        stat = ((obs - exp) ** 2 / exp).sum()
        assert stat < chi2.ppf(1 - 1e-4, df=3)  # fixed seed; fails 1 in 10**4 seeds


@pytest.mark.parametrize(
    "shares,err,match",
    [
        ({0: 1, 1: 1, 2: 1}, ValueError, "no share for groups"),
        ({0: 1, 1: 1, 2: 1, 3: 1, 9: 1}, ValueError, "not in the labels"),
        ({0: float("nan"), 1: 1, 2: 1, 3: 1}, ValueError, "finite"),
        ({0: -1, 1: 1, 2: 1, 3: 1}, ValueError, ">= 0"),
        ({0: 0, 1: 0, 2: 0, 3: 0}, ValueError, "positive"),
        ([1, 2], ValueError, "one entry per class"),
        ([0, 0, 0, 0], ValueError, "positive"),
        ([np.nan, 1, 1, 1], ValueError, "finite"),
    ],
)
def test_bad_shares(shares, err, match):
    with pytest.raises(err, match=match):
        make().update_shares(shares)


def test_bad_update_calls():
    s = make()
    s.update_shares(A, at=300)
    with pytest.raises(ValueError, match="previous update"):
        s.update_shares(B, at=200)
    with pytest.raises(ValueError, match="accumulation_steps"):
        s.update_shares(B, accumulation_steps=0)
    with pytest.raises(TypeError):
        s.update_shares(B, accumulation_steps=True)
    it = iter(s)
    for _ in range(50):
        next(it)
    with pytest.raises(ValueError, match="handed-out"):
        s.update_shares(B, at=10)
    with pytest.raises(ValueError, match="labels="):
        DWS(weights=np.ones(10), num_replicas=1, rank=0).update_shares([1.0])


@pytest.mark.parametrize(
    "points,match",
    [
        ([], "non-empty"),
        ([(5, "balanced")], "start at position 0"),
        ([(0, "balanced"), (0, "instance")], "strictly increasing"),
        ([(0, "nope")], "should be one of"),
        ([(0, {0: float("nan")})], "finite"),
        ([(0.5, "balanced")], "int"),
    ],
)
def test_bad_schedules(points, match):
    with pytest.raises((ValueError, TypeError), match=match):
        W.StepSchedule(points)


def test_schedule_must_name_every_class():
    with pytest.raises(ValueError, match="no share for groups"):
        make(class_weights=W.StepSchedule([(0, {0: 1, 1: 1})]))


def test_without_replacement_stratified_counts_checked_on_update():
    s = make(replacement=False, num_samples=20)
    want = list(s)
    s.set_epoch(0)
    with pytest.raises(ValueError, match="more than its"):
        s.update_shares({0: 0, 1: 0, 2: 0, 3: 1}, at=0)  # class 3 has 7 samples
    assert list(s) == want and "updates" not in s.state_dict()


def test_restore_cost_does_not_depend_on_steps_taken():
    """A state far into the run holds the updates, not the draws: loading it computes the
    epoch's segments from O(updates) numbers (no replay)."""
    s = make(num_samples=1000)
    s.update_shares(B, at=123)
    state = s.state_dict()
    state["epoch"] = 10**6  # a million epochs later
    r = make(num_samples=1000)
    r.update_shares(B, at=123)
    r.load_state_dict(state)
    stream = list(r)
    assert len(stream) == 1000


@pytest.mark.parametrize("ats", [[37], [5, 130, 391]])
def test_without_replacement_no_repeat_across_updates(ats):
    s = make(replacement=False, num_samples=300, class_weights="instance")
    for i, at in enumerate(ats):
        s.update_shares(
            {0: 5, 1: 1, 2: 0.1, 3: 0.05} if i % 2 == 0 else {0: 8, 1: 1, 2: 0.1, 3: 0.1}, at=at
        )
    got = list(s)
    assert len(got) == len(set(got)) == 300


# -- the quota sampler -----------------------------------------------------------------------------
from distsampler import DistributedQuotaBatchSampler as DQ  # noqa: E402

QL = np.array(["a"] * 40 + ["b"] * 300 + ["c"] * 11)
QA = {"a": 2, "b": 5, "c": 1}
QB = {"a": 0.25, "b": 0.5, "c": 0.25}


def quota(world=1, rank=0, **kw):
    kw.setdefault("num_batches", 24 // world)
    return DQ(QL, 8, QA, num_replicas=world, rank=rank, seed=2, **kw)


def quota_stream(world, epochs, updates=(), **kw):
    samplers = [quota(world, r, **kw) for r in range(world)]
    for s in samplers:
        for at, q in updates:
            s.update_shares(q, at=at)
    out = []
    for e in range(epochs):
        streams = []
        for s in samplers:
            s.set_epoch(e)
            streams.append([list(b) for b in s])
        out.extend(interleave(streams))
    return out


def test_quota_no_update_is_todays_plan():
    a, b = quota(), quota()
    b.update_shares(QB, at=10**6)
    assert [list(x) for x in a] == [list(x) for x in b]


@pytest.mark.parametrize("world", [2, 4])
def test_quota_same_updates_same_stream_under_any_world_size(world):
    updates = [(5, QB), (24 + 7, {"a": 1, "b": 6, "c": 1}), (60, [1.0, 1.0, 2.0])]
    assert quota_stream(world, 3, updates) == quota_stream(1, 3, updates)


def test_quota_counts_exact_per_batch_and_cycles_intact_across_updates():
    updates = [(5, {"a": 4, "b": 3, "c": 1}), (24 + 7, QB), (24 + 13, QA)]
    stream = quota_stream(1, 4, updates, shuffle_within_batch=False)  # slots in stream order
    labels = QL
    for i, batch in enumerate(stream):
        run = i
        q = QA
        for at, u in updates:
            if run >= at:
                q = u
        got = {g: int((labels[batch] == g).sum()) for g in "abc"}
        for g, v in q.items():
            if isinstance(v, int):
                assert got[g] == v, (i, got, q)
            else:
                assert abs(got[g] - v * 8) < 1, (i, got, q)  # a float share: within one
    flat = [i for b in stream for i in b]
    codes = np.searchsorted(["a", "b", "c"], labels)
    cycles_intact(flat, codes)


def test_quota_float_shares_spread_exactly_within_a_segment():
    s = quota()
    s.update_shares(QB, at=4)  # segment [4, 24): 20 batches, a and c 2 a batch (exact)
    s.update_shares([1.0, 1.0, 1.0], at=14)  # 8/3 a batch: floats spread over the segment
    batches = [list(b) for b in s]
    counts = np.array([[int((QL[b] == g).sum()) for g in "abc"] for b in batches])
    assert (counts[4:14] == [2, 4, 2]).all()
    assert np.abs(counts[14:] - 8 / 3).max() < 1 + 1e-9


def test_quota_mid_iteration_update_and_resume_under_another_world():
    s = quota(world=2, rank=0, num_batches=None)
    t = quota(world=2, rank=1, num_batches=None)
    its = [iter(s), iter(t)]
    head = [[list(next(it)) for _ in range(3)] for it in its]  # 6 global batches handed out
    runs = {x.update_shares(QB) for x in (s, t)}
    assert runs == {6}
    state = s.state_dict()
    rest = [[list(b) for b in it] for it in its]
    got = interleave([head[r] + rest[r] for r in range(2)])
    ref = quota(num_batches=None)
    ref.update_shares(QB, at=6)
    want = [list(b) for b in ref]
    assert got == want
    resumed = []
    for r in range(3):
        x = quota(world=3, rank=r, num_batches=None)
        x.load_state_dict(state)
        resumed.append([list(b) for b in x])
    assert interleave(resumed)[: len(want) - 6] == want[6:]


def test_quota_accumulation_boundary():
    s = quota(world=2, rank=1)
    it = iter(s)
    next(it)  # rank 1 handed out global batch 1
    assert s.update_shares(QB, accumulation_steps=4) == 8


@pytest.mark.parametrize(
    "shares,match",
    [
        ({"a": 2, "b": 5, "c": 0}, "nothing fills the rest"),  # unnamed groups would fill it
        ({"a": 2, "b": 5, "c": 1, "z": 1}, "z"),
        ({"a": 2, "b": 9, "c": 1}, "more than batch_size"),
        ({"a": float("nan"), "b": 0.5, "c": 0.25}, "finite"),
        ({"a": -1, "b": 5, "c": 1}, ">= 0"),
        ([0.0, 0.0, 0.0], "positive"),
        ([1.0, np.nan, 1.0], "finite"),
        ([1.0, 1.0], "one entry per group"),
    ],
)
def test_quota_bad_updates(shares, match):
    with pytest.raises((ValueError, TypeError), match=match):
        quota().update_shares(shares)


@pytest.mark.parametrize("stratify", [True, False])
def test_update_deep_in_a_large_chunk_redraws_later_slices(stratify):
    """An update while a chunk of several slices is being served: the rest of the slice is
    redrawn at once, the later slices when reached."""
    kw = dict(labels=LABELS, num_samples=60000, stratify=stratify, block_size=1)
    s = DWS(num_replicas=1, rank=0, seed=7, **kw)
    it = iter(s)
    got = [next(it) for _ in range(20000)]  # inside the chunk [15360, 31744): 2 slices
    run = s.update_shares(B)
    got += list(it)
    ref = DWS(num_replicas=1, rank=0, seed=7, **kw)
    ref.update_shares(B, at=run)
    assert run == 20000 and got == list(ref)


def test_quota_update_deep_in_a_chunk():
    s = DQ(QL, 4, {"a": 1, "b": 2, "c": 1}, num_batches=9000, num_replicas=1, rank=0)
    it = iter(s)
    got = [list(next(it)) for _ in range(5000)]
    run = s.update_shares(QB)
    got += [list(b) for b in it]
    ref = DQ(QL, 4, {"a": 1, "b": 2, "c": 1}, num_batches=9000, num_replicas=1, rank=0)
    ref.update_shares(QB, at=run)
    assert run == 5000 and got == [list(b) for b in ref]


def test_benchmark_runs_small(tmp_path):
    from benchmarks import shares as bench

    out = bench.main(["--size", "2e4", "--groups", "20", "--every", "10"])
    for kind in ("stratified", "iid", "quota"):
        assert out[kind]["update_ms"] > 0 and out[kind]["ratio"] > 0


@settings(max_examples=25, deadline=None)
@given(
    ats=st.lists(st.integers(0, 3 * N - 1), min_size=1, max_size=3, unique=True),
    kill=st.integers(1, 2 * N // 8 - 1),
    world_a=st.sampled_from([1, 2, 3]),
    world_b=st.sampled_from([1, 2, 4]),
    stratify=st.booleans(),
)
def test_kill_and_resume_at_random_points(ats, kill, world_a, world_b, stratify):
    """Updates at random run positions, a state saved at a random global step (block 4) of
    epoch 1 under one world size, resumed under another: the rest equals the uninterrupted
    run's."""
    ats = sorted(ats)
    updates = [(at, B if i % 2 == 0 else A) for i, at in enumerate(ats)]
    want = run_stream(1, 2, updates, block=4, stratify=stratify)[N:]
    samplers = [make(world_a, r, block_size=4, stratify=stratify) for r in range(world_a)]
    for s in samplers:
        for at, sh in updates:
            s.update_shares(sh, at=at)
        s.set_epoch(1)
    steps = min(kill, len(samplers[0]) // 4)
    its = [iter(s) for s in samplers]
    for it in its:
        for _ in range(4 * steps):
            next(it)
    state = samplers[0].state_dict()
    rest = []
    for r in range(world_b):
        s = make(world_b, r, block_size=4, stratify=stratify)
        s.load_state_dict(state)
        rest.append(list(s))
    got = interleave(rest, 4)
    done = state["consumed"]
    assert got[: N - done] == want[done:N]


def test_quota_update_with_prefetching_loader_and_resume():
    """num_workers=2 prefetch: batches are drawn in the main process ahead of the loop; the
    update lands after what was handed out, and a state with the loop's count resumes."""
    from torch.utils.data import DataLoader

    ds = list(range(len(QL)))
    s = quota()
    loader = DataLoader(ds, batch_sampler=s, num_workers=2, prefetch_factor=2)
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(2)]
    run = s.update_shares(QB)
    assert run >= 2
    state = s.state_dict(consumed=2)
    seen += [b.tolist() for b in it]
    ref = quota()
    ref.update_shares(QB, at=run)
    assert seen == [list(b) for b in ref]
    r = quota()
    r.load_state_dict(state)
    assert [list(b) for b in r] == seen[2:]


def test_update_inside_a_loader_worker_is_refused(monkeypatch):
    import torch.utils.data

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    with pytest.raises(RuntimeError, match="worker process"):
        make().update_shares(B)
    with pytest.raises(RuntimeError, match="worker process"):
        quota().update_shares(QB)

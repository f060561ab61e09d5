"""Compacted share history: a state keeps an origin for its epoch and only that epoch's updates.

The guarantee: a state saved after any number of updates resumes exactly (the rest of the
epoch and every later one, with later updates), under another world size, while its size
does not grow with the updates of earlier epochs.
"""

import json

import numpy as np
import pytest
from conftest import interleave
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import DistributedQuotaBatchSampler as DQ
from distsampler import DistributedWeightedSampler as DWS

# Classes 2 and 3 are tiny: their member cycles end inside windows, so cuts leave windows with
# unserved ranks (remaps) that later epochs must still honour.
LABELS = np.array([0] * 300 + [1] * 60 + [2] * 9 + [3] * 5)
N = 160
BLOCK = 4
SHARES = [
    [1.0, 1.0, 1.0, 1.0],
    [0.7, 0.1, 0.1, 0.1],
    [0.1, 0.2, 0.3, 0.4],
    [0.25, 0.25, 0.5, 0.0],
    [0.4, 0.0, 0.3, 0.3],
]
# Without replacement a class cannot take more draws an epoch than it has members.
# (four segments an epoch may each round a share up by one draw: class 3 stays <= 5, 1 <= 60)
SHARES_WOR = [[0.9, 0.08, 0.01, 0.005], [0.62, 0.34, 0.02, 0.005], [0.75, 0.25, 0.0, 0.0]]
EPOCHS = 6


def updates(seed: int, per_epoch: int = 3, shares=SHARES) -> list[tuple[int, list[float]]]:
    """``per_epoch`` updates at random global-step boundaries of every epoch."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(EPOCHS):
        steps = np.sort(rng.choice(np.arange(1, N // BLOCK), per_epoch, replace=False))
        out += [(e * N + int(s) * BLOCK, shares[int(rng.integers(len(shares)))]) for s in steps]
    return out


def weighted(world=1, rank=0, **kw):
    return DWS(labels=LABELS, num_samples=N, num_replicas=world, rank=rank, seed=5,
               block_size=BLOCK, **kw)  # fmt: skip


def stream(make, world, ups, epochs=EPOCHS, first=0):
    samplers = [make(world, r) for r in range(world)]
    for s in samplers:
        for at, sh in ups:
            s.update_shares(np.array(sh), at=at)
    out = []
    for e in range(first, epochs):
        for s in samplers:
            s.set_epoch(e)
        out.append(interleave([list(s) for s in samplers], BLOCK))
    return out


KINDS = {
    "stratified": dict(),
    # per-sample weights giving shares 0.9, 0.08, 0.01, 0.005 (within the members)
    "stratified-without-replacement": dict(
        replacement=False, class_weights={0: 0.9 / 300, 1: 0.08 / 60, 2: 0.01 / 9, 3: 0.005 / 5}
    ),
    "iid": dict(stratify=False),
}


@settings(max_examples=12, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    seed=st.integers(0, 10**6),
    epoch=st.integers(1, EPOCHS - 1),
    step=st.integers(0, N // BLOCK - 1),
    world_a=st.sampled_from([1, 2]),
    world_b=st.sampled_from([1, 3]),
)
def test_compacted_state_resumes_the_rest_of_the_run(kind, seed, epoch, step, world_a, world_b):
    """Saved at a random step of a later epoch, after updates in every earlier one: the
    state holds only this epoch's updates and an origin, and the rest of this epoch and every
    later epoch equal the uninterrupted run's (on another world size too)."""
    ups = updates(seed, shares=SHARES_WOR if "without" in kind else SHARES)

    def make(world, rank):
        return weighted(world, rank, **KINDS[kind])

    want = stream(make, 1, ups)
    samplers = [make(world_a, r) for r in range(world_a)]
    for s in samplers:
        for at, sh in ups:
            s.update_shares(np.array(sh), at=at)
        s.set_epoch(epoch)
    step = min(step, len(samplers[0]) // BLOCK)
    for s in samplers:
        it = iter(s)
        for _ in range(step * BLOCK):
            next(it)
    state = json.loads(json.dumps(samplers[0].state_dict()))  # plain data, as saved
    assert "origin" in state and state["origin"]["epoch"] == epoch
    assert all(run >= epoch * N for run, _ in state.get("updates", []))
    loaded = [make(world_b, r) for r in range(world_b)]
    for s in loaded:
        s.load_state_dict(state)
    done = state["consumed"]
    got = [interleave([list(s) for s in loaded], BLOCK)]
    for e in range(epoch + 1, EPOCHS):
        for s in loaded:
            s.set_epoch(e)
        got.append(interleave([list(s) for s in loaded], BLOCK))
    assert got[0][: N - done] == want[epoch][done:N]
    assert [g[:N] for g in got[1:]] == [w[:N] for w in want[epoch + 1 :]]


def test_pending_windows_are_carried_and_matter():
    """The stratified origin carries cut windows whose ranks a class has not drawn past;
    without them what the class draws next changes (members lost or repeated), so the
    resume test above depends on them. Seed 39: epochs 2 and 4 start with such windows."""
    ups = updates(39, per_epoch=4)
    s = weighted()
    for at, sh in ups:
        s.update_shares(np.array(sh), at=at)
    differs = []
    for e in range(1, EPOCHS):
        s.set_epoch(e)
        state = s.state_dict()
        if not state["origin"].get("remaps"):
            continue
        exact, broken = weighted(), weighted()
        exact.load_state_dict(state)
        cut = dict(state, origin={k: v for k, v in state["origin"].items() if k != "remaps"})
        broken.load_state_dict(cut)
        later = range(e, EPOCHS)
        assert [list(_at(exact, x)) for x in later] == [v[:N] for v in stream_from(ups, e)]
        differs.append(
            [list(_at(broken, x)) for x in later] != [v[:N] for v in stream_from(ups, e)]
        )
    assert differs and any(differs)


def stream_from(ups, first):
    return stream(lambda w, r: weighted(w, r), 1, ups)[first:]


def _at(sampler, epoch):
    sampler.set_epoch(epoch)
    return sampler


def test_state_size_does_not_grow_with_earlier_updates():
    """40 epochs, 3 updates each: the state at epoch 39 is no bigger than at epoch 5."""
    rng = np.random.default_rng(0)
    s = DWS(labels=LABELS, num_samples=N, num_replicas=1, rank=0, seed=5, block_size=BLOCK)
    sizes = {}
    for e in range(40):
        for step in sorted(rng.choice(np.arange(1, N // BLOCK), 3, replace=False)):
            s.update_shares(rng.dirichlet(np.ones(4)), at=e * N + int(step) * BLOCK)
        s.set_epoch(e)
        state = s.state_dict()
        assert len(state["updates"]) == 3  # this epoch's only
        sizes[e] = len(json.dumps(state))
    # The origin holds 4 shares, 4 bases and the pending windows (a few ranks of the tiny
    # classes): its size varies a little, it does not grow with the 120 updates made.
    assert sizes[39] < 1.5 * sizes[5]


def test_quota_compacted_state_resumes_later_epochs():
    labels = np.array(["a"] * 40 + ["b"] * 300 + ["c"] * 11)
    quotas = [{"a": 2, "b": 5, "c": 1}, {"a": 0.25, "b": 0.5, "c": 0.25}, {"a": 0, "b": 7, "c": 1}]

    def make(world, rank):
        return DQ(labels, 8, quotas[0], num_replicas=world, rank=rank, seed=2)

    big = make(1, 0).epoch_batches  # global micro-batches an epoch, under any world size
    ups = [(e * big + m, quotas[(e + i) % 3]) for e in range(4) for i, m in enumerate((5, 13))]

    def run(world, from_state=None, first=0):
        samplers = [make(world, r) for r in range(world)]
        for s in samplers:
            if from_state is not None:
                s.load_state_dict(from_state)
            else:
                for at, q in ups:
                    s.update_shares(q, at=at)
        out = []
        for e in range(first, 4):
            for s in samplers:
                if from_state is None or e > first:
                    s.set_epoch(e)
            out.append(interleave([[list(b) for b in s] for s in samplers])[:big])
        return out

    want = run(1)
    s = make(1, 0)
    for at, q in ups:
        s.update_shares(q, at=at)
    s.set_epoch(2)
    it = iter(s)
    for _ in range(7):
        next(it)
    state = json.loads(json.dumps(s.state_dict()))
    assert state["origin"]["epoch"] == 2 and len(state["updates"]) == 4  # epochs 2 and 3
    got = run(2, state, first=2)
    assert got[0][: big - 7] == want[2][7:]
    assert got[1:] == want[3:]
    assert len(want[3]) == big
    t = make(1, 0)
    t.load_state_dict(state)
    with pytest.raises(
        ValueError, match="before epoch 2, where this sampler.s share history was compacted"
    ):
        t.set_epoch(1)


def test_epochs_before_the_origin_are_refused():
    s = weighted()
    s.update_shares(np.array(SHARES[1]), at=10)
    s.set_epoch(2)
    t = weighted()
    t.load_state_dict(s.state_dict())
    with pytest.raises(
        ValueError, match="before epoch 2, where this sampler.s share history was compacted"
    ):
        t.set_epoch(1)
    with pytest.raises(ValueError, match="before epoch 2"):
        t.indices(np.arange(3), epoch=0)
    t.set_epoch(3)  # later epochs plan as before
    u = weighted()  # an uncompacted state lifts the limit again
    u.load_state_dict(weighted().state_dict())
    u.set_epoch(0)


def _state_with_origin():
    s = weighted()
    s.update_shares(np.array(SHARES[2]), at=10)
    s.set_epoch(1)
    return s.state_dict()


@pytest.mark.parametrize(
    "field,value,err,match",
    [
        ("shares", [1.0, 2.0], ValueError, "should hold 4 numbers"),
        ("shares", [1.0, float("nan"), 1.0, 1.0], ValueError, "finite"),
        ("shares", [0.0, 0.0, 0.0, 0.0], ValueError, "not all zero"),
        ("bases", [1, 2, 3], ValueError, "list of 4 integers"),
        ("bases", [1, -2, 3, 4], ValueError, "non-negative"),
        ("bases", [1, 2.5, 3, 4], TypeError, "integer"),
        ("epoch", 7, ValueError, "at most 1"),
        ("remaps", [[9, 0, [1]]], ValueError, "at most 3"),
        ("remaps", [[1, 0, []]], ValueError, "should not be empty"),
        ("remaps", [[1, 0]], ValueError, r"\[class, position, \[ranks\]\]"),
    ],
)
def test_bad_origins_are_refused(field, value, err, match):
    state = _state_with_origin()
    state["origin"][field] = value
    with pytest.raises(err, match=match):
        weighted().load_state_dict(state)


def test_origin_must_be_a_dict():
    state = _state_with_origin()
    state["origin"] = [1, 2]
    with pytest.raises(TypeError, match="state\\['origin'\\] should be a dict"):
        weighted().load_state_dict(state)


@pytest.mark.parametrize("seed", [0, 5, 10, 21, 27, 48, 1, 2])
def test_member_cycles_hold_across_chained_cuts(seed):
    """Five updates an epoch for six epochs: a cut's free ranks can fall into an earlier cut's
    window, so the remaps chain; in position order every class still shows each member once
    per cycle (seeds 0, 5, 10, 21, 27, 48 repeated members when the chain skipped a link)."""
    s = weighted()
    for at, sh in updates(seed, per_epoch=5):
        s.update_shares(np.array(sh), at=at)
    drawn = []
    for e in range(EPOCHS):
        s.set_epoch(e)
        drawn += list(s)[:N]
    for c, size in enumerate(np.bincount(LABELS).tolist()):
        mine = [x for x in drawn if LABELS[x] == c]
        for lo in range(0, len(mine) - size + 1, size):
            assert len(set(mine[lo : lo + size])) == size, (c, lo // size)


@pytest.mark.parametrize("kind", sorted(KINDS) + ["quota"])
def test_long_runs_fold_old_updates_in_memory_without_changing_the_stream(kind, monkeypatch):
    """Past ``_KEEP_UPDATES`` updates before the current epoch, set_epoch folds them into an
    origin (memory and the cost of a draw stay bounded): the stream is the one the full
    history gives, and only the epochs before the fold are refused."""
    import distsampler.quota as quota_module
    import distsampler.weighted as weighted_module

    module = quota_module if kind == "quota" else weighted_module
    labels = np.array(["a"] * 40 + ["b"] * 300 + ["c"] * 11)

    def make():
        if kind == "quota":
            return DQ(labels, 8, {"a": 2, "b": 5, "c": 1}, num_replicas=1, rank=0, seed=2)
        return weighted(**KINDS[kind])

    def run(keep):
        monkeypatch.setattr(module, "_KEEP_UPDATES", keep)
        s = make()
        n = s.epoch_batches if kind == "quota" else N
        size = 3 if kind == "quota" else 4
        shares = SHARES_WOR if "without" in kind else SHARES
        rng = np.random.default_rng(1)
        out, kept = [], []
        for e in range(EPOCHS):
            for m in sorted(rng.choice(np.arange(1, n // 4), 3, replace=False)):
                sh = np.array(shares[int(rng.integers(len(shares)))][:size], float)
                s.update_shares(
                    sh / sh.sum(), at=e * n + int(m) * (1 if kind == "quota" else BLOCK)
                )
            s.set_epoch(e)
            kept.append(len(s._updates))
            out.append([list(b) if kind == "quota" else b for b in s])
        return out, kept, s

    full, kept_full, _ = run(10**9)
    folded, kept_folded, s = run(2)
    assert folded == full
    assert max(kept_folded) <= 2 + 3 < max(kept_full)  # this epoch's 3, at most 2 before it
    with pytest.raises(ValueError, match="where this sampler.s share history was compacted"):
        s.set_epoch(0)


def test_an_update_replans_only_the_segment_it_cuts(monkeypatch):
    """50 updates in one epoch: each re-plans the segment it cuts and the new one (segments
    before it are reused), so the work per update does not grow with the updates before it."""
    from distsampler._core.plan import Stratified
    from distsampler._core.quota_plan import QuotaTimeline

    calls = {"stratified": 0, "quota": 0}
    seg, made = Stratified._segment, QuotaTimeline._made_in

    def count_seg(self, *a, **k):
        calls["stratified"] += 1
        return seg(self, *a, **k)

    def count_made(self, *a, **k):
        calls["quota"] += 1
        return made(self, *a, **k)

    monkeypatch.setattr(Stratified, "_segment", count_seg)
    monkeypatch.setattr(QuotaTimeline, "_made_in", count_made)
    big = 10_000
    s = DWS(labels=LABELS, num_samples=big, num_replicas=1, rank=0, seed=5, block_size=BLOCK)
    labels = np.array(["a"] * 40 + ["b"] * 300 + ["c"] * 11)
    q = DQ(labels, 8, {"a": 2, "b": 5, "c": 1}, num_batches=big, num_replicas=1, rank=0)
    for i in range(1, 51):
        s.update_shares(np.array(SHARES[i % len(SHARES)]), at=i * 100)
        s.indices(np.arange(i * 100, i * 100 + 8))
        q.update_shares({"a": 1 + i % 3, "b": 6 - i % 3, "c": 1}, at=i * 100)
        q.batches(np.arange(i * 100, i * 100 + 2))
    assert calls["stratified"] <= 3 * 50  # not 50 * 51 / 2
    assert calls["quota"] <= 3 * 50


@pytest.mark.parametrize(
    "updates,err,match",
    [
        ([[10]], ValueError, r"should be \[position, shares\]"),
        ([[10, [1.0, 2.0]]], ValueError, "has 2 shares, not one a group"),
        ([[-1, [1.0] * 4]], ValueError, "position should be a non-negative integer"),
        ([[1.5, [1.0] * 4]], TypeError, "position should be an integer"),
    ],
)
def test_bad_updates_in_a_state_are_refused(updates, err, match):
    state = weighted().state_dict()
    state["updates"] = updates
    with pytest.raises(err, match=match):
        weighted().load_state_dict(state)
    labels = np.array(["a"] * 40 + ["b"] * 300 + ["c"] * 11)
    q = DQ(labels, 8, {"a": 2, "b": 5, "c": 1}, num_replicas=1, rank=0)
    state = q.state_dict()
    state["updates"] = [[u[0], u[1][:3]] if len(u) == 2 and len(u[1]) == 4 else u for u in updates]
    with pytest.raises(err, match=match.replace("shares", "quotas")):
        DQ(labels, 8, {"a": 2, "b": 5, "c": 1}, num_replicas=1, rank=0).load_state_dict(state)


def test_an_update_placed_beyond_what_was_computed_drops_nothing(monkeypatch):
    """``update_shares(at=...)`` past the chunk computed ahead leaves it as it is (no position is
    drawn twice); one inside it cuts the list being served there and the rest of the chunk is
    drawn again. Chunks here: 1,024, 2,048, ... positions; 20,000 handed out lies in the chunk
    [15,360, 31,744), served as lists of 8,192."""
    calls = []
    draw = DWS.indices

    def counting(self, positions, epoch=None):
        calls.append(len(positions))
        return draw(self, positions, epoch)

    monkeypatch.setattr(DWS, "indices", counting)
    total = 100_000

    def run(at):
        calls.clear()
        s = DWS(labels=LABELS, num_samples=total, num_replicas=1, rank=0, seed=5)
        it = iter(s)
        head = [next(it) for _ in range(20_000)]
        if at is not None:
            s.update_shares(np.array(SHARES[1]), at=at)
        return head + list(it), sum(calls)

    plain, computed = run(None)
    far, computed_far = run(90_000)
    near, computed_near = run(20_500)
    assert computed == computed_far == total
    assert computed_near == total + (31_744 - 20_500)  # the chunk's rest after the update
    assert far[:90_000] == plain[:90_000] and far[90_000:] != plain[90_000:]
    assert near[:20_500] == plain[:20_500]


def test_loaded_shares_must_fit_the_classes_without_replacement():
    """Without replacement a class cannot take more draws than it has members: a state whose
    origin (or update) asks for that is refused on load, as the update itself would be."""
    make = lambda: weighted(**KINDS["stratified-without-replacement"])  # noqa: E731
    s = make()
    s.update_shares(np.array(SHARES_WOR[1]), at=10)
    s.set_epoch(1)
    state = s.state_dict()
    state["origin"]["shares"] = [0.0, 0.0, 0.0, 1.0]  # 160 draws of a 5-member class
    with pytest.raises(ValueError, match="more than its 5 samples"):
        make().load_state_dict(state)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_a_crafted_origin_never_yields_an_index_outside_the_dataset(data):
    """A state is an input: whatever bases and pending windows it carries, every index drawn
    is a sample of the dataset (members come from the class, whatever the stream index)."""
    s = weighted()
    s.update_shares(np.array(SHARES[2]), at=10)
    s.set_epoch(1)
    state = s.state_dict()
    ints = st.integers(0, 2**40)
    state["origin"]["bases"] = data.draw(st.lists(ints, min_size=4, max_size=4))
    remap = st.tuples(st.integers(0, 3), ints, st.lists(ints, min_size=1, max_size=20))
    state["origin"]["remaps"] = [list(r) for r in data.draw(st.lists(remap, max_size=5))]
    t = weighted()
    t.load_state_dict(state)
    for e in (1, 2):
        t.set_epoch(e)
        drawn = np.array(list(t))
        assert drawn.min() >= 0 and drawn.max() < len(LABELS)

"""DistributedWeightedSampler: the contract of docs/design.md, in one process (ranks simulated).

Real multi-process runs of the same properties are in test_distributed.py.
"""

import io

import numpy as np
import pytest
import torch
from conftest import first_repeat, interleave, rank_streams
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import WeightedRandomSampler

from distsampler import DistributedWeightedSampler as DWS
from distsampler import weights as W
from distsampler._core.plan import largest_remainder

CARS = np.array([0] * 2246 + [1] * 77)  # class counts of a real two-car-model data set
WEIGHTS = np.linspace(0.0, 2.0, 301)  # includes a zero weight

MODES = {
    "weights-iid": dict(weights=WEIGHTS),
    "weights-wor": dict(weights=WEIGHTS, replacement=False, num_samples=200),
    "labels-stratified": dict(labels=CARS),
    "labels-iid": dict(labels=CARS, stratify=False),
    "labels-wor": dict(labels=CARS, replacement=False, num_samples=150),
    "labels-iid-wor": dict(labels=CARS, stratify=False, replacement=False, num_samples=100),
    "labels-shares": dict(labels=CARS, class_weights=W.target_shares({0: 0.3, 1: 0.7})),
}


def make(kwargs, **extra):
    return lambda world, rank: DWS(**kwargs, **extra, num_replicas=world, rank=rank)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("block", [1, 8])
def test_world_size_invariance(mode, block):
    kwargs = MODES[mode]
    ref = rank_streams(make(kwargs, block_size=block), 1, epoch=3)[0]
    for world in (2, 3, 4, 8):
        streams = rank_streams(make(kwargs, block_size=block), world, epoch=3)
        assert len({len(s) for s in streams}) == 1
        assert interleave(streams, block)[: len(ref)] == ref


@pytest.mark.parametrize("mode", MODES)
def test_determinism_and_epochs(mode):
    kwargs = MODES[mode]
    a, b = DWS(**kwargs, num_replicas=1, rank=0), DWS(**kwargs, num_replicas=1, rank=0)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)  # same seed, epoch, config: same plan
    assert list(a) == list(a)  # iterating twice replays the epoch
    e2 = list(a)
    a.set_epoch(3)
    assert list(a) != e2  # set_epoch changes the plan
    c = DWS(**kwargs, seed=1, num_replicas=1, rank=0)
    c.set_epoch(2)
    assert list(c) != e2  # so does the seed


@pytest.mark.parametrize("mode", MODES)
def test_seed_and_epoch_do_not_collide(mode):
    # torch's seed + epoch gives seed 1 / epoch 0 == seed 0 / epoch 1.
    s1, s0 = (
        DWS(**MODES[mode], seed=1, num_replicas=1, rank=0),
        DWS(**MODES[mode], seed=0, num_replicas=1, rank=0),
    )
    s0.set_epoch(1)
    assert list(s1) != list(s0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    extra=st.integers(0, 40),
    world=st.integers(1, 9),
    block=st.integers(1, 5),
    drop_last=st.booleans(),
    stratified=st.booleans(),
)
def test_equal_lengths(n, extra, world, block, drop_last, stratified):
    labels = np.arange(n) % 3
    kwargs = dict(labels=labels) if stratified else dict(weights=np.ones(n))
    num = n + extra
    if drop_last and num < world:
        with pytest.raises(ValueError, match="drop_last=True leaves no sample"):
            DWS(**kwargs, num_samples=num, num_replicas=world, rank=0, drop_last=True)
        return
    streams = rank_streams(
        make(kwargs, num_samples=num, block_size=block, drop_last=drop_last), world
    )
    lengths = {len(s) for s in streams}
    assert len(lengths) == 1
    (length,) = lengths
    assert length == (num // world if drop_last else -(-num // world))
    assert (
        len(DWS(**kwargs, num_samples=num, num_replicas=world, rank=0, drop_last=drop_last))
        == length
    )


def test_iid_shares_within_binomial_bound():
    # Class-first i.i.d., balanced: each draw is the minority with p = 1/2. Over n draws the
    # share has sd sqrt(p (1 - p) / n); 4 sd at n = 2323 * 20 epochs is 0.0093.
    s = DWS(labels=CARS, stratify=False, num_replicas=1, rank=0)
    draws = []
    for e in range(20):
        s.set_epoch(e)
        draws += list(s)
    share = np.mean(CARS[draws] == 1)
    assert abs(share - 0.5) < 4 * np.sqrt(0.25 / len(draws))
    # And i.i.d. really varies per epoch (stratified would be exact).
    per_epoch = [np.mean(CARS[draws[i : i + 2323]] == 1) for i in range(0, len(draws), 2323)]
    assert np.std(per_epoch) > 0


@pytest.mark.parametrize(
    "class_weights, shares",
    [
        ("balanced", [0.5, 0.5]),
        ("sqrt", np.sqrt([2246, 77]) / np.sqrt([2246, 77]).sum()),
        ({0: 1.0, 1: 10.0}, np.array([2246, 770]) / 3016),  # per-sample weights, torch style
        (W.target_shares({0: 0.3, 1: 0.7}), [0.3, 0.7]),
    ],
)
def test_stratified_counts_are_exact_every_epoch(class_weights, shares):
    s = DWS(labels=CARS, class_weights=class_weights, num_samples=1000, num_replicas=1, rank=0)
    expect = largest_remainder(1000, np.asarray(shares))
    for e in range(3):
        s.set_epoch(e)
        assert np.bincount(CARS[list(s)], minlength=2).tolist() == expect.tolist()


def test_coverage_every_member_before_any_repeat():
    # Balanced 2246 vs 77: the majority takes ~1161 draws an epoch, so its first cycle spans
    # two epochs; every majority sample must come before any comes twice. The minority cycles
    # 15 times an epoch, each cycle a permutation of all 77.
    s = DWS(labels=CARS, num_replicas=1, rank=0)
    stream = []
    for e in range(4):
        s.set_epoch(e)
        stream += list(s)
    stream = np.array(stream)
    majority, minority = stream[CARS[stream] == 0], stream[CARS[stream] == 1]
    assert first_repeat(majority.tolist()) == 2246
    for q in range(len(majority) // 2246):
        assert len(set(majority[q * 2246 : (q + 1) * 2246].tolist())) == 2246
    for q in range(len(minority) // 77):
        assert len(set(minority[q * 77 : (q + 1) * 77].tolist())) == 77


def test_coverage_continues_across_epochs_under_a_schedule():
    # With shares that change every epoch, each class's member stream starts where the draws
    # of all earlier epochs left it: still every member before any repeats, and each cycle a
    # permutation of the whole class.
    s = DWS(labels=CARS, class_weights=W.Progressive(3), num_replicas=1, rank=0)
    stream = []
    for e in range(5):
        s.set_epoch(e)
        stream += list(s)
    stream = np.array(stream)
    for cls, size in ((0, 2246), (1, 77)):
        members = stream[CARS[stream] == cls]
        assert first_repeat(members.tolist()) == min(size, len(members))
        for q in range(len(members) // size):
            assert len(set(members[q * size : (q + 1) * size].tolist())) == size


def test_stratified_batches_vary_less_than_iid():
    def per_batch_sd(**kw):
        s = DWS(labels=CARS, **kw, num_replicas=1, rank=0)
        x = CARS[list(s)][:2320].reshape(-1, 16).mean(axis=1)
        return x.std()

    assert per_batch_sd() < 0.7 * per_batch_sd(stratify=False)


def test_distribution_matches_weighted_random_sampler():
    # Pearson chi-square of 200k draws against the weights' probabilities, ours and torch's.
    # 10 categories -> 9 degrees of freedom; chi2.ppf(0.999, 9) = 27.88.
    w = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    p = w / w.sum()
    n = 200_000
    ours = np.array(list(DWS(weights=w, num_samples=n, num_replicas=1, rank=0)))
    g = torch.Generator().manual_seed(0)
    theirs = np.array(list(WeightedRandomSampler(w.tolist(), n, generator=g)))
    for draws in (ours, theirs):
        counts = np.bincount(draws, minlength=10)
        assert ((counts - n * p) ** 2 / (n * p)).sum() < 27.88
    # Homogeneity of the two samples (2 x 10 table, 9 dof).
    table = np.stack([np.bincount(ours, minlength=10), np.bincount(theirs, minlength=10)])
    expect = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert ((table - expect) ** 2 / expect).sum() < 27.88


def test_without_replacement_first_draw_follows_weights():
    # Successive sampling: P(first = i) = w_i / sum(w). 3000 epochs, 4 categories, 3 dof;
    # chi2.ppf(0.999, 3) = 16.27.
    w = np.array([1.0, 2.0, 3.0, 4.0])
    s = DWS(weights=w, replacement=False, num_samples=4, num_replicas=1, rank=0)
    first = []
    for e in range(3000):
        s.set_epoch(e)
        order = list(s)
        assert sorted(order) == [0, 1, 2, 3]
        first.append(order[0])
    counts, expect = np.bincount(first, minlength=4), 3000 * w / w.sum()
    assert ((counts - expect) ** 2 / expect).sum() < 16.27


@pytest.mark.parametrize("mode", ["weights-wor", "labels-wor", "labels-iid-wor"])
@pytest.mark.parametrize("world", [1, 3, 7])
def test_without_replacement_never_repeats_within_num_samples(mode, world):
    kwargs = MODES[mode]
    stream = interleave(rank_streams(make(kwargs), world, epoch=1))
    n = kwargs["num_samples"]
    assert first_repeat(stream) >= n  # padding (< world extra) may repeat, never the plan
    assert len(stream) - n < world
    # zero weights are never drawn
    if "weights" in kwargs:
        assert 0 not in stream


def test_zero_weight_never_drawn_with_replacement():
    s = DWS(weights=WEIGHTS, num_samples=20000, num_replicas=1, rank=0)
    assert 0 not in set(s)


# -- resumption --------------------------------------------------------------------------------


def assert_resumes(make_sampler, epoch, steps, world, new_world, block=1):
    """Stop every rank after ``steps`` items, save, restore under ``new_world``, compare.

    The consumed part plus the resumed part, read in sharding order, must equal the
    uninterrupted 1-process stream: nothing lost, nothing repeated. Also checks the state is
    plain (torch.load(weights_only=True)), equal lengths after resume, and the next epoch.
    """
    full = rank_streams(make_sampler, 1, epoch)[0]
    ranks = [make_sampler(world, r) for r in range(world)]
    taken = []
    for s in ranks:
        s.set_epoch(epoch)
        it = iter(s)
        taken.append([next(it) for _ in range(steps)])
    states = [s.state_dict() for s in ranks]
    assert all(st == states[0] for st in states)  # every rank agrees on the global state
    buf = io.BytesIO()
    torch.save(states[0], buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = []
    for r in range(new_world):
        s = make_sampler(new_world, r)
        s.load_state_dict(state)
        s.set_epoch(epoch)  # the usual loop calls it again: the resume point stays
        resumed.append(s)
    lengths = {len(s) for s in resumed}
    rest = [list(s) for s in resumed]
    assert {len(x) for x in rest} == lengths and len(lengths) == 1  # equal, as len() said
    assert state["consumed"] == steps * world
    # Consumed part + resumed part, in sharding order, is the uninterrupted stream.
    got = interleave(taken, block) + interleave(rest, block)
    assert got[: len(full)] == full
    assert len(got) - len(full) < new_world * block  # only the equal-length extension
    # after the resumed epoch, the next epoch starts from scratch
    nxt = rank_streams(make_sampler, new_world, epoch + 1)
    for s, stream in zip(resumed, nxt, strict=True):
        s.set_epoch(epoch + 1)
        assert list(s) == stream


@pytest.mark.parametrize("mode", ["weights-iid", "labels-stratified", "weights-wor", "labels-wor"])
@pytest.mark.parametrize(
    "world, new_world, steps",
    [
        (2, 2, 40),  # same world size, midpoint
        (4, 2, 31),  # shrink the world
        (2, 3, 17),  # grow it
        (1, 4, 0),  # initial state
    ],
)
def test_resume(mode, world, new_world, steps):
    assert_resumes(make(MODES[mode]), epoch=2, steps=steps, world=world, new_world=new_world)


def test_resume_with_blocks_at_step_boundaries():
    assert_resumes(make(MODES["labels-stratified"], block_size=8), 1, 16, 3, 2, block=8)


def test_state_at_end_of_epoch_and_mid_block():
    s = DWS(labels=CARS, num_replicas=2, rank=0, block_size=4)
    list(s)
    assert s.state_dict()["consumed"] == 2323  # fully consumed
    it = iter(s)
    for _ in range(6):
        next(it)
    st = s.state_dict()  # mid-block: only the same world size may resume
    assert (st["consumed"], st["skip"]) == (8, 2)
    other = DWS(labels=CARS, num_replicas=3, rank=0, block_size=4)
    with pytest.raises(ValueError, match="mid-block"):
        other.load_state_dict(st)
    same = DWS(labels=CARS, num_replicas=2, rank=0, block_size=4)
    same.load_state_dict(st)
    assert list(same) == list(DWS(labels=CARS, num_replicas=2, rank=0, block_size=4))[6:]


def test_state_dict_consumed_argument_for_prefetching_loaders():
    s = DWS(labels=CARS, num_replicas=2, rank=0)
    it = iter(s)
    for _ in range(50):  # the loader prefetched 50, the loop used 30
        next(it)
    assert s.state_dict(consumed=30)["consumed"] == 60


@pytest.mark.parametrize(
    "other",
    [
        dict(labels=CARS, seed=1),  # another seed
        dict(labels=CARS[::-1].copy()),  # another dataset
        dict(labels=CARS, num_samples=100),  # another plan-shaping argument
        dict(labels=CARS, class_weights="sqrt"),
        dict(labels=CARS, stratify=False),
        dict(weights=np.ones(len(CARS))),
    ],
)
def test_state_from_another_configuration_is_refused(other):
    st = DWS(labels=CARS, num_replicas=1, rank=0).state_dict()
    with pytest.raises(ValueError, match="another configuration"):
        DWS(**other, num_replicas=1, rank=0).load_state_dict(st)


def test_state_from_another_sampler_type_is_refused():
    from distsampler import DistributedQuotaBatchSampler

    st = DistributedQuotaBatchSampler(CARS, 8, {1: 2}, num_replicas=1, rank=0).state_dict()
    with pytest.raises(ValueError, match="belongs to DistributedQuotaBatchSampler"):
        DWS(labels=CARS, num_replicas=1, rank=0).load_state_dict(st)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(weights=[1.0, -1.0]), ValueError, r"weights should be >= 0, but got weights\[1\]"),
        (dict(weights=[1.0, float("nan")]), ValueError, r"finite, but got weights\[1\]=nan"),
        (dict(weights=[1.0, float("inf")]), ValueError, "weights should be finite"),
        (dict(weights=[0.0, 0.0]), ValueError, "all weights are zero"),
        (dict(weights=[]), ValueError, "weights should not be empty"),
        (dict(weights=[[1.0]]), ValueError, "one-dimensional"),
        (dict(weights=["a"]), TypeError, "real numbers"),
        (dict(), ValueError, "exactly one of weights="),
        (dict(weights=[1.0], labels=[0]), ValueError, "exactly one of weights="),
        (dict(weights=[1.0], num_samples=0), ValueError, "num_samples should be a positive"),
        (dict(weights=[1.0], num_samples=True), TypeError, "num_samples should be an integer"),
        (dict(weights=[1.0], num_samples=2.0), TypeError, "num_samples should be an integer"),
        (dict(weights=[1.0, 0.0], replacement=False, num_samples=2), ValueError, "at most"),
        (dict(weights=[1.0], replacement=1), TypeError, "replacement should be a boolean"),
        (dict(weights=[1.0], stratify=True), ValueError, "stratify=True needs labels"),
        (dict(weights=[1.0], class_weights="sqrt"), ValueError, "applies to labels"),
        (dict(weights=[1.0], num_replicas=2, rank=2), ValueError, "rank should be in"),
        (dict(weights=[1.0], seed=-1), ValueError, "seed should be a non-negative integer"),
        (dict(weights=[1.0], block_size=0), ValueError, "block_size should be a positive"),
        (dict(weights=[1.0], num_replicas=2, rank=0, drop_last=True), ValueError, "drop_last"),
        (dict(labels=[0, 1], class_weights="nope"), ValueError, "class_weights should be one"),
        (dict(labels=[0, 1], class_weights={0: 1.0}), ValueError, r"no weight for classes \[1\]"),
        (dict(labels=[0, 1], class_weights={0: 1, 1: 1, 7: 1}), ValueError, "not in the labels"),
        (dict(labels=[0, 1], class_weights={0: -1.0, 1: 1.0}), ValueError, r"class_weights\[0\]"),
        (dict(labels=[0, 1], class_weights={0: 0.0, 1: 0.0}), ValueError, "all are zero"),
        (dict(labels=[0.5, 1.5]), TypeError, "integers or strings"),
        (dict(labels=[0, 1, 1], replacement=False, num_samples=3), ValueError, "more than its 1"),
        (dict(labels=[0, 1], class_weights=W.target_shares({9: 1.0})), ValueError, "not in"),
    ],
)
def test_bad_input(kwargs, exc, match):
    kwargs.setdefault("num_replicas", 1)
    kwargs.setdefault("rank", 0)
    with pytest.raises(exc, match=match):
        DWS(**kwargs)


def test_set_epoch_rejects_bad_values():
    s = DWS(weights=[1.0], num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="epoch should be a non-negative integer"):
        s.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch should be an integer"):
        s.set_epoch(1.0)


def test_inputs_as_tensor_numpy_list_and_npy(tmp_path):
    labels = np.array(["camry"] * 30 + ["crown"] * 10)
    np.save(tmp_path / "l.npy", np.arange(40) % 4)
    a = list(DWS(labels=labels.tolist(), num_replicas=1, rank=0))
    b = list(DWS(labels=labels, num_replicas=1, rank=0))
    assert a == b
    w = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert list(DWS(weights=w, num_replicas=1, rank=0)) == list(
        DWS(weights=w.numpy(), num_replicas=1, rank=0)
    )
    assert len(list(DWS(labels=str(tmp_path / "l.npy"), num_replicas=1, rank=0))) == 40


def test_string_labels_and_share_helper():
    labels = ["camry"] * 30 + ["crown"] * 70
    cw = W.class_weights_from_shares({"camry": 0.3, "crown": 0.7}, labels)
    assert cw == pytest.approx({"camry": 0.01, "crown": 0.01})
    s = DWS(labels=labels, class_weights=cw, num_replicas=1, rank=0)
    drawn = np.array(labels)[list(s)]
    assert (drawn == "camry").sum() == 30


@pytest.mark.parametrize("world", [1, 2, 4])
def test_stratified_local_batches_exact_with_block_size_batch_size(world):
    # block_size = batch size hands each rank contiguous pieces of the plan, and any window
    # of a two-class stratified plan holds each class within one of its share: every local
    # batch of 32 holds 15, 16 or 17 minority samples (i.i.d. would range ~ 16 +- 3 sd).
    for rank in range(world):
        s = DWS(labels=CARS, num_replicas=world, rank=rank, block_size=32)
        for e in range(2):
            s.set_epoch(e)
            drawn = CARS[list(s)]
            for k in range(len(drawn) // 32):
                if (k * world + rank + 1) * 32 > 2323:  # the batch reaches the padding
                    break
                assert abs(int(drawn[k * 32 : (k + 1) * 32].sum()) - 16) <= 1


def test_epoch_dependent_schedules_are_part_of_the_configuration():
    a = DWS(labels=CARS, class_weights=W.Progressive(5), num_replicas=1, rank=0)
    b = DWS(labels=CARS, class_weights=W.Progressive(50), num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="another configuration"):
        b.load_state_dict(a.state_dict())
    DWS(labels=CARS, class_weights=W.Progressive(5), num_replicas=1, rank=0).load_state_dict(
        a.state_dict()
    )


def test_consumed_count_after_a_prefetching_loader_exhausted_the_resumed_pass():
    # Resume at 40 of 100; the loader drains the iterator (prefetch) while the loop has used
    # only 10 more: the state must say 50 + 40 = consumed 50 of the epoch's 100, not 10.
    s = DWS(weights=np.ones(100), num_replicas=1, rank=0)
    it = iter(s)
    for _ in range(40):
        next(it)
    state = s.state_dict()
    r = DWS(weights=np.ones(100), num_replicas=1, rank=0)
    r.load_state_dict(state)
    assert len(list(r)) == 60  # the pass ran to its end ahead of the loop
    assert r.state_dict(consumed=10)["consumed"] == 50
    assert r.state_dict()["consumed"] == 100
    assert len(r) == 100  # the next pass is a whole epoch again

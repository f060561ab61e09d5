"""DistributedClassBatchSampler: P classes x K samples, one plan for every world size.

The numbered properties: (1) every local batch has P distinct classes x K samples, no sample
twice when its class has >= K members; (2) the W x P classes of a step are distinct across
ranks while W x P <= C // 2; (3) the stream read in order is the same for every W; (4) every
class chosen every epoch, counts within one; (5) len() exact on every rank; (6) resume at any
step under any W; (7) clear errors.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from conftest import interleave
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distsampler import DistributedClassBatchSampler, GroupIndex
from distsampler._core.pk_plan import PKPlan

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def zipf_labels(num_classes: int, seed: int, low: int = 1, high: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = np.clip((high / np.arange(1, num_classes + 1) ** 0.8).astype(int), low, high)
    labels = np.repeat(np.arange(num_classes), sizes)
    return labels[rng.permutation(len(labels))]


def make(labels, P, K, world=1, rank=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DistributedClassBatchSampler(labels, P, K, num_replicas=world, rank=rank, **kw)


def streams(labels, P, K, world, epoch=0, **kw):
    out = []
    for r in range(world):
        s = make(labels, P, K, world, r, **kw)
        s.set_epoch(epoch)
        out.append([list(b) for b in s])
    return out


configs = st.tuples(
    st.integers(4, 60),  # classes
    st.integers(0, 10_000),  # data seed
    st.integers(1, 8),  # world
    st.integers(1, 4),  # K
    st.integers(0, 3),  # sampler seed
)


@SETTINGS
@given(configs, st.data())
def test_batches_hold_p_distinct_classes_of_k_and_steps_are_distinct(cfg, data):
    C, dseed, W, K, seed = cfg
    labels = zipf_labels(C, dseed)
    P = data.draw(st.integers(1, C // 2))
    nb = data.draw(st.none() | st.integers(1, 3 * C))  # several cycles: seams inside steps
    epoch = data.draw(st.integers(0, 3))
    per_rank = streams(labels, P, K, W, epoch=epoch, seed=seed, num_batches=nb)
    sizes = np.bincount(labels)
    for stream in per_rank:
        for b in stream:
            cls = labels[b]
            assert len(b) == P * K
            blocks = cls.reshape(P, K)
            assert (blocks == blocks[:, :1]).all()  # K of each class, class by class
            assert len(set(blocks[:, 0])) == P  # property 1: P distinct classes
            for p in range(P):
                members = np.asarray(b).reshape(P, K)[p]
                if sizes[blocks[p, 0]] >= K:
                    assert len(set(members)) == K
                else:  # repeats, but every member of the small class shows
                    assert len(set(members)) == sizes[blocks[p, 0]]
    if W * P <= C // 2:  # property 2
        for step in zip(*per_rank, strict=True):
            classes = [int(c) for batch in step for c in labels[batch][::K]]
            assert len(set(classes)) == W * P
            if all(sizes[c] >= K for c in classes):
                flat = [i for batch in step for i in batch]
                assert len(set(flat)) == len(flat)


@SETTINGS
@given(st.integers(2, 80), st.integers(1, 40), st.integers(0, 5), st.integers(0, 50))
def test_any_half_window_of_slots_is_distinct(C, P, seed, epoch):
    """The seam construction: any C // 2 consecutive slots hold distinct classes (proof in
    the plan's docstring), across as many cycles as we look at."""
    P = min(P, C // 2)
    index = GroupIndex.from_sizes({c: 3 for c in range(C)})
    plan = PKPlan(index, np.arange(C), P, 2, 1)
    seq = plan.classes(seed, epoch, np.arange(5 * C))
    H = C // 2
    windows = np.lib.stride_tricks.sliding_window_view(seq, H)
    srt = np.sort(windows, axis=1)
    assert not (srt[:, 1:] == srt[:, :-1]).any()
    for c in range(5):  # every cycle is a permutation
        assert sorted(seq[c * C : (c + 1) * C]) == list(range(C))


@SETTINGS
@given(configs, st.data())
def test_one_stream_for_every_world_size(cfg, data):
    """Property 3: the stream read in order is identical for W = 1..8."""
    C, dseed, W, K, seed = cfg
    labels = zipf_labels(C, dseed)
    P = data.draw(st.integers(1, C // 2))
    one = make(labels, P, K, seed=seed)
    got = interleave(streams(labels, P, K, W, seed=seed))
    want = [list(b) for b in one.batches(np.arange(len(got)))]
    assert got == want


@SETTINGS
@given(configs, st.data())
def test_every_class_every_epoch_counts_within_one(cfg, data):
    """Property 4, with the default epoch and with num_batches."""
    C, dseed, W, K, seed = cfg
    labels = zipf_labels(C, dseed)
    P = data.draw(st.integers(1, C // 2))
    num_batches = data.draw(st.none() | st.integers(1, 12))
    s = make(labels, P, K, W, 0, seed=seed, num_batches=num_batches)
    for epoch in (0, data.draw(st.integers(1, 20))):
        batches = s.batches(np.arange(s.epoch_batches), epoch=epoch)
        counts = np.bincount(labels[np.asarray(batches)[:, ::K].ravel()], minlength=C)
        assert counts.max() - counts.min() <= 1
        if s.epoch_batches * P >= C:
            assert counts.min() >= 1
        assert (counts == s.per_epoch_counts(epoch)).all()


def test_members_cycle_without_replacement_across_epochs():
    """Members cycle across epochs: whole cycles when K divides the class size; otherwise a
    block straddling two member cycles may show up to K - 1 members again (never more)."""
    labels = zipf_labels(30, 1, low=5)
    sizes = np.bincount(labels)
    P, K = 5, 3
    s = make(labels, P, K, num_batches=7)  # 35 slots over 30 classes: partial cycles
    seen: dict[int, list[int]] = {c: [] for c in range(30)}
    for epoch in range(6):
        for b in s.batches(np.arange(s.epoch_batches), epoch=epoch):
            for i in b:
                seen[int(labels[i])].append(int(i))
    for c, got in seen.items():
        n = int(sizes[c])
        for q in range(len(got) // n):
            assert len(set(got[q * n : (q + 1) * n])) >= n - (K - 1)
        assert len(set(got[:n])) == min(n, len(got)) or n % K  # whole cycles when K | n
    first = {c: got[: sizes[c]] for c, got in seen.items() if sizes[c] % K == 0}
    assert all(len(set(v)) == len(v) for v in first.values())


def test_len_exact_on_every_rank_1000_configurations():
    """Property 5 (arithmetic only: len() never draws)."""
    rng = random.Random(0)
    for _ in range(1000):
        C = rng.randint(2, 200)
        sub = GroupIndex.from_sizes({c: 1 + c % 5 for c in range(C)})
        P = rng.randint(1, C // 2)
        W = rng.randint(1, 8)
        nb = rng.choice([None, rng.randint(1, 30)])
        drop = rng.random() < 0.3
        lens = {len(make(sub, P, 2, W, r, num_batches=nb, drop_last=drop)) for r in range(W)}
        M = math.ceil(C / P) if nb is None else nb * W
        assert lens == {M // W if drop else -(-M // W)}


def test_len_equals_batches_yielded():
    labels = zipf_labels(23, 4)
    for W in (1, 3, 5):
        for drop in (False, True):
            for r in range(W):
                s = make(labels, 3, 2, W, r, drop_last=drop)
                assert len(list(s)) == len(s)


@pytest.mark.parametrize("world_after", [1, 2, 3, 5])
@pytest.mark.parametrize("steps", [0, 1, 2, 4])
def test_resume_at_any_step_under_any_world(world_after, steps):
    """Property 6: stop after ``steps`` global steps under W=2, resume under another W."""
    labels = zipf_labels(40, 2)
    P, K, epoch = 3, 2, 5
    first = [make(labels, P, K, 2, r, seed=9) for r in range(2)]
    done = []
    for s in first:
        s.set_epoch(epoch)
    its = [iter(s) for s in first]
    for _ in range(steps):
        for it in its:
            done.append(list(next(it)))
    state = first[0].state_dict()
    rest = []
    for r in range(world_after):
        s = make(labels, P, K, world_after, r, seed=9)
        s.load_state_dict(state)
        s.set_epoch(epoch)
        rest.append([list(b) for b in s])
    got = done + interleave(rest)
    one = make(labels, P, K, seed=9)
    assert got == [list(b) for b in one.batches(np.arange(len(got)), epoch=epoch)]


def test_multilabel_a_sample_is_once_per_batch_and_counts_for_each_class():
    rng = np.random.default_rng(0)
    sets = [sorted({int(rng.integers(12)), int(rng.integers(12))}) for _ in range(300)]
    index = GroupIndex.from_label_sets(sets)
    s = make(index, 3, 4, 1, 0)
    sizes = index.sizes
    for epoch in range(3):
        for b in s.batches(np.arange(40), epoch=epoch):
            assert len(set(b)) == len(b)
            for p in range(3):
                block = b[p * 4 : (p + 1) * 4]
                common = set.intersection(*(set(sets[i]) for i in block))
                assert common  # every sample of the block contains one class
    assert sizes.min() >= 4


def test_small_classes_policies_and_warnings():
    labels = [0] * 10 + [1] * 10 + [2] * 10 + [3] * 10 + [4] + [5] * 2
    with pytest.warns(UserWarning, match="2 classes have fewer than samples_per_class=3"):
        s = DistributedClassBatchSampler(labels, 2, 3, num_replicas=1, rank=0)
    assert s.num_small_classes == 2 and s.num_singleton_classes == 1
    assert len(s.eligible_classes) == 6
    with pytest.warns(UserWarning, match="never form a positive pair"):
        DistributedClassBatchSampler(labels, 2, 3, num_replicas=1, rank=0)
    with pytest.warns(UserWarning, match="skipped"):
        s = DistributedClassBatchSampler(labels, 2, 3, small_classes="skip", num_replicas=1, rank=0)
    assert s.eligible_classes.tolist() == [0, 1, 2, 3]
    got = {int(labels[i]) for b in s.batches(np.arange(20)) for i in b}
    assert got == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="small_classes='replace' or 'skip'"):
        DistributedClassBatchSampler(labels, 2, 3, small_classes="error", num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="small_classes should be one of"):
        DistributedClassBatchSampler(labels, 2, 3, small_classes="drop", num_replicas=1, rank=0)


def test_bad_input_names_the_argument():
    labels = [i % 10 for i in range(100)]
    with pytest.raises(ValueError, match="classes_per_batch should be at most half the 10"):
        make(labels, 6, 2)
    with pytest.raises(ValueError, match="classes_per_batch"):
        make(labels, 0, 2)
    with pytest.raises(ValueError, match="samples_per_class"):
        make(labels, 2, 0)
    with pytest.raises(TypeError, match="classes_per_batch"):
        make(labels, True, 2)
    with pytest.warns(UserWarning, match="samples_per_class=1: no anchor has a positive"):
        DistributedClassBatchSampler(labels, 2, 1, num_replicas=1, rank=0)
    with pytest.raises(ValueError, match="dataset_size"):
        make(labels, 2, 2, dataset_size=99)
    make(labels, 2, 2, dataset_size=100)


def test_batch_size_and_config_as_data():
    s = make([i % 10 for i in range(100)], 3, 4, 2, 1, num_batches=5)
    assert s.batch_size == 12 and s.epoch_batches == 10 and len(s) == 5
    cfg = s._config()
    assert cfg["classes_per_batch"] == 3 and cfg["samples_per_class"] == 4
    assert cfg["pk_plan_version"] == 2
    other = make([i % 10 for i in range(100)], 3, 2, 2, 1, num_batches=5)
    with pytest.raises(ValueError):
        other.load_state_dict(s.state_dict())


def test_first_batch_at_1e8_samples_without_a_member_array():
    index = GroupIndex.from_sizes({c: 1000 for c in range(100_000)})
    s = make(index, 16, 4, 8, 3)
    b = next(iter(s))
    assert len(b) == 64 and max(b) < 10**8


def test_golden_first_batches():
    """The plan is a public promise: these batches change only with a pk_plan_version bump."""
    labels = np.arange(600) % 37
    s = DistributedClassBatchSampler(labels, 4, 3, num_replicas=2, rank=0, seed=7)
    s.set_epoch(1)
    assert s.batches(np.arange(3)).tolist() == [
        [118, 44, 599, 71, 589, 182, 532, 88, 458, 383, 50, 87],
        [54, 17, 424, 25, 469, 321, 168, 205, 427, 174, 211, 248],
        [141, 104, 326, 197, 271, 419, 0, 111, 296, 514, 292, 440],
    ]
    labels = np.repeat(np.arange(20), np.arange(20) + 3)
    s = DistributedClassBatchSampler(
        labels, 3, 2, class_weights="sqrt", num_replicas=1, rank=0, seed=1
    )
    assert s.batches(np.arange(3), epoch=1).tolist() == [
        [71, 65, 46, 49, 78, 84],
        [151, 166, 233, 236, 31, 29],
        [188, 204, 59, 61, 113, 111],
    ]
    index = GroupIndex.from_sizes({c: 1000 + c for c in range(100)})
    s = DistributedClassBatchSampler(index, 3, 2, num_replicas=1, rank=0, seed=0)
    assert s.batches(np.arange(2), epoch=2).tolist() == [
        [84186, 83708, 25287, 24541, 47938, 47462],
        [102661, 102716, 17972, 18059, 1605, 1714],
    ]


@SETTINGS
@given(configs, st.data())
def test_class_weights_exact_counts_distinct_local_batches_one_stream(cfg, data):
    """With class_weights: exact per-epoch counts (largest remainder of the shares), P
    distinct classes in every local batch, and the same stream for every W."""
    from distsampler import weights as W
    from distsampler._core.plan import largest_remainder

    C, dseed, world, K, seed = cfg
    labels = zipf_labels(C, dseed)
    P = data.draw(st.integers(1, max(1, C // 8)))
    cw = data.draw(st.sampled_from(["sqrt", "balanced"]))
    s = make(labels, P, K, seed=seed, class_weights=cw)
    epoch = data.draw(st.integers(0, 5))
    batches = s.batches(np.arange(s.epoch_batches), epoch=epoch)
    counts = np.bincount(labels[np.asarray(batches)[:, ::K].ravel()], minlength=C)
    sizes = np.bincount(labels, minlength=C)
    shares = W.class_shares(W.resolve(cw, tuple(range(C))), sizes, epoch)
    assert (counts == largest_remainder(s.epoch_batches * P, shares)).all()
    per_rank = streams(labels, P, K, world, epoch=epoch, seed=seed, class_weights=cw)
    for stream in per_rank:
        for b in stream:
            assert len(set(labels[b][::K])) == P
    got = interleave(per_rank)
    assert got == [list(b) for b in s.batches(np.arange(len(got)), epoch=epoch)]


def test_class_weights_sqrt_between_uniform_classes_and_uniform_samples():
    labels = np.repeat(np.arange(40), [100] * 4 + [4] * 36)
    s = make(labels, 4, 2, class_weights="sqrt", num_batches=100)
    counts = s.per_epoch_counts(0)
    big, small = counts[:4].mean(), counts[4:].mean()
    assert abs(big / small - 5.0) < 0.2  # sqrt(100) / sqrt(4)


def test_class_weights_resume_under_another_world_and_members_cycle():
    labels = zipf_labels(50, 3, low=4)
    kw = dict(seed=4, class_weights="sqrt")
    first = [make(labels, 3, 2, 2, r, **kw) for r in range(2)]
    for s in first:
        s.set_epoch(2)
    its = [iter(s) for s in first]
    done = [list(next(it)) for _ in range(3) for it in its]
    state = first[0].state_dict()
    rest = []
    for r in range(3):
        s = make(labels, 3, 2, 3, r, **kw)
        s.load_state_dict(state)
        s.set_epoch(2)
        rest.append([list(b) for b in s])
    got = done + interleave(rest)
    assert got == [list(b) for b in make(labels, 3, 2, **kw).batches(np.arange(len(got)), 2)]


def test_class_weights_refused_when_a_class_needs_two_slots_of_a_batch():
    labels = np.repeat(np.arange(10), [1000] + [2] * 9)
    with pytest.raises(ValueError, match="more than one per micro-batch"):
        make(labels, 4, 2, class_weights="instance")
    with pytest.raises(ValueError, match="class_weights"):
        make(labels, 2, 2, class_weights="nope")


def test_class_weights_heavy_shares_keep_every_batch_distinct():
    """Instance weights on skewed sizes (classes near one slot per micro-batch): the repair
    leaves no micro-batch with a class twice, continuation included."""
    checked = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        C = int(rng.integers(6, 60))
        labels = np.repeat(np.arange(C), rng.integers(1, 200, C))
        P = int(rng.integers(1, C // 2 + 1))
        nb = int(rng.integers(1, 30))
        try:
            s = make(labels, P, 2, class_weights="instance", seed=seed, num_batches=nb)
        except ValueError:
            continue
        for epoch in range(3):
            for b in s.batches(np.arange(s.epoch_batches + 3), epoch=epoch):
                assert len(set(labels[b][::2])) == P
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("class_weights", [None, "sqrt", "progressive"])
def test_member_streams_start_the_same_fresh_or_after_earlier_epochs(class_weights):
    """The choices before an epoch (where member streams start) do not depend on which epochs
    the process computed before (a resumed run computes only its own)."""
    from distsampler import weights as W

    if class_weights == "progressive":
        class_weights = W.Progressive(epochs=4)
    labels = zipf_labels(30, 5, low=3)
    kw = dict(num_batches=4, class_weights=class_weights, seed=3)
    fresh = make(labels, 3, 2, **kw).batches(np.arange(8), epoch=9)
    walked = make(labels, 3, 2, **kw)
    for e in [0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 0]:
        walked.batches(np.arange(8), epoch=e)
    assert (walked.batches(np.arange(8), epoch=9) == fresh).all()


def test_inspect_reports_anchors_with_a_positive_and_class_coverage(tmp_path, capsys):
    import json

    from distsampler.inspect import cli
    from distsampler.inspect.tally import anchors_with_positive

    labels = np.repeat(np.arange(60), np.arange(60) % 9 + 2)
    np.save(tmp_path / "labels.npy", labels)
    argv = ["inspect", str(tmp_path / "labels.npy"), "--sampler", "class-batches"]
    argv += ["--sampler", "weighted"]
    argv += ["--batch-size", "16", "--world-size", "2", "--epochs", "2", "--no-progress"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "anchors with a positive" in text and "classes chosen per epoch" in text
    assert cli.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["samplers"]
    assert report["class-batches"]["anchors_with_positive"] == 1.0
    assert report["class-batches"]["classes_chosen"] == [1.0, 1.0]
    assert report["class-batches"]["detail"].startswith("P=4 x K=4")
    # the metric itself: a repeated index is no positive, padding rows are left out
    codes = np.array([0, 0, 1, 1])
    batches = np.array([[0, 1, 2, 2], [0, 0, 2, 3], [0, 1, 2, -1]])
    assert anchors_with_positive(batches, codes) == 0.5  # 2 of 4, then 2 of 4


@pytest.mark.parametrize(("classes", "P", "M"), [(23, 3, 5), (37, 4, 10), (50, 8, 7), (40, 4, 10)])
def test_choices_before_an_epoch_are_the_closed_form_of_the_sum(classes, P, M):
    """Resume is O(1) in the epoch: the choices before epoch e (where member streams start)
    are a closed form, equal to summing every earlier epoch's classes."""
    from distsampler._core.pk_plan import PKPlan

    index = GroupIndex.from_labels(np.repeat(np.arange(classes), 3))
    plan = PKPlan(index, np.arange(classes), P, 2, M)
    for epoch in range(0, 3 * classes, 5):
        assert np.array_equal(plan.choices(3, epoch), plan._choices_by_sum(3, epoch))
        assert np.array_equal(
            plan.choices(3, epoch + 1) - plan.choices(3, epoch), plan.per_epoch_counts(3, epoch)
        )
    if plan.rest:  # the extra choices rotate: over C epochs every class gets rest of them
        extra = plan.choices(3, classes) - classes * plan.cycles
        assert set(extra.tolist()) == {plan.rest}

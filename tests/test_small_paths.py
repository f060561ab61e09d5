"""Small paths that used to be silent or confusing: each test failed on 0.3.

* the quota sampler's ``update_shares`` reads a mapping as its constructor reads ``quotas=``
  (groups not named share the rest), and a resumed state continues the same stream;
* an unknown group is named, with the valid ones, by both samplers;
* class batches warn when ``W x P`` is more than half the classes (classes may then repeat
  across ranks in a step), and that regime really does repeat them;
* the small-class warning is in the singular for one class;
* ``help(distsampler)`` maps the public modules (``feedback`` included), no private file.
"""

from __future__ import annotations

import pkgutil
import warnings

import numpy as np
import pytest

import distsampler
from distsampler import DistributedClassBatchSampler as PK
from distsampler import DistributedQuotaBatchSampler as Q
from distsampler import DistributedWeightedSampler as DWS

LABELS = np.array(["neg"] * 300 + ["pos"] * 20 + ["odd"] * 80)


def quota(**kw):
    return Q(LABELS, 10, {"pos": 2}, num_replicas=1, rank=0, seed=3, num_batches=40, **kw)


def test_quota_update_fills_unnamed_groups_as_the_constructor_does():
    s = quota()
    run = s.update_shares({"pos": 4}, at=10)
    assert run == 10
    batches = list(s)
    counts = [sum(LABELS[i] == "pos" for i in b) for b in batches]
    assert counts[:10] == [2] * 10 and counts[10:] == [4] * 30
    # The rest is shared by the groups not named, in proportion to their sizes, as
    # Q(..., {"pos": 4}) would: 6 slots, 300:80 -> 4.74 neg and 1.26 odd per batch on average.
    ref = Q(LABELS, 10, {"pos": 4}, num_replicas=1, rank=0, seed=3, num_batches=40)
    neg = sum(LABELS[i] == "neg" for b in batches[10:] for i in b)
    ref_neg = sum(LABELS[i] == "neg" for b in list(ref)[10:] for i in b)
    assert neg == ref_neg  # the same spread of the rest over 30 batches


def test_quota_update_with_unnamed_groups_resumes_the_same_stream():
    live = quota()
    live.update_shares({"pos": 0.35}, at=7)  # a fractional share; the rest spread by size
    stream = list(live)
    for k in (3, 7, 8, 25):
        first = quota()
        first.update_shares({"pos": 0.35}, at=7)
        it = iter(first)
        for _ in range(k):
            next(it)
        state = first.state_dict(consumed=k)
        resumed = quota()
        resumed.load_state_dict(state)
        assert list(resumed) == stream[k:], k


@pytest.mark.parametrize("make", [quota, lambda: DWS(labels=LABELS, num_replicas=1, rank=0)])
def test_unknown_group_names_it_and_lists_the_valid_ones(make):
    s = make()
    with pytest.raises(ValueError) as err:
        s.update_shares({"nope": 0.5, "pos": 0.5}, at=0)
    msg = str(err.value)
    assert "'nope'" in msg
    for name in ("neg", "odd", "pos"):
        assert repr(name) in msg, msg


def pk_labels(classes: int) -> np.ndarray:
    return np.repeat(np.arange(classes), 6)


def test_class_batches_warn_when_ranks_times_p_exceeds_half_the_classes():
    with pytest.warns(UserWarning, match=r"4 x 3 = 12 is more than half the 20 eligible classes"):
        PK(pk_labels(20), 3, 2, num_replicas=4, rank=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PK(pk_labels(24), 3, 2, num_replicas=4, rank=0)  # 12 <= 24 // 2: distinct, no warning


def test_the_warned_regime_really_repeats_classes_across_ranks():
    """Why the warning exists: with W x P > C // 2 some global step holds a class twice."""
    labels = pk_labels(20)
    repeated = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranks = [PK(labels, 3, 2, num_replicas=6, rank=r, seed=1) for r in range(6)]
    for e in range(3):
        for s in ranks:
            s.set_epoch(e)
        for step in zip(*ranks, strict=True):
            classes = [labels[b[0::2]] for b in step]  # K = 2: one label per pair
            flat = np.concatenate(classes)
            repeated |= len(set(flat.tolist())) < len(flat)
    assert repeated


@pytest.mark.parametrize(
    ("sizes", "text"),
    [((1,), "1 class has fewer than"), ((1, 1), "2 classes have fewer than")],
)
def test_small_class_warning_is_singular_for_one_class(sizes, text):
    labels = np.concatenate([pk_labels(12), *[np.full(n, 100 + i) for i, n in enumerate(sizes)]])
    with pytest.warns(UserWarning, match=text):
        PK(labels, 2, 3, num_replicas=1, rank=0)


def test_help_maps_the_public_modules_and_no_private_file():
    doc = distsampler.__doc__ or ""
    public = [
        m.name for m in pkgutil.iter_modules(distsampler.__path__) if not m.name.startswith("_")
    ]
    for name in public:
        assert f"``{name}``" in doc, f"help(distsampler) does not map {name}"
    assert "_core/" not in doc and ".py" not in doc

"""WeightIndex: two layouts, one distribution; saved once, memory-mapped, same plan."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distsampler import DistributedWeightedSampler as DWS
from distsampler import WeightIndex
from distsampler._core.plan import largest_remainder
from distsampler.weight_index import guide_table, guided_search


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    w=st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e3)), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
)
def test_guided_search_is_searchsorted_right(w, seed):
    w = np.array(w)
    if not (w > 0).any():
        w[0] = 1.0
    cum = np.cumsum(w)
    guide, step = guide_table(cum)
    rng = np.random.default_rng(seed)
    # Every cumulative value (the last one too: u * total can round up to it) and its neighbour.
    x = np.concatenate([rng.random(200) * cum[-1], cum, np.nextafter(cum, 0), [0.0]])
    assert np.array_equal(guided_search(cum, guide, step, x), np.searchsorted(cum, x, "right"))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    total=st.integers(0, 10**6),
    shares=st.lists(st.floats(0, 1), min_size=1, max_size=12).filter(lambda s: sum(s) > 0),
)
def test_largest_remainder_sums_exactly_within_one(total, shares):
    counts = largest_remainder(total, np.array(shares))
    ideal = total * np.array(shares) / sum(shares)
    assert counts.sum() == total and (counts >= 0).all()
    assert (np.abs(counts - ideal) < 1).all()


@pytest.mark.parametrize(
    ("weights", "by_value"),
    [
        (np.where(np.arange(4000) % 9 == 0, 8.0, 1.0), True),  # class weights: two values
        (np.r_[np.zeros(100), np.full(900, 2.5)], True),  # a zero value group is left out
        (np.random.default_rng(1).random(6000) + 0.01, False),  # many values: cumulative
    ],
)
def test_both_layouts_draw_by_weight(weights, by_value):
    """Chi-square over 8 buckets of indices: 1e5 draws, p-value bound 1e-4 (fixed seed)."""
    index = WeightIndex.from_weights(weights)
    assert index.by_value == by_value
    assert index.positive == int(np.count_nonzero(weights))
    s = DWS(weights=index, num_samples=100_000, seed=3, num_replicas=1, rank=0)
    draws = s.indices(np.arange(100_000))
    assert (weights[draws] > 0).all()
    buckets = np.array_split(np.arange(len(weights)), 8)
    observed = np.array([np.isin(draws, b).sum() for b in buckets])
    expected = np.array([weights[b].sum() for b in buckets]) / weights.sum() * 100_000
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 31.8  # chi-square with 7 degrees of freedom: P(X > 31.8) < 1e-4


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("kind", ["by_value", "cumulative"])
def test_saved_and_mapped_index_gives_the_same_plan(tmp_path, kind, replacement):
    rng = np.random.default_rng(0)
    w = rng.integers(1, 4, 3000).astype(float) if kind == "by_value" else rng.random(3000)
    WeightIndex.from_weights(w).save(tmp_path)
    mapped = WeightIndex.load(tmp_path, mmap=True)
    assert isinstance(mapped.weights, np.memmap)
    n = 1000
    a = DWS(weights=w, replacement=replacement, num_samples=n, num_replicas=2, rank=1)
    b = DWS(weights=mapped, replacement=replacement, num_samples=n, num_replicas=2, rank=1)
    assert list(a) == list(b)
    assert a.state_dict()["config"] == b.state_dict()["config"]  # the same data, as a state sees


def test_without_replacement_padding_continues_the_round():
    """282 positive weights, num_samples=101, W=2: 102 positions, all distinct (the padding
    takes an unused positive weight instead of starting a new round)."""
    w = np.r_[np.ones(282), np.zeros(50)]
    streams = [
        list(DWS(weights=w, replacement=False, num_samples=101, num_replicas=2, rank=r))
        for r in range(2)
    ]
    everything = streams[0] + streams[1]
    assert len(everything) == 102 and len(set(everything)) == 102
    one = DWS(weights=w, replacement=False, num_samples=101, num_replicas=1, rank=0)
    assert one.indices(np.arange(101)).tolist() == list(one)  # first num_samples unchanged
    # Past every positive weight a new round starts: positions 282.. repeat indices.
    late = one.indices(np.arange(282 + 5)).tolist()
    assert len(set(late[:282])) == 282 and set(late[282:]) <= set(late[:282])


def test_bad_weight_index_files(tmp_path):
    WeightIndex.from_weights([1.0, 2.0]).save(tmp_path)
    (tmp_path / "meta.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="another format"):
        WeightIndex.load(tmp_path)
    with pytest.raises(TypeError, match="mmap should be a boolean"):
        WeightIndex.load(tmp_path, mmap="yes")

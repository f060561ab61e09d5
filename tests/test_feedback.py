"""distsampler.feedback: GroupStats and the share policies (one process; gloo in
test_shares_dist.py)."""

import numpy as np
import pytest
import torch

from distsampler import DistributedWeightedSampler as DWS
from distsampler.feedback import GroupStats, exp3_shares, inverse_recall_shares


def test_group_stats_sums_counts_means_and_resets():
    st = GroupStats(["a", "b", "c"])
    st.add(torch.tensor([0, 0, 2]), torch.tensor([1.0, 3.0, 5.0]))
    st.add([2], [1.0])
    r = st.reduce()
    np.testing.assert_array_equal(r["sum"], [4.0, 0.0, 6.0])
    np.testing.assert_array_equal(r["count"], [2, 0, 2])
    assert r["mean"][0] == 2.0 and np.isnan(r["mean"][1]) and r["mean"][2] == 3.0
    assert GroupStats(["a"]).reduce()["count"].tolist() == [0.0]
    assert st.reduce()["count"].tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "groups,values,match",
    [
        ([0, 3], [1.0, 1.0], r"\[0, 3\)"),
        ([0], [1.0, 2.0], "equal length"),
        ([-1], [1.0], "groups should be"),
    ],
)
def test_group_stats_bad_input(groups, values, match):
    with pytest.raises(ValueError, match=match):
        GroupStats(["a", "b", "c"]).add(groups, values)


def test_exp3_moves_share_to_high_loss_groups_with_a_floor():
    stats = {"mean": np.array([0.1, 2.0, np.nan])}
    p = exp3_shares(stats, eta=5.0, floor=0.3)
    assert p.sum() == pytest.approx(1.0)
    assert p[1] > p[0] and p.min() >= 0.3 / 3 - 1e-12
    # no signal for group 2: its weight relative to the previous shares is kept
    q = exp3_shares({"mean": np.array([1.0, 1.0, np.nan])}, prev=[0.2, 0.3, 0.5], floor=0.0)
    np.testing.assert_allclose(q, [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="floor"):
        exp3_shares(stats, floor=1.5)
    with pytest.raises(ValueError, match="prev"):
        exp3_shares(stats, prev=[1.0, float("nan"), 1.0])


def test_inverse_recall_up_weights_missed_classes():
    p = inverse_recall_shares({"mean": np.array([1.0, 0.5, 0.0])}, floor=0.0, eps=0.0)
    np.testing.assert_allclose(p, [0.0, 1 / 3, 2 / 3])
    q = inverse_recall_shares({"mean": np.array([0.0, np.nan])}, prev=[0.5, 0.5], floor=0.0)
    np.testing.assert_allclose(q, [0.5, 0.5])


def test_a_policy_result_feeds_update_shares():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    s = DWS(labels=labels, num_replicas=1, rank=0, num_samples=400)
    st = GroupStats(s.index.names)
    it = iter(s)
    idx = np.array([next(it) for _ in range(40)])
    st.add(labels[idx], (labels[idx] == 2).astype(float))  # class 2 is "hard"
    shares = exp3_shares(st.reduce(), eta=3.0)
    run = s.update_shares(shares)
    rest = np.array(list(it))
    assert run == 40
    got = np.bincount(labels[rest], minlength=3) / len(rest)
    np.testing.assert_allclose(got, shares, atol=0.02)  # stratified: within one draw a class

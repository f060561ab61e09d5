"""Mistakes a newcomer makes are loud: a wrong dataset size, a forgotten set_epoch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import distsampler
from distsampler import (
    DistributedBucketBatchSampler,
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    EpochNotSetWarning,
)

LABELS = [0] * 90 + [1] * 10


def weighted(**kw):
    return DistributedWeightedSampler(labels=LABELS, num_replicas=2, rank=0, **kw)


def quota(**kw):
    return DistributedQuotaBatchSampler(
        LABELS, batch_size=8, quotas={1: 2}, num_replicas=2, rank=0, **kw
    )


def bucketed(**kw):
    sizes = np.arange(1, 101)
    return DistributedBucketBatchSampler(weighted(), sizes, batch_size=8, **kw)


SAMPLERS = {"weighted": weighted, "quota": quota, "bucketed": bucketed}


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
@pytest.mark.parametrize("given", [99, 101, 1000])
def test_dataset_size_other_than_the_labels_is_refused(make, given):
    with pytest.raises(ValueError, match=f"dataset_size={given}, but the sampler indexes 100"):
        make(dataset_size=given)


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_dataset_size_equal_to_the_labels_passes(make):
    assert make(dataset_size=100).dataset_size == 100


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "100"])
def test_dataset_size_must_be_a_positive_int(bad):
    with pytest.raises((TypeError, ValueError), match="dataset_size"):
        weighted(dataset_size=bad)


def _passes(sampler, count: int, set_epoch: bool) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(count):
            if set_epoch:
                sampler.set_epoch(epoch)
            list(sampler)
    return [w for w in caught if issubclass(w.category, EpochNotSetWarning)]


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_forgetting_set_epoch_warns_from_the_second_pass(make):
    caught = _passes(make(), 3, set_epoch=False)
    assert len(caught) == 2  # passes 2 and 3 repeat pass 1
    assert "without set_epoch" in str(caught[0].message)
    assert type(make()).__name__ in str(caught[0].message)


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_set_epoch_every_epoch_never_warns(make):
    assert _passes(make(), 3, set_epoch=True) == []


def test_replaying_an_epoch_on_purpose_does_not_warn():
    sampler = weighted()
    sampler.set_epoch(4)
    first = list(sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EpochNotSetWarning)
        sampler.set_epoch(4)  # the same epoch again: a deliberate replay
        assert list(sampler) == first
        len(sampler)  # len() is no pass


def test_resuming_then_finishing_the_epoch_does_not_warn():
    sampler = quota()
    it = iter(sampler)
    next(it)
    state = sampler.state_dict()
    other = quota()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EpochNotSetWarning)
        other.load_state_dict(state)
        list(other)  # the rest of the epoch
        other.set_epoch(1)
        list(other)


def test_a_dataloader_loop_without_set_epoch_warns_through_the_loader():
    dataset = TensorDataset(torch.arange(100))
    sampler = quota()
    loader = DataLoader(dataset, batch_sampler=sampler)
    with pytest.warns(EpochNotSetWarning):
        for _ in range(2):
            for _batch in loader:
                pass


def test_the_warning_is_public():
    assert distsampler.EpochNotSetWarning is EpochNotSetWarning
    assert issubclass(EpochNotSetWarning, UserWarning)


def test_the_warning_names_the_users_line_even_through_a_dataloader():
    dataset = TensorDataset(torch.arange(100))
    for make, wrap in [
        (weighted, lambda s: DataLoader(dataset, batch_size=4, sampler=s)),
        (quota, lambda s: DataLoader(dataset, batch_sampler=s)),
        (weighted, lambda s: s),
    ]:
        loader = wrap(make())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                for _batch in loader:  # the line a user should be sent to
                    pass
        (w,) = [c for c in caught if issubclass(c.category, EpochNotSetWarning)]
        assert w.filename == __file__, w.filename

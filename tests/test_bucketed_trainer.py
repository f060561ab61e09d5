"""SamplerTrainer honours length grouping, or refuses it clearly.

``TrainingArguments(train_sampling_strategy="group_by_length")`` (``group_by_length=True``
before transformers 5) used to be ignored silently: Trainer's own ``LengthGroupedSampler``
never runs under SamplerTrainer, whose loader is the train_sampler's. These tests check the
construction; tests/test_trainer_loader.py checks the batches the training step receives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from transformers import TrainingArguments

from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler
from distsampler.integrations.transformers import SamplerTrainer

N, B = 64, 4
LENGTHS = [1 + (i * 37) % 29 for i in range(N)]


class Rows(torch.utils.data.Dataset):
    """A map-style dataset with columns, as a ``datasets.Dataset`` has (rows and columns)."""

    column_names = ["input_ids", "labels"]

    def __len__(self):
        return N

    def __getitem__(self, key):
        if key == "input_ids":
            return [[1] * n for n in LENGTHS]
        if key == "labels":
            return [i % 2 for i in range(N)]
        return {"x": torch.ones(2), "labels": torch.tensor(float(key % 2))}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


def trainer(tmp_path, dataset, sampler, **kw):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=B,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        **kw,
    )
    return SamplerTrainer(model=Tiny(), args=args, train_dataset=dataset, train_sampler=sampler)


def source():
    return DistributedWeightedSampler(labels=[i % 2 for i in range(N)], block_size=B)


def test_group_by_length_wraps_the_sampler_in_length_buckets(tmp_path):
    t = trainer(tmp_path, Rows(), source(), train_sampling_strategy="group_by_length")
    sampler = t.train_sampler
    assert isinstance(sampler, DistributedBucketBatchSampler) and sampler.batch_size == B
    assert np.asarray(sampler.sizes).tolist() == LENGTHS
    first = next(iter(sampler))
    assert len(first) == B


def test_without_group_by_length_the_sampler_is_kept(tmp_path):
    s = source()
    assert trainer(tmp_path, Rows(), s).train_sampler is s


def test_group_by_length_refused_without_lengths(tmp_path):
    data = torch.utils.data.TensorDataset(torch.ones(N, 2), torch.zeros(N))
    with pytest.raises(ValueError, match="group_by_length needs each sample's length"):
        trainer(tmp_path, data, source(), train_sampling_strategy="group_by_length")


def test_other_sampling_strategies_are_refused(tmp_path):
    with pytest.raises(ValueError, match="train_sampling_strategy='sequential'"):
        trainer(tmp_path, Rows(), source(), train_sampling_strategy="sequential")


def test_a_length_grouped_epoch_trains(tmp_path):
    t = trainer(
        tmp_path, Rows(), source(), train_sampling_strategy="group_by_length", num_train_epochs=1
    )
    out = t.train()
    assert out.global_step == len(t.train_sampler)

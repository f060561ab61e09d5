"""A real Hugging Face ``datasets.Dataset`` (the ``datasets`` extra, part of ``test``).

``sizes.from_hf_dataset`` reads lengths through the Arrow table (list columns, numeric
columns), or through the rows under an index mapping; ``SamplerTrainer`` drops the columns the
model does not take (Trainer's ``_remove_unused_columns``) and buckets by the ``input_ids``
lengths with ``train_sampling_strategy="group_by_length"``.
"""

from __future__ import annotations

import datasets  # not importorskip: the test extra installs it, a missing package must fail
import numpy as np
import pyarrow as pa
import pytest
import torch

from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler
from distsampler.sizes import from_hf_dataset

N, B = 64, 4
LENGTHS = [1 + (i * 37) % 29 for i in range(N)]


def table() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "input_ids": [[1] * n for n in LENGTHS],
            "seconds": [n / 10 for n in LENGTHS],
            "x": [[float(i % 3), 1.0] for i in range(N)],
            "labels": [float(i % 2) for i in range(N)],
            "note": [f"row {i}" for i in range(N)],  # a string: collating it would fail
        }
    )


def test_lengths_from_the_arrow_table_and_through_an_index_mapping():
    ds = table()
    assert from_hf_dataset(ds).tolist() == LENGTHS
    assert np.allclose(from_hf_dataset(ds, "seconds"), [n / 10 for n in LENGTHS])
    picked = ds.select([5, 0, 63])  # an index mapping: read through the rows
    assert from_hf_dataset(picked).tolist() == [LENGTHS[5], LENGTHS[0], LENGTHS[63]]
    large = ds.cast_column("input_ids", datasets.LargeList(datasets.Value("int64")))
    assert pa.types.is_large_list(large.data.table.column("input_ids").type)
    assert from_hf_dataset(large).tolist() == LENGTHS
    with pytest.raises(ValueError, match="column='length'"):
        from_hf_dataset(ds, "length")


def test_bucketed_sampler_on_hf_lengths():
    ds = table()
    source = DistributedWeightedSampler(labels=[i % 2 for i in range(N)], num_replicas=2, rank=0)
    sampler = DistributedBucketBatchSampler(
        source, from_hf_dataset(ds), batch_size=B, num_replicas=2, rank=0, dataset_size=len(ds)
    )
    batch = next(iter(sampler))
    assert len(batch) == B and all(0 <= i < N for i in batch)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


def test_sampler_trainer_trains_on_a_datasets_dataset(tmp_path):
    """Unused columns (a string one among them) are removed as by Trainer, and the length
    buckets come from the dataset's ``input_ids`` column."""
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from distsampler.integrations.transformers import SamplerTrainer

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=B,
        report_to=[],
        use_cpu=True,
        num_train_epochs=1,
        train_sampling_strategy="group_by_length",
    )
    source = DistributedWeightedSampler(labels=[i % 2 for i in range(N)], block_size=B)
    trainer = SamplerTrainer(model=Tiny(), args=args, train_dataset=table(), train_sampler=source)
    sampler = trainer.train_sampler
    assert isinstance(sampler, DistributedBucketBatchSampler)
    assert np.asarray(sampler.sizes).tolist() == LENGTHS
    assert trainer.train().global_step == len(sampler)

"""Bucketed batches through HF Accelerate's prepared loader: exactly the sampler's batches."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

pytest.importorskip("accelerate")
from accelerate import Accelerator

from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler
from distsampler.integrations import prepare_for_accelerate

N = 500
LENGTHS = np.arange(N) % 50 + 1


@pytest.mark.parametrize("kw", [dict(batch_size=8), dict(max_tokens=400)])
def test_prepared_loader_yields_the_samplers_batches(kw):
    accelerator = Accelerator(cpu=True)
    source = DistributedWeightedSampler(labels=[int(i % 5 == 0) for i in range(N)])
    sampler = DistributedBucketBatchSampler(source, LENGTHS, **kw)
    loader, checkpoint = prepare_for_accelerate(
        accelerator, TensorDataset(torch.arange(N)), sampler
    )
    loader.set_epoch(1)  # reaches the sampler
    got = [batch[0].tolist() for batch in checkpoint.track(loader)]
    plain = DistributedBucketBatchSampler(source, LENGTHS, **kw)
    plain.set_epoch(1)
    assert sampler.epoch == 1 and got == [[int(i) for i in b] for b in plain]

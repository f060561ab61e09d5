"""What every integration shares: which samplers are ours, and items per local batch."""

from __future__ import annotations

from typing import Any

from .._core.checks import check_int
from ..quota import DistributedQuotaBatchSampler
from ..weighted import DistributedWeightedSampler

OurSampler = DistributedWeightedSampler | DistributedQuotaBatchSampler
OUR_SAMPLERS = (DistributedWeightedSampler, DistributedQuotaBatchSampler)


def check_sampler(sampler: Any) -> None:
    if not isinstance(sampler, (DistributedWeightedSampler, DistributedQuotaBatchSampler)):
        raise TypeError(
            "sampler should be a DistributedWeightedSampler or a DistributedQuotaBatchSampler, "
            f"but got {type(sampler).__name__}"
        )


def items_per_batch(sampler: OurSampler, batch_size: int | None) -> int:
    """Items of the sampler's state per local batch (indices; or 1 for a batch sampler)."""
    if isinstance(sampler, DistributedQuotaBatchSampler):
        if batch_size is not None and batch_size != sampler.batch_size:
            raise ValueError(
                f"batch_size={batch_size} differs from the quota sampler's "
                f"batch_size={sampler.batch_size}; leave it out"
            )
        return 1
    if batch_size is None:
        raise ValueError("batch_size is required with a DistributedWeightedSampler")
    return check_int("batch_size", batch_size, 1)

"""What every integration shares: which samplers are ours, items per batch, dataset sizes."""

from __future__ import annotations

from typing import Any

from .._batch import BatchPlanSampler
from .._core.checks import check_int
from ..weighted import DistributedWeightedSampler

OurSampler = DistributedWeightedSampler | BatchPlanSampler
OUR_SAMPLERS = (DistributedWeightedSampler, BatchPlanSampler)


def check_sampler(sampler: Any) -> None:
    if not isinstance(sampler, OUR_SAMPLERS):
        raise TypeError(
            "sampler should be a DistributedWeightedSampler or one of distsampler's batch "
            "samplers (DistributedQuotaBatchSampler, ...), "
            f"but got {type(sampler).__name__}"
        )


def fixed_batch_size(sampler: OurSampler) -> int | None:
    """A batch sampler's local batch size when every batch has it; else ``None``."""
    return getattr(sampler, "batch_size", None) if is_batch_sampler(sampler) else None


def is_batch_sampler(sampler: Any) -> bool:
    """One of our batch samplers (its items are whole local batches)."""
    return isinstance(sampler, BatchPlanSampler)


def items_per_batch(sampler: OurSampler, batch_size: int | None) -> int:
    """Items of the sampler's state per local batch (indices; or 1 for a batch sampler)."""
    if is_batch_sampler(sampler):
        fixed = fixed_batch_size(sampler)
        if batch_size is not None and fixed is not None and batch_size != fixed:
            raise ValueError(
                f"batch_size={batch_size} differs from the {type(sampler).__name__}'s "
                f"batch_size={fixed}; leave it out"
            )
        return 1
    if batch_size is None:
        raise ValueError("batch_size is required with a DistributedWeightedSampler")
    return check_int("batch_size", batch_size, 1)


def check_dataset_size(sampler: Any, dataset: Any) -> None:
    """Raise unless the sampler has exactly one label (or weight) per sample of ``dataset``.

    The trap this catches: labels shorter than the dataset silently sample only its first
    ``len(labels)`` samples; longer ones fail much later, inside the dataset, with an
    ``IndexError``. :func:`prepare_for_accelerate` (and ``SamplerTrainer``) call it for you;
    call it yourself before ``DataLoader(dataset, sampler=...)`` if you build the loader.
    Datasets without ``len()`` (iterable datasets) and samplers that are not ours pass.

    Example:
        >>> from distsampler import DistributedWeightedSampler
        >>> sampler = DistributedWeightedSampler(labels=[0, 0, 1], num_replicas=1, rank=0)
        >>> check_dataset_size(sampler, range(3))  # one label per sample: fine
        >>> check_dataset_size(sampler, range(4))
        Traceback (most recent call last):
        ...
        ValueError: the sampler has 3 labels but the dataset has 4 samples: ...

    Raises:
        ValueError: the sizes differ; the message says which way and what follows from it.
    """
    if not isinstance(sampler, OUR_SAMPLERS):
        return
    try:
        n_data = len(dataset)
    except TypeError:
        return
    n_sampler = sampler.dataset_size
    if n_sampler == n_data:
        return
    labels = getattr(sampler, "index", None) is not None  # None: built from weights=
    what, one = ("labels", "label") if labels else ("weights", "weight")
    consequence = (
        f"only the first {n_sampler} samples would ever be drawn"
        if n_sampler < n_data
        else "indices past the dataset's end would fail inside it with an IndexError"
    )
    raise ValueError(
        f"the sampler has {n_sampler} {what} but the dataset has {n_data} samples: "
        f"{consequence}; pass one {one} per sample of the dataset, in the dataset's order"
    )

"""The samplers' epochs as arrays: index streams, and their layout over ranks and iterations.

Vocabulary: a **stream** is a 1-D array of dataset indices in the order they are consumed; an
**epoch layout** is ``(iterations, world_size, B)``, ``-1`` after a short batch: iteration ``k``
holds every rank's ``k``-th local batch, i.e. one optimizer step of DDP.

The streams are read through the samplers' vectorised plan access (``indices`` / ``batches``),
so they are exactly what the ranks would iterate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._core.sharding import Shard

__all__ = [
    "TORCH_MULTINOMIAL_LIMIT",
    "deal",
    "epoch_layout",
    "quota_stream",
    "torch_wrs_problem",
    "torch_wrs_stream",
    "weighted_stream",
]

#: ``torch.multinomial`` (behind ``WeightedRandomSampler``) refuses more categories than this.
TORCH_MULTINOMIAL_LIMIT = 1 << 24

Progress = Callable[[int], None] | None


def weighted_stream(sampler, epoch: int, chunk: int = 1 << 18, progress: Progress = None):
    """Every position all ranks of a ``DistributedWeightedSampler`` yield in ``epoch``.

    ``W * len(sampler)`` plan positions (the plan plus the padding that equalises lengths).
    """
    total = sampler.num_replicas * len(sampler)
    out = np.empty(total, dtype=np.int64)
    for lo in range(0, total, chunk):
        hi = min(total, lo + chunk)
        out[lo:hi] = sampler.indices(np.arange(lo, hi, dtype=np.int64), epoch)
        if progress:
            progress(hi - lo)
    return out


def quota_stream(sampler, epoch: int, chunk: int = 1 << 13, progress: Progress = None):
    """Every global micro-batch of a ``DistributedQuotaBatchSampler`` epoch: ``(M, B)``."""
    total = sampler.num_replicas * len(sampler)
    out = np.empty((total, sampler.batch_size), dtype=np.int64)
    for lo in range(0, total, chunk):
        hi = min(total, lo + chunk)
        out[lo:hi] = sampler.batches(np.arange(lo, hi, dtype=np.int64), epoch)
        if progress:
            progress((hi - lo) * sampler.batch_size)
    return out


def torch_wrs_problem(num_samples: int) -> str | None:
    """Why ``WeightedRandomSampler`` cannot sample this dataset, or None if it can."""
    if num_samples > TORCH_MULTINOMIAL_LIMIT:
        return (
            f"torch.multinomial, behind WeightedRandomSampler, accepts at most 2**24 = "
            f"{TORCH_MULTINOMIAL_LIMIT:,} weights, and this dataset has {num_samples:,} "
            "(RuntimeError: number of categories cannot exceed 2^24)"
        )
    return None


def torch_wrs_stream(weights: np.ndarray, world_size: int, generator) -> np.ndarray:
    """One epoch of ``WeightedRandomSampler(weights, len(weights))`` shared by ``world_size``.

    Draws as ``WeightedRandomSampler.__iter__`` does (``torch.multinomial`` with the
    ``generator``, which carries over between epochs), then pads like ``DistributedSampler``
    (repeating the start) so a ``DistributedSamplerWrapper``-style stride ``[rank::W]`` gives
    equal lengths. Returns the padded stream, ``W * ceil(N / W)`` indices.
    """
    import torch

    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    stream = torch.multinomial(w, len(w), True, generator=generator).numpy().astype(np.int64)
    pad = -len(stream) % world_size
    return np.concatenate([stream, stream[:pad]]) if pad else stream


# -- layout over ranks and iterations ------------------------------------------------------------
def deal(units: np.ndarray, world_size: int, block_size: int = 1) -> np.ndarray:
    """Deal ``W * L`` plan units to ranks in round-robin blocks: ``(L, W, ...)``.

    ``out[i, r]`` is rank ``r``'s ``i``-th local unit (:class:`distsampler._core.sharding.Shard`).
    """
    units = np.asarray(units)
    if len(units) % world_size:
        raise ValueError(
            f"units should be a multiple of world_size={world_size}, but got {len(units)}"
        )
    length = len(units) // world_size
    ranks = [
        Shard(world_size, r, block_size).positions(length, 0, length) for r in range(world_size)
    ]
    return np.stack([units[p] for p in ranks], axis=1)  # (L, W, ...)


def epoch_layout(
    stream: np.ndarray, world_size: int, batch_size: int, block_size: int = 1
) -> np.ndarray:
    """Local batches of an index stream: ``(iterations, W, B)``, ``-1`` after a short batch.

    Each rank's ``L`` indices are cut into ``ceil(L / B)`` batches, as a ``DataLoader`` with
    ``drop_last=False`` does.
    """
    local = deal(stream, world_size, block_size)  # (L, W)
    length = local.shape[0]
    iters = -(-length // batch_size)
    padded = np.full((iters * batch_size, world_size), -1, dtype=np.int64)
    padded[:length] = local
    return padded.reshape(iters, batch_size, world_size).transpose(0, 2, 1)  # (iters, W, B)

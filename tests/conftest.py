"""Shared helpers: read a sampler's global stream the way the ranks would, in one process."""

from __future__ import annotations

import numpy as np


def rank_streams(make, world: int, epoch: int = 0) -> list[list]:
    """Each rank's full epoch stream, ``make(num_replicas, rank)`` building the sampler."""
    out = []
    for r in range(world):
        s = make(world, r)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def interleave(streams: list[list], block: int = 1) -> list:
    """Read rank streams in sharding order: round-robin blocks of ``block`` items.

    The last round's blocks shrink to what each rank has left (the layout of
    ``distsampler.topology.Shard``).
    """
    length = len(streams[0])
    full = length // block
    out = []
    for k in range(full):
        for s in streams:
            out.extend(s[k * block : (k + 1) * block])
    for s in streams:
        out.extend(s[full * block :])
    return out


def first_repeat(stream) -> int:
    """Index of the first element already seen earlier (len(stream) if none)."""
    seen = set()
    for i, x in enumerate(stream):
        if x in seen:
            return i
        seen.add(x)
    return len(stream)


def as_np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)

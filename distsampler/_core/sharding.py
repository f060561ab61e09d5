"""Where the world comes from, and how one global plan is dealt to the ranks.

Sharding is arithmetic, never communication: rank ``r`` of ``W`` takes the plan in round-robin
blocks (the layout of HF Accelerate's ``BatchSamplerShard``): block ``m = k * W + r`` of
``block_size`` positions goes to rank ``r``. Because ranks interleave block by block, reading
the ranks' streams in that order gives back the 1-process stream: the plan is world-size
invariant, as ``DistributedSampler``'s ``indices[rank::num_replicas]`` stride is.

Equal lengths: every rank yields ``L = ceil(total / W)`` positions (``total // W`` with
``drop_last``), the same count as ``DistributedSampler``. The last round shrinks its blocks to
``L - full_rounds * block_size`` so the positions taken stay contiguous: the plan is extended by
at most ``W - 1`` positions (the continuation of the same stream), never by a repeat of its start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .checks import check_int

__all__ = ["Shard", "resolve_world"]


def resolve_world(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world_size, rank)``: arguments, else the process group, else torchrun's env, else 1."""
    world = rnk = None
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            world, rnk = dist.get_world_size(), dist.get_rank()
        elif "WORLD_SIZE" in os.environ and "RANK" in os.environ:
            world, rnk = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        else:
            world, rnk = 1, 0
    world = check_int("num_replicas", world if num_replicas is None else num_replicas, 1)
    rnk = check_int("rank", rnk if rank is None else rank, 0)
    if rnk >= world:
        raise ValueError(
            f"rank should be in [0, num_replicas - 1], but got rank={rnk} with num_replicas={world}"
        )
    return world, rnk


@dataclass(frozen=True)
class Shard:
    """Round-robin block layout of a plan of ``total`` positions over ``world`` ranks."""

    world: int
    rank: int
    block_size: int = 1

    def __post_init__(self) -> None:
        check_int("num_replicas", self.world, 1)
        check_int("rank", self.rank, 0)
        check_int("block_size", self.block_size, 1)
        if self.rank >= self.world:
            raise ValueError(
                f"rank should be in [0, num_replicas - 1], but got rank={self.rank} "
                f"with num_replicas={self.world}"
            )

    def length(self, total: int, drop_last: bool) -> int:
        """Positions each rank takes from a plan of ``total`` positions (equal on all ranks)."""
        return total // self.world if drop_last else -(-total // self.world)

    def positions(self, length: int, start: int, stop: int) -> np.ndarray:
        """Plan positions of this rank's local indices ``[start, stop)`` (``length`` per rank)."""
        i = np.arange(start, stop, dtype=np.int64)
        bs, w = self.block_size, self.world
        if bs == 1:  # DistributedSampler's stride (no shrunken last block): two in-place passes
            i *= w
            i += self.rank
            return i
        full = length // bs  # complete rounds of blocks
        last = length - full * bs  # size of the shrunken final block
        rnd, off = np.divmod(i, bs)
        pos = (rnd * w + self.rank) * bs + off
        tail = i >= full * bs
        if tail.any():
            pos[tail] = full * w * bs + self.rank * last + (i[tail] - full * bs)
        return pos

    def covered(self, length: int, consumed_local: int) -> int | None:
        """Plan prefix taken once every rank consumed ``consumed_local`` indices, if a prefix.

        It is one at block boundaries and at the end; mid-block the taken set has holes and
        only the same world size can resume it (``None``).
        """
        bs = self.block_size
        if consumed_local >= length:
            return length * self.world
        if consumed_local % bs == 0 and consumed_local <= (length // bs) * bs:
            return consumed_local * self.world
        return None

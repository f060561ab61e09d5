"""The quota plan: global micro-batch ``m`` of an epoch, each group's count exact in every batch.

An epoch is ``epoch_batches`` global micro-batches of ``batch_size`` indices (the sampler deals
micro-batch ``m = k * W + r`` to rank ``r``). Batch ``m`` is a pure function of
``(seed, epoch, m)``:

1. **Counts.** Each group's count in batch ``m`` and the number of its draws in the batches
   before (:func:`batch_counts`): integer quotas are the same in every batch; float shares are
   spread so that the epoch holds exactly ``per_epoch`` draws of each group.
2. **Members.** A cycled group walks one endless member stream across epochs (each cycle a fresh
   keyed permutation, :func:`~distsampler._core.plan.cycled_members`), so every member shows up
   once before any shows up twice; a ``"replace"`` group draws a member uniformly.
3. **Order.** Optionally a keyed shuffle of the slots of each batch.

Nothing depends on earlier batches beyond closed-form counts, so any rank computes its batches
alone, and resuming is an integer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..groups import GroupIndex
from .keyed import derive, make_key, permute, uniform
from .plan import CYCLE, QUOTA, cycled_members, largest_remainder
from .strata import sorted_unique

__all__ = ["QuotaPlan", "batch_counts"]


def batch_counts(per_epoch: np.ndarray, num_batches: int, batches: np.ndarray, t0: int):
    """Counts per group in each batch, and how many of each group came before it.

    ``per_epoch[c]`` draws of group ``c`` are spread over ``num_batches`` batches by carrying
    remainders: batch ``m`` holds ``per_epoch[c] // M`` or one more, the extra draws rotating
    through the groups with a phase ``t0``, so that the block holds exactly ``per_epoch`` and
    every batch holds the same total. Closed form, so any batch is computed on its own.

    Returns:
        ``(counts, before)``, both ``(len(batches), C)`` int64.
    """
    per_epoch = np.asarray(per_epoch, dtype=np.int64)
    m = np.asarray(batches, dtype=np.int64)[:, None]  # (nb, 1)
    big = num_batches
    whole, extra = np.divmod(per_epoch, big)  # (C,)
    arc = np.cumsum(extra) - extra  # extra draws of group c own [arc, arc + extra) mod big

    def upto(y):  # number of z in [0, y) with z mod big < extra
        return (y // big) * extra + np.minimum(y % big, extra)

    shift = t0 - arc + big * (arc // big + 1)  # >= 0, same residue as t0 - arc
    before = m * whole + upto(shift + m) - upto(shift)
    counts = whole + ((t0 + m - arc) % big < extra)
    return counts, before


@dataclass(frozen=True)
class QuotaPlan:
    """Global micro-batches with a per-group count in every batch.

    Attributes:
        index: the groups.
        batch_size: indices per micro-batch (the local batch size).
        per_batch: expected draws of each group per batch (floats summing to ``batch_size``;
            whole numbers for integer quotas).
        cycled: per group, walk its members in cycles (``True``) or draw i.i.d. (``False``).
        epoch_batches: global micro-batches per epoch.
        shuffle_within_batch: shuffle the slots of each batch (else grouped by group).
    """

    index: GroupIndex
    batch_size: int
    per_batch: np.ndarray
    cycled: np.ndarray
    epoch_batches: int
    shuffle_within_batch: bool = True

    def per_epoch_counts(self) -> np.ndarray:
        """Draws of each group in one epoch (``epoch_batches`` micro-batches), exact."""
        per = self.per_batch
        fixed = np.abs(per - np.round(per)) < 1e-9
        counts = np.where(fixed, np.round(per), 0).astype(np.int64)
        counts *= self.epoch_batches
        flex = ~fixed
        if flex.any():
            slots = self.epoch_batches * self.batch_size - int(counts.sum())
            counts[flex] = largest_remainder(slots, per[flex])
        return counts

    def draw(self, seed: int, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """The sorted global ``micro_batches`` of ``epoch`` as an ``(n, batch_size)`` array."""
        mb = np.asarray(micro_batches, dtype=np.int64)
        big, bs = self.epoch_batches, self.batch_size
        per_epoch = self.per_epoch_counts()
        num = len(per_epoch)
        out = np.empty((len(mb), bs), dtype=np.int64)
        blocks = mb // big
        for b in sorted_unique(blocks):
            sel = blocks == b
            m = mb[sel] - b * big
            key = make_key(seed, epoch, QUOTA, int(b))
            t0 = int(derive(key, 0) % np.uint64(big))
            counts, before = batch_counts(per_epoch, big, m, t0)  # (nb, C)
            # Slot s of batch i takes group c where s falls in c's range of the batch.
            start = np.cumsum(counts, axis=1) - counts  # (nb, C)
            flat = (np.arange(len(m))[:, None] * bs + start).ravel()
            slots = np.arange(len(m) * bs)
            f = np.searchsorted(flat, slots, side="right") - 1
            row, g = f // num, f % num
            stream = (epoch + int(b)) * per_epoch[g] + before[row, g] + (slots - flat[f])
            items = np.empty(len(slots), dtype=np.int64)
            cyc = self.cycled[g]
            if cyc.any():
                items[cyc] = cycled_members(self.index, g[cyc], stream[cyc], make_key(seed, CYCLE))
            if (~cyc).any():
                gr, sr = g[~cyc], stream[~cyc]
                sizes = self.index.sizes[gr]
                u = uniform(derive(make_key(seed, QUOTA), gr), sr)
                j = np.minimum((u * sizes).astype(np.int64), sizes - 1)
                items[~cyc] = self.index.member(gr, j)
            items = items.reshape(len(m), bs)
            if self.shuffle_within_batch:
                order = permute(np.arange(bs)[None, :], bs, derive(key, 1, m[:, None]))
                items = np.take_along_axis(items, order, axis=1)
            out[sel] = items
        return out

"""What users run today, and the synthetic data every benchmark draws from.

Baselines (written the way people write them, so the comparison is with real practice):

(1) ``WeightedRandomSampler`` under ``DistributedSamplerWrapper`` (Catalyst's and Lightning's
    recipe): every rank draws the full ``N``-sample weighted epoch with ``torch.multinomial``
    and keeps its ``DistributedSampler`` slice. Trap: ``torch.multinomial`` takes at most 2**24
    categories, so it cannot run past 2**24 samples.
(2) ``DistributedSampler(shuffle=True)``: uniform, no balancing. Every rank builds a full
    ``randperm(N)`` as a Python list.
(3) a hand-written quota batch sampler: per batch ``k`` minority samples by ``torch.randint``,
    the rest from this rank's slice of a permutation of the majority, shuffled in the batch.

And a floor, which is not a sampler anyone runs: :class:`IndexReads` does only what every
sampler over a stored label index must do per index (one random read of the index, one Python
int made), from positions drawn before the clock starts. Its efficiency bounds ours.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, WeightedRandomSampler

MINORITY = 0.03  # share of label 1 in the binary benchmark labels


# -- data ------------------------------------------------------------------------------------
def make_labels(n: int, minority: float = MINORITY, seed: int = 12345) -> np.ndarray:
    """``n`` int8 labels, 1 with probability ``minority`` (fixed seed)."""
    rng = np.random.default_rng(seed)
    return (rng.random(n, dtype=np.float32) < minority).astype(np.int8)


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample float64 weights giving each of the two classes half of the draws."""
    n1 = int(np.count_nonzero(labels))
    return np.where(labels == 1, 0.5 / n1, 0.5 / (len(labels) - n1))


def zipf_label_sets(n: int, classes: int, s: float = 1.0, seed: int = 7) -> np.ndarray:
    """An LVIS-like long tail: ``n`` images with 2 or 3 distinct labels each, (n, 3) int16.

    Label ``c`` is drawn with probability ~ ``1 / (c + 1) ** s`` (Zipf: class 0 the most
    frequent); a 2-label image has ``-1`` in its last column.
    """
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, classes + 1) ** s)
    cdf /= cdf[-1]

    def draw(size: int) -> np.ndarray:
        return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int16)

    lab = draw(3 * n).reshape(n, 3)
    while True:  # redraw repeated labels until every image's labels are distinct
        second = lab[:, 1] == lab[:, 0]
        third = ~second & ((lab[:, 2] == lab[:, 0]) | (lab[:, 2] == lab[:, 1]))
        if not (second.any() or third.any()):
            break
        lab[second, 1] = draw(int(second.sum()))
        lab[third, 2] = draw(int(third.sum()))
    lab[rng.random(n) < 0.5, 2] = -1
    return lab


def as_label_lists(lab: np.ndarray) -> list[list[int]]:
    """The padded ``(n, 3)`` labels as one Python list of labels per image (``-1`` dropped)."""
    rows = lab.tolist()
    for i in np.flatnonzero(lab[:, 2] < 0).tolist():
        rows[i].pop()
    return rows


def image_weights(lab: np.ndarray, classes: int) -> np.ndarray:
    """Per-image weight: the largest ``1 / class size`` over its labels (float64).

    The usual hand-made multi-label oversampling (LVIS' repeat factors are of this form): an
    image is as likely as its rarest class makes it.
    """
    sizes = np.bincount(lab[lab >= 0], minlength=classes).astype(np.float64)
    inv = np.append(1.0 / np.maximum(sizes, 1), 0.0)  # index -1 -> weight 0
    return inv[lab].max(axis=1)


# -- baselines -------------------------------------------------------------------------------
class SizedRange:
    """A data set of ``n`` items for ``DistributedSampler``, which only asks for its length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class DatasetFromSampler(Dataset):
    """A sampler's indices as a data set (Catalyst's ``DatasetFromSampler``)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.items: list[int] | None = None

    def __getitem__(self, i: int) -> int:
        if self.items is None:
            self.items = list(self.sampler)  # the full N-sample epoch, on every rank
        return self.items[i]

    def __len__(self) -> int:
        return len(self.sampler)


class DistributedSamplerWrapper(DistributedSampler):
    """Baseline (1): any sampler under DDP, the Catalyst / Lightning way.

    Every rank runs the wrapped sampler over the whole epoch, then keeps its ``DistributedSampler``
    slice of the positions. The wrapped sampler's generator is reseeded from ``(seed, epoch)``
    so all ranks draw the same epoch (with the global RNG, as Catalyst leaves it, they would not).
    """

    def __init__(self, sampler: WeightedRandomSampler, num_replicas: int, rank: int) -> None:
        super().__init__(DatasetFromSampler(sampler), num_replicas=num_replicas, rank=rank)
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.sampler.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self) -> Iterator[int]:
        self.dataset = DatasetFromSampler(self.sampler)
        positions = list(super().__iter__())
        return iter(operator.itemgetter(*positions)(self.dataset))


def weighted_wrapper(weights: np.ndarray, num_replicas: int, rank: int) -> Sampler:
    """Baseline (1) for per-sample ``weights``: ``WeightedRandomSampler`` + the wrapper."""
    w = torch.from_numpy(weights)
    wrs = WeightedRandomSampler(w, len(w), replacement=True, generator=torch.Generator())
    return DistributedSamplerWrapper(wrs, num_replicas=num_replicas, rank=rank)


def distributed_sampler(n: int, num_replicas: int, rank: int) -> Sampler:
    """Baseline (2): ``DistributedSampler(shuffle=True)`` over ``n`` samples."""
    return DistributedSampler(SizedRange(n), num_replicas=num_replicas, rank=rank, shuffle=True)


class NaiveQuotaBatchSampler(Sampler[list[int]]):
    """Baseline (3): the quota batch sampler users write by hand.

    Per batch: ``k`` minority samples by ``torch.randint`` (with replacement), the other
    ``batch_size - k`` from this rank's stride of a per-epoch permutation of the majority, then
    the batch is shuffled.
    """

    def __init__(
        self,
        minority: torch.Tensor,
        majority: torch.Tensor,
        batch_size: int,
        k: int,
        num_replicas: int,
        rank: int,
        seed: int = 0,
    ) -> None:
        self.minority, self.majority = minority, majority
        self.batch_size, self.k = batch_size, k
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_batches = len(majority) // ((batch_size - k) * num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = self.majority[torch.randperm(len(self.majority), generator=g)]
        mine = perm[self.rank :: self.num_replicas]
        g_rank = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 4096 + 1)
        fill = self.batch_size - self.k
        for i in range(self.num_batches):
            pick = torch.randint(len(self.minority), (self.k,), generator=g_rank)
            batch = torch.cat([self.minority[pick], mine[i * fill : (i + 1) * fill]])
            yield batch[torch.randperm(self.batch_size, generator=g_rank)].tolist()


class IndexReads(Sampler):
    """The floor: ``length`` uniformly random reads of ``members`` served as Python ints.

    Per chunk of ``chunk`` indices: one gather from the label index, then ``tolist`` 8192 ints at
    a time (lists of ``batch_size`` for a batch sampler), served through ``itertools.chain`` as
    ours are. The
    read positions are drawn once, at construction: no plan is computed per index, so no
    sampler that reads a stored index can be pulled faster.
    """

    def __init__(
        self, members: np.ndarray, length: int, batch_size: int | None = None, chunk: int = 1 << 16
    ) -> None:
        self.members, self.batch_size = members, batch_size
        self.chunk = chunk if batch_size is None else max(1, chunk // batch_size) * batch_size
        length -= 0 if batch_size is None else length % batch_size
        self.at = np.random.default_rng(0).integers(0, len(members), size=length)

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the positions are fixed."""

    def __len__(self) -> int:
        return len(self.at) if self.batch_size is None else len(self.at) // self.batch_size

    def _chunks(self) -> Iterator[list]:
        rows = 1 << 13 if self.batch_size is None else max(1, (1 << 13) // self.batch_size)
        for lo in range(0, len(self.at), self.chunk):
            got = self.members[self.at[lo : lo + self.chunk]].astype(np.int64)
            if self.batch_size is not None:
                got = got.reshape(-1, self.batch_size)
            for at in range(0, len(got), rows):  # ints made 8192 at a time, as ours
                yield got[at : at + rows].tolist()

    def __iter__(self) -> Iterator:
        return itertools.chain.from_iterable(self._chunks())

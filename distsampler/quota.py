"""DistributedQuotaBatchSampler: an exact quota per group in every local mini-batch."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from ._core.checks import check_int
from ._core.keyed import derive, make_key, permute, uniform
from ._core.plan import CYCLE, QUOTA, cycled_members, largest_remainder
from ._core.sharding import Shard, resolve_world
from ._core.state import EpochState
from ._core.strata import sorted_unique
from .groups import GroupIndex, fingerprint

__all__ = ["DistributedQuotaBatchSampler", "batch_counts"]

POLICIES = ("cycle", "replace")
_CHUNK_INDICES = 1 << 16  # indices a chunk, as for the index sampler
_FIRST_INDICES = 1 << 10  # the first chunk


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


class DistributedQuotaBatchSampler(Sampler[list[int]], EpochState):
    """Mini-batches with an exact quota per group on every rank, from one global plan.

    The plan is a stream of global micro-batches (each ``batch_size`` indices); micro-batch
    ``m = k * W + r`` goes to rank ``r``, HF Accelerate's ``BatchSamplerShard`` layout, so every
    local batch carries its full quota and the 1-process sampler sharded by Accelerate gives the
    same batches. Use it as ``DataLoader(dataset, batch_sampler=sampler)``.

    Args:
        labels: per-sample group labels (ints or strings; sequence, array, tensor, ``.npy``
            path memory-mapped, or a :class:`GroupIndex`). For multi-label data map each
            sample to one group first, e.g. with :func:`distsampler.groups.from_coco`.
        batch_size: local (per-rank) batch size.
        quotas: group -> ``int`` (exact count per batch) or ``float`` in (0, 1) (share of the
            batch; batches round it by carrying remainders, so each is within one of the share
            and every epoch is exact). Groups not named share the remaining slots in proportion
            to their sizes.
        policies: group -> ``"cycle"`` (default: without replacement, a fresh permutation each
            time the group is used up, continuing across epochs) or ``"replace"`` (i.i.d.).
        num_batches: local batches per rank per epoch. Default: the global micro-batches needed
            to draw the largest cycled group once, ``max ceil(size / per-batch quota)``, rounded
            up to a multiple of the world size (the extra batches continue the stream).
        num_replicas, rank: the world (default: ``torch.distributed``, torchrun env, 1).
        seed: plan seed, identical on every rank.
        shuffle_within_batch: shuffle each batch (else grouped in label order).

    Warning:
        Call :meth:`set_epoch` before every epoch, or every epoch repeats the same batches.

    Example:
        >>> labels = ["defect"] * 30 + ["normal"] * 970
        >>> sampler = DistributedQuotaBatchSampler(
        ...     labels, batch_size=8, quotas={"defect": 3},
        ...     policies={"defect": "replace"}, num_replicas=1, rank=0)
        >>> batch = next(iter(sampler))  # 3 defects and 5 normals
    """

    def __init__(
        self,
        labels,
        batch_size: int,
        quotas: Mapping[Hashable, int | float],
        *,
        policies: Mapping[Hashable, str] | None = None,
        num_batches: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        shuffle_within_batch: bool = True,
    ) -> None:
        self.index = labels if isinstance(labels, GroupIndex) else GroupIndex.from_labels(labels)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        if not isinstance(shuffle_within_batch, (bool, np.bool_)):
            raise TypeError(
                "shuffle_within_batch should be a boolean value, but got "
                f"shuffle_within_batch={shuffle_within_batch!r}"
            )
        self.shuffle_within_batch = bool(shuffle_within_batch)
        world, rnk = resolve_world(num_replicas, rank)
        self._shard = Shard(world, rnk, 1)
        self.num_replicas, self.rank = world, rnk
        self.drop_last = False
        self._per_batch = self._parse_quotas(quotas)
        self._cycled = self._parse_policies(policies)
        self.quotas = dict(quotas)
        self.policies = {
            n: ("cycle" if c else "replace")
            for n, c in zip(self.index.names, self._cycled, strict=True)
        }
        self._num_batches_arg = num_batches
        if num_batches is None:
            sizes = self.index.sizes
            need = self._cycled & (self._per_batch > 0)
            if not need.any():
                raise ValueError(
                    "num_batches is required when no group with a positive quota is cycled "
                    "(all policies are 'replace'): the epoch has no natural end"
                )
            base = int(np.max(np.ceil(sizes[need] / self._per_batch[need] - 1e-9)))
            self.epoch_batches = max(1, base)
        else:
            self.epoch_batches = check_int("num_batches", num_batches, 1) * world
        self.sampler = _EpochForwarder(self)

    @classmethod
    def with_epoch_fractions(
        cls,
        labels,
        batch_size: int,
        fractions: Mapping[Hashable, float],
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        shuffle_within_batch: bool = True,
    ) -> DistributedQuotaBatchSampler:
        """Each epoch draws a fixed fraction of each group, cycled: recipe "all positives plus
        a fresh 25% of negatives" is ``fractions={"positive": 1.0, "negative": 0.25}``.

        Group ``g`` contributes ``fraction * size`` draws per epoch (must be a whole number),
        spread evenly over the batches; groups not named are left out. As every group is cycled,
        ``1 / fraction`` epochs show each of its members exactly once. The per-epoch total must
        fill whole batches on every rank (a multiple of ``batch_size * world_size``).
        """
        index = labels if isinstance(labels, GroupIndex) else GroupIndex.from_labels(labels)
        bs = check_int("batch_size", batch_size, 1)
        world, _ = resolve_world(num_replicas, rank)
        if not isinstance(fractions, Mapping) or not fractions:
            raise TypeError(f"fractions should be a non-empty mapping, but got {fractions!r}")
        per_epoch: dict[Hashable, int] = {}
        for name, f in fractions.items():
            size = int(index.sizes[index.code(name, "fractions")])
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
                raise ValueError(f"fractions[{name!r}] should be in (0, 1], but got {f!r}")
            draws = f * size
            if abs(draws - round(draws)) > 1e-9:
                raise ValueError(
                    f"fractions[{name!r}]={f} of {size} samples is {draws:g} draws per epoch; "
                    "pick a fraction that gives a whole number"
                )
            per_epoch[name] = round(draws)
        total = sum(per_epoch.values())
        if total % (bs * world):
            raise ValueError(
                f"the epoch draws {total} samples, not a multiple of batch_size x world size = "
                f"{bs} x {world}; adjust the fractions or the batch size"
            )
        quotas: dict[Hashable, int | float] = {}
        for name, draws in per_epoch.items():
            exact = draws * bs / total
            quotas[name] = int(round(exact)) if abs(exact - round(exact)) < 1e-9 else draws / total
        for name in index.names:
            if name not in per_epoch:
                quotas[name] = 0
        return cls(
            index,
            bs,
            quotas,
            num_batches=total // (bs * world),
            num_replicas=num_replicas,
            rank=rank,
            seed=seed,
            shuffle_within_batch=shuffle_within_batch,
        )

    # -- argument parsing ----------------------------------------------------------------------
    def _parse_quotas(self, quotas) -> np.ndarray:
        """Expected draws of each group per batch (floats summing to batch_size)."""
        if not isinstance(quotas, Mapping):
            raise TypeError(f"quotas should be a mapping group -> int or float, but got {quotas!r}")
        idx, bs = self.index, self.batch_size
        per = np.zeros(len(idx.names))
        named = np.zeros(len(idx.names), dtype=bool)
        for name, q in quotas.items():
            g = idx.code(name, "quotas")
            if isinstance(q, (bool, np.bool_)):
                raise TypeError(f"quotas[{name!r}] should be an int or a float, but got {q!r}")
            if isinstance(q, (int, np.integer)):
                if q < 0:
                    raise ValueError(f"quotas[{name!r}] should be >= 0, but got {q}")
                per[g] = int(q)
            elif isinstance(q, (float, np.floating)):
                if not np.isfinite(q) or q <= 0:
                    raise ValueError(f"quotas[{name!r}] share should be in (0, 1), but got {q}")
                if q >= 1:
                    hint = f" (did you mean the count {int(q)}?)" if float(q).is_integer() else ""
                    raise ValueError(
                        f"quotas[{name!r}] share should be in (0, 1), but got {q}{hint}; "
                        "an int is a count per batch"
                    )
                per[g] = float(q) * bs
            else:
                raise TypeError(f"quotas[{name!r}] should be an int or a float, but got {q!r}")
            named[g] = True
        taken = per.sum()
        if taken > bs + 1e-9:
            raise ValueError(
                f"quotas ask for {taken:g} samples per batch, more than batch_size={bs}"
            )
        rest = bs - taken
        free = ~named
        if rest > 1e-9:
            if not free.any():
                raise ValueError(
                    f"quotas fill {taken:g} of batch_size={bs} slots and name every group, so "
                    "nothing fills the rest; make the quotas sum to batch_size"
                )
            sizes = idx.sizes[free].astype(np.float64)
            per[free] = rest * sizes / sizes.sum()
        return per

    def _parse_policies(self, policies) -> np.ndarray:
        cycled = np.ones(len(self.index.names), dtype=bool)
        if policies is None:
            return cycled
        if not isinstance(policies, Mapping):
            raise TypeError(f"policies should be a mapping group -> policy, but got {policies!r}")
        for name, p in policies.items():
            g = self.index.code(name, "policies")
            if p not in POLICIES:
                raise ValueError(f"policies[{name!r}] should be one of {POLICIES}, but got {p!r}")
            cycled[g] = p == "cycle"
        return cycled

    # -- the plan ------------------------------------------------------------------------------
    def per_epoch_counts(self) -> np.ndarray:
        """Draws of each group in one epoch (``epoch_batches`` global micro-batches), exact."""
        fixed = np.isclose(self._per_batch, np.round(self._per_batch)) & (
            np.abs(self._per_batch - np.round(self._per_batch)) < 1e-9
        )
        counts = np.where(fixed, np.round(self._per_batch), 0).astype(np.int64)
        counts *= self.epoch_batches
        flex = ~fixed
        if flex.any():
            slots = self.epoch_batches * self.batch_size - int(counts.sum())
            counts[flex] = largest_remainder(slots, self._per_batch[flex])
        return counts

    def batches(self, micro_batches: np.ndarray, epoch: int | None = None) -> np.ndarray:
        """Global micro-batches (sorted indices into the epoch's plan) as a ``(n, B)`` array."""
        ep = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        mb = np.asarray(micro_batches, dtype=np.int64)
        big, bs = self.epoch_batches, self.batch_size
        per_epoch = self.per_epoch_counts()
        num = len(per_epoch)
        out = np.empty((len(mb), bs), dtype=np.int64)
        blocks = mb // big
        for b in sorted_unique(blocks):
            sel = blocks == b
            m = mb[sel] - b * big
            key = make_key(self.seed, ep, QUOTA, int(b))
            t0 = int(derive(key, 0) % np.uint64(big))
            counts, before = batch_counts(per_epoch, big, m, t0)  # (nb, C)
            # Slot s of batch i takes group c where s falls in c's range of the batch.
            start = np.cumsum(counts, axis=1) - counts  # (nb, C)
            flat = (np.arange(len(m))[:, None] * bs + start).ravel()
            slots = np.arange(len(m) * bs)
            f = np.searchsorted(flat, slots, side="right") - 1
            row, g = f // num, f % num
            stream = (ep + int(b)) * per_epoch[g] + before[row, g] + (slots - flat[f])
            items = np.empty(len(slots), dtype=np.int64)
            cyc = self._cycled[g]
            if cyc.any():
                items[cyc] = cycled_members(
                    self.index, g[cyc], stream[cyc], make_key(self.seed, CYCLE)
                )
            if (~cyc).any():
                gr, sr = g[~cyc], stream[~cyc]
                sizes = self.index.sizes[gr]
                u = uniform(derive(make_key(self.seed, QUOTA), gr), sr)
                j = np.minimum((u * sizes).astype(np.int64), sizes - 1)
                items[~cyc] = self.index.members[self.index.offsets[gr] + j]
            items = items.reshape(len(m), bs)
            if self.shuffle_within_batch:
                order = permute(np.arange(bs)[None, :], bs, derive(key, 1, m[:, None]))
                items = np.take_along_axis(items, order, axis=1)
            out[sel] = items
        return out

    # -- the sampler protocol --------------------------------------------------------------------
    def _config(self) -> str:
        q = ",".join(
            f"{n!r}:{x:.12g}" for n, x in zip(self.index.names, self._per_batch, strict=True)
        )
        pol = "".join("c" if c else "r" for c in self._cycled)
        nb = self._num_batches_arg
        return (
            f"DistributedQuotaBatchSampler(data={fingerprint(self.index.members)}:"
            f"{len(self.index.names)}, batch_size={self.batch_size}, per_batch={{{q}}}, "
            f"policies={pol}, num_batches={nb}, epoch_batches={self.epoch_batches}, "
            f"seed={self.seed}, "
            f"shuffle_within_batch={self.shuffle_within_batch})"
        )

    def _total(self) -> int:
        return self.epoch_batches

    def __iter__(self) -> Iterator[list[int]]:
        chunk = max(1, _CHUNK_INDICES // self.batch_size)
        first = max(1, _FIRST_INDICES // self.batch_size)
        return self._serve(chunk, lambda mb: self.batches(mb).tolist(), first=first)


class _EpochForwarder:
    """``batch_sampler.sampler``: lets ``DataLoaderShard.set_epoch`` reach the batch sampler.

    Accelerate calls ``batch_sampler.batch_sampler.sampler.set_epoch`` on a prepared loader;
    this object forwards that call to the quota sampler.
    """

    def __init__(self, owner: DistributedQuotaBatchSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._owner) * self._owner.batch_size

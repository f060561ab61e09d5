"""DistributedQuotaBatchSampler: an exact quota per group in every local mini-batch."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from ._batch import _CHUNK_INDICES, BatchPlanSampler
from ._core.checks import MAX_SIZE, check_bool, check_int, share_array
from ._core.origin import Origin, compacted_state, parse_origin, parse_updates
from ._core.plan import PLAN_VERSION
from ._core.quota_plan import QuotaPlan, QuotaTimeline
from ._core.shard_plan import ShardedQuota
from ._core.sharding import resolve_world
from ._core.state import Config, config_value
from ._sharded import ShardedSampler, shard_options
from ._types import LabelsLike
from .groups import GroupIndex
from .weights import StepSchedule

__all__ = ["DistributedQuotaBatchSampler"]

#: Updates before the current epoch kept in memory; past it set_epoch folds them into an origin.
_KEEP_UPDATES = 64

POLICIES = ("cycle", "replace")


class DistributedQuotaBatchSampler(BatchPlanSampler, ShardedSampler):
    """Mini-batches with an exact quota per group on every rank, from one global plan.

    The plan is a stream of global micro-batches (each ``batch_size`` indices); micro-batch
    ``m = k * W + r`` goes to rank ``r``, HF Accelerate's ``BatchSamplerShard`` layout, so every
    local batch carries its full quota and the 1-process sampler sharded by Accelerate gives the
    same batches. Use it as ``DataLoader(dataset, batch_sampler=sampler)``.

    Args:
        labels: per-sample group labels (ints or strings; sequence, array, tensor, ``.npy``
            path memory-mapped), or a `GroupIndex`: from label sets for multi-label data, or
            from sizes for sources stored as contiguous ranges. Trap: ``len(labels)`` must
            equal ``len(dataset)``.
        batch_size: local (per-rank) batch size.
        quotas: group -> ``int`` (exact count per batch) or ``float`` in (0, 1) (share of the
            batch). A float share's extra draws are spread evenly through the epoch: every
            prefix of ``k`` global batches holds within one of ``k`` times its exact
            per-batch rate (``per_epoch / epoch_batches``), every batch within one of the
            share, and the epoch exactly its count. Groups not named share the remaining slots
            in proportion to their sizes. With multi-label data a quota is a minimum of
            *distinct* samples containing the group (a sample of two named groups counts for
            both), and no sample appears twice in a batch: when a group's next member is
            already in the batch, its following member is taken. A quota larger than the
            group is refused.
        policies: group -> ``"cycle"`` (default: without replacement, a fresh permutation each
            time the group is used up, continuing across epochs) or ``"replace"`` (i.i.d.).
        num_batches: local batches per rank per epoch. Default: the global micro-batches needed
            to draw the largest cycled group once, ``max ceil(size / per-batch quota)``, rounded
            up to a multiple of the world size (the extra batches continue the stream).
        num_replicas: the world size (default: ``torch.distributed``, torchrun's env, 1).
        rank: this process's rank, found the same way.
        seed: plan seed, identical on every rank.
        shuffle_within_batch: shuffle each batch (else grouped in label order).
        drop_last: drop the epoch's last micro-batches that do not fill a round of the world
            size (default: the round is completed with the plan's continuation).
        dataset_size: ``len(dataset)``, checked against ``len(labels)`` (recommended: a
            mismatch otherwise goes unnoticed with a plain ``DataLoader``).
        schedule: a `distsampler.weights.StepSchedule` whose points are global micro-batch
            run positions (``epoch * epoch_batches + m``, the same for every world size): from
            each point on, its shares (normalised, spread as float shares of the batch) replace
            the quotas; ``quotas=`` still sets the epoch length. Part of the configuration a
            state is checked against. An ``update_shares`` adds a point of its own; of two
            points at one position the later-added wins.
        shards: a `distsampler.shards.ShardLayout` of the dataset: batches are then read shard
            by shard (each shard about once an epoch across the job), every named quota still
            exact in every batch. Named quotas must be ints and policies ``"cycle"``; a named
            group drawn more often than it has members each epoch is kept resident, every other
            named group is read with its shards, and the groups not named fill the remaining
            slots together, exact per epoch, their mix in a batch following the shards a lane
            has open. The epoch holds ``epoch_batches`` rounded up to a multiple of ``lanes``.
        cache_shards: with ``shards=``: shards one lane reads from at a time.
        resident: with ``shards=``: the most members kept resident (default: every member of
            a named group that needs it); a budget too small for such a group is refused.
        lanes: with ``shards=``: the plan's independent readers, a multiple of the world size
            (default: the world size of the first run; a state keeps it).

    Trap: the even spread of a float share holds for the global stream of batches. A rank
    reads every ``W``-th batch, so its own prefix can drift further from ``k`` times the share
    (a share of one half alternates globally and so falls entirely on one rank of two; no
    stream that is the same for every world size can be even on every stride, by the Erdős
    discrepancy theorem); each of its batches is still within one of the share. Integer
    quotas are exact on every rank.

    Warning:
        Call :meth:`set_epoch` before every epoch, or every epoch repeats the same batches.

    Examples:
        >>> labels = ["defect"] * 30 + ["normal"] * 970
        >>> sampler = DistributedQuotaBatchSampler(
        ...     labels, batch_size=8, quotas={"defect": 3},
        ...     policies={"defect": "replace"}, num_replicas=1, rank=0)
        >>> batch = next(iter(sampler))  # 3 defects and 5 normals
    """

    def __init__(
        self,
        labels: LabelsLike,
        batch_size: int,
        quotas: Mapping[Hashable, int | float],
        *,
        policies: Mapping[Hashable, str] | None = None,
        num_batches: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        shuffle_within_batch: bool = True,
        drop_last: bool = False,
        dataset_size: int | None = None,
        schedule: StepSchedule | None = None,
        shards: Any = None,
        cache_shards: int = 4,
        resident: int | None = None,
        lanes: int | None = None,
    ) -> None:
        self._init_batches(num_replicas=num_replicas, rank=rank, seed=seed, drop_last=drop_last)
        world = self.num_replicas
        self.index = labels if isinstance(labels, GroupIndex) else GroupIndex.from_labels(labels)
        self._check_dataset_size(dataset_size)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self._batch_hint = self.batch_size
        self.shuffle_within_batch = check_bool("shuffle_within_batch", shuffle_within_batch)
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
        if self.epoch_batches * self.batch_size > MAX_SIZE:
            raise ValueError(
                f"an epoch of {self.epoch_batches} micro-batches of batch_size={self.batch_size} "
                f"is more than {MAX_SIZE} indices; lower num_batches or batch_size"
            )
        self._plan = QuotaPlan(
            self.index,
            self.batch_size,
            self._per_batch,
            self._cycled,
            self.epoch_batches,
            self.shuffle_within_batch,
            self._float_named,
        )
        self._updates: list = []  # (run position, per-batch counts) of update_shares
        self.schedule = schedule
        self._schedule_points = self._parse_schedule(schedule)
        self._timeline = self._new_timeline()
        self.shards = shards
        self._lanes_given = lanes is not None
        self._shard_args = (cache_shards, resident)
        self._plain_batches = self.epoch_batches
        if shards is not None:
            self._check_shardable()
            self._shard_plan_for(lanes)

    def _check_shardable(self) -> None:
        """What the shard plan supports, refused with the reason."""
        if self.schedule is not None:
            raise ValueError("schedule= is not supported with shards= yet (fixed quotas only)")
        if self.index.multilabel:
            raise ValueError("shards= needs single-label data (one group per sample)")
        if not self._cycled.all():
            raise ValueError(
                "shards= needs policies 'cycle' (the default): a group is read without "
                "replacement where it lives, or kept resident"
            )
        if self._float_named.any():
            g = int(np.flatnonzero(self._float_named)[0])
            raise ValueError(
                f"quotas[{self.index.names[g]!r}] is a float share; with shards= named quotas "
                "must be int counts per batch (the groups not named fill the rest)"
            )

    def _shard_plan_for(self, lanes: int | None) -> None:
        """The shard-local quota plan for ``lanes`` (``None``: the world size)."""
        cache_shards, resident = self._shard_args
        world = self.num_replicas
        opts = shard_options(self.shards, len(self.index), world, cache_shards, resident, lanes)
        self.epoch_batches = -(-self._plain_batches // opts.lanes) * opts.lanes
        per = np.where(self._named, np.round(self._per_batch), 0).astype(np.int64)
        self._shard_plan = ShardedQuota(
            self.index,
            np.asarray(self.shards.offsets),
            self.batch_size,
            per,
            ~self._named,
            self.epoch_batches,
            opts,
            self.seed,
            self.shuffle_within_batch,
        )

    def _parse_schedule(self, schedule: StepSchedule | None) -> list:
        """``[(run, per-batch counts, float-named)]`` of a schedule's points (shares spread as
        float shares of the batch, exact per epoch of each segment)."""
        if schedule is None:
            return []
        if not isinstance(schedule, StepSchedule):
            raise TypeError(
                f"schedule should be a weights.StepSchedule, but got {type(schedule).__name__}"
            )
        return [
            (run, *self._update_quotas(shares))
            for run, shares in schedule.shares(self.index.names, self.index.sizes)
        ]

    def _new_timeline(self) -> QuotaTimeline:
        """The plan's timeline with the schedule's points (updates are added after them)."""
        timeline = QuotaTimeline(self._plan, self.seed)
        for run, per, named in self._schedule_points:
            timeline.add(run, per, named)
        return timeline

    @classmethod
    def with_epoch_fractions(
        cls,
        labels: LabelsLike,
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
    def _parse_quotas(self, quotas, argument: str = "quotas") -> np.ndarray:
        """Expected draws of each group per batch (floats summing to batch_size)."""
        if not isinstance(quotas, Mapping):
            raise TypeError(
                f"{argument} should be a mapping group -> int or float, but got {quotas!r}"
            )
        idx, bs = self.index, self.batch_size
        per = np.zeros(len(idx.names))
        named = np.zeros(len(idx.names), dtype=bool)
        self._float_named = np.zeros(len(idx.names), dtype=bool)
        for name, q in quotas.items():
            g = idx.code(name, argument)
            if isinstance(q, (bool, np.bool_)):
                raise TypeError(f"{argument}[{name!r}] should be an int or a float, but got {q!r}")
            if isinstance(q, (int, np.integer)):
                if q < 0:
                    raise ValueError(f"{argument}[{name!r}] should be >= 0, but got {q}")
                if idx.multilabel and q > idx.sizes[g]:
                    raise ValueError(
                        f"{argument}[{name!r}]={q} asks for more distinct samples per batch "
                        f"than the {idx.sizes[g]} samples containing {name!r}"
                    )
                per[g] = int(q)
            elif isinstance(q, (float, np.floating)):
                if not np.isfinite(q) or q <= 0:
                    raise ValueError(f"{argument}[{name!r}] share should be in (0, 1), but got {q}")
                if q >= 1:
                    hint = f" (did you mean the count {int(q)}?)" if float(q).is_integer() else ""
                    raise ValueError(
                        f"{argument}[{name!r}] share should be in (0, 1), but got {q}{hint}; "
                        "an int is a count per batch"
                    )
                per[g] = float(q) * bs
                self._float_named[g] = True
            else:
                raise TypeError(f"{argument}[{name!r}] should be an int or a float, but got {q!r}")
            named[g] = True
        self._named = named
        taken = per.sum()
        if taken > bs + 1e-9:
            raise ValueError(
                f"{argument} ask for {taken:g} samples per batch, more than batch_size={bs}"
            )
        rest = bs - taken
        free = ~named
        if rest > 1e-9:
            if not free.any():
                raise ValueError(
                    f"{argument} fill {taken:g} of batch_size={bs} slots and name every group, so "
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

    @property
    def dataset_size(self) -> int:
        """Samples the sampler indexes (one per label): must equal ``len(dataset)``."""
        return self.index.num_samples

    # -- the plan ------------------------------------------------------------------------------
    def per_epoch_counts(self) -> np.ndarray:
        """Draws of each group in one epoch (``epoch_batches`` global micro-batches), exact."""
        if self._shard_plan is not None:
            return self._shard_plan.per_epoch_counts()
        return self._plan.per_epoch_counts()

    def _draw(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """Global micro-batches as a ``(n, batch_size)`` array of dataset indices."""
        if self._shard_plan is not None:
            return self._shard_plan.draw(self.seed, epoch, micro_batches)
        return self._timeline.draw(self.seed, epoch, micro_batches)

    # -- quotas that change during the run -------------------------------------------------------
    def update_shares(
        self,
        shares: Mapping[Hashable, int | float],
        *,
        accumulation_steps: int = 1,
        at: int | None = None,
    ) -> int:
        """New quotas from the next global step boundary on, on every rank at once.

        A global step is ``num_replicas * accumulation_steps`` micro-batches (one batch a rank,
        times the micro-batches of one optimizer step), so no optimizer step mixes old and new
        quotas. The update lands at the first boundary no rank has handed out yet (with a
        process group the ranks exchange their handed-out positions and check that the shares
        agree, with one ``all_gather``; a ``ValueError`` on every rank names the ranks that
        differ; without a process group nothing is checked: pass ``at=``). Batches already
        handed out stay; batches computed ahead are dropped and drawn with the new quotas. The
        epoch's length (``epoch_batches``) does not change; the quotas hold into later epochs
        until the next update. Recorded in :meth:`state_dict` as ``(micro-batch run position,
        per-batch counts)``; a state keeps only its epoch's updates and an ``origin`` for the
        run before (quotas in force, where each group's stream stands), so it holds
        O(groups x (1 + updates this epoch)) numbers. Past 64 earlier updates ``set_epoch``
        folds them the same way in memory; earlier epochs are then refused.

        Args:
            shares: a mapping group -> quota read as ``quotas=`` is: an int is a count per
                batch, a float in ``(0, 1)`` a share, and groups not named share the remaining
                slots in proportion to their sizes; or an
                array of shares in group order (``sampler.index.names``), normalised and
                spread as float shares.
            accumulation_steps: micro-batches per optimizer step.
            at: an explicit run position ``epoch * epoch_batches + m`` instead of the next
                boundary (not before what a rank handed out or a previous update).

        Returns:
            The run position (global micro-batches) from which the new quotas hold.
        """
        from .feedback import _next_run

        if self._shard_plan is not None:
            raise ValueError(
                "update_shares is not supported with shards= yet: the shard plan cuts each "
                "epoch's lanes from fixed quotas"
            )
        per, named = self._update_quotas(shares)
        run = _next_run(self, per, at, accumulation_steps, self.num_replicas)
        self._updates.append((run, per))
        self._timeline.add(run, per, named)
        self._drop_ahead(run)
        return run

    def _update_quotas(self, shares) -> tuple[np.ndarray, np.ndarray]:
        names, bs = self.index.names, self.batch_size
        if isinstance(shares, Mapping):
            # Read as the constructor reads quotas=: groups not named share the rest.
            for k, v in shares.items():
                if isinstance(v, (float, np.floating)) and not np.isfinite(v):
                    raise ValueError(f"shares[{k!r}] should be finite, but got {v!r}")
            saved = self._float_named, self._named
            try:
                per = self._parse_quotas(shares, "shares")
            finally:
                self._float_named, self._named = saved
            # A group spreads alone exactly when its count is fractional: the rule a resumed
            # state applies to its updates (``_install``), so live and resumed streams agree.
            named = np.abs(per - np.round(per)) >= 1e-9
        else:
            per = share_array(shares, len(names), "group") * bs
            named = per > 0
        if self.index.multilabel:
            over = np.flatnonzero(np.ceil(per - 1e-9) > self.index.sizes)
            if over.size:
                raise ValueError(f"shares ask for more samples of {names[over[0]]!r} per batch")
        return per, named

    def _state(self, consumed: int, skip: int) -> dict:
        # Compacted at the epoch: the quotas in force at its start and where each group's
        # member stream stands, then this epoch's updates.
        state = super()._state(consumed, skip)
        return compacted_state(
            state, self._updates, self._origin, self.epoch_batches, self._compact
        )

    def load_state_dict(self, state: dict) -> None:
        lanes = self._state_lanes(state)
        if lanes is not None:  # lanes= left at its default: the run's lanes come from the state
            self._shard_plan_for(lanes)
        super().load_state_dict(state)
        parsed = parse_updates(state.get("updates", []), len(self.index.names), "quotas")
        origin = None
        if "origin" in state:
            num = len(self.index.names)
            origin = parse_origin(state["origin"], num, self.epoch, bases=True, named=True)
        self._install(origin, parsed)

    def _install(self, origin: Origin | None, updates: list) -> None:
        """Plan from ``origin`` (or the run's start) with ``updates`` after it."""
        self._origin = origin
        self._updates = list(updates)
        self._timeline = self._new_timeline()
        if origin is not None:
            assert origin.named is not None and origin.bases is not None  # parsed as required
            self._timeline.add(origin.epoch * self.epoch_batches, origin.shares, origin.named)
            self._timeline.origin = (origin.epoch, origin.bases)
        for run, per in self._updates:
            # Only groups without a whole count are spread (integer counts are fixed), so a
            # group is on its own line exactly when its count is fractional.
            self._timeline.add(run, per, np.abs(per - np.round(per)) >= 1e-9)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        start = self.epoch * self.epoch_batches
        if sum(r < start for r, _ in self._updates) > _KEEP_UPDATES:
            # A long run: fold the updates before this epoch into an origin, as a state does,
            # so memory and the cost of a draw stay bounded (earlier epochs are then refused).
            kept = [(r, p) for r, p in self._updates if r >= start]
            self._install(self._compact(self.epoch), kept)

    def _compact(self, epoch: int) -> Origin:
        """The run before ``epoch``: the quotas in force at its start, the stream bases."""
        point = self._timeline.in_force(epoch * self.epoch_batches)
        assert point is not None  # an update or an origin lies at or before the start
        return Origin(epoch, point[0], point[1], self._timeline._base(epoch))

    set_epoch.__doc__ = BatchPlanSampler.set_epoch.__doc__

    @property
    def _chunk_batches(self) -> int:  # type: ignore[override]
        """Batches computed at a time: 65,536 indices, and at most 65,536 (batch, group) cells.
        With many groups a batch costs more to plan, so an update nobody expected drops less
        work computed ahead (1,000 groups: 65 batches, not 256); the pull rate is the same
        (5.2-5.3 s for 4e6 indices at 64, 65 or 256 batches a chunk)."""
        cells = _CHUNK_INDICES // max(1, len(self.index.names))
        return max(1, min(_CHUNK_INDICES // self.batch_size, cells))

    # -- the sampler protocol --------------------------------------------------------------------
    def _config(self) -> Config:
        config: dict = {
            "plan_version": PLAN_VERSION,
            "data": self.index.fingerprint(),
            "batch_size": self.batch_size,
            "num_batches": self._num_batches_arg,
            "epoch_batches": self.epoch_batches,
            "seed": self.seed,
            "shuffle_within_batch": self.shuffle_within_batch,
        }
        if self.drop_last:  # absent when False: states saved by 0.2 still load
            config["drop_last"] = True
        if self._schedule_points:  # every point's quotas pin the schedule
            blob = b"".join(
                np.int64(r).tobytes() + p.tobytes() for r, p, _ in self._schedule_points
            )
            config["schedule"] = hashlib.blake2b(blob, digest_size=6).hexdigest()
        for name, per, cyc in zip(self.index.names, self._per_batch, self._cycled, strict=True):
            config[f"quota[{name!r}]"] = float(per)
            config[f"policy[{name!r}]"] = "cycle" if cyc else "replace"
        config.update(self._shard_config())
        return {k: config_value(v) for k, v in config.items()}

    def _draws(self) -> int:
        return self.epoch_batches * self.batch_size

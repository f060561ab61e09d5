"""DistributedWeightedSampler: ``WeightedRandomSampler`` semantics from one global plan."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from . import weights as W
from ._batch import check_wiring
from ._core.checks import MAX_SEED, check_bool, check_dataset_size, check_int, share_array
from ._core.index_store import GroupStore
from ._core.origin import Origin, compacted_state, parse_origin, parse_updates
from ._core.plan import (
    PLAN_VERSION,
    ClassIID,
    Plan,
    Stratified,
    Timeline,
    WeightedIID,
    WeightedWithoutReplacement,
    largest_remainder,
)
from ._core.shard_plan import ShardedStratified
from ._core.sharding import Shard, resolve_world
from ._core.state import Config, EpochState, config_value
from ._sharded import ShardedSampler, shard_options
from ._types import ClassWeightsLike, LabelsLike, WeightsLike
from .groups import GroupIndex
from .weight_index import WeightIndex

__all__ = ["DistributedWeightedSampler"]

_CHUNK = 1 << 16
_FIRST = 1 << 10  # first chunk: the first index comes sooner
#: Updates before the current epoch kept in memory; past it set_epoch folds them into an origin.
_KEEP_UPDATES = 64


class DistributedWeightedSampler(Sampler[int], EpochState, ShardedSampler):
    """Weighted sampling for DDP: every rank reads its share of one global, seeded plan.

    ``WeightedRandomSampler`` semantics (``replacement=True``: i.i.d. draws with probability
    proportional to the weight; ``replacement=False``: no index repeats in an epoch), without its
    limits under DDP: the plan of an epoch is a pure function of ``(seed, epoch, position)``, so
    ranks never overlap, all yield ``len(sampler)`` indices, and reading the ranks round-robin
    (blocks of ``block_size``) gives the 1-process stream for any world size. No 2**24 limit.

    Args:
        weights: per-sample weights (sequence, array, tensor or ``.npy`` path), or a
            `WeightIndex` (build it once per node, save it, and pass
            ``WeightIndex.load(dir, mmap=True)`` in every rank to share one copy). Exclusive
            with ``labels``: passing both raises (multiply them yourself to combine).
        labels: one class label per sample (ints or strings; sequence, array, tensor or
            ``.npy`` path), or a `GroupIndex`: from label sets for multi-label data
            (class-aware sampling: a class by its share, then a member of that class), or from
            sizes for sources stored as contiguous ranges. Trap: ``len(labels)`` must equal
            ``len(dataset)``; a shorter list silently samples only the first samples.
        class_weights: with ``labels``: ``"balanced"`` (equal share per class), ``"sqrt"``
            (share proportional to sqrt of the class size), a mapping class -> per-sample weight
            (torch convention, every class must appear), or a strategy from
            `distsampler.weights` such as ``weights.target_shares({"a": 0.3, "b": 0.7})``.
            With multi-label data, class sizes count the samples *containing* each class.
        num_samples: global draws per epoch (default: dataset size).
        replacement: draw with replacement (default) or without. Without replacement needs
            single-label data (a multi-label sample could be drawn through each of its classes).
        stratify: labels only (default ``True`` with labels): exact class counts per epoch
            (largest remainder of ``num_samples * share``; with multi-label data, draws made
            *through* each class) in a random order, members drawn without replacement in
            cycles that continue across epochs, so every sample of a class is seen before any
            repeats. ``False``: i.i.d. class-first draws.
        num_replicas: the world size; default from ``torch.distributed``, else torchrun's
            ``WORLD_SIZE``, else 1 process.
        rank: this process's rank, found the same way (``RANK``, else 0).
        seed: plan seed, identical on every rank.
        drop_last: trim the plan to a multiple of the world size instead of extending it.
        block_size: positions per round-robin block; set it to the batch size to get exactly the
            batches HF Accelerate's ``BatchSamplerShard`` would give from the 1-process sampler
            (and balanced local batches under stratification).
        dataset_size: ``len(dataset)``, checked against the labels or weights given (recommended:
            with a plain ``DataLoader`` a mismatch otherwise goes unnoticed).
        shards: a `distsampler.shards.ShardLayout` of the dataset: the plan then reads shard by
            shard (each shard about once an epoch across the job) and keeps every promise above
            (exact class counts, one stream for every world size that divides ``lanes``, resume
            by an integer). Needs ``labels=`` with ``stratify=True`` and fixed class weights, or
            ``weights=`` of at most 4096 distinct values (each value's samples drawn as a
            class) with ``replacement=True``.
            The epoch then holds ``num_samples`` rounded up to a multiple of
            ``lanes x block_size`` positions. See the sharded storage guide.
        cache_shards: with ``shards=``: shards one lane reads from at a time (its working set;
            more mixes class-pure shards better and costs cache).
        resident: with ``shards=``: the most members kept resident (classes drawn more often
            than they have members: read once, served anywhere in the epoch); ``None``: every
            such member. Oversampled classes past the budget are read with their shards and
            repeat in bursts (a warning says how many).
        lanes: with ``shards=``: the plan's independent readers; a world size must divide it.
            Default: the world size of the first run; a state keeps it, and a sampler built
            with the default adopts the state's lanes in ``load_state_dict``.

    Equal lengths: each rank yields ``ceil(num_samples / W)`` indices (``floor`` with
    ``drop_last``). The up to ``W - 1`` extra positions continue the same stream. With
    ``replacement=False`` they continue the epoch's round while unused positive weights remain,
    so no index repeats unless ``num_samples`` is within ``W - 1`` of the number of positive
    weights (``DistributedSampler`` pads with repeats too); ``drop_last=True`` avoids that.

    Multi-label trap: a sample in two rare classes is drawn through both, so the share of
    batches *containing* a rare class can exceed its target share; ``distsampler inspect``
    shows the realised shares.

    Warning:
        Call :meth:`set_epoch` at the start of every epoch, before creating the DataLoader
        iterator; otherwise every epoch repeats the same plan.

    Examples:
        >>> sampler = DistributedWeightedSampler(
        ...     labels=[0] * 97 + [1] * 3, num_replicas=2, rank=0, dataset_size=100)
        >>> len(sampler)
        50
        >>> sampler.set_epoch(1)
        >>> first = next(iter(sampler))
    """

    def __init__(
        self,
        weights: WeightsLike | None = None,
        *,
        labels: LabelsLike | None = None,
        class_weights: ClassWeightsLike = "balanced",
        num_samples: int | None = None,
        replacement: bool = True,
        stratify: bool | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        block_size: int = 1,
        dataset_size: int | None = None,
        shards: Any = None,
        cache_shards: int = 4,
        resident: int | None = None,
        lanes: int | None = None,
    ) -> None:
        if (weights is None) == (labels is None):
            raise ValueError(
                "pass exactly one of weights= (per-sample weights) or labels= (class labels); "
                "to combine them, pass weights=per_sample_weight * class_weight[label]"
            )
        self.replacement = check_bool("replacement", replacement)
        self.drop_last = check_bool("drop_last", drop_last)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        world, rnk = resolve_world(num_replicas, rank)
        self._shard = Shard(world, rnk, check_int("block_size", block_size, 1))
        self.num_replicas, self.rank, self.block_size = world, rnk, self._shard.block_size
        self.index: GroupIndex | None = None  # labels= (a label index)
        self.weight_index: WeightIndex | None = None  # weights= (a weight index)
        self.shards = shards
        self._lanes_given = lanes is not None
        self._shard_args = (cache_shards, resident, lanes)
        if weights is not None:
            if stratify:
                raise ValueError("stratify=True needs labels=; it has no meaning for weights=")
            if not (isinstance(class_weights, str) and class_weights == "balanced"):
                raise ValueError("class_weights applies to labels=, not to weights=")
            self._plan = self._weights_plan(weights, num_samples)
        else:
            self._plan = self._labels_plan(labels, class_weights, num_samples, stratify)
        check_dataset_size(dataset_size, self.dataset_size)
        if self._shard.length(self.num_samples, self.drop_last) == 0:
            raise ValueError(
                f"drop_last=True leaves no sample per rank: num_samples={self.num_samples} "
                f"< num_replicas={world}"
            )

    # -- construction ------------------------------------------------------------------------
    def _weights_plan(self, weights: Any, num_samples: int | None) -> Plan:
        index = weights if isinstance(weights, WeightIndex) else WeightIndex.from_weights(weights)
        self.weight_index = index
        self.num_samples = check_int(
            "num_samples", len(index) if num_samples is None else num_samples, 1
        )
        self.stratify = False
        self._data = f"weights:{index.fingerprint()}"
        if self.shards is not None:
            groups, values = index.groups, index.values
            if groups is None or values is None or not self.replacement:
                raise ValueError(
                    "shards= with weights= needs replacement=True and weights of at most 4096 "
                    "distinct values (the plan draws each value's samples as a class: exact "
                    "counts per value, oversampled ones resident); round continuous weights, "
                    "e.g. weights=np.round(w, 3), or pass labels="
                )
            self._num_samples_arg = self.num_samples
            self._share0 = values * groups.sizes / float(np.dot(values, groups.sizes))
            return self._shard_plan_for(self._share0, self._shard_args[2])
        if self.replacement:
            return WeightedIID(index, self.num_samples)
        return self._without_replacement(index.weights, index.positive)

    def _labels_plan(self, labels: Any, class_weights: Any, num_samples, stratify) -> Plan:
        index = labels if isinstance(labels, GroupIndex) else GroupIndex.from_labels(labels)
        self.index = index
        self.num_samples = check_int(
            "num_samples", index.num_samples if num_samples is None else num_samples, 1
        )
        self.stratify = True if stratify is None else check_bool("stratify", stratify)
        sizes = index.sizes
        schedule = class_weights if isinstance(class_weights, W.StepSchedule) else None
        self._schedule_points: list = []
        if schedule is not None:  # shares by run position: a timeline of (position, shares)
            self._schedule_points = schedule.shares(index.names, sizes)
            first = self._schedule_points[0][1]
            strategy: Any = lambda counts, epoch=0: W._per_sample(first, np.asarray(counts, float))  # noqa: E731
        else:
            strategy = W.resolve(class_weights, index.names)
        epoch_dependent = bool(getattr(strategy, "epoch_dependent", False))

        def shares(epoch: int) -> np.ndarray:
            return W.class_shares(strategy, sizes, epoch)

        digest = hashlib.blake2b(shares(0).tobytes(), digest_size=6).hexdigest()
        if epoch_dependent:  # shares at epoch 0 do not pin a schedule: its repr does
            digest += ":" + repr(strategy)
        if schedule is not None:  # every point's shares pin the schedule
            blob = b"".join(np.int64(p).tobytes() + a.tobytes() for p, a in self._schedule_points)
            digest += ":schedule:" + hashlib.blake2b(blob, digest_size=6).hexdigest()
        self._updates: list[tuple[int, np.ndarray]] = []
        self._timeline = Timeline(
            self.num_samples,
            self.seed,
            list(self._schedule_points),
            tuple(p for p, _ in self._schedule_points),
        )
        self._data = f"labels:{index.fingerprint()}"
        self._shares_digest = digest
        if not self.replacement and index.multilabel:
            raise ValueError(
                "replacement=False needs each sample in one group, but this label index has "
                "samples in several groups (multi-label): a sample could be drawn once through "
                "each; use replacement=True (members still cycle without repeats per class)"
            )
        if self.shards is not None:
            if not self.stratify or epoch_dependent or schedule is not None:
                raise ValueError(
                    "shards= needs stratify=True and fixed class_weights (not epoch-dependent, "
                    "not a StepSchedule): the shard plan draws exact class counts per epoch"
                )
            if index.multilabel:
                raise ValueError("shards= needs single-label data (one group per sample)")
            self._num_samples_arg = self.num_samples
            self._share0 = shares(0)
            return self._shard_plan_for(self._share0, self._shard_args[2])
        if self.stratify:
            plan = Stratified(
                index, shares, self.num_samples, self.replacement, epoch_dependent, self._timeline
            )
            self._plan = plan
            self._check_counts(0)
            return plan
        if epoch_dependent:
            raise ValueError("epoch-dependent class_weights need stratify=True")
        if self.replacement:
            return ClassIID(index, shares(0), self.num_samples, self._timeline)
        if schedule is not None:
            raise ValueError(
                "a StepSchedule needs replacement=True or stratify=True (weighted sampling "
                "without replacement draws a whole epoch's order at once)"
            )
        per_class = shares(0) / np.maximum(sizes, 1)
        if index.is_range:
            w = np.repeat(per_class, sizes)
        else:
            w = np.empty(index.num_samples)
            w[index.members] = np.repeat(per_class, sizes)
        return self._without_replacement(w, int(np.count_nonzero(w)))

    def _shard_plan_for(self, share: np.ndarray, lanes: int | None) -> ShardedStratified:
        """The shard-local stratified plan for ``lanes`` (``None``: the world size)."""
        # The classes: the labels, or the weights' value groups (samples of one weight value).
        index: GroupStore | None = self.index
        if index is None:
            assert self.weight_index is not None  # exactly one of labels= and weights=
            index = self.weight_index.groups
        assert index is not None  # labels=, or weights= with a by-value layout
        cache_shards, resident, _ = self._shard_args
        opts = shard_options(
            self.shards, len(index), self.num_replicas, cache_shards, resident, lanes
        )
        unit = opts.lanes * self.block_size
        self.num_samples = -(-self._num_samples_arg // unit) * unit
        counts = largest_remainder(self.num_samples, share)
        if not self.replacement:
            over = np.flatnonzero(counts > index.sizes)
            if over.size:
                c = int(over[0])
                raise ValueError(
                    f"num_samples={self.num_samples} needs {counts[c]} draws of class "
                    f"{index.names[c]!r} per epoch, more than its {index.sizes[c]} samples; "
                    "without replacement lower num_samples or use replacement=True"
                )
        plan = ShardedStratified(
            index,
            np.asarray(self.shards.offsets),
            counts,
            self.num_samples,
            opts,
            self.block_size,
            self.seed,
            self.replacement,
        )
        self._shard_plan = plan
        self._warn_overflow(index.names)
        return plan

    def _without_replacement(self, w: np.ndarray, positive: int) -> WeightedWithoutReplacement:
        """The plan, refusing ``num_samples`` above the number of positive weights."""
        if self.num_samples > positive:
            raise ValueError(
                "num_samples should be at most the number of positive weights without "
                f"replacement, but got num_samples={self.num_samples} > {positive}"
            )
        return WeightedWithoutReplacement(w, self.num_samples, positive)

    def _check_counts(self, epoch: int) -> None:
        if self.replacement or self._shard_plan is not None:
            return
        plan, index = self._plan, self.index
        assert isinstance(plan, Stratified) and index is not None  # labels without replacement
        counts, sizes = plan.counts(epoch), index.sizes
        over = np.flatnonzero(counts > sizes)
        if over.size:
            c = int(over[0])
            raise ValueError(
                f"num_samples={self.num_samples} needs {counts[c]} draws of class "
                f"{index.names[c]!r} per epoch, more than its {sizes[c]} samples; without "
                "replacement lower num_samples or use replacement=True"
            )

    # -- the sampler protocol ----------------------------------------------------------------
    def _config(self) -> Config:
        config = {
            "plan_version": PLAN_VERSION,
            "data": self._data,
            "num_samples": self.num_samples,
            "replacement": self.replacement,
            "stratify": self.stratify,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }
        if self.index is not None:
            config["class_shares"] = self._shares_digest
        config.update(self._shard_config())
        return {k: config_value(v) for k, v in config.items()}

    @property
    def dataset_size(self) -> int:
        """Samples the sampler indexes (one per weight or label): must equal ``len(dataset)``."""
        if self.index is not None:
            return len(self.index)
        assert self.weight_index is not None  # exactly one of the two is set
        return len(self.weight_index)

    def _total(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        start = self.epoch * self.num_samples
        if self.index is not None and sum(r < start for r, _ in self._updates) > _KEEP_UPDATES:
            # A long run: fold the updates before this epoch into an origin, as a state does,
            # so memory and the cost of a draw stay bounded (earlier epochs are then refused).
            origin = self._compact(self.epoch)
            self._install(origin, [(r, a) for r, a in self._updates if r >= start])
        if self.stratify:
            self._check_counts(self.epoch)

    set_epoch.__doc__ = EpochState.set_epoch.__doc__

    def indices(self, positions: np.ndarray, epoch: int | None = None) -> np.ndarray:
        """Dataset indices at global plan ``positions`` (sorted) of ``epoch`` (default current)."""
        ep = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        self._check_epoch(ep)
        return self._plan.draw(self.seed, ep, np.asarray(positions, dtype=np.int64))

    def __iter__(self) -> Iterator[int]:
        # check_wiring: under a framework that shards it again (plain accelerator.prepare),
        # the first index raises DoubleShardingError naming prepare_for_accelerate.
        return check_wiring(self, self._serve(_CHUNK, self.indices, first=_FIRST))

    # -- shares that change during the run -------------------------------------------------
    def update_shares(
        self,
        shares: Mapping[Hashable, float] | np.ndarray | Sequence[float],
        *,
        accumulation_steps: int = 1,
        at: int | None = None,
    ) -> int:
        """New class shares from the next global step boundary on, on every rank at once.

        A global step is ``num_replicas * block_size * accumulation_steps`` positions of the
        global plan (set ``block_size`` to the per-rank batch size, and ``accumulation_steps``
        to the micro-batches of one optimizer step, so no optimizer step mixes old and new
        shares). The update lands at the first boundary that no rank has handed out yet: with
        a process group every rank sends its handed-out position (a prefetching ``DataLoader``
        runs ahead of the loop) and the ranks take the largest, with one ``all_gather`` that
        also checks that every rank passed the same shares (a ``ValueError`` on every rank
        names the ranks that differ). Without a process group (ranks simulated in one process)
        nothing is checked and this process's position is used: pass ``at=`` then.

        The shares hold into later epochs until the next update (or the next point of a
        :class:`~distsampler.weights.StepSchedule`). Indices already handed out stay as they
        were; the ones computed ahead but not handed out are dropped and drawn with the new
        shares. The update is recorded in :meth:`state_dict` as ``(run position, shares)``; a
        state keeps only its epoch's updates and an ``origin`` for the run before (shares in
        force, where each class's member stream stands, stratified windows still pending), so
        it holds O(classes x (1 + updates this epoch)) numbers, and resuming computes, never
        replays. Past 64 earlier updates ``set_epoch`` folds them the same way in memory;
        earlier epochs are then refused.

        Trap: the sampler must be iterated in this process (a ``DataLoader`` draws the indices
        in the main process, also with ``num_workers > 0``); a sampler iterated inside a worker
        process cannot see the update.

        Args:
            shares: a mapping class name -> share naming every class, or an array of shares in
                the label index's order (``sampler.index.names``); normalised.
            accumulation_steps: micro-batches per optimizer step (a global step is this many
                rounds of ``num_replicas`` blocks).
            at: an explicit run position (``epoch * num_samples + position``) instead of the
                next boundary; it must not lie before what a rank handed out or a previous
                update.

        Returns:
            The run position from which the new shares hold.
        """
        index = self.index
        if self._shard_plan is not None:
            raise ValueError(
                "update_shares is not supported with shards= yet: the shard plan cuts each "
                "epoch's lanes from fixed class counts"
            )
        if index is None or (not self.replacement and not self.stratify):
            raise ValueError(
                "update_shares needs labels= with replacement=True or stratify=True; "
                "weights= and unstratified sampling without replacement have no class shares"
            )
        names = index.names
        if isinstance(shares, Mapping):
            share = W._named_shares("shares", shares, names)
        else:
            share = share_array(shares, len(names), "class")
        from .feedback import _next_run

        step = self.num_replicas * self.block_size
        run = _next_run(self, share, at, accumulation_steps, step)
        self._apply_update(run, share)
        return run

    def _apply_update(self, run: int, share: np.ndarray) -> None:
        self._updates.append((int(run), share))
        self._timeline.add(run, share)
        if isinstance(self._plan, Stratified):
            self._plan.reset()
            try:
                self._check_counts(self.epoch)
            except ValueError:  # refused: the sampler stays as it was
                self._updates.pop()
                self._timeline.pop()
                self._plan.reset()
                raise
        self._drop_ahead(run)

    def _state(self, consumed: int, skip: int) -> dict:
        # Compacted at the epoch: the shares in force at its start, where each class's member
        # stream stands and the cut windows still pending, then this epoch's updates.
        state = super()._state(consumed, skip)
        if self.index is None:
            return state
        return compacted_state(state, self._updates, self._origin, self.num_samples, self._compact)

    def _compact(self, epoch: int) -> Origin:
        """The run before ``epoch`` as an :class:`~distsampler._core.origin.Origin`."""
        share = self._timeline.in_force(epoch * self.num_samples)
        assert share is not None  # an update or an origin lies at or before the epoch's start
        plan = self._plan
        if isinstance(plan, Stratified) and plan.replacement:
            return Origin(
                epoch, share, bases=plan._stream_base(epoch), remaps=tuple(plan.pending(epoch))
            )
        return Origin(epoch, share)

    def load_state_dict(self, state: dict) -> None:
        lanes = self._state_lanes(state)
        if lanes is not None:  # lanes= left at its default: the run's lanes come from the state
            self._plan = self._shard_plan_for(self._share0, lanes)
        super().load_state_dict(state)
        updates = state.get("updates", [])
        if (updates or "origin" in state) and self.index is None:
            raise ValueError("state has share updates, but this sampler has no labels=")
        if self.index is None:
            return
        parsed = parse_updates(updates, len(self.index.names), "shares")
        origin = None
        if "origin" in state:
            cycled = isinstance(self._plan, Stratified) and self._plan.replacement
            origin = parse_origin(state["origin"], len(self.index.names), self.epoch, bases=cycled)
        self._install(origin, parsed)
        if self.stratify:  # loaded shares must fit the classes, as an update's must
            self._check_counts(self.epoch)

    def _install(self, origin: Origin | None, updates: list) -> None:
        """Plan from ``origin`` (or the run's start) with ``updates`` after it."""
        assert self.index is not None  # only label samplers have shares to update
        self._origin = origin
        self._updates = list(updates)
        points = list(self._schedule_points)
        if origin is not None:
            points.append((origin.epoch * self.num_samples, origin.shares))
        self._timeline.reset(points + self._updates)
        if isinstance(self._plan, Stratified):
            if origin is None:
                self._plan.origin = None
            else:
                bases = origin.bases
                if bases is None:  # without replacement: no member streams across epochs
                    bases = np.zeros(len(self.index.names), np.int64)
                self._plan.origin = (origin.epoch, bases, origin.remaps)
            self._plan.reset()

    load_state_dict.__doc__ = EpochState.load_state_dict.__doc__

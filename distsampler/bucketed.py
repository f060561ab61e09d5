"""DistributedBucketBatchSampler: size-homogeneous batches that keep the source's guarantees."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ._batch import BatchPlanSampler
from ._core.bucket_plan import BUCKET_PLAN_VERSION, BucketPlan, LaneBuckets
from ._core.checks import MAX_SIZE, check_int, check_real
from ._core.plan import PLAN_VERSION
from ._core.state import Config, config_value
from .groups import fingerprint
from .quota import DistributedQuotaBatchSampler
from .sizes import CostSizes, check_sizes, max_size, resolve_cost
from .weighted import DistributedWeightedSampler

__all__ = ["DistributedBucketBatchSampler"]

_WINDOW_BATCHES = 64  # default window: micro-batches of batch_size mode
_WINDOW_TOKENS = 8192  # default window of token mode, in samples


class DistributedBucketBatchSampler(BatchPlanSampler):
    """Batches of similar size (length, aspect ratio, token budget) that keep class balance.

    The ``source`` decides *which* samples an epoch holds and how often (class shares,
    weights, quotas); this sampler only decides *how they are cut into batches*: the source's
    global stream is split into windows of ``window`` consecutive samples, and inside each
    window samples of similar size are grouped into micro-batches, which are then shuffled
    within the window. A window holds exactly the samples the source puts there, so class
    counts, member cycles, coverage and quotas are the source's. Micro-batch ``m = k * W + r``
    goes to rank ``r``: the stream is the same for every world size, every rank yields the
    same number of batches, and a state resumes under any world size.

    Use it as ``DataLoader(dataset, batch_sampler=sampler)``.

    Args:
        source: a `DistributedWeightedSampler` (any configuration) or a
            `DistributedQuotaBatchSampler` (then every local batch keeps its exact quotas:
            members of the same group are traded between the batches of a window). Only its
            plan is read (its seed, ``num_samples``, quotas); its world size, epoch and
            ``block_size`` are ignored.
        sizes: one size per dataset sample: tokens or frames (``(N,)`` ints or floats), or
            ``(height, width)`` pairs (``(N, 2)``, grouped by aspect ratio); an array, tensor
            or ``.npy`` path (memory-mapped). All finite and > 0; ``len(sizes)`` must equal
            the source's dataset size. See `distsampler.sizes` for helpers.
        batch_size: samples per local batch (per rank, like ``per_device_train_batch_size``).
            With a quota source it is the source's batch size (may be omitted).
        max_tokens: padded-cost budget per local batch: a batch of ``n`` samples of largest
            size ``s`` costs ``n * cost(s)`` (by default ``n * s``, its padded tokens), and
            holds as many samples as fit (1-D sizes, weighted source only). Exactly one of
            ``batch_size`` and ``max_tokens``.
        cost: with ``max_tokens``, the per-sample cost of a batch padded to size ``s``:
            ``"tokens"`` (default, ``s``), ``"quadratic"`` (``s * s``: the attention scores of
            the padded batch, for a memory budget), or a vectorised, non-decreasing callable
            ``sizes -> costs`` (e.g. ``lambda s: s + 64`` for a per-sample overhead).
        buckets: ``None`` (default): sort each window by the exact size (or aspect ratio);
            a sequence of increasing boundaries (sizes, or aspect ratios ``h / w``): group by
            bucket and shuffle inside a bucket (``buckets=[1.0]`` is the two aspect-ratio
            groups of detectron2 and mmdet). ``batch_size`` mode only.
        window: samples per window (consecutive positions of the source's stream). Default:
            ``64 * align * batch_size`` (64 runs of batches), or 8192 with ``max_tokens``.
            Larger windows pad less, while resuming and the first batch cost one window.
            With ``batch_size`` it must be a multiple of ``align * batch_size``.
        align: keep runs of ``align`` consecutive micro-batches of similar size together
            (their runs are shuffled). Set it to the world size (or a multiple: 8 serves
            W = 1, 2, 4, 8) so that the local batches of a global step pad alike and no rank
            waits for a longer batch; the stream depends on ``align``, never on ``W``.
            Default 1: every micro-batch shuffled on its own (``max_tokens`` batches cost
            about the same anyway; there a window's runs stay aligned only when its batch
            count is a multiple of ``align``).
        seed: seed of the reordering (the source's own seed chooses its samples; both shape
            the plan).
        num_replicas: the world size (default: ``torch.distributed``, torchrun's env, 1).
        rank: this process's rank, found the same way.
        drop_last: drop the epoch's last micro-batches that do not fill a round of the world
            size (default: the round is completed from the source's continuation).
        dataset_size: ``len(dataset)``, checked against ``len(sizes)``.

    Trap: with ``max_tokens`` the number of batches depends on the sizes drawn: the first
    access of an epoch makes one pass over the epoch's sizes (about a second per 1e7 samples,
    ``O(num_samples / window)`` memory) to count them, so ``len()`` is exact and equal on
    every rank. A sample larger than ``max_tokens`` is refused when the sampler is built.

    Warning:
        Call :meth:`set_epoch` before every epoch, or every epoch repeats the same batches.

    Examples:
        >>> lengths = np.random.default_rng(0).integers(5, 500, size=1000)
        >>> labels = [0] * 900 + [1] * 100
        >>> source = DistributedWeightedSampler(labels=labels)
        >>> sampler = DistributedBucketBatchSampler(
        ...     source, lengths, batch_size=16, num_replicas=2, rank=0)
        >>> batch = next(iter(sampler))  # 16 samples of similar length
        >>> len(batch)
        16
    """

    def __init__(
        self,
        source: DistributedWeightedSampler | DistributedQuotaBatchSampler,
        sizes: Any,
        *,
        batch_size: int | None = None,
        max_tokens: int | float | None = None,
        cost: str | Callable[[np.ndarray], np.ndarray] = "tokens",
        buckets: Any = None,
        window: int | None = None,
        align: int = 1,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        dataset_size: int | None = None,
    ) -> None:
        self._init_batches(num_replicas=num_replicas, rank=rank, seed=seed, drop_last=drop_last)
        quota = isinstance(source, DistributedQuotaBatchSampler)
        if not quota and not isinstance(source, DistributedWeightedSampler):
            raise TypeError(
                "source should be a DistributedWeightedSampler or a DistributedQuotaBatchSampler, "
                f"but got {type(source).__name__}"
            )
        self.source = source
        #: The source's label index (``None`` for a ``weights=`` source).
        self.index = getattr(source, "index", None)
        self.sizes = check_sizes(sizes, source.dataset_size)
        self._check_dataset_size(dataset_size)
        if (batch_size is None) == (max_tokens is None) and not (quota and max_tokens is None):
            raise ValueError(
                "pass exactly one of batch_size= (samples per local batch) or max_tokens= "
                f"(padded tokens per local batch), but got batch_size={batch_size!r}, "
                f"max_tokens={max_tokens!r}"
            )
        self.batch_size: int | None = None
        self.max_tokens: int | float | None = None
        #: The token mode's per-sample cost (its name), else ``None``.
        self.cost: str | None = None
        self._cost_sizes: CostSizes | None = None  # sizes in cost units, when not tokens
        if isinstance(source, DistributedQuotaBatchSampler):
            self._init_quota(source, batch_size, max_tokens)
        elif batch_size is not None:
            self.batch_size = check_int("batch_size", batch_size, 1)
        else:
            self._init_tokens(max_tokens, buckets, cost)
        self.buckets = self._parse_buckets(buckets)
        self.align = check_int("align", align, 1)
        self.window = self._parse_window(window)
        if isinstance(source, DistributedQuotaBatchSampler):
            units, per_unit = source.epoch_batches, source.batch_size
        else:
            units, per_unit = source.num_samples, 1
        if units * per_unit > MAX_SIZE // 4:
            raise ValueError(f"an epoch of {units * per_unit} samples is too large to bucket")
        plan = functools.partial(
            BucketPlan,
            sizes=self._cost_sizes if self._cost_sizes is not None else self.sizes,
            window=self.window // per_unit,
            batch_size=self.batch_size,
            max_tokens=self.max_tokens,
            signature=self._signature if quota else None,
            edges=self.buckets,
            align=self.align,
            cache_windows=max(4, 2 * self.num_replicas + 2),
        )
        self._plan: BucketPlan | LaneBuckets
        if getattr(source, "_shard_plan", None) is None:
            self._plan = plan(
                key=(self.seed, source.seed),
                epoch_units=units,
                draw_positions=None if quota else self._source_positions,
                draw_batches=self._source_batches if quota else None,
            )
        else:
            self._plan = self._lane_plans(plan, units, quota)

    def _lane_plans(self, plan: Callable, units: int, quota: bool) -> LaneBuckets:
        """A sharded source: one bucket plan per lane, windows inside the lane's stream."""
        source = self.source
        assert source.lanes is not None  # a source built with shards=
        lanes = int(source.lanes)
        if self.max_tokens is not None:
            raise ValueError(
                "max_tokens= cannot bucket a source built with shards=: lanes would get "
                "different numbers of batches; use batch_size="
            )
        block = 1 if isinstance(source, DistributedQuotaBatchSampler) else source.block_size
        if not quota and block != self.batch_size:
            raise ValueError(
                f"a source built with shards= needs block_size equal to the batch size "
                f"{self.batch_size} (each lane then holds whole batches), but got "
                f"block_size={block}"
            )

        def to_global(lane: int, j: np.ndarray) -> np.ndarray:
            return ((j // block) * lanes + lane) * block + j % block

        plans = []
        for lane in range(lanes):
            if quota:
                draw = {
                    "draw_batches": lambda e, j, ln=lane: self._source_batches(e, to_global(ln, j))
                }
            else:
                draw = {
                    "draw_positions": lambda e, j, ln=lane: self._source_positions(
                        e, to_global(ln, j)
                    )
                }
            plans.append(
                plan(key=(self.seed, source.seed, lane), epoch_units=units // lanes, **draw)
            )
        return LaneBuckets(lanes, plans)

    # -- construction ------------------------------------------------------------------------
    def _init_quota(self, source: DistributedQuotaBatchSampler, batch_size, max_tokens) -> None:
        if max_tokens is not None:
            raise ValueError(
                "max_tokens= cannot go with a DistributedQuotaBatchSampler source: its quotas "
                "are counts per batch of batch_size samples; use batch_size= (the source's)"
            )
        if batch_size is not None and check_int("batch_size", batch_size, 1) != source.batch_size:
            raise ValueError(
                f"batch_size should be the quota source's batch size {source.batch_size} (its "
                f"quotas are per batch), but got batch_size={batch_size}"
            )
        self.batch_size = source.batch_size
        self._groups = self._signature_table(source)

    def _init_tokens(self, max_tokens, buckets, cost) -> None:
        if isinstance(max_tokens, (int, np.integer)) and not isinstance(max_tokens, bool):
            self.max_tokens = check_int("max_tokens", max_tokens, 1)
        else:
            self.max_tokens = check_real("max_tokens", max_tokens, 0, low_open=True)
        if self.sizes.ndim != 1:
            raise ValueError(
                "max_tokens= needs one size per sample (tokens, frames), but sizes has shape "
                f"{tuple(self.sizes.shape)}; for (height, width) sizes use batch_size="
            )
        if buckets is not None:
            raise ValueError(
                "buckets= applies to batch_size= mode; max_tokens= sorts each window by the "
                "exact size"
            )
        i, biggest = max_size(self.sizes)
        self.cost, fn = resolve_cost(cost, np.asarray(self.sizes[: 1 << 16]).tolist() + [biggest])
        if self.cost != "tokens":
            self._cost_sizes = CostSizes(self.sizes, fn)
        most = float(np.asarray(fn(np.asarray([biggest])))[0])
        if most > self.max_tokens:
            costs = "" if self.cost == "tokens" else f" costs {most:g} (cost={self.cost!r}) and"
            raise ValueError(
                f"sizes[{i}]={biggest}{costs} is more than max_tokens={self.max_tokens}: "
                f"sample {i} fits no batch; truncate such samples upstream or raise max_tokens"
            )

    def _parse_buckets(self, buckets) -> np.ndarray | None:
        if buckets is None:
            return None
        if isinstance(buckets, (str, bytes)) or not hasattr(buckets, "__len__"):
            raise TypeError(
                f"buckets should be None or a sequence of boundaries, but got buckets={buckets!r}"
            )
        edges = np.asarray(buckets, dtype=np.float64)
        if edges.ndim != 1 or not len(edges) or not np.isfinite(edges).all():
            raise ValueError(f"buckets should be finite boundaries, but got buckets={buckets!r}")
        if (np.diff(edges) <= 0).any():
            raise ValueError(f"buckets should be increasing, but got buckets={buckets!r}")
        return edges

    def _parse_window(self, window) -> int:
        if window is None:
            if self.max_tokens is not None:
                return _WINDOW_TOKENS
            return _WINDOW_BATCHES * self.align * int(self.batch_size or 1)
        window = check_int("window", window, 1)
        if self.max_tokens is None and window % (self.align * int(self.batch_size or 1)):
            raise ValueError(
                f"window should be a multiple of align x batch_size = {self.align} x "
                f"{self.batch_size} (whole runs of whole batches), but got window={window}"
            )
        return window

    @staticmethod
    def _signature_table(source: DistributedQuotaBatchSampler) -> list[np.ndarray]:
        """Each group's members (views of the index), searched for a sample's groups."""
        if source.index.is_range:  # ranges: the offsets say it, no member array exists
            return []
        return [source.index.group(g) for g in range(len(source.index.names))]

    def _signature(self, flat: np.ndarray) -> np.ndarray:
        """Group signature of each sample of a quota source: the set of its groups, as a code.

        Samples are traded between batches only within one signature, so each batch keeps the
        exact number of samples containing each group (single- and multi-label).
        """
        index = self.source.index
        assert index is not None  # a quota source
        if index.is_range:
            return np.searchsorted(index.offsets, flat, side="right") - 1
        hits = np.zeros((len(flat), len(self._groups)), dtype=bool)
        for g, members in enumerate(self._groups):  # members increase within a group
            at = np.searchsorted(members, flat)
            ok = at < len(members)
            hits[ok, g] = members[at[ok]] == flat[ok]
        if not index.multilabel:
            return np.argmax(hits, axis=1)
        _, code = np.unique(hits, axis=0, return_inverse=True)
        return code.reshape(-1)

    # -- the batch plan ----------------------------------------------------------------------
    def _source_positions(self, epoch: int, positions: np.ndarray) -> np.ndarray:
        assert isinstance(self.source, DistributedWeightedSampler)
        return self.source.indices(positions, epoch=epoch)

    def _source_batches(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        assert isinstance(self.source, DistributedQuotaBatchSampler)
        return np.asarray(self.source.batches(micro_batches, epoch=epoch))

    @property
    def epoch_batches(self) -> int:  # type: ignore[override]
        """Global micro-batches of the current epoch (with ``max_tokens``: after one pass)."""
        return self._plan.epoch_batches(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        source = self.source
        if isinstance(source, DistributedWeightedSampler) and source.stratify:
            source._check_counts(self.epoch)  # a schedule's counts must fit without replacement
        source.set_epoch(self.epoch)  # a ShardedDataset following the source reads this epoch

    set_epoch.__doc__ = BatchPlanSampler.set_epoch.__doc__

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.source.set_epoch(self.epoch)  # as set_epoch: the source's schedule is this epoch's

    load_state_dict.__doc__ = BatchPlanSampler.load_state_dict.__doc__

    @property
    def _batch_hint(self) -> int:  # type: ignore[override]
        """Samples per batch: exact, or the epoch's mean with ``max_tokens`` (after its pass)."""
        if self.batch_size is not None:
            return self.batch_size
        return max(1, self._plan.epoch_units // max(1, self.epoch_batches))

    @property
    def _chunk_batches(self) -> int:  # type: ignore[override]
        """About one window of micro-batches: a window is computed once for all its batches."""
        units_per_batch = 1 if self._plan.quota else self._batch_hint
        return max(1, self._plan.window // units_per_batch)

    @property
    def dataset_size(self) -> int:
        """Samples the sampler indexes (one per size): must equal ``len(dataset)``."""
        return len(self.sizes)

    def _draw(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray | list[list[int]]:
        return self._plan.draw(epoch, micro_batches)

    def _draws(self) -> int:
        per_unit = int(self.batch_size or 1) if self._plan.quota else 1
        return 2 * (self._plan.epoch_end * per_unit + self.window)

    def _config(self) -> Config:
        source = {f"source.{k}": v for k, v in self.source._config().items() if k != "seed"}
        config: dict = {
            "plan_version": f"{PLAN_VERSION}.{BUCKET_PLAN_VERSION}",
            "data": f"sizes:{fingerprint(self.sizes)}",
            "source": type(self.source).__name__,
            "source_seed": self.source.seed,
            "batch_size": self.batch_size,
            "max_tokens": self.max_tokens,
            "buckets": None
            if self.buckets is None
            else hashlib.blake2b(self.buckets.tobytes(), digest_size=6).hexdigest(),
            "window": self.window,
            "align": self.align,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }
        if self.cost not in (None, "tokens"):  # absent by default: the default's configuration
            config["cost"] = self.cost
        config.update(source)
        return {k: config_value(v) for k, v in config.items()}

"""DistributedClassBatchSampler: P classes x K samples per local batch, one plan for all ranks."""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np

from . import weights as W
from ._batch import BatchPlanSampler
from ._core.checks import MAX_SIZE, check_int
from ._core.pk_plan import PK_PLAN_VERSION, PKPlan, WeightedPKPlan
from ._core.plan import PLAN_VERSION
from ._core.state import Config, config_value
from ._types import ClassWeightsLike, LabelsLike
from .groups import GroupIndex

__all__ = ["DistributedClassBatchSampler"]

SMALL_CLASSES = ("replace", "skip", "error")


def _classes(n: int) -> str:
    """``"1 class has"`` / ``"3 classes have"``."""
    return "1 class has" if n == 1 else f"{n} classes have"


class DistributedClassBatchSampler(BatchPlanSampler):
    """Batches of ``P`` distinct classes x ``K`` samples each (metric learning), under DDP.

    One global plan: a stream of micro-batches of ``P`` classes x ``K`` members; micro-batch
    ``m = k * W + r`` goes to rank ``r`` (as the quota sampler), so the stream read in order is
    the same for every world size ``W``. Use it as ``DataLoader(dataset, batch_sampler=...)``;
    a local batch holds ``batch_size = P * K`` indices, class by class (``K`` of the first
    class, then ``K`` of the second, ...).

    Guarantees:

    * every local batch: ``P`` distinct classes, ``K`` samples of each, no sample twice when
      its class has ``>= K`` members;
    * the ``W * P`` classes of a global step are distinct across ranks whenever
      ``W * P <= C // 2`` (``C``: eligible classes), across cycle, epoch-continuation and
      resume boundaries; past that bound a class may sit on two ranks of a step;
    * classes cycle without replacement (no ``class_weights``): within an epoch every eligible
      class is chosen before any is chosen again, and any two classes' counts differ by at
      most one; with ``class_weights``, exact per-epoch counts by largest remainder;
    * each class's members cycle without replacement across epochs: when ``K`` divides the
      class size no member repeats before the class has shown all of them; otherwise a block
      of ``K`` that straddles two member cycles takes the next cycle's first distinct members,
      so up to ``K - 1`` members can show again before the rest of the class (the trap).

    Args:
        labels: per-sample class labels (sequence, array, tensor, ``.npy`` path memory-mapped)
            or a `GroupIndex` (from label sets for multi-label data: a sample counts for each
            of its classes and appears once per batch). ``len(labels)`` must equal
            ``len(dataset)``.
        classes_per_batch: ``P``, distinct classes per local batch; at most half the eligible
            classes.
        samples_per_class: ``K``, samples of each class per local batch (``K = 1`` warns: no
            anchor then has a positive).
        class_weights: ``None`` (default: classes cycle, every class equally often) or a
            strategy of `distsampler.weights` (``"sqrt"``, ``"balanced"``, ``"instance"``, a
            mapping class -> per-sample weight, a callable): classes are then chosen in
            proportion to ``weight x size`` with exact counts per epoch (``"sqrt"``: in
            proportion to the square root of their size), spread evenly through the epoch;
            each local batch still has ``P`` distinct classes, but the classes of a step are
            only spread across ranks, not guaranteed distinct. A class may take at most one
            slot per micro-batch (checked). A zero weight excludes a class.
        small_classes: what a class with fewer than ``K`` members gets: ``"replace"`` (default:
            its members repeat within the batch), ``"skip"`` (never chosen) or ``"error"``.
            The count of such classes is ``num_small_classes`` (and a warning). A class with
            one member never forms a positive pair: its anchor's positive is itself.
        num_batches: local batches per rank per epoch. Default: the global micro-batches that
            choose every eligible class once, ``ceil(C / P)``, rounded up to a multiple of the
            world size.
        num_replicas: the world size (default: ``torch.distributed``, torchrun's env, 1).
        rank: this process's rank, found the same way.
        seed: plan seed, identical on every rank.
        drop_last: drop the epoch's last micro-batches that do not fill a round of the world
            size (default: the round is completed with the plan's continuation).
        dataset_size: ``len(dataset)``, checked against ``len(labels)``.
        shards: refused (a ``ValueError`` says why): class batches need members of classes
            chosen anew every step, from anywhere in the data set, which sharded reads cannot
            serve shard by shard.

    Trap: the cross-rank distinctness bound is on ``W * P``, the classes of a *global* step;
    with 8 ranks x 16 classes you need at least 256 eligible classes.

    Warning:
        Call :meth:`set_epoch` before every epoch, or every epoch repeats the same batches.

    Examples:
        >>> labels = [i % 50 for i in range(1000)]
        >>> sampler = DistributedClassBatchSampler(labels, 4, 2, num_replicas=1, rank=0)
        >>> batch = next(iter(sampler))  # 4 classes x 2 samples
        >>> len(batch), sampler.batch_size
        (8, 8)
    """

    def __init__(
        self,
        labels: LabelsLike,
        classes_per_batch: int,
        samples_per_class: int,
        *,
        class_weights: ClassWeightsLike | None = None,
        small_classes: str = "replace",
        num_batches: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        dataset_size: int | None = None,
        shards: Any = None,
    ) -> None:
        if shards is not None:
            raise ValueError(
                "DistributedClassBatchSampler cannot read shard by shard (shards=): every batch "
                "takes K members of P classes chosen anew each step, from anywhere in the data "
                "set, which no window of a few shards holds; keep its data on random-access "
                "storage, or use DistributedQuotaBatchSampler(..., shards=layout)"
            )
        self._init_batches(num_replicas=num_replicas, rank=rank, seed=seed, drop_last=drop_last)
        self.index = labels if isinstance(labels, GroupIndex) else GroupIndex.from_labels(labels)
        self._check_dataset_size(dataset_size)
        P = check_int("classes_per_batch", classes_per_batch, 1)
        K = check_int("samples_per_class", samples_per_class, 1)
        self.classes_per_batch, self.samples_per_class = P, K
        self.batch_size = P * K
        self._batch_hint = self.batch_size
        self.class_weights = class_weights
        if small_classes not in SMALL_CLASSES:
            raise ValueError(
                f"small_classes should be one of {SMALL_CLASSES}, but got "
                f"small_classes={small_classes!r}"
            )
        self.small_classes = small_classes
        if K == 1:
            warnings.warn(
                "samples_per_class=1: no anchor has a positive in its batch (a pair or triplet "
                "loss then learns nothing from positives); use samples_per_class >= 2",
                stacklevel=2,
            )
        sizes = self.index.sizes
        small = (sizes > 0) & (sizes < K)
        self.num_small_classes = int(small.sum())
        self.num_singleton_classes = int((sizes == 1).sum())
        names = [self.index.names[g] for g in np.flatnonzero(small)[:5]]
        n_small = _classes(self.num_small_classes)
        if self.num_small_classes and small_classes == "error":
            raise ValueError(
                f"{n_small} fewer than samples_per_class={K} "
                f"members (e.g. {names!r}); pass small_classes='replace' or 'skip'"
            )
        eligible = sizes >= (K if small_classes == "skip" else 1)
        strategy = None
        if class_weights is not None:
            strategy = W.resolve(class_weights, self.index.names)
            positive = W.class_shares(strategy, sizes, 0) > 0
            if not getattr(strategy, "epoch_dependent", False):
                eligible &= positive  # a zero weight excludes the class
        self.eligible_classes = np.flatnonzero(eligible).astype(np.int64)
        if self.num_small_classes:
            what = "skipped" if small_classes == "skip" else "filled by repeating members"
            one = "has" if self.num_singleton_classes == 1 else "have"
            ones = (
                f"; {self.num_singleton_classes} {one} one member and never form a positive pair"
                if self.num_singleton_classes and small_classes == "replace"
                else ""
            )
            warnings.warn(
                f"{n_small} fewer than samples_per_class={K} members ({what}){ones}",
                stacklevel=2,
            )
        C = len(self.eligible_classes)
        if 2 * P > C:
            raise ValueError(
                f"classes_per_batch should be at most half the {C} eligible classes "
                f"({C // 2}), but got classes_per_batch={P}: distinct classes per batch and "
                "across ranks need twice as many classes as a batch holds"
            )
        if self.num_replicas * P > C // 2:
            warnings.warn(
                f"num_replicas x classes_per_batch = {self.num_replicas} x {P} = "
                f"{self.num_replicas * P} is more than half the {C} eligible classes "
                f"({C // 2}): a class may then appear on two ranks in one global step (each "
                f"local batch still holds {P} distinct classes); use fewer classes per batch, "
                "or more classes",
                stacklevel=2,
            )
        self._num_batches_arg = num_batches
        if num_batches is None:
            self.epoch_batches = math.ceil(C / P)
        else:
            self.epoch_batches = check_int("num_batches", num_batches, 1) * self.num_replicas
        if self.epoch_batches * self.batch_size > MAX_SIZE:
            raise ValueError(
                f"an epoch of {self.epoch_batches} micro-batches of {self.batch_size} indices is "
                f"more than {MAX_SIZE} indices; lower num_batches"
            )
        if strategy is None:
            self._plan = PKPlan(self.index, self.eligible_classes, P, K, self.epoch_batches)
            self._weights_key = "None"
        else:
            self._plan = WeightedPKPlan(
                self.index,
                self.eligible_classes,
                P,
                K,
                self.epoch_batches,
                lambda epoch: W.class_shares(strategy, sizes, epoch),
                bool(getattr(strategy, "epoch_dependent", False)),
            )
            shares = W.class_shares(strategy, sizes, 0)
            self._weights_key = hashlib.blake2b(shares.tobytes(), digest_size=6).hexdigest()
            if getattr(strategy, "epoch_dependent", False):
                self._weights_key += ":" + repr(strategy)
            self._plan.per_epoch_counts(self.seed, 0)  # a class over one slot per batch: now

    @property
    def dataset_size(self) -> int:
        """Samples the sampler indexes (one per label): must equal ``len(dataset)``."""
        return self.index.num_samples

    def per_epoch_counts(self, epoch: int | None = None) -> np.ndarray:
        """Times each class is chosen in an epoch's ``epoch_batches`` micro-batches (exact)."""
        ep = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        return self._plan.per_epoch_counts(self.seed, ep)

    def _draw(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray:
        """Global micro-batches as a ``(n, P * K)`` array of dataset indices."""
        return self._plan.draw(self.seed, epoch, micro_batches)

    def _config(self) -> Config:
        config: dict = {
            "plan_version": PLAN_VERSION,
            "pk_plan_version": PK_PLAN_VERSION,
            "data": self.index.fingerprint(),
            "classes_per_batch": self.classes_per_batch,
            "samples_per_class": self.samples_per_class,
            "small_classes": self.small_classes,
            "class_weights": self._weights_key,
            "num_batches": self._num_batches_arg,
            "epoch_batches": self.epoch_batches,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }
        return {k: config_value(v) for k, v in config.items()}

    def _draws(self) -> int:
        return self.epoch_batches * self.batch_size

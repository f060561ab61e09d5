"""The batch-sampler family: one global stream of micro-batches, dealt round-robin to the ranks.

Every batch sampler of distsampler (quota batches, class batches, bucketed batches) is a *batch
plan*, a pure function ``(seed, epoch, global micro-batch m) -> local batch``, plus this thin
stateful shell. Micro-batch ``m = k * W + r`` goes to rank ``r`` (HF Accelerate's
``BatchSamplerShard`` layout), so:

* the stream read in order (rank ``r``'s ``k``-th batch is micro-batch ``k * W + r``) is the
  same for every world size ``W``: only the split of a global step into ``W`` local batches
  depends on ``W``;
* every rank yields ``ceil(M / W)`` batches (``M // W`` with ``drop_last``): the epoch's ``M``
  micro-batches are rounded up to a multiple of ``W`` by the plan's own continuation
  (micro-batches ``m >= M``), never by repeating the epoch's start;
* the state is (epoch, global micro-batches consumed): resuming is an integer, under any ``W``.

A subclass calls :meth:`BatchPlanSampler._init_batches` in ``__init__``, sets
``epoch_batches`` and implements ``_draw``, ``_config``, ``_draws`` and ``dataset_size``. It
adds no iteration, sharding or state code of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import DistributedSampler, Sampler

from ._core.checks import MAX_SEED, check_bool, check_dataset_size, check_int
from ._core.sharding import Shard, resolve_world
from ._core.state import EpochState

__all__ = ["BatchPlanSampler", "check_wiring"]

_CHUNK_INDICES = 1 << 16  # indices computed at a time, as for the index sampler
_FIRST_INDICES = 1 << 10  # the first chunk: the first batch waits for a small one only


class BatchPlanSampler(Sampler[list[int]], EpochState):
    """Base of the batch samplers: a batch plan served to this rank, with epoch and resume.

    Subclasses set ``epoch_batches`` (global micro-batches of one epoch, before rounding to a
    multiple of the world size) and implement:

    * ``_draw(epoch, micro_batches)``: the global micro-batches (int64 array of ``m >= 0``,
      including the continuation past ``epoch_batches``) as an ``(n, B)`` int array, or a list
      of ``n`` Python lists when batches differ in length;
    * ``_config()``: the plan-shaping fields (a state is checked against them);
    * ``_draws()``: dataset indices one epoch draws (bounds the epoch number);
    * ``dataset_size``: samples the sampler indexes (must equal ``len(dataset)``).

    Use a batch sampler as ``DataLoader(dataset, batch_sampler=sampler)``.
    """

    epoch_batches: int
    seed: int
    num_replicas: int
    rank: int

    def __new__(cls, *args: Any, **kwargs: Any) -> BatchPlanSampler:
        # Lightning's Trainer(use_distributed_sampler=True), its default, rebuilds a batch
        # sampler as type(bs)(DistributedSampler(...), batch_size=..., drop_last=...): say why,
        # instead of the TypeError our constructor would raise about a missing argument.
        first = args[0] if args else kwargs.get("sampler")
        if isinstance(first, DistributedSampler):
            raise TypeError(
                f"{cls.__name__} was re-created around a {type(first).__name__}: Lightning's "
                "Trainer does this with use_distributed_sampler=True (its default); "
                "distsampler's samplers are already rank-aware: build the trainer with "
                "Trainer(use_distributed_sampler=False)"
            )
        return super().__new__(cls)

    #: Indices in one batch (sizes the compute chunks); a subclass may refine it.
    _batch_hint: int = 1
    #: Micro-batches computed at a time; ``None``: about 65536 indices.
    _chunk_batches: int | None = None

    def _init_batches(
        self,
        *,
        num_replicas: int | None,
        rank: int | None,
        seed: int,
        drop_last: bool = False,
    ) -> None:
        """Resolve the world and the shared fields (call first in ``__init__``)."""
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.drop_last = check_bool("drop_last", drop_last)
        world, rnk = resolve_world(num_replicas, rank)
        self._shard = Shard(world, rnk, 1)
        self.num_replicas, self.rank = world, rnk

    def _check_dataset_size(self, dataset_size: int | None) -> None:
        """``dataset_size=len(dataset)`` given by the user must match the labels/sizes."""
        check_dataset_size(dataset_size, self.dataset_size)

    @property
    def dataset_size(self) -> int:
        """Samples the sampler indexes: must equal ``len(dataset)``."""
        raise NotImplementedError

    def _draw(self, epoch: int, micro_batches: np.ndarray) -> np.ndarray | list[list[int]]:
        raise NotImplementedError

    # -- the plan --------------------------------------------------------------------------
    def batches(
        self, micro_batches: np.ndarray, epoch: int | None = None
    ) -> np.ndarray | list[list[int]]:
        """Global micro-batches ``m`` of an epoch (default: the current one), any rank's.

        Micro-batch ``m = k * W + r`` is rank ``r``'s ``k``-th batch; ``m >= epoch_batches``
        is the continuation that pads the last round.
        """
        ep = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        m = np.asarray(micro_batches, dtype=np.int64).reshape(-1)
        if m.size and int(m.min()) < 0:
            raise ValueError(f"micro_batches should be >= 0, but got {int(m.min())}")
        return self._draw(ep, m)

    def _total(self) -> int:
        return self.epoch_batches

    # -- the sampler protocol --------------------------------------------------------------
    def __iter__(self) -> Iterator[list[int]]:
        _refuse_as_index_sampler(self)
        hint = max(1, self._batch_hint)
        chunk = self._chunk_batches or max(1, _CHUNK_INDICES // hint)
        first = min(chunk, max(1, _FIRST_INDICES // hint))
        return check_wiring(
            self, self._serve(chunk, self._draw_current, first=first, per_list=hint)
        )

    def __len__(self) -> int:
        """Local batches of the next iteration (equal on every rank)."""
        n = self._local_length()
        if _ACCELERATE in sys.modules:  # Accelerate's shard counts the repeats check_wiring adds
            from .integrations.double_sharding import repeats_for_length

            n *= repeats_for_length(self, sys._getframe(1))
        return n

    def _draw_current(self, micro_batches: np.ndarray) -> np.ndarray | list[list[int]]:
        return self._draw(self.epoch, micro_batches)

    @property
    def sampler(self) -> _EpochForwarder:
        """``batch_sampler.sampler``: lets Accelerate's ``set_epoch`` reach this sampler.

        Accelerate's prepared loader calls ``batch_sampler.batch_sampler.sampler.set_epoch``;
        this object forwards that call here.
        """
        return _EpochForwarder(self)


class _EpochForwarder:
    """Forwards ``set_epoch`` (and an index count for ``len``) to its batch sampler."""

    def __init__(self, owner: BatchPlanSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._owner) * max(1, self._owner._batch_hint)


_ACCELERATE = "accelerate.data_loader"


def check_wiring(owner: Any, items: Iterator) -> Iterator:
    """``owner``'s items as the framework wrappers iterating it need them, or a loud error.

    Call it from a sampler's ``__iter__`` on what it would serve. Under a plain
    ``accelerator.prepare(DataLoader(...))`` Accelerate deals a rank-aware sampler out a second
    time: a batch sampler directly under that shard is served so that each rank still gets
    exactly its own batches; any other such wiring raises ``DoubleShardingError`` naming
    ``prepare_for_accelerate``. Costs one dict lookup while Accelerate is not imported.
    """
    if _ACCELERATE not in sys.modules:
        return items
    from .integrations.double_sharding import accelerate_wiring

    return accelerate_wiring(owner, items, sys._getframe(1))


def _refuse_as_index_sampler(owner: BatchPlanSampler) -> None:
    """A batch sampler passed as ``DataLoader(sampler=...)`` must fail loudly.

    The ``DataLoader`` then wraps it in a ``BatchSampler``, which collects ``batch_size`` of
    our *batches* into one: a batch of 8 becomes 64 samples on a ``TensorDataset``, or a
    ``TypeError`` deep in the user's ``__getitem__``. ``BatchSampler.__iter__`` is the caller
    of ``iter()`` then; nothing else in torch iterates a sampler that way.
    """
    from torch.utils.data import BatchSampler

    frame = sys._getframe(1).f_back
    for _ in range(4):  # past __iter__ (maybe a subclass's over ours) to the caller of iter()
        if frame is None:
            return
        caller = frame.f_locals.get("self")
        if isinstance(caller, BatchSampler) and getattr(caller, "sampler", None) is owner:
            name = type(owner).__name__
            raise TypeError(
                f"{name} is a batch sampler: pass it as "
                "DataLoader(dataset, batch_sampler=sampler), without batch_size or shuffle; "
                "DataLoader(sampler=...) would collect batch_size of its batches into one"
            )
        frame = frame.f_back

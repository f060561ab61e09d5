"""The sampler's resume point at the training loop's own count of batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from ..weighted import DistributedWeightedSampler
from ._common import OurSampler, check_sampler, items_per_batch

__all__ = ["SamplerCheckpoint"]

T = TypeVar("T")


class SamplerCheckpoint:
    """The sampler's resume point at the training loop's own count of batches.

    A ``DataLoader`` with workers (and Accelerate's one-batch look-ahead) draws batches before
    the loop uses them, so the sampler's own count runs ahead. Iterate through
    :meth:`track`; :meth:`state_dict` then describes the batches the loop received (a batch
    counts once the loop body gets it: save after its optimizer step). The state is the
    sampler's own (plain ints and strings): saved at a step boundary, it resumes under any
    world size.

    Example::

        ckpt = SamplerCheckpoint(sampler, batch_size=32)
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            for x, y in ckpt.track(loader):
                ...  # step; at a checkpoint: torch.save({"sampler": ckpt.state_dict(), ...})

    Args:
        sampler: the distsampler sampler feeding the loader.
        batch_size: local batch size; required for a :class:`DistributedWeightedSampler`.
        loader: optional loader with ``set_epoch`` (Accelerate's): :meth:`load_state_dict`
            sets its epoch too, so the loader's own epoch counter cannot reset the resume point.
    """

    def __init__(
        self, sampler: OurSampler, batch_size: int | None = None, loader: Any = None
    ) -> None:
        check_sampler(sampler)
        self.sampler = sampler
        self.loader = loader
        self._items = items_per_batch(sampler, batch_size)
        loader_batch = getattr(loader, "batch_size", None)
        if isinstance(sampler, DistributedWeightedSampler) and loader_batch not in (
            None,
            batch_size,
        ):
            raise ValueError(f"batch_size={batch_size} differs from the loader's {loader_batch}")
        self.steps = 0  # batches the loop received in the pass being tracked
        self._base: dict | None = None  # the sampler's resume point when the pass began
        self._length = 0  # local items of that pass

    def _begin(self) -> None:
        self.steps = 0
        self._base = self.sampler.state_dict(consumed=0)
        self._length = len(self.sampler)

    def track(self, batches: Iterable[T]) -> Iterator[T]:
        """Iterate ``batches`` (one pass of the loader), counting what the loop receives."""
        self._begin()
        for batch in batches:
            if self.steps == 0 and self.sampler.epoch != (self._base or {}).get("epoch"):
                self._begin()  # the loader set another epoch as it started (Accelerate does)
            self.steps += 1
            yield batch

    def state_dict(self) -> dict:
        """The sampler's state after the batches the loop received (plain ints and strings)."""
        if self._base is None or self._base["epoch"] != self.sampler.epoch:
            # no pass of this epoch tracked since creation, load or set_epoch
            start = self.sampler.state_dict(consumed=0)
            if self.sampler.state_dict() != start:
                raise RuntimeError(
                    "the sampler handed out items the loop's count does not know; iterate the "
                    "loader through SamplerCheckpoint.track(loader)"
                )
            return start
        items = self.steps * self._items
        if items >= self._length:  # the pass is over: what the sampler handed out is all used
            return self.sampler.state_dict()
        return self.sampler.state_dict(consumed=items)

    def load_state_dict(self, state: dict) -> None:
        """Restore the sampler (and the loader's epoch); the next pass continues the plan."""
        self.sampler.load_state_dict(state)
        if callable(getattr(self.loader, "set_epoch", None)):
            self.loader.set_epoch(state["epoch"])
        self._base, self.steps, self._length = None, 0, 0

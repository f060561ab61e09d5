"""torchdata: our sampler's state inside ``StatefulDataLoader`` and ``torchdata.nodes`` graphs.

``StatefulDataLoader`` needs nothing else: it snapshots ``sampler.state_dict()`` in the main
process at the moment each batch index is drawn, so prefetching workers are accounted for.

``torchdata.nodes``: build the sampler node with :func:`sampler_node` (or the whole
map-style graph with :func:`map_style_batches`). torchdata's own ``SamplerWrapper(sampler)``
calls ``sampler.set_epoch(0)`` when a fresh graph starts, which drops a state loaded into the
sampler and replays epoch 0 (the sampler warns with ``ResumeDiscardedWarning`` when that
happens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

__all__ = ["find_sampler_state", "map_style_batches", "sampler_node"]

#: The keys of every distsampler state (any sampler of ours, batch samplers included).
_STATE_KEYS = frozenset({"version", "sampler", "config", "epoch", "consumed"})


def find_sampler_state(loader_state: Any) -> dict:
    """Our sampler's state inside a torchdata loader's ``state_dict()``.

    Works on ``StatefulDataLoader.state_dict()`` and on ``torchdata.nodes.Loader.state_dict()``.
    ``StatefulDataLoader.load_state_dict`` restores only under the same ``num_workers`` and
    world size; to continue under another world size, load the state found here into the new
    rank's sampler (``sampler.load_state_dict``) and start a fresh loader. With
    ``torchdata.nodes``, build that fresh graph with :func:`sampler_node` (a plain
    ``SamplerWrapper`` would drop the loaded state), or simply pass the saved state to the new
    ``Loader.load_state_dict`` of a graph built by :func:`map_style_batches`.

    Raises:
        ValueError: no state of ours, or several that differ.
    """
    found = list(_sampler_states(loader_state))
    if not found:
        raise ValueError("loader_state holds no distsampler sampler state")
    if any(f != found[0] for f in found):
        raise ValueError("loader_state holds several different distsampler sampler states")
    return found[0]


def _sampler_states(obj: Any, depth: int = 0) -> Iterator[dict]:
    if not isinstance(obj, dict) or depth > 16:  # nodes graphs nest a level per node
        return
    if isinstance(obj.get("sampler"), str) and set(obj) >= _STATE_KEYS:
        yield obj
        return
    for value in obj.values():
        yield from _sampler_states(value, depth + 1)


def sampler_node(sampler: Any) -> Any:
    """A ``torchdata.nodes.SamplerWrapper`` that starts at ``sampler.epoch``.

    ``SamplerWrapper(sampler)`` starts at ``initial_epoch=0`` and calls
    ``sampler.set_epoch(0)`` when a fresh graph starts: a state loaded into the sampler (for
    instance under another world size) is dropped and epoch 0 replays. This node starts at
    the sampler's own epoch, so a loaded state resumes; later epochs follow as usual (each new
    ``iter(loader)`` moves to the next epoch). With ``Loader.load_state_dict`` the saved
    epoch wins, as in torchdata.

    Args:
        sampler: any distsampler sampler (index or batch sampler); load a state into it first
            if the run resumes.
    """
    from torchdata.nodes import SamplerWrapper

    return SamplerWrapper(sampler, initial_epoch=int(sampler.epoch))


def map_style_batches(
    dataset: Any,
    sampler: Any,
    *,
    batch_size: int | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[list], Any] | None = None,
    num_workers: int = 0,
    method: Literal["thread", "process"] = "thread",
) -> Any:
    """The node graph of a map-style ``DataLoader``: sampler, batches, fetch and collate.

    ``sampler_node(sampler)``, then ``Batcher(batch_size)`` for an index sampler (a batch
    sampler's batches are taken as they are), then the fetch of ``dataset[i]`` for every
    index of a batch and ``collate_fn``, in ``num_workers`` threads or processes, in order,
    with a snapshot of the sampler's state for every batch (``snapshot_frequency=1``). Wrap it
    in ``torchdata.nodes.Loader``; ``loader.state_dict()`` then resumes at the batch after the
    last one handed out, under the same or another world size (``Loader.load_state_dict``
    in the new run, on a graph built by this function).

    Trap: under another world size a state resumes only at a block boundary: give an index
    sampler ``block_size=batch_size``, as for a ``DataLoader``.

    Args:
        dataset: a map-style dataset (``dataset[i]``).
        sampler: a distsampler sampler; an index sampler needs ``batch_size``, a batch sampler
            (quota, bucket, class batches) must not get one.
        batch_size: samples per batch, for an index sampler.
        drop_last: drop the last, short batch of an index sampler (``DataLoader``'s default:
            keep it).
        collate_fn: makes a batch of a list of samples; default ``default_collate``.
        num_workers: fetch batches in this many workers (0: in the calling thread).
        method: workers as ``"thread"`` or ``"process"`` (see ``ParallelMapper``).

    Raises:
        ValueError: ``batch_size`` missing for an index sampler, or given for a batch sampler.
    """
    from torch.utils.data import default_collate
    from torchdata.nodes import Batcher, ParallelMapper

    from .._batch import BatchPlanSampler
    from ..quota import DistributedQuotaBatchSampler

    batches = isinstance(sampler, (BatchPlanSampler, DistributedQuotaBatchSampler))
    if batches and batch_size is not None:
        raise ValueError(
            f"batch_size should be None for {type(sampler).__name__}, which yields whole "
            f"batches, but got batch_size={batch_size!r}"
        )
    if not batches and batch_size is None:
        raise ValueError(
            f"{type(sampler).__name__} yields indices: pass batch_size (the sampler's "
            "block_size, so that a state resumes under another world size)"
        )
    node: Any = sampler_node(sampler)
    if not batches:
        node = Batcher(node, batch_size=batch_size, drop_last=drop_last)
    fetch = _Fetch(dataset, collate_fn or default_collate)
    return ParallelMapper(
        node, fetch, num_workers=num_workers, in_order=True, method=method, snapshot_frequency=1
    )


class _Fetch:
    """``collate_fn([dataset[i] for i in batch])``; a class, so process workers can pickle it."""

    def __init__(self, dataset: Any, collate_fn: Callable[[list], Any]) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn

    def __call__(self, batch: Sequence[int]) -> Any:
        return self.collate_fn([self.dataset[i] for i in batch])

"""torchdata's ``StatefulDataLoader``: our sampler's state inside the loader's snapshot.

``StatefulDataLoader`` needs nothing else: it snapshots ``sampler.state_dict()`` in the main
process at the moment each batch index is drawn, so prefetching workers are accounted for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._common import OUR_SAMPLERS

__all__ = ["find_sampler_state"]


def find_sampler_state(loader_state: Any) -> dict:
    """Our sampler's state inside a torchdata ``StatefulDataLoader.state_dict()``.

    ``StatefulDataLoader.load_state_dict`` restores only under the same ``num_workers`` and world
    size; to continue under another world size, load the state found here into the new rank's
    sampler (``sampler.load_state_dict``) and start a fresh loader.
    """
    found = list(_sampler_states(loader_state))
    if not found:
        raise ValueError("loader_state holds no distsampler sampler state")
    if any(f != found[0] for f in found):
        raise ValueError("loader_state holds several different distsampler sampler states")
    return found[0]


def _sampler_states(obj: Any, depth: int = 0) -> Iterator[dict]:
    names = tuple(cls.__name__ for cls in OUR_SAMPLERS)
    if not isinstance(obj, dict) or depth > 8:
        return
    if obj.get("sampler") in names and {"config", "epoch", "consumed"} <= set(obj):
        yield obj
        return
    for value in obj.values():
        yield from _sampler_states(value, depth + 1)

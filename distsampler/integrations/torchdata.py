"""torchdata's ``StatefulDataLoader``: our sampler's state inside the loader's snapshot.

``StatefulDataLoader`` needs nothing else: it snapshots ``sampler.state_dict()`` in the main
process at the moment each batch index is drawn, so prefetching workers are accounted for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["find_sampler_state"]

#: The keys of every distsampler state (any sampler of ours, batch samplers included).
_STATE_KEYS = frozenset({"version", "sampler", "config", "epoch", "consumed"})


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
    if not isinstance(obj, dict) or depth > 8:
        return
    if isinstance(obj.get("sampler"), str) and set(obj) >= _STATE_KEYS:
        yield obj
        return
    for value in obj.values():
        yield from _sampler_states(value, depth + 1)

"""Compacted share history: a state keeps what later epochs need, not every past update.

Every share update is recorded as ``(run position, shares)``, so a state that kept them all
would grow with the run. A plan of epoch ``e`` or later needs only three things from before
``e``: the shares in force at its start, where each group's member stream stands (the draws of
every earlier epoch), and, for stratified plans, the cut windows whose unserved ranks are still
ahead in some class's stream. A state saved in epoch ``e`` keeps those as its ``origin`` and
only the updates from ``e``'s start on: its size is O(groups x (1 + updates in the epoch)) plus
the pending windows (at most ``STRATUM - 1`` ranks per class and cut not yet drawn past).

The price: a sampler that loaded a compacted state cannot plan the epochs before ``e`` (its
``set_epoch`` and ``indices(epoch=...)`` refuse them, naming ``e``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import check_int

__all__ = ["Origin", "before_origin", "compacted_state", "parse_origin", "parse_updates"]


@dataclass(frozen=True)
class Origin:
    """What a plan of epoch ``epoch`` or later needs from the run before it."""

    epoch: int
    shares: np.ndarray  # in force at the epoch's start (float64; quotas for the quota sampler)
    named: np.ndarray | None = None  # quota sampler: groups spread on their own line
    bases: np.ndarray | None = None  # draws of each group before the epoch (member streams)
    remaps: tuple = ()  # stratified: (class, lo, free ranks) of cut windows, newest first

    def to_state(self) -> dict:
        out: dict[str, Any] = {"epoch": self.epoch, "shares": [float(x) for x in self.shares]}
        if self.named is not None:
            out["named"] = [bool(x) for x in self.named]
        if self.bases is not None:
            out["bases"] = [int(x) for x in self.bases]
        if self.remaps:
            out["remaps"] = [[int(c), int(lo), [int(x) for x in f]] for c, lo, f in self.remaps]
        return out


def before_origin(epoch: int, origin: int) -> ValueError:
    """The error for an epoch before the compacted history's origin."""
    return ValueError(
        f"epoch {epoch} lies before epoch {origin}, where this sampler's share history was "
        "compacted (a loaded state, or set_epoch after many earlier updates, keeps only what "
        "later epochs need), so its plan is unknown"
    )


def compacted_state(
    state: dict, updates: list, loaded: Origin | None, length: int, compact
) -> dict:
    """``state`` with the share history compacted at its epoch: ``origin`` (``compact(epoch)``)
    when updates lie before the epoch's start (or the sampler already has an origin), and the
    updates from that start on (``length``: plan units an epoch)."""
    if not (updates or loaded is not None):
        return state
    epoch = state["epoch"]
    kept = [(run, a) for run, a in updates if run >= epoch * length]
    if len(kept) < len(updates) or loaded is not None:
        state["origin"] = compact(epoch).to_state()
    if kept:
        state["updates"] = [[run, [float(x) for x in a]] for run, a in kept]
    return state


def parse_updates(updates: Any, num: int, what: str) -> list[tuple[int, np.ndarray]]:
    """``state['updates']``: ``[run position, values]`` pairs with one value per group
    (``what`` names the values in messages: ``"shares"``, ``"quotas"``)."""
    parsed = []
    for i, item in enumerate(updates):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"state['updates'][{i}] should be [position, {what}]")
        run = check_int(f"state['updates'][{i}] position", item[0], 0)
        values = np.asarray(item[1], dtype=np.float64)
        if values.shape != (num,):
            raise ValueError(f"state['updates'][{i}] has {values.size} {what}, not one a group")
        parsed.append((run, values))
    return parsed


def _floats(name: str, values: Any, num: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (num,):
        raise ValueError(
            f"{name} should hold {num} numbers, one a group, but has shape {arr.shape}"
        )
    if not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
        raise ValueError(f"{name} should be finite, >= 0 and not all zero")
    return arr


def _ints(name: str, values: Any, num: int | None = None) -> np.ndarray:
    if not isinstance(values, (list, tuple)) or (num is not None and len(values) != num):
        want = f"a list of {num} integers" if num is not None else "a list of integers"
        raise ValueError(f"{name} should be {want}")
    return np.array([check_int(f"{name}[{i}]", v, 0) for i, v in enumerate(values)], np.int64)


def parse_origin(
    value: Any, num: int, state_epoch: int, *, bases: bool, named: bool = False
) -> Origin:
    """Validate ``state['origin']`` for ``num`` groups; ``bases``: the plan needs stream bases
    (cycled members), ``named``: quota flags are expected."""
    if not isinstance(value, dict):
        raise TypeError(f"state['origin'] should be a dict, got {type(value).__name__}")
    epoch = check_int("state['origin']['epoch']", value.get("epoch"), 0, state_epoch)
    shares = _floats("state['origin']['shares']", value.get("shares"), num)
    flags = None
    if named:
        raw = value.get("named")
        if (
            not isinstance(raw, list)
            or len(raw) != num
            or not all(isinstance(x, bool) for x in raw)
        ):
            raise ValueError(f"state['origin']['named'] should be a list of {num} bools")
        flags = np.array(raw, dtype=bool)
    base = _ints("state['origin']['bases']", value.get("bases"), num) if bases else None
    remaps = []
    for i, item in enumerate(value.get("remaps", [])):
        where = f"state['origin']['remaps'][{i}]"
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"{where} should be [class, position, [ranks]]")
        c = check_int(f"{where} class", item[0], 0, num - 1)
        lo = check_int(f"{where} position", item[1], 0)
        free = _ints(f"{where} ranks", item[2])
        if not free.size:
            raise ValueError(f"{where} ranks should not be empty")
        remaps.append((c, lo, free))
    if remaps and not bases:
        raise ValueError("state['origin'] has remaps, but this plan has no member streams")
    return Origin(epoch, shares, flags, base, tuple(remaps))

"""The weight index: per-sample weights prepared for O(1) weighted draws, shareable per node.

Two layouts, chosen by :meth:`WeightIndex.from_weights` from the weights themselves:

* **By value** (few distinct values, e.g. class weights or repeat factors): the samples are
  grouped by weight value (a :class:`~distsampler.groups.GroupIndex`); a draw picks a value
  group by its mass (value x count), then a member uniformly. No cumulative array at all.
* **Cumulative**: float64 cumulative weights and a Chen & Asau guide table (one int32 bucket a
  sample); a draw is an inverse-CDF search started at its bucket, O(1) expected.

Either layout keeps the weights themselves (for sampling without replacement). Everything of
size ``N`` can be saved once and memory-mapped by every rank of a node
(:meth:`WeightIndex.save`, :meth:`WeightIndex.load`): the ranks then share one copy of the pages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._core.checks import check_bool, check_weights
from .groups import GroupIndex, fingerprint

__all__ = ["WeightIndex", "guide_table", "guided_search"]

#: At most this many distinct positive weight values use the by-value layout.
MAX_VALUES = 1 << 12
_CHUNK = 1 << 20
_PROBE = 1 << 20  # weights looked at before deciding the layout
_WALK = 8  # guide-table steps before bisection
_SWEEPS = 2  # of them taken by every value (most need 0 to 2)
_FORMAT = 1


def guide_table(cumulative: np.ndarray) -> tuple[np.ndarray, float]:
    """Chen & Asau's guide table over sorted ``cumulative`` weights, one bucket a sample.

    ``guide[b] <= #(cumulative <= b * step)`` with ``step = total / N``: element ``i`` counts
    from bucket ``ceil(c_i / step) + 1`` on (one bucket late at most, whatever the rounding), so
    a search started at ``guide[b]`` never starts past its answer. One O(N) pass in chunks;
    4 bytes a sample (int32 below 2**31 samples).
    """
    n = len(cumulative)
    step = float(cumulative[-1]) / n
    dtype = np.int32 if n < 2**31 else np.int64
    guide = np.zeros(n + 2, dtype=dtype)
    for lo in range(0, n, _CHUNK):
        k = np.ceil(cumulative[lo : lo + _CHUNK] / step).astype(np.int64) + 1
        np.minimum(k, n + 1, out=k)
        guide[k[0] : k[-1] + 1] += np.bincount(k - k[0]).astype(dtype)  # sorted input: k too
    np.cumsum(guide, out=guide)
    return guide[: n + 1], step


def guided_search(
    cumulative: np.ndarray, guide: np.ndarray, step: float, x: np.ndarray
) -> np.ndarray:
    """``np.searchsorted(cumulative, x, side="right")`` exactly, O(1) expected per value.

    Start at the guide entry of ``x``'s bucket and step right while ``cumulative[i] <= x``: a
    bucket holds about one sample on average whatever the weights (Chen & Asau, 1974). Values
    still walking after ``_WALK`` passes (long runs of zero weights) finish by bisection.
    """
    n, last = len(cumulative), len(cumulative) - 1
    b = np.minimum((x / step).astype(np.int64), len(guide) - 1)
    b -= x < b * step  # rounding: never start past the answer
    i = guide[b].astype(np.int64)
    for _ in range(_SWEEPS):  # whole-array steps: no index arrays while most still walk
        i += cumulative[np.minimum(i, last)] <= x
    np.minimum(i, n, out=i)  # a step from n (x past the last value) stays at n
    todo = np.flatnonzero(cumulative[np.minimum(i, last)] <= x)
    todo = todo[i[todo] < n]
    for _ in range(_WALK - _SWEEPS):
        if not todo.size:
            return i
        i[todo] += 1
        todo = todo[i[todo] < n]
        todo = todo[cumulative[i[todo]] <= x[todo]]
    if todo.size:
        i[todo] = np.searchsorted(cumulative, x[todo], side="right")
    return i


def _distinct_values(weights: np.ndarray) -> np.ndarray | None:
    """The sorted distinct weight values if there are at most ``MAX_VALUES``, else ``None``.

    Probes the first 2**20 weights, then confirms chunk by chunk with a binary search against
    the probe's values, so weights with many values are rejected after one chunk.
    """
    values = np.unique(np.asarray(weights[:_PROBE], dtype=np.float64))
    if len(values) > MAX_VALUES:
        return None
    for lo in range(_PROBE, len(weights), _CHUNK):
        part = np.asarray(weights[lo : lo + _CHUNK], dtype=np.float64)
        at = np.minimum(np.searchsorted(values, part), len(values) - 1)
        new = values[at] != part
        if new.any():
            values = np.union1d(values, part[new])
            if len(values) > MAX_VALUES:
                return None
    return values


class _ValueCodes:
    """The value code of every weight, computed chunk by chunk when sliced (no N-sized array)."""

    def __init__(self, weights: np.ndarray, values: np.ndarray) -> None:
        self.weights, self.values = weights, values

    def __len__(self) -> int:
        return len(self.weights)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.searchsorted(self.values, np.asarray(self.weights[part], dtype=np.float64))


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not objects
class WeightIndex:
    """Per-sample weights prepared for weighted draws (build once, save, map in every rank).

    Attributes:
        weights: the weights (float64; a memory map after :meth:`load` with ``mmap=True``).
        values, groups: by-value layout: the distinct positive values and the samples of
            each (``None`` in the cumulative layout).
        cumulative, guide, step: cumulative layout: float64 running sums, the guide table
            and its bucket width (``None`` in the by-value layout).

    Examples:
        >>> import numpy as np
        >>> index = WeightIndex.from_weights(np.array([1.0, 3.0, 1.0, 0.0]))
        >>> len(index), index.by_value
        (4, True)
    """

    weights: np.ndarray
    values: np.ndarray | None = None
    groups: GroupIndex | None = None
    cumulative: np.ndarray | None = None
    guide: np.ndarray | None = None
    step: float = 0.0

    def __len__(self) -> int:
        return len(self.weights)

    @property
    def by_value(self) -> bool:
        """Whether draws go class-first through the value groups (few distinct values)."""
        return self.groups is not None

    @property
    def positive(self) -> int:
        """Number of samples with a positive weight."""
        if self.groups is not None:
            return int(self.groups.offsets[-1])
        w = self.weights
        return sum(int(np.count_nonzero(w[lo : lo + _CHUNK])) for lo in range(0, len(w), _CHUNK))

    def fingerprint(self) -> str:
        """A short digest of the weights (identifies the data in a sampler's state)."""
        return fingerprint(self.weights)

    @classmethod
    def from_weights(cls, weights: Any) -> WeightIndex:
        """Validate ``weights`` (finite, >= 0, one positive) and build the index.

        ``weights``: a sequence, array, tensor or ``.npy`` path (memory-mapped). Few distinct
        values (at most 4096) give the by-value layout, others the cumulative layout.
        """
        w = check_weights(weights)
        if w.dtype != np.float64:
            w = w.astype(np.float64)
        values = _distinct_values(w)
        if values is not None:
            index = GroupIndex.from_codes(_ValueCodes(w, values), list(range(len(values))))
            # Values are sorted and >= 0: only the first can be 0; its members lead the array.
            z = int(values[0] == 0)
            members, offsets = index.members[index.offsets[z] :], index.offsets[z:]
            groups = GroupIndex(
                tuple(range(len(values) - z)), members, offsets - offsets[0], num_samples=len(w)
            )
            return cls(w, values=values[z:], groups=groups)
        cumulative = np.cumsum(w, dtype=np.float64)
        guide, step = guide_table(cumulative)
        return cls(w, cumulative=cumulative, guide=guide, step=step)

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the index as ``.npy`` files and a ``meta.json`` (no pickles).

        Build and save once per node (on local rank 0), wait at a barrier, then
        :meth:`load` with ``mmap=True`` in every rank.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "weights.npy", np.asarray(self.weights))
        meta: dict[str, Any] = {"format": _FORMAT, "by_value": self.by_value}
        if self.groups is not None:
            np.save(d / "values.npy", self.values)
            self.groups.save(d / "groups")
        else:
            np.save(d / "cumulative.npy", self.cumulative)
            np.save(d / "guide.npy", self.guide)
            meta["step"] = float(self.step).hex()
        (d / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> WeightIndex:
        """Load a saved index; ``mmap=True`` maps every array of size ``N`` (shared pages)."""
        d = Path(directory)
        mode = "r" if check_bool("mmap", mmap) else None
        meta = json.loads((d / "meta.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{str(d)!r} holds a weight index of another format: {meta!r}")

        def arr(name: str) -> np.ndarray:
            return np.load(d / f"{name}.npy", mmap_mode=mode, allow_pickle=False)

        if meta["by_value"]:
            groups = GroupIndex.load(d / "groups", mmap=mmap)
            return cls(arr("weights"), values=np.load(d / "values.npy"), groups=groups)
        return cls(
            arr("weights"),
            cumulative=arr("cumulative"),
            guide=arr("guide"),
            step=float.fromhex(meta["step"]),
        )

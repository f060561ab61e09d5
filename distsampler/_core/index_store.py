"""The storage every plan reads: group members and weight draw tables (no building, no files).

The engine's view of an index, kept below the public layer so ``_core`` depends on nothing
above it:

* :class:`GroupStore`: the members of each group in one array, group ``g`` at
  ``members[offsets[g]:offsets[g + 1]]`` (or implicit ranges when ``members`` is ``None``),
  read through :meth:`GroupStore.member`.
* :class:`WeightStore`: per-sample weights with either value groups (a :class:`GroupStore`)
  or float64 cumulative weights and a guide table, searched by :func:`guided_search`.

The public :class:`~distsampler.GroupIndex` and :class:`~distsampler.WeightIndex` subclass
these and add the builders and :meth:`~distsampler.GroupIndex.save` /
:meth:`~distsampler.GroupIndex.load`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import MAX_SIZE, check_int

__all__ = ["GroupStore", "WeightStore", "fingerprint", "guide_table", "guided_search"]

_FINGERPRINT_SAMPLES = 1 << 20
_CHUNK = 1 << 20
_WALK = 8  # guide-table steps before bisection
_SWEEPS = 2  # of them taken by every value (most need 0 to 2)


def fingerprint(arr: np.ndarray) -> str:
    """A short digest of an array: its length, dtype and up to 2**20 evenly spaced entries.

    Cheap at 1e8 entries (also memory-mapped: it reads 2**20 of them); catches a different
    dataset, not a single flipped label.
    """
    step = max(1, len(arr) // _FINGERPRINT_SAMPLES)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{len(arr)}:{arr.dtype.str}".encode())
    h.update(np.ascontiguousarray(arr[::step]).data)  # the buffer itself: no second copy
    return h.hexdigest()


def plain(name: Hashable) -> Any:
    """A group name as JSON can hold it (numpy ints become ints)."""
    return int(name) if isinstance(name, np.integer) else name


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not objects
class GroupStore:
    """Members of each group of a dataset of ``num_samples`` samples (see GroupIndex)."""

    names: tuple[Hashable, ...]
    members: np.ndarray | None
    offsets: np.ndarray
    num_samples: int = -1
    multilabel: bool = False

    def __post_init__(self) -> None:
        offsets = np.asarray(self.offsets, dtype=np.int64)
        object.__setattr__(self, "offsets", offsets)
        if offsets.ndim != 1 or len(offsets) != len(self.names) + 1 or offsets[0] != 0:
            raise ValueError(
                f"offsets should be {len(self.names) + 1} boundaries starting at 0, "
                f"but got shape {offsets.shape}"
            )
        if (np.diff(offsets) < 0).any():
            raise ValueError("offsets should be non-decreasing")
        total = int(offsets[-1])
        if self.num_samples == -1:
            object.__setattr__(self, "num_samples", total)
        n = check_int("num_samples", self.num_samples, 1, MAX_SIZE)
        if self.members is None and total != n:
            raise ValueError(f"a range index covers {total} samples, not num_samples={n}")
        if self.members is not None and len(self.members) != total:
            raise ValueError(f"members has {len(self.members)} entries, offsets say {total}")

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    @property
    def sizes(self) -> np.ndarray:
        """Members per group (with label sets: samples *containing* the group), int64."""
        return np.diff(self.offsets)

    @property
    def is_range(self) -> bool:
        """Groups are contiguous ranges with no stored member array (``from_sizes``)."""
        return self.members is None

    def member(self, groups: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Member ``j`` of group ``groups`` (arrays, broadcast), as int64 dataset indices.

        The one accessor every plan uses: stored and range indices give the same answer.
        """
        at = self.offsets[groups] + j
        if self.members is None:
            return np.asarray(at, dtype=np.int64)
        return self.members[at].astype(np.int64)

    def group(self, g: int) -> np.ndarray:
        """All members of group ``g`` (for a range index, a fresh ``arange``)."""
        lo, hi = int(self.offsets[g]), int(self.offsets[g + 1])
        if self.members is None:
            return np.arange(lo, hi, dtype=np.int64)
        return self.members[lo:hi]

    def code(self, name: Hashable, argument: str) -> int:
        """Group id of ``name``; a clear error naming ``argument`` if there is no such group."""
        try:
            return self._codes[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"{argument} names group {name!r}, which has no members; "
                f"the groups are {list(self.names)[:20]}"
            ) from None

    @functools.cached_property  # built once: a lookup per name, not a dict per lookup
    def _codes(self) -> dict[Hashable, int]:
        return {n: i for i, n in enumerate(self.names)}

    def fingerprint(self) -> str:
        """A short digest of the groups (names, sizes, sampled members and ``N``)."""
        h = hashlib.blake2b(digest_size=8)
        h.update(json.dumps([plain(n) for n in self.names]).encode())
        h.update(self.offsets.tobytes())
        h.update(f"{self.num_samples}:{self.multilabel}".encode())
        if self.members is not None:
            h.update(fingerprint(self.members).encode())
        return h.hexdigest()


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


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not objects
class WeightStore:
    """Per-sample weights prepared for weighted draws (see WeightIndex)."""

    weights: np.ndarray
    values: np.ndarray | None = None
    groups: GroupStore | None = None
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

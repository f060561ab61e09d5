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

import os
from typing import Any

import numpy as np

from ._core import index_files as files
from ._core.checks import check_bool, check_weights
from ._core.index_store import WeightStore, guide_table, guided_search
from .groups import GroupIndex

__all__ = ["WeightIndex", "guide_table", "guided_search"]

#: At most this many distinct positive weight values use the by-value layout.
MAX_VALUES = 1 << 12
_CHUNK = 1 << 20
_PROBE = 1 << 20  # weights looked at before deciding the layout
_FORMAT = 2  # 1: distsampler 0.2 (no manifest)


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


class WeightIndex(WeightStore):
    """Per-sample weights prepared for weighted draws (build once, save, map in every rank).

    Attributes:
        weights: the weights (float64; a memory map after :meth:`load` with ``mmap=True``).
        values, groups: by-value layout: the distinct positive values and the samples of
            each (``None`` in the cumulative layout).
        cumulative, guide, step: cumulative layout: float64 running sums, the guide table
            and its bucket width (``None`` in the by-value layout).

    ``by_value``, ``positive`` and ``fingerprint()`` come from the engine's storage type,
    which this class extends with the builder and the files.

    Examples:
        >>> import numpy as np
        >>> index = WeightIndex.from_weights(np.array([1.0, 3.0, 1.0, 0.0]))
        >>> len(index), index.by_value
        (4, True)
    """

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
            codes: Any = _ValueCodes(w, values)  # sliced like an array, chunk by chunk
            index = GroupIndex.from_codes(codes, list(range(len(values))))
            assert index.members is not None
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
        """Write the index atomically: ``.npy`` files and ``meta.json``, ``manifest.json`` last.

        As :meth:`GroupIndex.save <distsampler.GroupIndex.save>`: written beside
        ``directory`` and renamed into place, replacing an earlier save whole. Build and save
        once per node (on local rank 0), wait at a barrier, then :meth:`load` with
        ``mmap=True`` in every rank.
        """
        arrays: dict[str, np.ndarray] = {"weights": np.asarray(self.weights)}
        meta: dict[str, Any] = {"format": _FORMAT, "by_value": self.by_value}
        if self.groups is not None:
            arrays["values"] = np.asarray(self.values)
            arrays["offsets"] = self.groups.offsets
            assert self.groups.members is not None
            arrays["members"] = self.groups.members
        else:
            arrays["cumulative"] = np.asarray(self.cumulative)
            arrays["guide"] = np.asarray(self.guide)
            meta["step"] = float(self.step).hex()
        files.write_index(directory, "WeightIndex", arrays, {"meta": meta})

    @classmethod
    def load(
        cls, directory: str | os.PathLike, mmap: bool = True, *, verify: bool = True
    ) -> WeightIndex:
        """Load a saved index, checking it first: files are inputs.

        Refuses with a ``ValueError`` naming the file: a save that did not finish or one by
        distsampler 0.2 (no ``manifest.json``), files of two saves, truncated files, wrong
        dtypes, weights that are NaN, infinite or negative, value groups whose members leave
        ``[0, N)``, cumulative weights that decrease, guide entries outside ``[0, N]``.

        Args:
            directory: the directory :meth:`save` wrote.
            mmap: memory-map every array of size ``N`` (the ranks of a node share the pages).
            verify: also compare a CRC-32 of every file with the one its save wrote.
        """
        mmap = check_bool("mmap", mmap)
        verify = check_bool("verify", verify)
        d, table = files.read_manifest(directory, "WeightIndex")
        meta_file = str(d / "meta.json")

        def same_format(meta: Any) -> None:
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise ValueError(f"{meta_file!r} holds a weight index of another format: {meta!r}")

        meta = files.read_document(table, d, "meta.json", same_format)
        by_value = meta.get("by_value")
        if not isinstance(by_value, bool):
            raise ValueError(f"{meta_file!r}: by_value should be a boolean, got {by_value!r}")

        def arr(name: str, kinds: str = "f", mapped: bool = mmap) -> np.ndarray:
            return files.read_array(table, d, f"{name}.npy", kinds, mapped, verify)

        weights = arr("weights")
        n = len(weights)
        if n == 0:
            raise ValueError(f"{str(d / 'weights.npy')!r} holds no weight")
        files.check_finite_nonnegative(d / "weights.npy", weights)
        if by_value:
            values = arr("values", mapped=False)
            files.check_finite_nonnegative(d / "values.npy", values, positive=True)
            if (np.diff(values) <= 0).any():
                raise ValueError(f"{str(d / 'values.npy')!r} should be increasing")
            groups = GroupIndex._checked(
                d, range(len(values)), arr("members", "i"), arr("offsets", "i", False), n, False
            )
            return cls(weights, values=values, groups=groups)
        step = meta.get("step")
        try:
            step = float.fromhex(step)
        except (TypeError, ValueError):
            raise ValueError(
                f"{meta_file!r}: step should be a float in hex, got {step!r}"
            ) from None
        cumulative, guide = arr("cumulative"), arr("guide", "i")
        if len(cumulative) != n or len(guide) != n + 1:
            raise ValueError(
                f"{str(d)!r}: cumulative and guide should hold {n} and {n + 1} entries "
                f"(one a weight), but hold {len(cumulative)} and {len(guide)}"
            )
        files.check_nondecreasing(d / "cumulative.npy", cumulative, 0.0, np.inf)
        if not (np.isfinite(cumulative[-1]) and cumulative[-1] > 0):
            raise ValueError(f"{str(d / 'cumulative.npy')!r} should end at a positive total")
        files.check_nondecreasing(d / "guide.npy", guide, 0, n)
        if not (np.isfinite(step) and step > 0):
            raise ValueError(f"{meta_file!r}: step should be positive, got {step!r}")
        return cls(weights, cumulative=cumulative, guide=guide, step=step)

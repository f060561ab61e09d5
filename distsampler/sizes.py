"""Per-sample sizes for bucketing: checked, memory-mappable, never computed from the samples.

A size is what makes a batch pad: tokens or frames (one int or float per sample), or
``(height, width)`` for images (an ``(N, 2)`` array, bucketed by aspect ratio). Sizes come from
metadata, never from iterating the dataset:

* a ``.npy`` file (memory-mapped: every rank shares the page cache, nothing copied);
* :func:`from_hf_dataset`: a length column (or the lengths of a token-id column) of a Hugging
  Face ``datasets.Dataset``, read through its Arrow table when it has one;
* :func:`distsampler.coco.image_sizes` (or ``groups.from_coco(..., with_sizes=True)``): the
  ``height``/``width`` of a COCO file's images, in the order of its ``images`` list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._core.checks import MAX_SIZE

__all__ = ["COSTS", "CostSizes", "check_sizes", "from_hf_dataset", "max_size", "resolve_cost"]

#: Named per-sample costs of a token-budget batch: a batch of ``n`` samples padded to its
#: largest size ``s`` costs ``n * cost(s)``. ``"tokens"``: padded tokens (``s``);
#: ``"quadratic"``: attention scores of the padded batch (``s * s``, memory of full attention).
COSTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tokens": lambda s: s,
    "quadratic": lambda s: s * s,
}


def resolve_cost(
    cost: str | Callable[[np.ndarray], np.ndarray], sample: np.ndarray
) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """``(name, function)`` of a ``cost=`` argument, checked on ``sample`` sizes.

    A callable maps an array of sizes to per-sample costs: vectorised, finite, > 0 and
    non-decreasing in the size (so the largest sample of a batch is also its costliest); it
    is checked on the given sizes. Trap: a state records a callable by its qualified name
    only, so a changed body under the same name is not detected.
    """
    if isinstance(cost, str):
        if cost not in COSTS:
            raise ValueError(f"cost should be one of {sorted(COSTS)} or a callable, got {cost!r}")
        return cost, COSTS[cost]
    if not callable(cost):
        raise TypeError(f"cost should be a name or a callable, but got cost={cost!r}")
    x = np.unique(np.asarray(sample, dtype=np.float64))
    y = np.asarray(cost(x), dtype=np.float64)
    if y.shape != x.shape or not np.isfinite(y).all() or (y <= 0).any():
        raise ValueError("cost should map sizes to finite costs > 0, one per size")
    if (np.diff(y) < 0).any():
        raise ValueError("cost should be non-decreasing in the size")
    return f"callable:{getattr(cost, '__qualname__', type(cost).__name__)}", cost


class CostSizes:
    """``sizes`` seen in cost units: ``view[idx]`` is ``cost(sizes[idx])``, computed per read.

    Lazy, so memory-mapped sizes stay mapped (no ``N``-sized array of costs is built).
    """

    def __init__(self, sizes: np.ndarray, cost: Callable[[np.ndarray], np.ndarray]) -> None:
        self.sizes, self.cost = sizes, cost
        self.shape, self.ndim = sizes.shape, sizes.ndim

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.cost(np.asarray(self.sizes[idx])))


_CHUNK = 1 << 22


def check_sizes(sizes: Any, dataset_size: int | None = None, name: str = "sizes") -> np.ndarray:
    """``sizes`` as a ``(N,)`` or ``(N, 2)`` real array (a mapped file stays mapped), checked.

    Every size must be finite and > 0 (a zero-length sample pads a batch to nothing and usually
    means a broken row), and ``N`` must equal ``dataset_size`` when given. Scanned in chunks:
    a memory-mapped array of 1e8 sizes is checked without an ``N``-sized temporary.
    """
    if isinstance(sizes, (str, os.PathLike)):
        path = Path(sizes)
        if path.suffix != ".npy":
            raise ValueError(f"{name} should be a .npy file path, but got {name}={str(path)!r}")
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file: {str(path)!r}")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    elif hasattr(sizes, "detach") and hasattr(sizes, "cpu"):  # torch.Tensor
        arr = sizes.detach().cpu().numpy()
    else:
        arr = np.asarray(sizes)
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 2):
        raise ValueError(
            f"{name} should be one size per sample (N,) or (height, width) pairs (N, 2), "
            f"but got shape {tuple(arr.shape)}"
        )
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} should hold integers or floats, but got dtype {arr.dtype}")
    n = len(arr)
    if n == 0:
        raise ValueError(f"{name} should not be empty")
    if n > MAX_SIZE:
        raise ValueError(f"{name} should have at most {MAX_SIZE} entries, but got {n}")
    if dataset_size is not None and n != dataset_size:
        raise ValueError(
            f"len({name}) should equal the source's dataset size {dataset_size}, but got "
            f"len({name})={n}: one size per sample, in the dataset's order"
        )
    for lo in range(0, n, _CHUNK):
        part = np.asarray(arr[lo : lo + _CHUNK])
        bad = ~(part > 0) if part.dtype.kind == "f" else part <= 0  # NaN fails `> 0`
        if part.dtype.kind == "f":
            bad |= ~np.isfinite(part)
        if bad.any():
            flat = int(np.flatnonzero(bad.reshape(len(part), -1).any(axis=1))[0])
            value = part[flat].tolist()
            raise ValueError(
                f"{name} should be finite and > 0, but got {name}[{lo + flat}]={value!r}"
            )
    return arr


def max_size(sizes: np.ndarray) -> tuple[int, float]:
    """``(index, size)`` of the largest 1-D size (first on ties), in chunks."""
    best_i, best = 0, -np.inf
    for lo in range(0, len(sizes), _CHUNK):
        part = np.asarray(sizes[lo : lo + _CHUNK])
        i = int(np.argmax(part))
        if part[i] > best:
            best_i, best = lo + i, part[i].item()
    return best_i, best


def from_hf_dataset(dataset: Any, column: str = "input_ids") -> np.ndarray:
    """Sizes from a Hugging Face ``datasets.Dataset`` column, in the dataset's order.

    A column of numbers (a precomputed length, a duration) is taken as is; a column of
    sequences (token ids) gives their lengths, computed by Arrow when the dataset has an Arrow
    table (no Python object per row), else from the column's values. ``datasets`` is not a
    dependency: any object with ``column_names`` and ``dataset[column]`` works.

    Examples:
        >>> class Rows:  # stands for a datasets.Dataset
        ...     column_names = ["input_ids"]
        ...     def __getitem__(self, col): return [[1, 2, 3], [4], [5, 6]]
        >>> from_hf_dataset(Rows()).tolist()
        [3, 1, 2]
    """
    names = getattr(dataset, "column_names", None)
    if names is not None and column not in names:
        raise ValueError(
            f"column should be a column of the dataset, but got column={column!r}; "
            f"it has {list(names)}"
        )
    table = getattr(getattr(dataset, "data", None), "table", None)
    if table is not None and getattr(dataset, "_indices", None) is None:
        try:
            import pyarrow as pa
            import pyarrow.compute as pc

            col = table.column(column)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                return np.asarray(pc.list_value_length(col).to_numpy(), dtype=np.int64)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                return np.asarray(col.to_numpy())
        except (ImportError, KeyError, AttributeError):
            pass
    values = dataset[column]
    first = next(iter(values), None)
    if first is None:
        raise ValueError(f"column={column!r} is empty")
    if isinstance(first, (int, float, np.integer, np.floating)) and not isinstance(first, bool):
        return np.asarray(values)
    return np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))

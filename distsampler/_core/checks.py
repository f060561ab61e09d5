"""Argument validation. One rule: wrong type -> ``TypeError``, wrong value -> ``ValueError``.

Messages follow ``torch.utils.data.sampler``: ``"num_samples should be a positive integer, but
got num_samples=-3"``. ``bool`` is never accepted where a number is meant (``True`` is an int
to Python, never to a user).

Sizes are bounded by :data:`MAX_SIZE` (``2**62``): plan arithmetic is int64, and a bound one bit
below its limit leaves room for ``position + size`` without overflow. A size above it is refused
here, at construction, instead of overflowing inside numpy during iteration.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_SEED",
    "MAX_SIZE",
    "as_array",
    "check_bool",
    "check_int",
    "check_real",
    "check_weights",
]

#: Largest count, position or size the int64 plan arithmetic accepts.
MAX_SIZE = 1 << 62
#: Seeds are any non-negative int that fits 63 bits (they become key material, never sizes).
MAX_SEED = (1 << 63) - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_int(name: str, value: Any, minimum: int = 0, maximum: int = MAX_SIZE) -> int:
    """``value`` as an int in ``[minimum, maximum]``; rejects bools, floats and other types."""
    if not _is_int(value):
        raise TypeError(f"{name} should be an integer, but got {name}={value!r}")
    if value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ValueError(f"{name} should be {what}, but got {name}={value!r}")
    if value > maximum:
        raise ValueError(f"{name} should be at most {maximum}, but got {name}={value!r}")
    return int(value)


def check_dataset_size(dataset_size: Any, indexed: int) -> None:
    """``dataset_size=len(dataset)`` given by a user must equal the samples a sampler indexes.

    ``None`` (not given) passes. The trap it catches: labels shorter than the dataset silently
    sample only its first ``len(labels)`` samples with a plain ``DataLoader``.
    """
    if dataset_size is None:
        return
    given = check_int("dataset_size", dataset_size, 1)
    if given != indexed:
        raise ValueError(
            f"dataset_size={given}, but the sampler indexes {indexed} samples (one label, "
            f"weight or size per sample); they must be equal: with fewer the dataset's tail is "
            f"never drawn, with more the sampler yields indices past the dataset's end"
        )


def share_array(shares: Any, num: int, what: str) -> np.ndarray:
    """An array of ``num`` shares (a tensor, an array or a sequence) normalised to sum to 1.

    Finite and ``>= 0`` with a positive entry; ``what`` names an entry in the message
    (``"group"``, ``"class"``).
    """
    arr = np.asarray(
        shares.detach().cpu() if hasattr(shares, "detach") else shares, dtype=np.float64
    )
    if arr.shape != (num,):
        raise ValueError(
            f"shares should have one entry per {what} ({num}), but got shape {arr.shape}"
        )
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"shares should be finite and >= 0, but got shares={arr!r}")
    if arr.sum() <= 0:
        raise ValueError("shares should have a positive entry, but all are zero")
    return arr / arr.sum()


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool; only ``bool`` and ``numpy.bool_`` are booleans."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} should be a boolean value, but got {name}={value!r}")
    return bool(value)


def check_real(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval (open or closed at each end)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"{name} should be a real number, but got {name}={value!r}")
    x = float(value)
    too_low = x <= low if low_open else x < low
    too_high = x >= high if high_open else x > high
    if not math.isfinite(x) or too_low or too_high:
        left = "(" if low_open or low == -math.inf else "["
        right = ")" if high_open or high == math.inf else "]"
        raise ValueError(
            f"{name} should be in {left}{low:g}, {high:g}{right}, but got {name}={value!r}"
        )
    return x


def as_array(values: Any, name: str) -> np.ndarray:
    """A 1-D numpy view of a sequence, array, tensor or ``.npy`` path (memory-mapped).

    A ``.npy`` file is opened with ``mmap_mode="r"`` and ``allow_pickle=False``: nothing is
    copied into private memory and nothing is ever unpickled.
    """
    if isinstance(values, (str, os.PathLike)):
        path = Path(values)
        if path.suffix != ".npy":
            raise ValueError(f"{name} should be a .npy file path, but got {name}={str(path)!r}")
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file: {str(path)!r}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:  # object arrays need pickle, which is never used
            raise ValueError(
                f"{name}: {str(path)!r} holds Python objects, which would need unpickling; "
                f"save plain integers or strings ({err})"
            ) from None
    elif hasattr(values, "detach") and hasattr(values, "cpu"):  # torch.Tensor
        arr = values.detach().cpu().numpy()
    else:
        arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} should be one-dimensional, but got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise ValueError(f"{name} should not be empty")
    if arr.size > MAX_SIZE:
        raise ValueError(f"{name} should have at most {MAX_SIZE} entries, but got {arr.size}")
    return arr


_CHUNK = 1 << 22


def check_weights(weights: Any, name: str = "weights") -> np.ndarray:
    """Per-sample weights as a 1-D real array (a mapped file stays mapped): finite, >= 0, not all 0.

    Scanned in chunks, so a memory-mapped array of 1e8 weights is checked without an N-sized
    temporary.
    """
    arr = as_array(weights, name)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} should hold real numbers, but got dtype {arr.dtype}")
    positive = False
    for lo in range(0, len(arr), _CHUNK):
        part = np.asarray(arr[lo : lo + _CHUNK], dtype=np.float64)
        bad = ~np.isfinite(part) | (part < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "finite" if not np.isfinite(part[i]) else ">= 0"
            raise ValueError(f"{name} should be {what}, but got {name}[{lo + i}]={part[i]}")
        positive = positive or bool((part > 0).any())
    if not positive:
        raise ValueError(f"{name} should have a positive entry, but all {name} are zero")
    return arr

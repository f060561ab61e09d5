"""Argument types shared by the public API (for annotations only; nothing here runs)."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

if TYPE_CHECKING:
    import torch

    from .groups import GroupIndex
    from .weight_index import WeightIndex

__all__ = ["ClassWeightsLike", "LabelsLike", "WeightsLike"]

#: One label per sample: a sequence, an array or tensor, a ``.npy`` path (memory-mapped), or a
#: prepared `GroupIndex` (label sets, ranges).
LabelsLike = Union[Sequence[Hashable], np.ndarray, "torch.Tensor", str, os.PathLike, "GroupIndex"]
#: One non-negative weight per sample: a sequence, an array or tensor, a ``.npy`` path, or a
#: prepared `WeightIndex`.
WeightsLike = Union[Sequence[float], np.ndarray, "torch.Tensor", str, os.PathLike, "WeightIndex"]
#: A class weighting: ``"balanced"``, ``"sqrt"``, ``"instance"``, a mapping class -> per-sample
#: weight, or a strategy ``(counts, epoch) -> weights`` from `distsampler.weights`.
ClassWeightsLike = str | Mapping[Hashable, float] | Callable[..., np.ndarray]

"""Class weighting strategies: from class sizes to a per-sample weight for each class.

As in ``torch.utils.data.WeightedRandomSampler``, a class weight ``w_c`` is the weight of *each
sample* of class ``c``; the share of draws class ``c`` receives is ``w_c * n_c / sum(w * n)``.
Every strategy is a callable ``strategy(counts, epoch) -> weights`` (numpy arrays, one entry per
class in the label index's order), so it can be passed as ``class_weights=`` of
:class:`distsampler.DistributedWeightedSampler`. Strategies with ``epoch_dependent = True``
change with ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ClassWeighting",
    "TargetShares",
    "Temperature",
    "balanced",
    "class_weights_from_shares",
    "resolve",
    "sqrt_frequency",
    "target_shares",
]

ClassWeighting = Callable[[np.ndarray, int], np.ndarray]


def balanced(counts: np.ndarray, epoch: int = 0) -> np.ndarray:
    """Inverse frequency ``1 / n_c``: every class receives the same share of the draws."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)


@dataclass(frozen=True)
class Temperature:
    """Share proportional to ``n_c ** (1 / T)``: T = 1 is the data's own mix, T -> inf balanced.

    ``T = 2`` is square-root sampling (Mahajan et al., 2018), a common middle ground.
    """

    temperature: float = 2.0
    epoch_dependent = False

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
            raise ValueError(f"temperature should be a positive number, but got temperature={t!r}")

    def __call__(self, counts: np.ndarray, epoch: int = 0) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        share = counts ** (1.0 / self.temperature)
        return np.divide(share, counts, out=np.zeros_like(counts), where=counts > 0)


sqrt_frequency = Temperature(2.0)


@dataclass(frozen=True)
class TargetShares:
    """Fixed target shares per class name, e.g. ``{"camry": 0.3, "crown": 0.7}``.

    Shares need not sum to 1 (they are normalised); classes not named get share 0.
    """

    shares: Mapping[Hashable, float]
    names: tuple[Hashable, ...] = ()
    epoch_dependent = False

    def __post_init__(self) -> None:
        _check_mapping("shares", self.shares)

    def bind(self, names: tuple[Hashable, ...]) -> TargetShares:
        unknown = [k for k in self.shares if k not in names]
        if unknown:
            raise ValueError(
                f"class_weights names classes {unknown!r} that are not in the labels "
                f"(classes: {list(names)[:20]})"
            )
        return TargetShares(self.shares, tuple(names))

    def __call__(self, counts: np.ndarray, epoch: int = 0) -> np.ndarray:
        if len(self.names) != len(counts):
            raise RuntimeError("TargetShares must be bound to the class names first")
        share = np.array([float(self.shares.get(n, 0.0)) for n in self.names])
        counts = np.asarray(counts, dtype=np.float64)
        return np.divide(share, counts, out=np.zeros_like(counts), where=counts > 0)


def target_shares(shares: Mapping[Hashable, float]) -> TargetShares:
    """A strategy giving each named class its target share of the draws."""
    return TargetShares(dict(shares))


def class_weights_from_shares(shares: Mapping[Hashable, float], labels) -> dict:
    """Per-sample class weights (torch convention) that realise the target ``shares``.

    ``class_weights_from_shares({"camry": 0.3, "crown": 0.7}, labels)`` returns
    ``{"camry": 0.3 / n_camry, "crown": 0.7 / n_crown}``, usable as ``class_weights=`` here or
    to build ``WeightedRandomSampler`` weights.
    """
    from .groups import GroupIndex

    index = GroupIndex.from_labels(labels)
    w = target_shares(shares).bind(index.names)(index.sizes)
    return {n: float(x) for n, x in zip(index.names, w, strict=True) if n in shares}


def _check_mapping(name: str, mapping: Mapping) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise TypeError(f"{name} should be a non-empty mapping, but got {name}={mapping!r}")
    for k, v in mapping.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}[{k!r}] should be a number, but got {v!r}")
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}[{k!r}] should be finite and >= 0, but got {v!r}")
    if sum(float(v) for v in mapping.values()) <= 0:
        raise ValueError(f"{name} should have a positive entry, but all are zero")


_NAMED: dict[str, ClassWeighting] = {"balanced": balanced, "sqrt": sqrt_frequency}


def resolve(spec, names: tuple[Hashable, ...]) -> ClassWeighting:
    """The strategy for a ``class_weights=`` argument bound to the label index's class names.

    Accepts ``"balanced"``, ``"sqrt"``, a mapping class -> per-sample weight (classes not named
    are an error), or any callable ``(counts, epoch) -> weights``.
    """
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(
                f"class_weights should be one of {sorted(_NAMED)}, a mapping or a callable, "
                f"but got class_weights={spec!r}"
            )
        return _NAMED[spec]
    if isinstance(spec, Mapping):
        _check_mapping("class_weights", spec)
        missing = [n for n in names if n not in spec]
        unknown = [k for k in spec if k not in names]
        if unknown:
            raise ValueError(f"class_weights names classes {unknown!r} that are not in the labels")
        if missing:
            raise ValueError(
                f"class_weights has no weight for classes {missing[:10]!r}; give every class a "
                "weight (0 excludes it) or use weights.target_shares(...)"
            )
        w = np.array([float(spec[n]) for n in names])
        return lambda counts, epoch=0: w
    if isinstance(spec, TargetShares):
        return spec.bind(names)
    if callable(spec):
        bind = getattr(spec, "bind", None)
        return bind(names) if callable(bind) else spec
    raise TypeError(
        f"class_weights should be a string, a mapping or a callable, but got {type(spec).__name__}"
    )


def class_shares(strategy: ClassWeighting, counts: np.ndarray, epoch: int) -> np.ndarray:
    """Normalised share of draws per class under ``strategy``, validated."""
    w = np.asarray(strategy(counts, epoch), dtype=np.float64)
    if w.shape != counts.shape:
        raise ValueError(f"class_weights returned shape {w.shape}, expected {counts.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("class_weights should be finite and >= 0 for every class")
    mass = w * counts
    total = mass.sum()
    if total <= 0:
        raise ValueError("class_weights give every class zero weight")
    return mass / total

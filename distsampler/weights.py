"""Class weighting strategies: from class sizes to a per-sample weight for each class.

As in ``torch.utils.data.WeightedRandomSampler``, a class weight ``w_c`` is the weight of *each
sample* of class ``c``; the share of draws class ``c`` receives is ``w_c * n_c / sum(w * n)``.
Every strategy is a callable ``strategy(counts, epoch) -> weights`` (numpy arrays, one entry per
class in the label index's order), so it can be passed as ``class_weights=`` of
:class:`distsampler.DistributedWeightedSampler`. Strategies with ``epoch_dependent = True``
change with ``set_epoch``; strategies with a ``bind(names)`` method are bound to the class names
first.

=========================  ==========================================  =========================
strategy                   share of draws of class ``c`` (size n_c)    source
=========================  ==========================================  =========================
:func:`instance`           ``n_c`` (the data's own mix)                instance-balanced sampling
:func:`balanced`           equal                                       class-balanced sampling
:class:`Temperature`       ``n_c ** (1 / T)``                          Arivazhagan et al., 2019
:data:`sqrt_frequency`     ``sqrt(n_c)``                               Mahajan et al., 2018
:class:`EffectiveNumber`   ``n_c (1 - beta) / (1 - beta ** n_c)``      Cui et al., 2019
:class:`Progressive`       instance -> balanced over ``T`` epochs      Kang et al., 2020
:class:`StepSchedule`      shares by run position (steps, optional ramp)  e.g. deferred re-balancing
:func:`target_shares`      fixed shares by class name
:func:`repeat_factors`     per-*image* weights for multi-label data    Gupta et al., 2019 (LVIS)
=========================  ==========================================  =========================

``repeat_factors`` returns per-sample weights (``weights=`` of the sampler), not class weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from ._core.checks import check_real
from ._types import ClassWeightsLike, LabelsLike
from .groups import _label_lists

__all__ = [
    "ClassWeighting",
    "EffectiveNumber",
    "Progressive",
    "StepSchedule",
    "TargetShares",
    "Temperature",
    "balanced",
    "class_shares",
    "class_weights_from_shares",
    "coco_image_categories",
    "instance",
    "repeat_factors",
    "resolve",
    "sqrt_frequency",
    "target_shares",
]

ClassWeighting = Callable[[np.ndarray, int], np.ndarray]


# -- validation ----------------------------------------------------------------------------------
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


def _per_sample(share: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-sample weights ``share / n`` (0 for empty classes)."""
    return np.divide(share, counts, out=np.zeros_like(counts), where=counts > 0)


# -- fixed strategies ----------------------------------------------------------------------------
def instance(counts: np.ndarray, epoch: int = 0) -> np.ndarray:
    """Weight 1 per sample: each class gets its own share of the data (instance-balanced)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts > 0).astype(np.float64)


def balanced(counts: np.ndarray, epoch: int = 0) -> np.ndarray:
    """Inverse frequency ``1 / n_c``: every class receives the same share of the draws.

    Class-balanced sampling, the usual ``WeightedRandomSampler`` recipe (Kang et al., 2020,
    call it "class-balanced" and compare it with the other strategies here).
    """
    counts = np.asarray(counts, dtype=np.float64)
    return _per_sample(np.ones_like(counts), counts)


@dataclass(frozen=True)
class Temperature:
    """Share proportional to ``n_c ** (1 / T)``: T = 1 is the data's own mix, T -> inf balanced.

    Temperature sampling of Arivazhagan et al., 2019 ("Massively Multilingual Neural Machine
    Translation in the Wild", T = 5). ``T = 2`` is square-root sampling (Mahajan et al., 2018,
    "Exploring the Limits of Weakly Supervised Pretraining"), a common middle ground.
    """

    temperature: float = 2.0
    epoch_dependent = False

    def __post_init__(self) -> None:
        check_real("temperature", self.temperature, 0.0, np.inf, low_open=True)

    def __call__(self, counts: np.ndarray, epoch: int = 0) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        return _per_sample(counts ** (1.0 / float(self.temperature)), counts)


sqrt_frequency = Temperature(2.0)


@dataclass(frozen=True)
class EffectiveNumber:
    """Weight ``(1 - beta) / (1 - beta ** n_c)``: the inverse of the effective number of samples.

    Cui et al., 2019, "Class-Balanced Loss Based on Effective Number of Samples" (CVPR): a class
    of ``n`` samples is worth ``E_n = (1 - beta ** n) / (1 - beta)`` distinct ones. The share of
    draws is ``n_c / E_{n_c}``: ``beta = 0`` keeps the data's mix, ``beta -> 1`` balances the
    classes; the paper uses ``beta`` in {0.9, 0.99, 0.999, 0.9999}.
    """

    beta: float = 0.999
    epoch_dependent = False

    def __post_init__(self) -> None:
        check_real("beta", self.beta, 0.0, 1.0, high_open=True)

    def __call__(self, counts: np.ndarray, epoch: int = 0) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        beta = float(self.beta)
        if beta == 0.0:
            return instance(counts)
        effective = -np.expm1(counts * np.log(beta)) / (1.0 - beta)  # (1 - beta^n) / (1 - beta)
        return np.divide(1.0, effective, out=np.zeros_like(counts), where=counts > 0)


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
        return _per_sample(share, np.asarray(counts, dtype=np.float64))


def target_shares(shares: Mapping[Hashable, float]) -> TargetShares:
    """A strategy giving each named class its target share of the draws."""
    return TargetShares(dict(shares))


# -- a schedule over epochs ----------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class Progressive:
    """Shares that move linearly from ``start`` to ``end`` over ``epochs`` epochs.

    Progressively-balanced sampling of Kang et al., 2020, "Decoupling Representation and
    Classifier for Long-Tailed Recognition" (ICLR): at epoch ``t`` the share of class ``c`` is
    ``(1 - t / T) * p_start(c) + (t / T) * p_end(c)``, by default from instance-balanced (the
    data's mix) to class-balanced. From epoch ``T`` on it stays at ``end``. Driven by
    ``set_epoch`` (``epoch_dependent = True``), so use it with ``stratify=True`` (the default).

    Args:
        epochs: ``T``, the epoch at which the schedule reaches ``end`` (e.g. the training epochs).
        start: the strategy (or ``"instance"``, ``"balanced"``, ``"sqrt"``) at epoch 0;
            epoch-dependent strategies are evaluated at the same epoch.
        end: the strategy reached at epoch ``epochs``, likewise.
    """

    epochs: int
    start: ClassWeighting | str = "instance"
    end: ClassWeighting | str = "balanced"
    epoch_dependent = True

    def __post_init__(self) -> None:
        e = self.epochs
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)):
            raise TypeError(f"epochs should be a positive integer, but got epochs={e!r}")
        if e < 1:
            raise ValueError(f"epochs should be a positive integer, but got epochs={e!r}")
        for name in ("start", "end"):
            object.__setattr__(self, name, _strategy_arg(name, getattr(self, name)))

    def __repr__(self) -> str:  # stable across processes: names, not object addresses
        start, end = (getattr(s, "__name__", None) or repr(s) for s in (self.start, self.end))
        return f"Progressive(epochs={self.epochs}, start={start}, end={end})"

    def bind(self, names: tuple[Hashable, ...]) -> Progressive:
        def bound(s: ClassWeighting | str) -> ClassWeighting | str:
            binder = getattr(s, "bind", None)
            return binder(names) if callable(binder) else s

        return Progressive(self.epochs, bound(self.start), bound(self.end))

    def progress(self, epoch: int) -> float:
        """``t / T`` clipped to [0, 1]: the weight of ``end`` at ``epoch``."""
        return min(max(int(epoch), 0), self.epochs) / self.epochs

    def __call__(self, counts: np.ndarray, epoch: int = 0) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.float64)
        t = self.progress(epoch)
        # __post_init__ made both strategies (a name is resolved there)
        start, end = cast(ClassWeighting, self.start), cast(ClassWeighting, self.end)
        share = (1.0 - t) * class_shares(start, counts, epoch) + t * class_shares(
            end, counts, epoch
        )
        return _per_sample(share, counts)


# -- a schedule over run positions ---------------------------------------------------------------
class StepSchedule:
    """Class shares that change at run positions: ``[(0, shares_a), (10_000, shares_b), ...]``.

    A point is a *run position*: ``epoch * num_samples + position`` of the global plan (samples
    drawn by all ranks together, counted from the start of the run), so a schedule means the same
    under any world size. From each point on its shares hold until the next point (piecewise
    constant); with ``interpolate=True`` the shares move linearly between two points, realised
    as ``pieces`` constant segments of equal length (the plan is piecewise constant; a ramp of
    ``L`` positions moves in steps of ``L / pieces``).

    Each entry's shares are a mapping class -> share naming every class (shares are normalised;
    0 excludes a class), or a strategy (``"instance"``, ``"balanced"``, ``"sqrt"``, or any
    ``(counts, epoch) -> weights`` callable, evaluated at epoch 0). Deferred re-balancing
    (LDAM-DRW) is ``StepSchedule([(0, "instance"), (160 * n, "balanced")])``.

    Pass it as ``class_weights=`` of :class:`distsampler.DistributedWeightedSampler` (labels).
    The schedule is part of the configuration a saved state is checked against. With
    ``stratify=True`` every segment between two points holds exact largest-remainder counts
    for its length, and member cycles run on across segments.

    Args:
        points: ``(run_position, shares)`` pairs; positions are ints, strictly increasing, the
            first one 0.
        interpolate: move linearly between points instead of stepping.
        pieces: constant segments per interpolated interval (``interpolate=True`` only).
    """

    epoch_dependent = False

    def __init__(
        self,
        points: Sequence[tuple[int, Mapping[Hashable, float] | str | ClassWeighting]],
        interpolate: bool = False,
        pieces: int = 16,
    ) -> None:
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
            raise TypeError(
                "points should be a sequence of (position, shares) pairs, "
                f"but got points={points!r}"
            )
        if not points:
            raise ValueError("points should be non-empty, but got points=[]")
        if isinstance(interpolate, (bool, np.bool_)) is False:
            raise TypeError(f"interpolate should be a bool, but got interpolate={interpolate!r}")
        if isinstance(pieces, (bool, np.bool_)) or not isinstance(pieces, (int, np.integer)):
            raise TypeError(f"pieces should be a positive integer, but got pieces={pieces!r}")
        if pieces < 1:
            raise ValueError(f"pieces should be a positive integer, but got pieces={pieces!r}")
        out = []
        prev = -1
        for i, item in enumerate(points):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"points[{i}] should be a (position, shares) pair, but got {item!r}"
                )
            pos, spec = item
            if isinstance(pos, (bool, np.bool_)) or not isinstance(pos, (int, np.integer)):
                raise TypeError(f"points[{i}] position should be an int, but got {pos!r}")
            if pos < 0 or (i == 0 and pos != 0):
                raise ValueError(
                    f"points should start at position 0, but got points[{i}] position={pos}"
                    if i == 0
                    else f"points[{i}] position should be >= 0, but got {pos}"
                )
            if pos <= prev:
                raise ValueError(
                    f"points positions should be strictly increasing, but got {pos} after {prev}"
                )
            prev = int(pos)
            if isinstance(spec, Mapping):
                _check_mapping(f"points[{i}] shares", spec)
                spec = dict(spec)
            else:
                spec = _strategy_arg(f"points[{i}] shares", spec)
            out.append((int(pos), spec))
        self.points: tuple = tuple(out)
        self.interpolate = bool(interpolate)
        self.pieces = int(pieces)

    def __repr__(self) -> str:  # stable across processes: names, not object addresses
        def name(spec) -> str:
            if isinstance(spec, dict):
                return repr(sorted(spec.items(), key=repr))
            return getattr(spec, "__name__", None) or repr(spec)

        body = ", ".join(f"({p}, {name(s)})" for p, s in self.points)
        return f"StepSchedule([{body}], interpolate={self.interpolate}, pieces={self.pieces})"

    def shares(self, names: tuple[Hashable, ...], counts: np.ndarray) -> list:
        """``[(run_position, shares array)]`` for the classes ``names`` of sizes ``counts``:
        the points as piecewise-constant shares (normalised, in the label index's order)."""
        counts = np.asarray(counts, dtype=np.float64)
        resolved = []
        for i, (pos, spec) in enumerate(self.points):
            if isinstance(spec, dict):
                share = _named_shares(f"points[{i}] shares", spec, names)
            else:
                share = class_shares(spec, counts, 0)
            resolved.append((pos, share))
        if not self.interpolate or len(resolved) == 1:
            return resolved
        out: list[tuple[int, np.ndarray]] = []
        for (a, sa), (b, sb) in zip(resolved[:-1], resolved[1:], strict=True):
            for k in range(self.pieces):
                at = a + (b - a) * k // self.pieces
                if out and out[-1][0] == at:
                    continue  # intervals shorter than ``pieces`` positions
                t = k / self.pieces
                out.append((at, (1 - t) * sa + t * sb))
        out.append(resolved[-1])
        return out


def _named_shares(name: str, shares: Mapping, names: tuple[Hashable, ...]) -> np.ndarray:
    """Shares by class name -> normalised array in ``names`` order; every class must be named."""
    _check_mapping(name, shares)
    unknown = [k for k in shares if k not in names]
    if unknown:
        raise ValueError(
            f"{name} names groups {unknown[:10]!r} that are not in the labels; "
            f"the groups are {list(names)[:20]!r}"
        )
    missing = [n for n in names if n not in shares]
    if missing:
        raise ValueError(
            f"{name} has no share for groups {missing[:10]!r}; name every group (0 excludes it)"
        )
    w = np.array([float(shares[n]) for n in names])
    return w / w.sum()


def _strategy_arg(name: str, spec) -> ClassWeighting:
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"{name} should be one of {sorted(_NAMED)}, but got {name}={spec!r}")
        return _NAMED[spec]
    if not callable(spec):
        raise TypeError(f"{name} should be a strategy (callable) or a name, but got {spec!r}")
    return spec


# -- per-image weights for multi-label data ------------------------------------------------------
def repeat_factors(
    image_categories: Sequence[Iterable[Hashable]], threshold: float = 0.001
) -> np.ndarray:
    """Per-image repeat factors of LVIS repeat-factor sampling, usable as ``weights=``.

    Gupta, Dollar and Girshick, 2019, "LVIS: A Dataset for Large Vocabulary Instance
    Segmentation" (CVPR): category ``c`` gets ``r_c = max(1, sqrt(t / f_c))`` with ``f_c`` the
    fraction of images that contain ``c``; image ``i`` gets ``r_i = max_{c in i} r_c`` (1 for an
    image without categories). Images of rare categories are drawn ``r_i`` times as often.

    Args:
        image_categories: for each image, the categories it contains (repeats are counted once),
            e.g. from :func:`coco_image_categories`.
        threshold: ``t``; categories in fewer than this fraction of images are repeated
            (LVIS: 0.001).

    Returns:
        ``(num_images,)`` float64 weights; pass them as
        ``DistributedWeightedSampler(weights=...)``.
    """
    t = check_real("threshold", threshold, 0.0, 1.0, low_open=True)
    image, cat, found = _label_lists(image_categories, "image_categories", "categories")
    lengths = np.bincount(image, minlength=len(image_categories))
    key = np.unique(image * max(1, len(found)) + cat)  # each category once per image
    image, cat = np.divmod(key, max(1, len(found)))
    freq = np.bincount(cat, minlength=len(found)) / len(lengths)  # f_c, (num_categories,)
    factor = np.maximum(1.0, np.sqrt(t / np.maximum(freq, 1e-300)))
    out = np.ones(len(lengths))
    np.maximum.at(out, image, factor[cat])
    return out


def coco_image_categories(annotation_file: str | os.PathLike | Mapping) -> tuple:
    """``(image_ids, categories)`` of a COCO file: the category ids of each image's annotations.

    Images are in the order of ``images`` in the file (the order of
    :func:`distsampler.groups.from_coco` with a ``default`` group), so
    ``repeat_factors(categories)`` lines up with a dataset built from the same file.
    """
    from .coco import image_categories, load_coco

    return image_categories(load_coco(annotation_file))


# -- helpers used by the samplers ----------------------------------------------------------------
def class_weights_from_shares(shares: Mapping[Hashable, float], labels: LabelsLike) -> dict:
    """Per-sample class weights (torch convention) that realise the target ``shares``.

    ``class_weights_from_shares({"camry": 0.3, "crown": 0.7}, labels)`` returns
    ``{"camry": 0.3 / n_camry, "crown": 0.7 / n_crown}``, usable as ``class_weights=`` here or
    to build ``WeightedRandomSampler`` weights.
    """
    from .groups import GroupIndex

    index = GroupIndex.from_labels(labels)
    w = target_shares(shares).bind(index.names)(index.sizes)
    return {n: float(x) for n, x in zip(index.names, w, strict=True) if n in shares}


_NAMED: dict[str, ClassWeighting] = {
    "balanced": balanced,
    "instance": instance,
    "sqrt": sqrt_frequency,
}


def resolve(spec: ClassWeightsLike, names: tuple[Hashable, ...]) -> ClassWeighting:
    """The strategy for a ``class_weights=`` argument bound to the label index's class names.

    Accepts ``"balanced"``, ``"instance"``, ``"sqrt"``, a mapping class -> per-sample weight
    (classes not named are an error), or any callable ``(counts, epoch) -> weights``.
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

        def fixed(counts: np.ndarray, epoch: int = 0) -> np.ndarray:
            return w

        return fixed
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
    counts = np.asarray(counts)
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

"""What a sampler does to batches: composition, coverage and repeats, next to closed forms.

Pure numpy computations behind ``distsampler inspect`` (the command line only parses, prints
and plots). Vocabulary:

* a **stream** is a 1-D array of dataset indices in the order they are consumed;
* a **batch array** is ``(n, B)``, padded with ``-1`` where a batch is short;
* an **epoch layout** is ``(iterations, world_size, B)``: iteration ``k`` holds every rank's
  ``k``-th local batch, i.e. one optimizer step of DDP;
* **labels** here are class codes ``0 .. C-1`` per sample (:func:`label_codes`).

Closed forms, for i.i.d. draws (with replacement) of a class of ``n`` members:

* after ``k`` draws of the class, each member was seen with probability
  ``1 - (1 - 1/n) ** k`` (:func:`expected_coverage`), the expected seen fraction;
* all members are seen after ``n * H_n`` draws on average, ``H_n`` the harmonic number
  (coupon collector, :func:`expected_draws_to_cover`).

Samplers that cycle a class without replacement (stratified, quota ``"cycle"``) see
``min(1, k / n)`` of it, the most any sampler can; the gap to the i.i.d. numbers is what
cycling buys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._core.sharding import Shard
from ..groups import GroupIndex

__all__ = [
    "TORCH_MULTINOMIAL_LIMIT",
    "ShareStats",
    "Tally",
    "batch_composition",
    "batch_shares",
    "coverage_curve",
    "deal",
    "ecdf",
    "epoch_layout",
    "expected_coverage",
    "expected_draws_to_cover",
    "first_seen",
    "harmonic",
    "label_codes",
    "quota_stream",
    "repeats",
    "torch_wrs_problem",
    "torch_wrs_stream",
    "weighted_stream",
]

#: ``torch.multinomial`` (behind ``WeightedRandomSampler``) refuses more categories than this.
TORCH_MULTINOMIAL_LIMIT = 1 << 24
_EULER_GAMMA = 0.5772156649015329

Progress = Callable[[int], None] | None


# -- labels and batches --------------------------------------------------------------------------
def label_codes(index: GroupIndex) -> np.ndarray:
    """Class code (position in ``index.names``) of every sample, ``(N,)`` int32."""
    codes = np.empty(index.num_samples, dtype=np.int32)
    codes[index.members] = np.repeat(np.arange(len(index.names), dtype=np.int32), index.sizes)
    return codes


def batch_composition(
    batches: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Count of each class in each batch: ``(n, B)`` batches (``-1`` = empty) -> ``(n, C)``."""
    b = np.asarray(batches, dtype=np.int64)
    b = b[None, :] if b.ndim == 1 else b.reshape(len(b), -1)
    codes = np.asarray(labels)
    num = int(codes.max()) + 1 if num_classes is None else int(num_classes)
    valid = b >= 0
    rows = np.broadcast_to(np.arange(len(b))[:, None], b.shape)[valid]
    flat = rows * num + codes[b[valid]]
    return np.bincount(flat, minlength=len(b) * num).reshape(len(b), num)


def batch_shares(composition: np.ndarray, cls: int, batch_size: int | None = None) -> np.ndarray:
    """Share of class ``cls`` in each batch; only full batches (``batch_size``) when given."""
    comp = np.asarray(composition)
    size = comp.sum(axis=1)
    keep = size > 0 if batch_size is None else size == batch_size
    return comp[keep, cls] / size[keep]


@dataclass(frozen=True)
class ShareStats:
    """Summary of a per-batch share: extremes, median, mean, and the fraction of zeros."""

    min: float
    median: float
    max: float
    mean: float
    none: float
    batches: int

    @classmethod
    def of(cls, shares: np.ndarray) -> ShareStats:
        s = np.asarray(shares, dtype=np.float64)
        if s.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, 0)
        return cls(
            float(s.min()),
            float(np.median(s)),
            float(s.max()),
            float(s.mean()),
            float(np.mean(s == 0)),
            int(s.size),
        )


# -- coverage and repeats ------------------------------------------------------------------------
def first_seen(stream: np.ndarray, num_samples: int) -> np.ndarray:
    """Index into ``stream`` of each sample's first draw, ``-1`` if it was never drawn."""
    stream = np.asarray(stream, dtype=np.int64)
    return _first(np.full(num_samples, -1, dtype=np.int64), stream, np.arange(len(stream)))


_NEVER = np.iinfo(np.int64).max


def _first(first: np.ndarray, stream: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Set ``first[i]`` (``-1`` = not yet seen) to the smallest ``when`` at which ``i`` occurs."""
    best = np.where(first < 0, _NEVER, first)
    np.minimum.at(best, stream, when)  # unbuffered: repeated indices keep the minimum
    first[:] = np.where(best == _NEVER, -1, best)
    return first


def _seen_by(first: np.ndarray, codes: np.ndarray, num: int, at: np.ndarray) -> np.ndarray:
    """Members of each class with ``0 <= first < at[i]``: ``(len(at), C)`` counts."""
    seen = first >= 0
    f, c = first[seen], codes[seen].astype(np.int64)
    span = int(f.max()) + 2 if f.size else 1
    keys = np.sort(c * span + f)  # sorted by class, then by first sighting
    at = np.minimum(np.asarray(at, dtype=np.int64), span - 1)
    start = np.searchsorted(keys, np.arange(num) * span)  # (C,)
    query = np.arange(num)[None, :] * span + at[:, None]  # (len(at), C)
    return np.searchsorted(keys, query, side="left") - start[None, :]


def coverage_curve(
    stream: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None = None,
    at: np.ndarray | None = None,
) -> np.ndarray:
    """Fraction of each class seen after the first ``at[i]`` draws: ``(len(at), C)``.

    ``at`` defaults to ``1 .. len(stream)`` (the curve after every draw).
    """
    codes = np.asarray(labels)
    num = int(codes.max()) + 1 if num_classes is None else int(num_classes)
    sizes = np.bincount(codes, minlength=num)
    at = np.arange(1, len(stream) + 1) if at is None else np.asarray(at)
    counts = _seen_by(first_seen(stream, len(codes)), codes, num, at)
    return counts / np.maximum(sizes, 1)[None, :]


def repeats(stream: np.ndarray, n: int) -> np.ndarray:
    """Times each of the ``n`` samples occurs in ``stream``."""
    return np.bincount(np.asarray(stream, dtype=np.int64), minlength=n)


def ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF as steps: distinct values and the fraction ``<=`` each."""
    x, counts = np.unique(np.asarray(values), return_counts=True)
    return x, np.cumsum(counts) / max(1, len(values))


# -- closed forms --------------------------------------------------------------------------------
def expected_coverage(n, k) -> np.ndarray:
    """Expected fraction of a class of ``n`` seen after ``k`` i.i.d. uniform draws of it.

    ``1 - (1 - 1/n) ** k`` (each member is missed by a draw with probability ``1 - 1/n``).
    """
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        miss = np.where(n > 1, np.exp(k * np.log1p(-1.0 / np.maximum(n, 2))), (k <= 0) * 1.0)
    return np.where(n > 0, 1.0 - miss, np.nan)


def harmonic(n) -> np.ndarray:
    """Harmonic number ``H_n = 1 + 1/2 + ... + 1/n`` (exact below 64, asymptotic above)."""
    n = np.asarray(n, dtype=np.float64)
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 64))])
    m = np.maximum(n, 1.0)
    approx = np.log(m) + _EULER_GAMMA + 1 / (2 * m) - 1 / (12 * m**2) + 1 / (120 * m**4)
    small = np.clip(n, 0, 63).astype(np.int64)
    return np.where(n < 64, table[small], approx)


def expected_draws_to_cover(n) -> np.ndarray:
    """Coupon collector: expected i.i.d. uniform draws until all ``n`` members were seen."""
    n = np.asarray(n, dtype=np.float64)
    return n * harmonic(n)


# -- streams of the samplers ---------------------------------------------------------------------
def weighted_stream(sampler, epoch: int, chunk: int = 1 << 18, progress: Progress = None):
    """Every position all ranks of a ``DistributedWeightedSampler`` yield in ``epoch``.

    ``W * len(sampler)`` plan positions (the plan plus the padding that equalises lengths).
    """
    total = sampler.num_replicas * len(sampler)
    out = np.empty(total, dtype=np.int64)
    for lo in range(0, total, chunk):
        hi = min(total, lo + chunk)
        out[lo:hi] = sampler.indices(np.arange(lo, hi, dtype=np.int64), epoch)
        if progress:
            progress(hi - lo)
    return out


def quota_stream(sampler, epoch: int, chunk: int = 1 << 13, progress: Progress = None):
    """Every global micro-batch of a ``DistributedQuotaBatchSampler`` epoch: ``(M, B)``."""
    total = sampler.num_replicas * len(sampler)
    out = np.empty((total, sampler.batch_size), dtype=np.int64)
    for lo in range(0, total, chunk):
        hi = min(total, lo + chunk)
        out[lo:hi] = sampler.batches(np.arange(lo, hi, dtype=np.int64), epoch)
        if progress:
            progress((hi - lo) * sampler.batch_size)
    return out


def torch_wrs_problem(num_samples: int) -> str | None:
    """Why ``WeightedRandomSampler`` cannot sample this dataset, or None if it can."""
    if num_samples > TORCH_MULTINOMIAL_LIMIT:
        return (
            f"torch.multinomial, behind WeightedRandomSampler, accepts at most 2**24 = "
            f"{TORCH_MULTINOMIAL_LIMIT:,} weights, and this dataset has {num_samples:,} "
            "(RuntimeError: number of categories cannot exceed 2^24)"
        )
    return None


def torch_wrs_stream(weights: np.ndarray, world_size: int, generator) -> np.ndarray:
    """One epoch of ``WeightedRandomSampler(weights, len(weights))`` shared by ``world_size``.

    Draws as ``WeightedRandomSampler.__iter__`` does (``torch.multinomial`` with the
    ``generator``, which carries over between epochs), then pads like ``DistributedSampler``
    (repeating the start) so a ``DistributedSamplerWrapper``-style stride ``[rank::W]`` gives
    equal lengths. Returns the padded stream, ``W * ceil(N / W)`` indices.
    """
    import torch

    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    stream = torch.multinomial(w, len(w), True, generator=generator).numpy().astype(np.int64)
    pad = -len(stream) % world_size
    return np.concatenate([stream, stream[:pad]]) if pad else stream


# -- layout over ranks and iterations ------------------------------------------------------------
def deal(units: np.ndarray, world_size: int, block_size: int = 1) -> np.ndarray:
    """Deal ``W * L`` plan units to ranks in round-robin blocks: ``(L, W, ...)``.

    ``out[i, r]`` is rank ``r``'s ``i``-th local unit (:class:`distsampler.topology.Shard`).
    """
    units = np.asarray(units)
    if len(units) % world_size:
        raise ValueError(
            f"units should be a multiple of world_size={world_size}, but got {len(units)}"
        )
    length = len(units) // world_size
    ranks = [
        Shard(world_size, r, block_size).positions(length, 0, length) for r in range(world_size)
    ]
    return np.stack([units[p] for p in ranks], axis=1)  # (L, W, ...)


def epoch_layout(
    stream: np.ndarray, world_size: int, batch_size: int, block_size: int = 1
) -> np.ndarray:
    """Local batches of an index stream: ``(iterations, W, B)``, ``-1`` after a short batch.

    Each rank's ``L`` indices are cut into ``ceil(L / B)`` batches, as a ``DataLoader`` with
    ``drop_last=False`` does.
    """
    local = deal(stream, world_size, block_size)  # (L, W)
    length = local.shape[0]
    iters = -(-length // batch_size)
    padded = np.full((iters * batch_size, world_size), -1, dtype=np.int64)
    padded[:length] = local
    return padded.reshape(iters, batch_size, world_size).transpose(0, 2, 1)  # (iters, W, B)


def _finite(x: float) -> float | None:
    """``x``, or None where it is undefined (JSON has no NaN)."""
    return float(x) if np.isfinite(x) else None


# -- accumulating a run --------------------------------------------------------------------------
@dataclass
class Tally:
    """Accumulates the epochs of one sampler run; O(N + epochs * C) memory, not O(draws).

    Args:
        labels: class code of every sample (:func:`label_codes`).
        num_classes: ``C``.
        minority: class code whose per-batch share and repeats are tracked.
        batch_size: ``B``; per-batch shares use full batches only.
        keep: local batches of the first epoch whose composition is kept for plots.
    """

    labels: np.ndarray
    num_classes: int
    minority: int
    batch_size: int
    keep: int = 64
    sizes: np.ndarray = field(init=False)
    first: np.ndarray = field(init=False)  # (N,) iteration of first draw, -1 never
    times: np.ndarray = field(init=False)  # (N,) draws over all epochs
    draws: list = field(default_factory=list, init=False)  # per epoch (C,) draws per class
    seen: list = field(default_factory=list, init=False)  # per epoch (C,) members seen so far
    shares: list = field(default_factory=list, init=False)  # per epoch minority share/batch
    repeat_max: list = field(default_factory=list, init=False)  # per epoch max minority draws
    iterations: list = field(default_factory=list, init=False)  # per epoch iterations
    head: np.ndarray | None = field(default=None, init=False)  # (keep, C) first batches

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        self.sizes = np.bincount(self.labels, minlength=self.num_classes)
        self.first = np.full(len(self.labels), -1, dtype=np.int64)
        self.times = np.zeros(len(self.labels), dtype=np.int64)
        self._minority = self.labels == self.minority

    def add_epoch(self, layout: np.ndarray) -> None:
        """Add one epoch given as its layout ``(iterations, W, B)`` (see :func:`epoch_layout`)."""
        iters, _, bs = layout.shape
        flat = layout.reshape(-1)
        valid = flat >= 0
        stream = flat[valid]
        step = (sum(self.iterations) + np.arange(flat.size) // (flat.size // iters))[valid]
        _first(self.first, stream, step)
        counts = repeats(stream, len(self.labels))
        self.times += counts
        self.draws.append(np.bincount(self.labels[stream], minlength=self.num_classes))
        self.seen.append(np.bincount(self.labels[self.first >= 0], minlength=self.num_classes))
        self.repeat_max.append(int(counts[self._minority].max(initial=0)))
        comp = batch_composition(layout.reshape(-1, bs), self.labels, self.num_classes)
        self.shares.append(batch_shares(comp, self.minority, self.batch_size))
        if self.head is None:
            self.head = comp[: self.keep]
        self.iterations.append(iters)

    # -- results ---------------------------------------------------------------------------------
    def coverage(self) -> np.ndarray:
        """``(epochs, C)`` fraction of each class seen by the end of each epoch."""
        return np.asarray(self.seen) / np.maximum(self.sizes, 1)

    def expected(self) -> np.ndarray:
        """``(epochs, C)`` i.i.d. expectation for the draws each class really got."""
        return expected_coverage(self.sizes, np.cumsum(self.draws, axis=0))

    def epochs_to_cover(self) -> list[int | None]:
        """Per class, the first epoch (1-based) by which every member was seen, else None."""
        full = np.asarray(self.seen) >= self.sizes  # (E, C)
        return [int(np.argmax(col)) + 1 if col.any() else None for col in full.T]

    def expected_epochs_to_cover(self) -> np.ndarray:
        """Per class, coupon-collector draws ``n H_n`` over the mean draws of it per epoch."""
        per_epoch = np.mean(self.draws, axis=0)
        need = expected_draws_to_cover(self.sizes)
        with np.errstate(divide="ignore"):
            return np.where(per_epoch > 0, need / np.maximum(per_epoch, 1e-300), np.inf)

    def minority_repeats(self) -> tuple[int, float]:
        """Max and mean draws of one minority sample within an epoch."""
        n = int(self.sizes[self.minority])
        mean = float(np.mean([d[self.minority] for d in self.draws])) / max(n, 1)
        return max(self.repeat_max), mean

    def curve(self, points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coverage vs iteration: ``(iterations, seen (P, C), iid expectation (P, C))``."""
        total = sum(self.iterations)
        at = np.unique(np.linspace(0, total, min(points, total + 1)).round().astype(np.int64))
        seen = _seen_by(self.first, self.labels, self.num_classes, at)
        bounds = np.concatenate([[0], np.cumsum(self.iterations)])
        cum = np.vstack([np.zeros(self.num_classes), np.cumsum(self.draws, axis=0)])  # (E+1, C)
        k = np.stack([np.interp(at, bounds, cum[:, c]) for c in range(self.num_classes)], axis=1)
        return at, seen / np.maximum(self.sizes, 1), expected_coverage(self.sizes, k)

    def summary(self, names, target: np.ndarray) -> dict:
        """The numbers ``distsampler inspect`` prints, JSON-ready, per class name."""
        keys = [str(n) for n in names]
        draws = np.sum(self.draws, axis=0)
        stats = ShareStats.of(np.concatenate(self.shares))
        cover, expect = self.coverage(), self.expected()
        rep_max, rep_mean = self.minority_repeats()
        exp_epochs = self.expected_epochs_to_cover()
        per_class = dict(zip(keys, range(len(keys)), strict=True))
        seen_all = np.sum(self.seen, axis=1) / max(1, len(self.labels))
        return {
            "draws_per_epoch": int(np.sum(self.draws[0])),
            "iterations_per_epoch": int(self.iterations[0]),
            "target_share": {k: float(target[c]) for k, c in per_class.items()},
            "realised_share": {k: float(draws[c] / draws.sum()) for k, c in per_class.items()},
            "draws": {k: [int(d[c]) for d in self.draws] for k, c in per_class.items()},
            "minority_share": {
                "min": _finite(stats.min),
                "median": _finite(stats.median),
                "max": _finite(stats.max),
                "mean": _finite(stats.mean),
                "batches": stats.batches,
            },
            "no_minority_fraction": _finite(stats.none),
            "coverage": {k: cover[:, c].tolist() for k, c in per_class.items()},
            "coverage_all": seen_all.tolist(),
            "expected_coverage_iid": {k: expect[:, c].tolist() for k, c in per_class.items()},
            "epochs_to_cover": dict(zip(keys, self.epochs_to_cover(), strict=True)),
            "expected_epochs_to_cover_iid": {
                k: (float(exp_epochs[c]) if np.isfinite(exp_epochs[c]) else None)
                for k, c in per_class.items()
            },
            "minority_repeats_per_epoch": {"max": rep_max, "mean": rep_mean},
        }

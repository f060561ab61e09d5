"""Accumulate a sampler's epochs into the numbers ``distsampler inspect`` reports.

One :class:`Tally` per sampler run, fed one epoch layout ``(iterations, W, B)`` at a time
(:mod:`distsampler.inspect.streams`). Memory is O(N + epochs * C), not O(draws).

With overlapping classes (multi-label), a draw **contains** class ``c`` when its sample holds
``c``; a sample holding two classes counts for both. The realised share of ``c`` is the share
of draws containing it, so realised shares can sum to more than 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .diagnostics import (
    Membership,
    ShareStats,
    expected_coverage,
    expected_draws_to_cover,
    full_batch_shares,
    repeats,
    seen_by,
    update_first,
)

__all__ = ["Tally"]


def _finite(x: float) -> float | None:
    """``x``, or None where it is undefined (JSON has no NaN)."""
    return float(x) if np.isfinite(x) else None


@dataclass
class Tally:
    """Accumulates the epochs of one sampler run.

    Args:
        membership: the classes of every sample (:class:`Membership`).
        minority: class code whose per-batch share and repeats are tracked.
        batch_size: ``B``; per-batch shares count FULL local batches only.
        keep: local batches of the first epoch whose composition is kept for plots.
    """

    membership: Membership
    minority: int
    batch_size: int
    keep: int = 64
    sizes: np.ndarray = field(init=False)  # (C,) samples holding each class
    first: np.ndarray = field(init=False)  # (N,) iteration of first draw, -1 never
    times: np.ndarray = field(init=False)  # (N,) draws over all epochs
    draws: list = field(default_factory=list, init=False)  # per epoch (C,) draws containing c
    totals: list = field(default_factory=list, init=False)  # per epoch, all draws
    seen: list = field(default_factory=list, init=False)  # per epoch (C,) members seen so far
    seen_any: list = field(default_factory=list, init=False)  # per epoch, labelled samples seen
    shares: list = field(default_factory=list, init=False)  # per epoch minority share/batch
    repeat_max: list = field(default_factory=list, init=False)  # per epoch max minority draws
    iterations: list = field(default_factory=list, init=False)  # per epoch iterations
    positives: list = field(default_factory=list, init=False)  # per epoch anchors w/ positive
    head: np.ndarray | None = field(default=None, init=False)  # (keep, C) first batches

    def __post_init__(self) -> None:
        m = self.membership
        self.sizes = m.count(np.arange(m.num_samples))
        self.first = np.full(m.num_samples, -1, dtype=np.int64)
        self.times = np.zeros(m.num_samples, dtype=np.int64)
        self._minority = m.holds(self.minority)
        self._labelled = m.counts() > 0

    @property
    def num_classes(self) -> int:
        return self.membership.num_classes

    def add_epoch(self, layout: np.ndarray) -> None:
        """Add one epoch given as its layout ``(iterations, W, B)``."""
        iters, _, bs = layout.shape
        m = self.membership
        flat = layout.reshape(-1)
        valid = flat >= 0
        stream = flat[valid]
        step = (sum(self.iterations) + np.arange(flat.size) // (flat.size // iters))[valid]
        update_first(self.first, stream, step)
        counts = repeats(stream, m.num_samples)
        self.times += counts
        self.draws.append(m.count(stream))
        self.totals.append(len(stream))
        seen = self.first >= 0
        self.seen.append(m.count(np.flatnonzero(seen)))
        self.seen_any.append(int(np.count_nonzero(seen & self._labelled)))
        self.repeat_max.append(int(counts[self._minority].max(initial=0)))
        batches = layout.reshape(-1, bs)
        self.shares.append(full_batch_shares(batches, self._minority))
        if self.head is None:
            self.head = m.composition(batches[: self.keep])
        self.iterations.append(iters)
        if m.starts is None:  # one class per sample
            self.positives.append(anchors_with_positive(batches, m.classes))

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

    def times_seen(self, cls: int) -> np.ndarray:
        """Draws of each member of class ``cls`` over all epochs."""
        return self.times[self.membership.samples(cls)]

    def curve(self, points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coverage vs iteration: ``(iterations, seen (P, C), iid expectation (P, C))``."""
        m = self.membership
        total = sum(self.iterations)
        at = np.unique(np.linspace(0, total, min(points, total + 1)).round().astype(np.int64))
        seen = seen_by(m.expand(self.first), m.classes, self.num_classes, at)
        bounds = np.concatenate([[0], np.cumsum(self.iterations)])
        cum = np.vstack([np.zeros(self.num_classes), np.cumsum(self.draws, axis=0)])  # (E+1, C)
        k = np.stack([np.interp(at, bounds, cum[:, c]) for c in range(self.num_classes)], axis=1)
        return at, seen / np.maximum(self.sizes, 1), expected_coverage(self.sizes, k)

    def summary(self, names, target: np.ndarray) -> dict:
        """The numbers ``distsampler inspect`` reports, JSON-ready, per class name."""
        keys = [str(n) for n in names]
        per_class = dict(zip(keys, range(len(keys)), strict=True))
        draws = np.sum(self.draws, axis=0)
        total = max(1, sum(self.totals))
        stats = ShareStats.of(np.concatenate(self.shares))
        cover, expect = self.coverage(), self.expected()
        rep_max, rep_mean = self.minority_repeats()
        exp_epochs = self.expected_epochs_to_cover()
        labelled = max(1, int(np.count_nonzero(self._labelled)))
        return {
            "draws_per_epoch": int(self.totals[0]),
            "iterations_per_epoch": int(self.iterations[0]),
            "target_share": {k: float(target[c]) for k, c in per_class.items()},
            "realised_share": {k: float(draws[c] / total) for k, c in per_class.items()},
            "draws": {k: [int(d[c]) for d in self.draws] for k, c in per_class.items()},
            "minority_share": {  # full local batches only
                "min": _finite(stats.min),
                "median": _finite(stats.median),
                "max": _finite(stats.max),
                "mean": _finite(stats.mean),
                "full_batches": stats.batches,
            },
            "no_minority_fraction": _finite(stats.none),
            "coverage": {k: cover[:, c].tolist() for k, c in per_class.items()},
            "coverage_all": [s / labelled for s in self.seen_any],
            "expected_coverage_iid": {k: expect[:, c].tolist() for k, c in per_class.items()},
            "epochs_to_cover": dict(zip(keys, self.epochs_to_cover(), strict=True)),
            "expected_epochs_to_cover_iid": {
                k: (float(exp_epochs[c]) if np.isfinite(exp_epochs[c]) else None)
                for k, c in per_class.items()
            },
            "minority_repeats_per_epoch": {"max": rep_max, "mean": rep_mean},
            "anchors_with_positive": _finite(float(np.mean(self.positives)))
            if self.positives
            else None,
            "classes_chosen": [float(np.mean(d > 0)) for d in self.draws],
        }


def anchors_with_positive(batches: np.ndarray, codes: np.ndarray) -> float:
    """Share of entries of the full batches (no ``-1``) that have another, different sample of
    their class in their batch (a metric-learning anchor with a positive)."""
    full = batches[(batches >= 0).all(axis=1)]
    if not full.size:
        return float("nan")
    rows, width = full.shape
    cls = codes[full].astype(np.int64)
    group = (np.arange(rows, dtype=np.int64)[:, None] * (int(cls.max()) + 1) + cls).ravel()
    sample = full.ravel()
    order = np.lexsort((sample, group))
    g, x = group[order], sample[order]
    starts = np.r_[True, g[1:] != g[:-1]]
    ends = np.r_[starts[1:], True]
    which = np.cumsum(starts) - 1
    return float(np.mean((x[starts] != x[ends])[which]))

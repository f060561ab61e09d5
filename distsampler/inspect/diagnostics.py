"""What a sampler does to batches: composition, coverage and repeats, next to closed forms.

Pure numpy computations behind ``distsampler inspect`` (the command line only parses, prints
and plots). Vocabulary:

* a **stream** is a 1-D array of dataset indices in the order they are consumed;
* a **batch array** is ``(n, B)``, padded with ``-1`` where a batch is short;
* **labels** here are class codes ``0 .. C-1`` per sample (:func:`label_codes`), or a
  :class:`Membership` when a sample can hold several classes (multi-label) or none.

Closed forms, for i.i.d. draws (with replacement) of a class of ``n`` members:

* after ``k`` draws of the class, each member was seen with probability
  ``1 - (1 - 1/n) ** k`` (:func:`expected_coverage`), the expected seen fraction;
* all members are seen after ``n * H_n`` draws on average, ``H_n`` the harmonic number
  (coupon collector, :func:`expected_draws_to_cover`).

Samplers that cycle a class without replacement (stratified, quota ``"cycle"``) see
``min(1, k / n)`` of it, the most any sampler can; the gap to the i.i.d. numbers is what
cycling buys. Both closed forms assume the ``k`` draws are uniform over the class's members.
With overlapping classes they are not (a member that also holds another class is drawn more
often), and the uniform numbers are then an upper bound on the i.i.d. coverage: the expected
seen count ``sum_i 1 - (1 - p_i) ** k`` is concave in the draw probabilities ``p_i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Membership",
    "ShareStats",
    "batch_composition",
    "batch_shares",
    "coverage_curve",
    "ecdf",
    "expected_coverage",
    "expected_draws_to_cover",
    "first_seen",
    "full_batch_shares",
    "harmonic",
    "label_codes",
    "repeats",
    "seen_by",
]

_EULER_GAMMA = 0.5772156649015329


# -- labels and batches --------------------------------------------------------------------------
def label_codes(index) -> np.ndarray:
    """Class code (position in ``index.names``) of every sample, ``(N,)`` int32.

    Single-label indexes only: a sample in two groups keeps the last, one in none gets ``-1``.
    """
    codes = np.full(index.num_samples, -1, dtype=np.int32)
    members = np.arange(index.num_samples) if index.members is None else index.members
    codes[members] = np.repeat(np.arange(len(index.names), dtype=np.int32), index.sizes)
    return codes


@dataclass(frozen=True)
class Membership:
    """The classes of every sample, sample-major.

    Sample ``i`` holds ``classes[starts[i]:starts[i + 1]]``; ``starts`` is None when every
    sample holds exactly one class (then ``classes[i]`` is its code). A sample may hold several
    classes (multi-label) or none.
    """

    classes: np.ndarray
    num_classes: int
    starts: np.ndarray | None = None

    @classmethod
    def of(cls, index) -> Membership:
        """From a group index (``names``, ``members``, ``offsets``, ``num_samples``)."""
        num = len(index.names)
        codes = label_codes(index)
        if int(np.sum(index.sizes)) == index.num_samples and (codes >= 0).all():
            return cls(codes, num)  # as many memberships as samples and none missing: one each
        members = np.asarray(index.members, dtype=np.int64)
        pair_class = np.repeat(np.arange(num, dtype=np.int32), index.sizes)
        order = np.argsort(members, kind="stable")
        counts = np.bincount(members, minlength=index.num_samples)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(pair_class[order], num, starts)

    @classmethod
    def from_codes(cls, codes: np.ndarray, num_classes: int | None = None) -> Membership:
        """One class per sample from its code."""
        codes = np.asarray(codes)
        num = int(codes.max()) + 1 if num_classes is None else int(num_classes)
        return cls(codes, num)

    @property
    def num_samples(self) -> int:
        return len(self.classes) if self.starts is None else len(self.starts) - 1

    @property
    def multilabel(self) -> bool:
        """Whether some sample holds more than one class or none."""
        return self.starts is not None

    def counts(self) -> np.ndarray:
        """Classes held by each sample, ``(N,)``."""
        if self.starts is None:
            return np.ones(len(self.classes), dtype=np.int64)
        return np.diff(self.starts)

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-sample ``values`` repeated once per class the sample holds (aligned with
        ``classes``)."""
        values = np.asarray(values)
        return values if self.starts is None else np.repeat(values, self.counts())

    def per_class(self, values: np.ndarray) -> np.ndarray:
        """Sum of per-sample ``values`` over the members of each class, ``(C,)`` float64."""
        values = np.asarray(values, dtype=np.float64)
        return np.bincount(self.classes, weights=self.expand(values), minlength=self.num_classes)

    def count(self, samples: np.ndarray) -> np.ndarray:
        """Per class, how many of ``samples`` (repeats count) hold it, ``(C,)`` int64.

        With ``samples`` a stream of draws: the draws containing each class.
        """
        samples = np.asarray(samples, dtype=np.int64)
        held = self.classes[samples] if self.starts is None else self.pairs(samples)[1]
        return np.bincount(held, minlength=self.num_classes)

    def samples(self, cls: int) -> np.ndarray:
        """Sample indices holding class ``cls``, increasing."""
        where = self.classes == cls
        if self.starts is None:
            return np.flatnonzero(where)
        return np.repeat(np.arange(self.num_samples), self.counts())[where]

    def holds(self, cls: int) -> np.ndarray:
        """``(N,)`` bool: whether each sample holds class ``cls``."""
        mask = np.zeros(self.num_samples, dtype=bool)
        mask[self.samples(cls)] = True
        return mask

    def pairs(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(which, classes)``: one entry per (sample, class held), ``which`` indexing
        ``samples``."""
        samples = np.asarray(samples, dtype=np.int64)
        if self.starts is None:
            return np.arange(len(samples)), self.classes[samples]
        lo = self.starts[samples]
        lens = self.starts[samples + 1] - lo
        which = np.repeat(np.arange(len(samples)), lens)
        ends = np.cumsum(lens)
        pos = np.repeat(lo - (ends - lens), lens) + np.arange(int(ends[-1]) if len(ends) else 0)
        return which, self.classes[pos]

    def composition(self, batches: np.ndarray) -> np.ndarray:
        """Samples holding each class in each batch: ``(n, B)`` (``-1`` = empty) -> ``(n, C)``.

        With overlapping classes a row sums to more than the batch size.
        """
        b = np.asarray(batches, dtype=np.int64)
        b = b[None, :] if b.ndim == 1 else b.reshape(len(b), -1)
        valid = b >= 0
        rows = np.broadcast_to(np.arange(len(b))[:, None], b.shape)[valid]
        which, cls = self.pairs(b[valid])
        flat = rows[which] * self.num_classes + cls
        return np.bincount(flat, minlength=len(b) * self.num_classes).reshape(
            len(b), self.num_classes
        )


def batch_composition(
    batches: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Count of each class in each batch: ``(n, B)`` batches (``-1`` = empty) -> ``(n, C)``."""
    return Membership.from_codes(labels, num_classes).composition(batches)


def batch_shares(composition: np.ndarray, cls: int, batch_size: int | None = None) -> np.ndarray:
    """Share of class ``cls`` in each batch; only full batches (``batch_size``) when given."""
    comp = np.asarray(composition)
    size = comp.sum(axis=1)
    keep = size > 0 if batch_size is None else size == batch_size
    return comp[keep, cls] / size[keep]


def full_batch_shares(batches: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """Share of the samples of each FULL batch (no ``-1``) for which ``holds`` is True.

    Short batches (the end of an epoch) are left out: their share says more about where the
    epoch ended than about the sampler.
    """
    b = np.asarray(batches, dtype=np.int64)
    full = b[(b >= 0).all(axis=1)]
    return holds[full].mean(axis=1) if full.size else np.zeros(0)


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
_NEVER = np.iinfo(np.int64).max


def first_seen(stream: np.ndarray, num_samples: int) -> np.ndarray:
    """Index into ``stream`` of each sample's first draw, ``-1`` if it was never drawn."""
    stream = np.asarray(stream, dtype=np.int64)
    return update_first(np.full(num_samples, -1, dtype=np.int64), stream, np.arange(len(stream)))


def update_first(first: np.ndarray, stream: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Set ``first[i]`` (``-1`` = not yet seen) to the smallest ``when`` at which ``i`` occurs."""
    best = np.where(first < 0, _NEVER, first)
    np.minimum.at(best, stream, when)  # unbuffered: repeated indices keep the minimum
    first[:] = np.where(best == _NEVER, -1, best)
    return first


def seen_by(first: np.ndarray, codes: np.ndarray, num: int, at: np.ndarray) -> np.ndarray:
    """Entries of each class with ``0 <= first < at[i]``: ``(len(at), C)`` counts.

    ``first`` and ``codes`` are aligned: per sample, or per (sample, class) pair
    (:meth:`Membership.expand` of the per-sample ``first``).
    """
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
    counts = seen_by(first_seen(stream, len(codes)), codes, num, at)
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

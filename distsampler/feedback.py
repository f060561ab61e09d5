"""Shares from feedback: per-group statistics reduced across ranks, and policies that turn them
into shares for ``sampler.update_shares``.

A feedback loop is three plain steps, all of them yours to change::

    stats = GroupStats(sampler.index.names)        # per-group sums and counts
    stats.add(labels, loss)                         # every step, on every rank
    shares = exp3_shares(stats.reduce(), prev)      # one all-reduce, then a policy
    sampler.update_shares(shares)                   # at the next global step, on every rank

Policies are functions of the reduced statistics (and the previous shares): every rank
computes the same shares from the same reduced numbers, and ``update_shares`` checks that they
agree.

===============================  ===========================================================
policy                           shares
===============================  ===========================================================
:func:`exp3_shares`              ``prev * exp(eta * loss)``, mixed with a floor (DoReMi, ODM)
:func:`inverse_recall_shares`    ``(1 - recall + eps) ** power``, mixed with a floor
===============================  ===========================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

#: Per-sample or per-group numbers: an array, a tensor or a sequence.
ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

__all__ = ["GroupStats", "exp3_shares", "inverse_recall_shares"]


class GroupStats:
    """Per-group sums and counts of a per-sample signal (a loss, a 0/1 correctness, ...).

    Accumulate on each rank with :meth:`add`, then :meth:`reduce` sums every rank's numbers
    with one ``all_reduce`` of ``2 * groups`` float64 numbers (with no process group it returns
    this process's numbers) and clears the accumulator. Groups are named as the sampler's label
    index names them (``sampler.index.names``); :meth:`add` takes group *positions* in that order
    (the class id of a label ``GroupIndex``) so that it costs one ``bincount``.

    Args:
        names: the groups, in the sampler's order.
    """

    def __init__(self, names: Sequence[Hashable]) -> None:
        self.names = tuple(names)
        if not self.names:
            raise ValueError("names should be non-empty, but got names=()")
        self.sums = np.zeros(len(self.names))
        self.counts = np.zeros(len(self.names))

    def add(self, groups: ArrayLike, values: ArrayLike) -> None:
        """Add ``values[i]`` to group ``groups[i]`` (ints in ``[0, len(names))``; arrays or
        tensors of equal length)."""
        g = np.asarray(groups.detach().cpu() if hasattr(groups, "detach") else groups)
        v = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values, np.float64)
        if g.shape != v.shape or g.ndim != 1:
            raise ValueError(
                f"groups and values should be 1-d of equal length, got {g.shape} and {v.shape}"
            )
        if g.size and (g.min() < 0 or g.max() >= len(self.names)):
            raise ValueError(
                f"groups should be in [0, {len(self.names)}), got {g.min()}..{g.max()}"
            )
        self.sums += np.bincount(g, weights=v, minlength=len(self.names))
        self.counts += np.bincount(g, minlength=len(self.names))

    def reduce(self) -> dict[str, np.ndarray]:
        """``{"sum", "count", "mean"}`` over every rank (one all-reduce), then reset.

        ``mean`` is NaN for a group no rank saw since the last reduce: policies keep such a
        group's previous share. Every rank must call it at the same point (a collective).
        """
        both = np.concatenate([self.sums, self.counts])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.from_numpy(both).to(_device())
            torch.distributed.all_reduce(t)
            both = t.cpu().numpy().astype(np.float64)
        n = len(self.names)
        sums, counts = both[:n], both[n:]
        self.sums, self.counts = np.zeros(n), np.zeros(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / counts
        return {"sum": sums, "count": counts, "mean": np.where(counts > 0, mean, np.nan)}


def _floor(shares: np.ndarray, floor: float) -> np.ndarray:
    """Mix with uniform so every group gets at least ``floor / groups`` (EXP3's exploration)."""
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor should be in [0, 1], but got floor={floor!r}")
    shares = shares / shares.sum()
    return (1.0 - floor) * shares + floor / len(shares)


def _prev(prev, n: int) -> np.ndarray:
    if prev is None:
        return np.full(n, 1.0 / n)
    p = np.asarray(list(prev.values()) if isinstance(prev, Mapping) else prev, dtype=np.float64)
    if p.shape != (n,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"prev should be {n} finite shares >= 0 with a positive sum, got {p!r}")
    return p / p.sum()


def exp3_shares(
    stats: Mapping, prev: ArrayLike | None = None, *, eta: float = 1.0, floor: float = 0.1
) -> np.ndarray:
    """Exponentiated-gradient shares on per-group loss: ``prev * exp(eta * mean_loss)``.

    The online mixing family (DoReMi: Xie et al., 2023, with the excess loss over a reference
    model as the signal; Online Data Mixing: Albalak et al., 2023, EXP3): groups with a high
    loss gain share multiplicatively. The result is mixed with the uniform shares
    (``floor``), so no group starves and its loss keeps being measured. Groups with no samples
    since the last reduce (NaN mean) keep their previous share's weight (no signal).

    Args:
        stats: :meth:`GroupStats.reduce`'s dict (``"mean"`` is used; pass excess losses there
            to get DoReMi's signal).
        prev: the previous shares (array in group order, or a mapping), default uniform.
        eta: the step size (losses are centred first, so ``eta`` is in units of loss).
        floor: fraction of the shares spread uniformly, in ``[0, 1]``.

    Returns:
        Shares (float64, summing to 1) in group order: pass to ``update_shares``.
    """
    mean = np.asarray(stats["mean"], dtype=np.float64)
    p = _prev(prev, len(mean))
    seen = np.isfinite(mean)
    g = np.where(seen, mean - (mean[seen].mean() if seen.any() else 0.0), 0.0)
    logits = np.log(np.maximum(p, 1e-300)) + float(eta) * g
    w = np.exp(logits - logits.max())
    return _floor(w, float(floor))


def inverse_recall_shares(
    stats: Mapping,
    prev: ArrayLike | None = None,
    *,
    power: float = 1.0,
    eps: float = 0.05,
    floor: float = 0.1,
) -> np.ndarray:
    """Shares proportional to ``(1 - recall + eps) ** power``: up-weight what is still missed.

    ``stats`` holds per-class means of a 0/1 correctness (recall per class when the groups are
    the true classes). A class with no samples since the last reduce keeps its previous share.

    Args:
        stats: :meth:`GroupStats.reduce`'s dict of correctness (``"mean"`` = recall).
        prev: the previous shares (used for classes without samples), default uniform.
        power: sharpness (0: uniform, larger: more weight on the worst classes).
        eps: keeps fully learned classes above 0 before the floor.
        floor: fraction of the shares spread uniformly, in ``[0, 1]``.

    Returns:
        Shares (float64, summing to 1) in group order.
    """
    recall = np.asarray(stats["mean"], dtype=np.float64)
    p = _prev(prev, len(recall))
    w = (1.0 - np.clip(np.nan_to_num(recall, nan=0.0), 0.0, 1.0) + float(eps)) ** float(power)
    w = w / w.sum()
    seen = np.isfinite(recall)
    if not seen.all():  # unseen classes keep their previous share of the total
        w = np.where(seen, w * (1.0 - p[~seen].sum()) / max(w[seen].sum(), 1e-300), p)
    return _floor(w, float(floor))


# -- agreement of ranks on an update (used by the samplers) --------------------------------------
def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _checksum(run: int | None, shares: np.ndarray) -> int:
    blob = np.asarray(shares, dtype=np.float64).tobytes() + repr(run).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=7).digest(), "little")


def agree(handed: int, at: int | None, shares: np.ndarray) -> int:
    """The handed-out position every rank agrees on (the max over ranks), after checking that
    every rank passed the same ``shares`` and ``at`` (one all_gather of 3 ints a rank).

    Raises ``ValueError`` on every rank, naming the ranks that differ from rank 0. Without an
    initialised process group nothing is checked and ``handed`` is returned.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return handed
    mine = torch.tensor(
        [handed, _checksum(at, shares), -1 if at is None else at], dtype=torch.int64
    ).to(_device())
    got = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(got, mine)
    rows = [t.cpu().tolist() for t in got]
    bad = [r for r, row in enumerate(rows) if row[1:] != rows[0][1:]]
    if bad:
        raise ValueError(
            f"update_shares: ranks {bad} passed other shares (or at=) than rank 0; every rank "
            "must call update_shares with the same values at the same point (compute the "
            "shares from reduced statistics, e.g. GroupStats.reduce())"
        )
    return max(row[0] for row in rows)


def _next_run(sampler, share: np.ndarray, at: int | None, steps: int, step_units: int) -> int:
    """Run position (``epoch * epoch_units + unit``) where an update from ``sampler`` lands:
    the first global step boundary (``step_units`` plan units) no rank has handed out, or
    ``at``; checked against the ranks (:func:`agree`) and against the last update."""
    import torch.utils.data

    from ._core.checks import check_int

    if torch.utils.data.get_worker_info() is not None:
        raise RuntimeError(
            "update_shares was called inside a DataLoader worker process: the sampler there is "
            "a copy the main process never sees; call it in the training loop (indices are "
            "drawn in the main process, also with num_workers > 0)"
        )
    steps = check_int("accumulation_steps", steps, 1)
    if at is not None:
        at = check_int("at", at, 0)
    handed = agree(_handed(sampler), at, share)
    n = sampler._total()
    here = sampler.epoch * n + min(handed, n)
    if at is None:
        step = step_units * steps
        run = sampler.epoch * n + min(-(-handed // step) * step, n)
    elif at < here:
        raise ValueError(
            f"at should not lie before the handed-out run position {here}, but got at={at}"
        )
    else:
        run = at
    if sampler._updates and run < sampler._updates[-1][0]:
        raise ValueError(
            f"update_shares at run position {run} lies before the previous update "
            f"({sampler._updates[-1][0]}); updates only move forward"
        )
    return run


def _handed(sampler) -> int:
    """Global plan unit (this epoch) after the last item this rank handed out."""
    if sampler._completed:
        return sampler._total()
    y = sampler._yielded
    if y == 0:
        return sampler._resume
    return int(sampler._local_units(y - 1, y)[0]) + 1

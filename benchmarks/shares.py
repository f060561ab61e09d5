"""Shares that change during the run: the cost of an update and the pull rate around updates.

Usage (from the repository root)::

    python -m benchmarks.shares                         # 1e6 samples, 1,000 groups
    python -m benchmarks.shares --size 1e5 --groups 100 --every 100 --json out.json

* ``update_ms``: ``sampler.update_shares(shares)`` for ``--groups`` groups, one process (no
  process group, so no collective: add one all_gather of 3 ints per update under DDP), median
  of 30 updates made while the sampler is idle, in milliseconds: validation, bookkeeping, the
  segment bookkeeping of the plan. ``update_midepoch_ms``: the same in the middle of an epoch,
  where the update also cuts the list being served at its position (what was computed ahead
  is dropped, not redrawn here).
* ``pull``: indices a second handed out over one epoch of ``--size`` draws, consumed
  ``--every`` global batches of 256 at a time, with no update vs an update after each step.
  Both runs draw under the same shares (the updates pass them again), so the difference is
  the update machinery alone. ``ratio`` = rate with updates / rate without; ``ms_per_update``
  = (time with - time without) / updates: the whole cost of an update (its call, the chunk
  computed ahead and dropped, the new segment's plan), best of 5 interleaved epochs each.
  Both carry the noise of a shared machine (a few percent of an epoch).
Samplers: ``DistributedWeightedSampler(labels=...)`` stratified and i.i.d.
(``stratify=False``), ``block_size=256``; ``DistributedQuotaBatchSampler`` with float shares,
``batch_size=256``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import time

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distsampler import DistributedQuotaBatchSampler, DistributedWeightedSampler, GroupIndex

BATCH = 256


def _labels(size: int, groups: int) -> GroupIndex:
    sizes = np.maximum(1, (size / np.arange(1, groups + 1) ** 0.8)).astype(np.int64)
    sizes = np.maximum(1, sizes * size // sizes.sum())
    sizes[0] += size - sizes.sum()
    return GroupIndex.from_sizes({g: int(n) for g, n in enumerate(sizes)})


def _make(kind: str, index: GroupIndex):
    if kind == "quota":
        shares = {n: 1.0 / len(index.names) for n in index.names[:-1]}
        return DistributedQuotaBatchSampler(
            index, BATCH, shares, num_batches=index.num_samples // BATCH, num_replicas=1, rank=0
        )
    return DistributedWeightedSampler(
        labels=index, stratify=kind == "stratified", num_replicas=1, rank=0, block_size=BATCH
    )


def _shares(rng, groups: int) -> np.ndarray:
    return rng.dirichlet(np.ones(groups))


def update_cost(kind: str, index: GroupIndex) -> dict:
    rng = np.random.default_rng(1)
    s = _make(kind, index)
    idle, inflight = [], []
    for i in range(30):  # between epochs: the update's own work (no draws in flight)
        t0 = time.perf_counter()
        s.update_shares(_shares(rng, len(index.names)), at=i)
        idle.append(time.perf_counter() - t0)
    s = _make(kind, index)
    it = iter(s)
    next(it)
    for _ in range(30):  # mid-epoch: also redraws the computed-ahead part of the slice
        share = _shares(rng, len(index.names))
        t0 = time.perf_counter()
        s.update_shares(share)
        inflight.append(time.perf_counter() - t0)
        for _ in range(1 if kind == "quota" else BATCH):
            next(it)
    return {
        "update_ms": 1e3 * float(np.median(idle)),
        "update_midepoch_ms": 1e3 * float(np.median(inflight)),
    }


def pull(kind: str, index: GroupIndex, every: int | None) -> tuple[float, int]:
    """``(seconds for one epoch, updates made)``: the stream is consumed ``every`` global
    batches at a time in both runs (the same loop), with an update after each step or not.

    Both runs draw under the same shares (set at position 0), and every update passes those
    same values again: the difference is the update machinery alone (segments, cuts, the
    chunk computed ahead and dropped). Other shares draw at another speed (members of many
    mid-sized classes are further apart in memory than those of a few large ones), which is
    the cost of the shares, not of changing them.
    """
    share = _shares(np.random.default_rng(2), len(index.names))
    s = _make(kind, index)
    s.update_shares(share, at=0)
    per_batch = 1 if kind == "quota" else BATCH
    step = (every or 1000) * per_batch
    total, updates = len(s), 0
    it = iter(s)
    t0 = time.perf_counter()
    for done in range(0, total, step):
        collections.deque(itertools.islice(it, step), maxlen=0)
        if every and done + step < total:
            s.update_shares(share)
            updates += 1
    dt = time.perf_counter() - t0
    assert next(it, None) is None
    return dt, updates


def pulls(kind: str, index: GroupIndex, every: int, repeat: int = 5) -> dict:
    """Best of ``repeat`` epochs without and with updates (interleaved); the extra time an
    update costs in all (its call plus the work it causes in later draws)."""
    base_runs, runs = [], []
    for _ in range(repeat):
        base_runs.append(pull(kind, index, None)[0])
        runs.append(pull(kind, index, every))
    base = min(base_runs)
    upd, n = min(t for t, _ in runs), runs[0][1]
    items = index.num_samples
    return {
        "pull_per_s": items / base,
        "pull_with_updates_per_s": items / upd,
        "ratio": base / upd,
        "updates": n,
        "ms_per_update": 1e3 * (upd - base) / max(n, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=1e6)
    ap.add_argument("--groups", type=float, default=1000)
    ap.add_argument("--every", type=int, default=1000, help="global batches between updates")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    index = _labels(int(args.size), int(args.groups))
    out: dict = {"size": int(args.size), "groups": int(args.groups), "every": args.every}
    for kind in ("stratified", "iid", "quota"):
        row = update_cost(kind, index)
        row.update(pulls(kind, index, args.every))
        out[kind] = row
        print(
            f"{kind:>10}: update {row['update_ms']:.3f} ms, mid-epoch "
            f"{row['update_midepoch_ms']:.2f} ms; pull {row['pull_per_s']:,.0f}/s, with "
            f"{row['updates']} updates (one every {args.every} batches) "
            f"{row['pull_with_updates_per_s']:,.0f}/s (ratio {row['ratio']:.2f}, "
            f"{row['ms_per_update']:.2f} ms an update in all)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()

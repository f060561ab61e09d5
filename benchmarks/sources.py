"""A 1e10-sample mixture of data sources: ranges as groups, target shares, W = 1024.

Usage (from the repository root)::

    python -m benchmarks.sources                      # N = 1e10, W = 1024, 1e6 indices pulled
    python -m benchmarks.sources --size 1e6 --world 8 --count 1e4

The dataset is three sources laid end to end (``web`` 60%, ``books`` 30%, ``code`` 10% of N,
as in a ``ConcatDataset``), indexed by ``GroupIndex.from_sizes``: nothing of size N is stored.
Rank 0 of W draws with ``class_weights=weights.target_shares({"web": 0.6, "books": 0.3,
"code": 0.1})``, stratified (the default). In a fresh interpreter (see
:mod:`benchmarks.harness`) it measures:

* construction + first index: ``from_sizes``, the sampler, ``set_epoch``, ``iter``, the first
  index (target < 50 ms);
* the peak anonymous memory beyond the start over all of it (target < 64 MB);
* the time to take the first ``--count`` indices (drained in C), the ``DataLoader`` pull of
  the same count and its efficiency (pull / the same loader fed a ready list of Python ints);
* the shares of the sources among those indices (the targets 0.6 / 0.3 / 0.1).

What users run today cannot start here: ``DistributedSampler`` builds ``randperm(N)`` on every
rank (8 bytes a sample), and ``WeightedRandomSampler`` needs N float64 weights and refuses more
than 2**24 of them; the table says so with the bytes each would need.
"""

from __future__ import annotations

import collections
import itertools
import os
import sys
import time

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, tables
from distsampler import DistributedWeightedSampler, GroupIndex, weights

SHARES = {"web": 0.6, "books": 0.3, "code": 0.1}
SHARES_CHECKED = 100_000  # indices whose sources are counted


def source_sizes(n: int) -> dict[str, int]:
    """The sources' sizes: ``SHARES`` of ``n`` (the last takes the rounding)."""
    web, books = int(n * 0.6), int(n * 0.3)
    return {"web": web, "books": books, "code": n - web - books}


def run_case(case: dict) -> dict:
    """Rank 0 of ``world`` over ``n`` samples in three sources (see the module docstring)."""
    n, world, count, bs = case["n"], case["world"], case["count"], case["batch_size"]
    with harness.AnonPeak() as mem:
        t0 = time.perf_counter()
        index = GroupIndex.from_sizes(source_sizes(n))
        sampler = DistributedWeightedSampler(
            labels=index,
            class_weights=weights.target_shares(SHARES),
            num_replicas=world,
            rank=0,
        )
        t1 = time.perf_counter()
        sampler.set_epoch(0)
        it = iter(sampler)
        next(it)
        t2 = time.perf_counter()
        collections.deque(itertools.islice(it, count - 1), maxlen=0)
        t3 = time.perf_counter()
    rec = {
        "status": "ok",
        "init_s": t1 - t0,
        "first_s": t2 - t1,
        "count": min(count, len(sampler)),
        "count_s": t3 - t1,
        "per_rank": len(sampler),
        "anon_start_mb": mem.start_mb,
        "peak_extra_mb": mem.extra_mb,
    }
    rec |= harness.pull_rate(sampler, "index", n, bs, count, epoch=1)
    sampler.set_epoch(2)
    drawn = np.fromiter(itertools.islice(iter(sampler), SHARES_CHECKED), dtype=np.int64)
    source = np.searchsorted(index.offsets, drawn, side="right") - 1
    rec["shares"] = dict(
        zip(index.names, (np.bincount(source, minlength=3) / len(drawn)).tolist(), strict=True)
    )
    return rec


def cannot_run(n: int) -> list[list[str]]:
    """Rows for today's recipes, which cannot start at ``n`` samples."""
    gb = 8 * n / 1e9
    why_ds = f"cannot run: randperm(N) on every rank, {gb:.0f} GB of int64"
    why_wrs = f"cannot run: {gb:.0f} GB of float64 weights, and at most 2**24 categories"
    if n <= 2**24:
        why_wrs = "not run (see benchmarks.throughput)"
        why_ds = why_wrs
    return [
        ["(1) WeightedRandomSampler + wrapper", why_wrs],
        ["(2) DistributedSampler(shuffle)", why_ds],
    ]


def table(r: dict) -> str:
    head = [
        "sampler",
        "construction + first index (ms)",
        "anon peak extra (MB)",
        "indices pulled",
        "time to pull (s)",
        "DataLoader pull (M idx/s)",
        "efficiency",
        "shares web / books / code",
    ]
    label = f"ours: stratified, target shares, N = {r['n']:.0e}, W = {r['world']}, rank 0"
    if r["status"] != "ok":
        return tables.markdown(head, [[label, tables.not_run(r)]])
    setup = r["init_s"] + r["first_s"]
    shares = " / ".join(f"{r['shares'][k]:.3f}" for k in SHARES)
    row = [
        label,
        f"{setup * 1e3:.1f}{tables.verdict(setup, setup < 0.05)}",
        f"{r['peak_extra_mb']:.0f}{tables.verdict(r['peak_extra_mb'], r['peak_extra_mb'] < 64)}",
        f"{r['count']:,}",
        f"{r['count_s']:.2f}",
        tables.rate(r.get("pull_rate")),
        tables.share(r.get("efficiency")),
        shares,
    ]
    return tables.markdown(head, [row, *cannot_run(r["n"])])


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=10**10, world=1024)
    p.add_argument("--count", type=harness.parse_size, default=10**6, help="indices to pull")
    p.add_argument("--batch-size", type=int, default=256)
    args = harness.start(p, argv, run_case)
    if args is None:  # it ran one --case
        return 0
    case = {"n": args.size, "world": args.world, "count": args.count, "batch_size": args.batch_size}
    lacking = harness.missing("GroupIndex.from_sizes")
    if lacking:
        rec = {**case, "status": "skipped", "reason": lacking}
    else:
        rec = {**case, **harness.dispatch("sources", case, args.inline, run_case, 300)}
    print()
    print(table(rec))
    return harness.finish(args.json, [rec])


if __name__ == "__main__":
    sys.exit(main())

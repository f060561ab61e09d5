"""Sharded storage: the plan's cost per rank at 1e8 samples in 1e5 shards.

Usage (from the repository root)::

    python -m benchmarks.shards_plan --json shards_plan.json     # N = 1e8, 1e5 shards, W = 8
    python -m benchmarks.shards_plan --size 1e6 --num-shards 1e3 --world 2

The labels (37 classes: 36 of about 2.75% and a rare one of 1%, class-mixed, seeded) are
built once into a ``GroupIndex`` and saved; then a fresh interpreter (rank 0 of ``W``) imports
torch, numpy and distsampler, reads its *baseline* (``Anonymous:`` of
``/proc/self/smaps_rollup``: the interpreter, torch and numpy), and times each step with
``time.perf_counter``:

* ``load``: ``GroupIndex.load(dir, mmap=True)`` (the checks on load included) and
  ``ShardLayout.from_sizes`` of the shards (equal sizes);
* ``build``: ``DistributedWeightedSampler(labels=index, class_weights="balanced",
  shards=layout, cache_shards=4, lanes=W, block_size=32, num_replicas=W, rank=0)``;
* ``first index``: ``set_epoch(1)``, ``iter`` and the first index;
* ``schedule``: ``shard_schedule()`` (what the reader asks for at each epoch start) and
  ``resident_indices()``.

Memory: the private anonymous memory after the first index, minus the baseline (the figure
that counts per rank; target <= 64 MB), the same after the schedule too, the peak
(``RssAnon`` polled every 2 ms), and the RSS (which also counts the pages of the mapped label
files the rank touched: file-backed, shared by a node's ranks). Targets: load + build + first
index < 1 s.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, tables

CLASSES = 37
RARE_SHARE = 0.01


def make_index(n: int, directory: Path) -> dict:
    """Seeded class-mixed labels of ``CLASSES`` classes (the last one rare), saved as a
    ``GroupIndex`` in ``directory``; chunks of 1e7 keep the build's own memory small."""
    from distsampler import GroupIndex

    p = np.full(CLASSES, (1 - RARE_SHARE) / (CLASSES - 1))
    p[-1] = RARE_SHARE
    cum = np.cumsum(p)
    cum[-1] = 1.0
    rng = np.random.default_rng(0)
    labels = np.empty(n, dtype=np.int8)
    step = 10_000_000
    for a in range(0, n, step):
        b = min(n, a + step)
        labels[a:b] = np.searchsorted(cum, rng.random(b - a), side="right")
    t0 = time.perf_counter()
    index = GroupIndex.from_labels(labels)
    index.save(directory)
    return {"index_s": time.perf_counter() - t0, "sizes": index.sizes.tolist()}


def run(case: dict) -> dict:
    """One rank in this (fresh) interpreter: load, build, first index, memory."""
    import torch  # noqa: F401  (the baseline holds what every rank imports)

    from distsampler import DistributedWeightedSampler, GroupIndex
    from distsampler.shards import ShardLayout

    warnings.simplefilter("ignore", UserWarning)
    base = harness.anon_mb()
    rss0 = harness.proc_kb("VmRSS") / 1024
    file0 = harness.proc_kb("RssFile") / 1024
    world = case["world"]
    with harness.AnonPeak() as peak:
        t0 = time.perf_counter()
        index = GroupIndex.load(case["dir"], mmap=True)
        layout = ShardLayout.from_sizes(
            np.full(case["num_shards"], case["n"] // case["num_shards"])
        )
        t1 = time.perf_counter()
        sampler = DistributedWeightedSampler(
            labels=index,
            class_weights="balanced",
            shards=layout,
            cache_shards=4,
            lanes=world,
            block_size=32,
            num_replicas=world,
            rank=0,
        )
        t2 = time.perf_counter()
        sampler.set_epoch(1)
        it = iter(sampler)
        next(it)
        t3 = time.perf_counter()
        first_anon = harness.anon_mb()
        sched = sampler.shard_schedule()
        resident = sampler.resident_indices()
        t4 = time.perf_counter()
        after = harness.anon_mb()
    return {
        "status": "ok",
        "n": case["n"],
        "num_shards": case["num_shards"],
        "world": world,
        "load_s": t1 - t0,
        "build_s": t2 - t1,
        "first_s": t3 - t2,
        "schedule_s": t4 - t3,
        "total_s": t3 - t0,
        "baseline_anon_mb": base,
        "anon_extra_mb": first_anon - base,
        "anon_schedule_extra_mb": after - base,
        "anon_peak_extra_mb": peak.peak_mb - peak.start_mb,
        "rss_extra_mb": harness.proc_kb("VmRSS") / 1024 - rss0,
        "mapped_touched_mb": harness.proc_kb("RssFile") / 1024 - file0,
        "scheduled_shards": int(sum(len(v) for v in sched.values())),
        "resident": int(len(resident)),
    }


HEAD = [
    "N / shards / W",
    "load (s)",
    "build (s)",
    "first index (s)",
    "load + build + first (s)",
    "schedule + resident (s)",
    "anon extra at first index (MB)",
    "anon extra with schedule (MB)",
    "anon peak extra (MB)",
    "RSS extra (MB)",
]


def table(r: dict) -> str:
    if r.get("status") != "ok":
        return tables.markdown(HEAD, [["rank 0", tables.not_run(r)]])
    total, anon = r["total_s"], r["anon_extra_mb"]
    row = [
        f"{r['n']:.0e} / {r['num_shards']:.0e} / {r['world']}",
        f"{r['load_s']:.3f}",
        f"{r['build_s']:.3f}",
        f"{r['first_s']:.3f}",
        f"{total:.3f}" + tables.verdict(total, total < 1.0),
        f"{r['schedule_s']:.3f}",
        f"{anon:.0f}" + tables.verdict(anon, anon <= 64),
        f"{r['anon_schedule_extra_mb']:.0f}",
        f"{r['anon_peak_extra_mb']:.0f}",
        f"{r['rss_extra_mb']:.0f}",
    ]
    return tables.markdown(HEAD, [row])


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=100_000_000, world=8)
    p.add_argument("--num-shards", type=harness.parse_size, default=100_000, help="shards")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds for the rank's case")
    args = harness.start(p, argv, run)
    if args is None:
        return 0
    with harness.scratch(args.dir) as d:
        directory = d / f"labels-{args.size}"
        harness.log(f"building {args.size:.0e} labels into {directory}")
        built = make_index(args.size, directory)
        case = {"n": args.size, "num_shards": args.num_shards, "world": args.world}
        case["dir"] = str(directory)
        rec = harness.dispatch("shards_plan", case, args.inline, run, args.time_limit)
        rec.update(index_build_s=built["index_s"])
    base = rec.get("baseline_anon_mb")
    print(
        f"\n{args.size:.0e} labels ({CLASSES} classes, rare {RARE_SHARE:.0%}), "
        f"{args.num_shards:.0e} shards, rank 0 of {args.world}"
        + ("" if base is None else f", baseline anonymous {base:.0f} MB after imports")
        + "\n"
    )
    print(table(rec))
    return harness.finish(args.json, [rec])


if __name__ == "__main__":
    sys.exit(main())

"""Shared-memory mode: the anonymous memory of one rank when every O(N) array is a mapped file.

Usage (from the repository root)::

    python -m benchmarks.memory                       # N = 1e8, W = 8
    python -m benchmarks.memory --size 1e6 --json out.json

The index is built **once** (what a launcher or a preprocessing step does), saved, and every
rank loads it with ``mmap=True``: the files' pages are file-backed and shared by the ranks of a
node, so what a rank adds is its *anonymous* memory (``RssAnon``; see
:mod:`benchmarks.harness`). Each case runs in a fresh interpreter, so no case sees another's
memory:

* ``build``: the peak anonymous memory while building the index from labels / weights already
  in memory, against the index's final size (its saved files). Target: peak <= 2x final.
* ``load``: rank 0 of ``W`` loads the saved index with ``mmap=True``, builds the sampler and
  draws its whole epoch share. Reported: the peak anonymous memory beyond what the process held
  before loading (target <= 64 MB), the file-backed pages it touched (shared), and times.
  ``DistributedSampler`` (what users run today) is measured the same way for comparison: it
  needs no index, but every rank holds ``randperm(N)``.

Modes: weights i.i.d. (``WeightIndex.from_weights(w).save(dir)``, then
``DistributedWeightedSampler(weights=WeightIndex.load(dir, mmap=True), ...)``) for two weight
vectors: the balanced weights of the binary labels (2 distinct values: ``WeightIndex`` groups
samples by value) and the same jittered per sample (continuous: cumulative weights and a guide
table); labels i.i.d., labels stratified and quota batches (one ``GroupIndex`` saved once,
loaded with ``mmap=True``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import baselines, harness, tables
from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
)

BATCH = 256

# Two weight vectors: the balanced weights of binary labels take 2 distinct values (WeightIndex
# stores them by value); "continuous" ones, jittered per sample, need its cumulative layout.
BUILDS = {
    "weight_index": "WeightIndex.from_weights (2 distinct weights)",
    "weight_index_cont": "WeightIndex.from_weights (continuous weights)",
    "group_index": "GroupIndex.from_labels",
}
LOADS = {
    "weights_iid": "weights i.i.d. (2 distinct weights)",
    "weights_iid_cont": "weights i.i.d. (continuous weights)",
    "labels_iid": "labels i.i.d.",
    "labels_strat": "labels stratified",
    "quota": "quota batches (32 of 256)",
    "dist_sampler": "(2) DistributedSampler(shuffle)",
}
WEIGHT_DIRS = {"weights_iid": "weight_index", "weights_iid_cont": "weight_index_cont"}
NEEDS = {m: ("WeightIndex",) for m in (*WEIGHT_DIRS, *WEIGHT_DIRS.values())}


def dir_mb(path: Path) -> float:
    """Bytes of the files under ``path``, in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# -- the cases (each in its own interpreter) -------------------------------------------------
def build_case(case: dict) -> dict:
    """Build one index from inputs already in memory; peak anonymous memory vs final size."""
    labels = baselines.make_labels(case["n"])
    inputs: Any = labels
    if case["mode"].startswith("weight_index"):
        from distsampler import WeightIndex

        inputs, build = baselines.balanced_weights(labels), WeightIndex.from_weights
        if case["mode"] == "weight_index_cont":
            inputs *= np.random.default_rng(1).uniform(0.5, 1.5, size=len(inputs))
        del labels
    else:
        build = GroupIndex.from_labels
    with harness.AnonPeak() as mem:
        t0 = time.perf_counter()
        index = build(inputs)
        build_s = time.perf_counter() - t0
    rec = {"status": "ok", "build_s": build_s, "peak_extra_mb": mem.extra_mb}
    out = Path(case["dir"]) / case["mode"]
    index.save(out)
    rec["final_mb"] = dir_mb(out)
    rec["peak_over_final"] = rec["peak_extra_mb"] / rec["final_mb"]
    return rec


def _sampler(mode: str, directory: Path, n: int, world: int) -> tuple[Any, str]:
    """Rank 0 of ``world`` for ``mode``, its index loaded with ``mmap=True``; and its kind."""
    kw = {"num_replicas": world, "rank": 0}
    if mode == "dist_sampler":
        return baselines.distributed_sampler(n, world, 0), "index"
    if mode in WEIGHT_DIRS:
        from distsampler import WeightIndex

        wi = WeightIndex.load(directory / WEIGHT_DIRS[mode], mmap=True)
        return DistributedWeightedSampler(weights=wi, **kw), "index"
    index = GroupIndex.load(directory / "group_index", mmap=True)
    if mode == "quota":
        quota = DistributedQuotaBatchSampler(
            index, BATCH, {1: BATCH // 8}, policies={1: "replace"}, **kw
        )
        return quota, "batch"
    return DistributedWeightedSampler(labels=index, stratify=mode == "labels_strat", **kw), "index"


def load_case(case: dict) -> dict:
    """Load, build and draw rank 0's whole epoch; the anonymous memory it took."""
    rss_file0 = harness.proc_kb("RssFile")
    with harness.AnonPeak() as mem:
        t0 = time.perf_counter()
        sampler, kind = _sampler(case["mode"], Path(case["dir"]), case["n"], case["world"])
        t1 = time.perf_counter()
        first_s, epoch_s, items = harness.timed_epoch(sampler, kind, 0)
    return {
        "status": "ok",
        "init_s": t1 - t0,
        "first_s": first_s,
        "epoch_s": epoch_s,
        "items": items,
        "anon_start_mb": mem.start_mb,
        "peak_extra_mb": mem.extra_mb,
        "file_touched_mb": max(0, harness.proc_kb("RssFile") - rss_file0) / 1024,
        "smaps_anonymous_mb": harness.anon_mb(),  # cross-check of RssAnon, at the end
    }


def run_case(case: dict) -> dict:
    return build_case(case) if case["mode"] in BUILDS else load_case(case)


# -- the run ---------------------------------------------------------------------------------
def plan(n: int, world: int, directory: Path) -> list[dict]:
    """Builds first (they write the files the loads map), then one load per mode."""
    return [{"mode": m, "n": n, "world": world, "dir": str(directory)} for m in [*BUILDS, *LOADS]]


def run_all(cases: list[dict], inline: bool, log: Callable[[str], None]) -> list[dict]:
    out = []
    for case in cases:
        lacking = harness.missing(*NEEDS.get(case["mode"], ()))
        if lacking:
            rec = {**case, "status": "skipped", "reason": lacking}
        else:
            timeout = 60 + 120 * case["n"] / 1e8
            rec = {**case, **harness.dispatch("memory", case, inline, run_case, timeout)}
        out.append(rec)
        log(f"{rec['mode']:<13} {rec['status']} {rec.get('reason', '')}")
    return out


def build_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if r["mode"] not in BUILDS:
            continue
        lead = [BUILDS[r["mode"]], f"{r['n']:.0e}"]
        if r["status"] != "ok":
            rows.append([*lead, tables.not_run(r)])
            continue
        met = tables.verdict(r["peak_over_final"], r["peak_over_final"] <= 2)
        rows.append(
            [
                *lead,
                f"{r['build_s']:.2f}",
                f"{r['final_mb']:.0f}",
                f"{r['peak_extra_mb']:.0f}",
                f"{r['peak_over_final']:.2f}x{met}",
            ]
        )
    head = ["index", "N", "build (s)", "final size (MB)", "peak anon (MB)", "peak / final"]
    return tables.markdown(head, rows)


def load_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if r["mode"] not in LOADS:
            continue
        lead = [LOADS[r["mode"]], f"{r['n']:.0e}", str(r["world"])]
        if r["status"] != "ok":
            rows.append([*lead, tables.not_run(r)])
            continue
        ours = r["mode"] != "dist_sampler"
        met = tables.verdict(r["peak_extra_mb"], r["peak_extra_mb"] <= 64) if ours else ""
        rows.append(
            [
                *lead,
                f"{r['init_s'] * 1e3:.1f}",
                f"{r['first_s'] * 1e3:.1f}",
                f"{r['epoch_s']:.2f}",
                f"{r['peak_extra_mb']:.0f}{met}",
                f"{r['file_touched_mb']:.0f}",
            ]
        )
    head = "rank 0 of W|N|W|load + init (ms)|first index (ms)|epoch/rank (s)|anon peak extra (MB)"
    return tables.markdown([*head.split("|"), "mapped pages touched (MB)"], rows)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=10**8, world=8)
    args = harness.start(p, argv, run_case)
    if args is None:  # it ran one --case
        return 0
    with harness.scratch(args.dir) as directory:
        records = run_all(plan(args.size, args.world, directory), args.inline, harness.log)
    print("\nBuilding an index once (peak anonymous memory beyond the inputs):\n")
    print(build_table(records))
    print("\nOne rank, index loaded with mmap=True (anonymous memory beyond the start):\n")
    print(load_table(records))
    return harness.finish(args.json, records)


if __name__ == "__main__":
    sys.exit(main())

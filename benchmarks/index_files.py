"""The cost of checking a saved index on every load (files are inputs), at N = 1e8.

Usage (from the repository root)::

    python -m benchmarks.index_files                  # N = 1e8: a label and a weight index
    python -m benchmarks.index_files --size 1e6 --json out.json

Each index is built, saved (atomic: temporary directory, fsync, manifest, rename) and loaded
with ``mmap=True`` three ways, best of 3, page cache warm (just saved):

* ``np.load`` of every file, memory-mapped, nothing checked (what distsampler 0.2 did);
* ``load(verify=False)``: manifest, sizes, dtypes, sampled fingerprints and every range check
  (a chunked min/max over ``members``; finite non-negative weights; monotone cumulative
  weights and guide table);
* ``load()`` (``verify=True``, the default): the same plus a CRC-32 of every file.

A cold page cache adds one read of the files from disk to the first load of a node (the range
checks read every member); the other ranks of the node then share those pages.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, tables
from distsampler import GroupIndex, WeightIndex


def _best(fn, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _raw(directory: Path) -> None:
    for path in directory.glob("*.npy"):
        np.load(path, mmap_mode="r", allow_pickle=False)


def case(kind: str, n: int, directory: Path) -> dict:
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    if kind == "labels":
        cls = GroupIndex
        index = GroupIndex.from_labels(rng.integers(0, 4, n, dtype=np.int8))
    else:
        cls = WeightIndex
        index = WeightIndex.from_weights(rng.random(n))
    build = time.perf_counter() - t
    d = directory / kind
    t = time.perf_counter()
    index.save(d)
    save = time.perf_counter() - t
    del index
    size = sum(p.stat().st_size for p in d.iterdir()) / 1e6
    raw = _best(lambda: _raw(d))
    fast = _best(lambda: cls.load(d, mmap=True, verify=False))
    full = _best(lambda: cls.load(d, mmap=True))
    return {
        "kind": kind,
        "n": n,
        "MB": size,
        "build": build,
        "save": save,
        "raw": raw,
        "checked": fast,
        "verified": full,
        "status": "ok",
    }


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=10**8)  # cases run in this process (--inline or not)
    args = p.parse_args(argv)
    records = []
    with harness.scratch(None) as tmp:
        for kind in ("labels", "weights"):
            harness.log(f"{kind} N={args.size:.0e}")
            records.append(case(kind, args.size, tmp))
            for path in (tmp / kind).iterdir():  # free the disk before the next index
                path.unlink()
    head = [
        "index",
        "N",
        "files (MB)",
        "build (s)",
        "save (s)",
        "np.load, unchecked (s)",
        "load(verify=False) (s)",
        "load() (s)",
    ]
    rows = [
        [
            r["kind"],
            f"{r['n']:.0e}",
            f"{r['MB']:.0f}",
            f"{r['build']:.2f}",
            f"{r['save']:.2f}",
            f"{r['raw']:.4f}",
            f"{r['checked']:.3f}",
            f"{r['verified']:.3f}",
        ]
        for r in records
    ]
    print(tables.markdown(head, rows))
    return harness.finish(args.json, records)


if __name__ == "__main__":
    sys.exit(main())

"""Micro-benchmark of the plan kernels: ``permute`` and ``stratified_ranks``, ns per element.

Usage::

    python benchmarks/kernels.py                 # every case, best of 5 (about 20 s on 2 cores)
    python benchmarks/kernels.py --quick         # smaller inputs, best of 2 (a few seconds)
    python benchmarks/kernels.py --json out.json

Cases (one process, numpy only, inputs built before the clock starts):

* ``permute``: ``--size`` elements (default 1e6), each with its own domain ``n`` and key, as
  :func:`stratified_ranks` and ``cycled_members`` call it: small domains (``n`` in 16..1000) and
  large ones (1e6..1e9); a batch shuffle (one key a row, ``n = 256``); and ``group=`` (1000 keys,
  one per class, element ``i`` uses ``key[group[i]]``).
* ``stratified_ranks``: one block of ``M = 2**20`` positions (window 16, members cycled with the
  class sizes), rank 0's positions of ``W`` ranks with ``block_size=1`` (a stride of ``W``), for
  3 classes (shares 0.6/0.3/0.1, sizes 5000/800/7: the tiny class cuts segments often) and 1000
  classes (random shares and sizes). The ``M = 1e10`` rows take rank 0's first 65536 positions
  of 1024 ranks: the exact (beyond int64 products) arithmetic path.

The figure is the best of ``--repeat`` runs divided by the number of elements (positions).
Run it on a quiet machine: other work on the cores inflates every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed (or PYTHONPATH) distsampler wins, so old and new code can be compared
    import distsampler  # noqa: F401
except ImportError:  # a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distsampler._core.keyed import derive, make_key, permute
from distsampler._core.strata import stratified_ranks


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def permute_cases(size: int) -> dict[str, tuple]:
    """name -> (callable, elements)."""
    rng = np.random.default_rng(0)
    keys = derive(make_key(1), np.arange(size))
    out = {}
    for name, lo, hi in (("small n 16..1000", 16, 1001), ("large n 1e6..1e9", 10**6, 10**9 + 1)):
        n = rng.integers(lo, hi, size)
        idx = (rng.random(size) * n).astype(np.int64)
        out[f"permute, {name}, per-element keys"] = (lambda i=idx, n=n: permute(i, n, keys), size)
    rows = size // 256
    order = np.arange(256)[None, :]
    batch_keys = derive(make_key(2), np.arange(rows))[:, None]
    out["permute, batch shuffle (n = 256, a key a row)"] = (
        lambda: permute(order, 256, batch_keys),
        rows * 256,
    )
    group = rng.integers(0, 1000, size)
    sizes = rng.integers(16, 5001, 1000)
    n = sizes[group]
    idx = (rng.random(size) * n).astype(np.int64)
    gkeys = derive(make_key(3), np.arange(1000))
    out["permute, group= (1000 keys, n 16..5000)"] = (
        lambda: permute(idx, n, gkeys, group=group),
        size,
    )
    return out


def _strata_inputs(num: int, total: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if num == 3:
        shares, sizes = np.array([0.6, 0.3, 0.1]), np.array([5000, 800, 7])
    else:
        shares, sizes = rng.dirichlet(np.ones(num)), rng.integers(1, 5001, num)
    counts = np.floor(shares * total).astype(np.int64)
    counts[0] += total - int(counts.sum())
    return counts, sizes, 3 * counts  # base: the stream of epoch 3


def strata_cases(quick: bool) -> dict[str, tuple]:
    m = 2**18 if quick else 2**20
    out = {}
    for num in (3, 1000):
        counts, sizes, base = _strata_inputs(num, m)
        for world in (1, 8):
            pos = np.arange(0, m, world)
            out[f"stratified_ranks, {num} classes, M = {m}, W = {world}"] = (
                lambda p=pos, c=counts, s=sizes, b=base: stratified_ranks(p, c, s, b, 7, 16),
                len(pos),
            )
    counts, sizes, base = _strata_inputs(3, 10**10)
    pos = np.arange(0, 65536 * 1024, 1024)
    out["stratified_ranks, 3 classes, M = 1e10, W = 1024"] = (
        lambda: stratified_ranks(pos, counts, sizes, base, 7, 16),
        len(pos),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=float, default=1e6, help="elements per permute case")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (the best counts)")
    ap.add_argument("--quick", action="store_true", help="1e5 elements, best of 2")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    size, repeat = (10**5, 2) if args.quick else (int(args.size), args.repeat)
    cases = {**permute_cases(size), **strata_cases(args.quick)}
    print(f"# numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print("| case | ns per element |\n|---|---:|")
    results = {}
    for name, (fn, count) in cases.items():
        fn()  # warm-up
        ns = _best(fn, repeat) / count * 1e9
        results[name] = round(ns, 1)
        print(f"| {name} | {ns:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

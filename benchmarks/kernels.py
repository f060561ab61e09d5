"""Micro-benchmark of the plan kernels: ``permute`` and ``stratified_ranks``, ns per element.

Usage::

    python benchmarks/kernels.py                 # every case, best of 5 (about 20 s on 2 cores)
    python benchmarks/kernels.py --quick         # smaller inputs, best of 2 (a few seconds)
    python benchmarks/kernels.py --json out.json
    python benchmarks/kernels.py --baseline /tmp/old   # a second column: an older source tree

``--baseline DIR`` imports the kernels of another checkout (``DIR/distsampler``, e.g. from
``git archive <commit> distsampler | tar -x -C DIR``) under another name, and times each case
alternately with both, so that both columns see the same machine load.

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

The figure is the best of ``--repeat`` runs divided by the number of elements (positions), in
process CPU time (time waiting for a core is not counted). Other work on the cores still
inflates every figure (caches, memory bandwidth): compare columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
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

from distsampler._core import keyed, strata


def load_baseline(root: Path):
    """``(keyed, strata)`` of the checkout at ``root``, imported as package ``baseline``."""
    init = root / "distsampler" / "__init__.py"
    spec = importlib.util.spec_from_file_location("baseline", init)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["baseline"] = mod
    spec.loader.exec_module(mod)
    return (
        importlib.import_module("baseline._core.keyed"),
        importlib.import_module("baseline._core.strata"),
    )


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def permute_cases(size: int, kd=keyed) -> dict[str, tuple]:
    """name -> (callable, elements), with the kernels of module ``kd``."""
    derive, make_key, permute = kd.derive, kd.make_key, kd.permute
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


def strata_cases(quick: bool, st=strata) -> dict[str, tuple]:
    stratified_ranks = st.stratified_ranks
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
    ap.add_argument("--baseline", type=Path, help="source tree to time side by side")
    args = ap.parse_args(argv)
    size, repeat = (10**5, 2) if args.quick else (int(args.size), args.repeat)
    columns = {"ns per element": {**permute_cases(size), **strata_cases(args.quick)}}
    if args.baseline:
        kd, st = load_baseline(args.baseline)
        columns[f"baseline ({args.baseline})"] = {
            **permute_cases(size, kd),
            **strata_cases(args.quick, st),
        }
    print(f"# numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print("| case | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    results = {}
    for name in columns["ns per element"]:
        best = dict.fromkeys(columns, float("inf"))
        for col in columns.values():
            col[name][0]()  # warm-up
        for _ in range(repeat):  # alternate, so every column sees the same load
            for label, col in columns.items():
                fn, count = col[name]
                best[label] = min(best[label], _best(fn, 1) / count * 1e9)
        results[name] = {label: round(ns, 1) for label, ns in best.items()}
        print(f"| {name} | " + " | ".join(f"{ns:.1f}" for ns in best.values()) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

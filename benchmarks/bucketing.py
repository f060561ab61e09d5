"""Bucketed batches: padding, rank balance, build time and memory, against today's recipes.

Usage (from the repository root)::

    python -m benchmarks.bucketing                 # padding and balance at 1e6, speed at 1e7,
                                                   # memory at 1e8 (W = 8)
    python -m benchmarks.bucketing --size 1e5 --big 1e6 --inline --json out.json   # quick

Lengths are lognormal (``sigma = 1``, median 128 tokens, truncated at 4096 as a tokenizer
would), drawn by a stratified, class-balanced source (labels with a 2% minority: minority
samples repeat about 25 times an epoch). Every recipe batches the *same* source stream:

* ``padding``: padded tokens over real tokens (``batch x max length`` summed, over the sum of
  lengths) for random batches (the source's stream cut every ``B``), HF ``group_by_length``
  (``LengthGroupedSampler``: megabatches of ``50 B`` sorted by length), sorting each window of
  ours fully by length (``64 B`` samples), the whole epoch sorted (the floor), and ours
  (``batch_size=B``, and ``max_tokens`` with the same mean batch). Targets: ours within 1.2x
  of sorting each window, at least 3x less padding than random batches.
* ``balance``: ``max_tokens`` mode at ``W = 8``: over global steps, the largest micro-batch
  cost over the mean one; target p99 <= 1.05 with 25+ samples a batch.
* ``speed``: rank 0 of 8 at ``--big`` samples (1e7): building the sampler and its first
  batch, both modes. Target <= 2 s.
* ``memory``, ``memory_tokens``: rank 0 of 8 at ``--huge`` samples (1e8), labels saved as a
  ``GroupIndex`` and the sizes as a ``.npy``, both memory-mapped: anonymous memory beyond the
  start while building the sampler and taking 1,000 batches (with ``max_tokens``, after the
  pass that counts the epoch's batches). Target <= 64 MB.
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
from distsampler import DistributedBucketBatchSampler, DistributedWeightedSampler, GroupIndex

BATCH = 32
MEGA = 50  # HF LengthGroupedSampler's megabatch multiplier
MINORITY = 0.02


def lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(128), 1.0, n), 1, 4096).astype(np.int32)


def labels(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < MINORITY).astype(np.int8)


def padding_ratio(batches, sizes: np.ndarray) -> float:
    padded = real = 0
    for b in batches:
        s = sizes[np.asarray(b)]
        padded += len(s) * int(s.max())
        real += int(s.sum())
    return padded / real


def sorted_cuts(stream: np.ndarray, sizes: np.ndarray, span: int, b: int) -> list:
    """Cut each ``span`` of the stream after sorting it by length (decreasing)."""
    out = []
    for lo in range(0, len(stream), span):
        part = stream[lo : lo + span]
        part = part[np.argsort(-sizes[part], kind="stable")]
        out += [part[i : i + b] for i in range(0, len(part), b)]
    return out


# -- cases ----------------------------------------------------------------------------------
def padding_case(case: dict) -> dict:
    n = case["n"]
    sizes, labs = lengths(n), labels(n)
    source = DistributedWeightedSampler(labels=labs, num_replicas=1, rank=0)
    ours = DistributedBucketBatchSampler(source, sizes, batch_size=BATCH, num_replicas=1, rank=0)
    batches = list(ours)
    stream = source.indices(np.arange(len(batches) * BATCH))
    mean_tokens = BATCH * float(np.mean([sizes[b].max() for b in batches]))
    tokens = DistributedBucketBatchSampler(
        source, sizes, max_tokens=int(mean_tokens), num_replicas=1, rank=0
    )
    recipes = {
        "random batches": [stream[i : i + BATCH] for i in range(0, len(stream), BATCH)],
        "HF group_by_length (megabatch 50 B)": sorted_cuts(stream, sizes, MEGA * BATCH, BATCH),
        "each window sorted (64 B)": sorted_cuts(stream, sizes, ours.window, BATCH),
        "whole epoch sorted (floor)": sorted_cuts(stream, sizes, len(stream), BATCH),
        "ours, batch_size=32": batches,
        f"ours, max_tokens={int(mean_tokens)}": list(tokens),
    }
    minority = {k: float(np.mean(labs[np.concatenate(v)])) for k, v in recipes.items()}
    return {
        "status": "ok",
        "padding": {k: padding_ratio(v, sizes) for k, v in recipes.items()},
        "minority_share": minority,
        "unique_per_batch": float(np.mean([len(set(np.asarray(b).tolist())) for b in batches])),
    }


def balance_case(case: dict) -> dict:
    n, world = case["n"], 8
    sizes, labs = lengths(n), labels(n)
    budget = 28 * int(sizes.max())  # every batch holds 25+ samples (the cut lowers the budget)
    source = DistributedWeightedSampler(labels=labs, num_replicas=1, rank=0)
    s = DistributedBucketBatchSampler(source, sizes, max_tokens=budget, num_replicas=1, rank=0)
    batches = list(s)
    cost = np.array([len(b) * int(sizes[b].max()) for b in batches], dtype=np.float64)
    steps = len(cost) // world
    per_step = cost[: steps * world].reshape(steps, world)  # global step = W micro-batches
    ratio = per_step.max(axis=1) / per_step.mean(axis=1)
    return {
        "status": "ok",
        "budget": budget,
        "min_samples": int(min(len(b) for b in batches)),
        "p50": float(np.percentile(ratio, 50)),
        "p99": float(np.percentile(ratio, 99)),
        "max": float(ratio.max()),
        "fill_mean": float(cost.mean() / budget),
        "steps": int(steps),
    }


def speed_case(case: dict) -> dict:
    n = case["n"]
    sizes, labs = lengths(n), labels(n)
    source = DistributedWeightedSampler(labels=labs, num_replicas=8, rank=0)
    out = {"status": "ok"}
    for mode, kw in (("batch_size", dict(batch_size=BATCH)), ("max_tokens", {})):
        if mode == "max_tokens":
            kw = dict(max_tokens=64 * 4096)
        t0 = time.perf_counter()
        s = DistributedBucketBatchSampler(source, sizes, num_replicas=8, rank=0, **kw)
        t1 = time.perf_counter()
        next(iter(s))
        t2 = time.perf_counter()
        out[mode] = {"build_s": t1 - t0, "first_s": t2 - t1}
    return out


def memory_case(case: dict) -> dict:
    directory, n = Path(case["dir"]), case["n"]
    if not (directory / "sizes.npy").exists():  # built once, as a preprocessing step would
        np.save(directory / "sizes.npy", lengths(n))
        GroupIndex.from_labels(labels(n)).save(directory / "labels")
    with harness.AnonPeak() as mem:
        t0 = time.perf_counter()
        index = GroupIndex.load(directory / "labels", mmap=True)
        source = DistributedWeightedSampler(labels=index, num_replicas=8, rank=0)
        mode = dict(batch_size=BATCH) if case["kind"] == "memory" else dict(max_tokens=64 * 4096)
        s = DistributedBucketBatchSampler(
            source, str(directory / "sizes.npy"), num_replicas=8, rank=0, **mode
        )
        it = iter(s)
        next(it)
        t1 = time.perf_counter()
        for _ in zip(range(999), it, strict=False):
            pass
    return {"status": "ok", "peak_extra_mb": mem.extra_mb, "init_first_s": t1 - t0}


CASES = {
    "padding": padding_case,
    "balance": balance_case,
    "speed": speed_case,
    "memory": memory_case,
    "memory_tokens": memory_case,
}


def run_case(case: dict) -> dict:
    return CASES[case["kind"]](case)


# -- the report -----------------------------------------------------------------------------
def report(records: dict) -> str:
    rows = []
    pad = records["padding"]
    if pad["status"] == "ok":
        ratios = pad["padding"]
        window = ratios["each window sorted (64 B)"]
        random = ratios["random batches"]
        for name, r in ratios.items():
            cells = [f"padding, N={pad['n']:.0e}", name, f"{r:.3f}"]
            cells.append(f"{(r - 1) * 100:.1f}% extra tokens")
            cells.append(f"minority {pad['minority_share'][name]:.3f}")
            rows.append(cells)
        ours = ratios["ours, batch_size=32"]
        rows.append(
            [
                "padding target",
                "ours / each window sorted; random extra / ours extra",
                f"{ours / window:.3f}; {(random - 1) / (ours - 1):.1f}x",
                "<= 1.2; >= 3x"
                + tables.verdict(1, ours / window <= 1.2 and random - 1 >= 3 * (ours - 1)),
            ]
        )
    bal = records["balance"]
    if bal["status"] == "ok":
        rows.append(
            [
                f"balance, max_tokens, W=8, N={bal['n']:.0e}",
                f"budget {bal['budget']}, >= {bal['min_samples']} samples a batch",
                f"p50 {bal['p50']:.3f}, p99 {bal['p99']:.3f}, max {bal['max']:.3f}",
                "p99 <= 1.05" + tables.verdict(1, bal["p99"] <= 1.05),
                f"mean fill {bal['fill_mean']:.3f}",
            ]
        )
    sp = records["speed"]
    if sp["status"] == "ok":
        for mode in ("batch_size", "max_tokens"):
            t = sp[mode]
            total = t["build_s"] + t["first_s"]
            rows.append(
                [
                    f"speed, rank 0 of 8, N={sp['n']:.0e}",
                    f"{mode}: build + first batch",
                    f"{t['build_s']:.3f} + {t['first_s']:.3f} s",
                    "<= 2 s" + tables.verdict(total, total <= 2.0),
                ]
            )
    for kind, mode in (("memory", "batch_size"), ("memory_tokens", "max_tokens")):
        mem = records[kind]
        if mem["status"] != "ok":
            continue
        rows.append(
            [
                f"memory, rank 0 of 8, N={mem['n']:.0e}",
                f"{mode}: mapped labels + sizes, build + 1,000 batches",
                f"{mem['peak_extra_mb']:.1f} MB anonymous ({mem['init_first_s']:.2f} s to batch 1)",
                "<= 64 MB" + tables.verdict(1, mem["peak_extra_mb"] <= 64),
            ]
        )
    for name, rec in records.items():
        if rec["status"] != "ok":
            rows.append([name, rec["status"], rec.get("reason", "")])
    return tables.markdown(["case", "recipe", "figure", "target", "note"], rows)


def main(argv: list[str] | None = None) -> int:
    p = harness.parser(__doc__, size=10**6)
    p.add_argument("--big", type=harness.parse_size, default=10**7, help="N of the speed case")
    p.add_argument("--huge", type=harness.parse_size, default=10**8, help="N of the memory case")
    p.add_argument("--dir", type=Path, help="where to save the memory case's files")
    args = harness.start(p, argv, run_case)
    if args is None:
        return 0
    records = {}
    with harness.scratch(args.dir) as directory:
        for kind, n in (
            ("padding", args.size),
            ("balance", args.size),
            ("speed", args.big),
            ("memory", args.huge),
            ("memory_tokens", args.huge),
        ):
            case = {"kind": kind, "n": n, "dir": str(directory)}
            timeout = 120 + 300 * n / 1e8
            rec = {**case, **harness.dispatch("bucketing", case, args.inline, run_case, timeout)}
            records[kind] = rec
            harness.log(f"{kind:<8} {rec['status']} {rec.get('reason', '')}")
    print(report(records))
    return harness.finish(args.json, list(records.values()))


if __name__ == "__main__":
    sys.exit(main())

"""Sharded storage: shards and bytes read per epoch, by today's plan, ours and WebDataset's recipe.

Usage (from the repository root)::

    python -m benchmarks.shards                       # 1,000 shards x 100 samples, W = 8
    python -m benchmarks.shards --shards 200 --per-shard 50 --world 2 --json out.json
    python -m benchmarks.shards --write-docs          # the count tables into docs/benchmarks.md
    python -m benchmarks.shards --check-docs          # exit 1 if the page shows another

Every figure here is a count of a seeded replay (the same on every machine), so the tables are
generated blocks of docs/benchmarks.md. Data: ``--shards`` shards of ``--per-shard`` samples,
4 classes of 40 / 30 / 27 / 3% (class 3 is the rare one; ``class_weights="balanced"``: each
class 25% of the draws, so only the rare class is drawn more often than it has members), in
two layouts: **class-mixed** (labels in a seeded random order) and **class-pure** (written
class by class: a shard holds one class, but at a class boundary). Each sample weighs
``--sample-kb`` KB, so a shard's bytes are fixed. ``W`` ranks, each with a cache of ``k =
--cache-shards`` shards (one lane per rank: ``lanes = W``).

* **today**: ``DistributedWeightedSampler(labels=..., class_weights="balanced")`` without
  ``shards=``, each rank's indices replayed through a least-recently-used cache of ``k``
  shards; the row *clairvoyant* replays the same indices with Belady's eviction (the shard
  needed furthest ahead goes: the fewest loads any cache of ``k`` can do for that order).
* **ours**: ``DistributedWeightedSampler(labels=..., shards=layout, cache_shards=k, lanes=W,
  block_size=32)``, each rank's indices less the resident ones (kept by the reader, read with
  their shards) replayed through a cache of ``k`` shards with the schedule's eviction (Belady
  on the plan's own order: what ``ShardedDataset`` does from ``shard_schedule()``).
* **webdataset**: the documented recipe for balance, written plainly with numpy's seeded
  generator (the logic of ``wds.WebDataset(urls_of_class_c).shuffle(1000)`` per class and
  ``wds.RandomMix(streams, probs=[1/4] * 4)``): per class, the list of shards holding that
  class, split over ranks (``split_by_node``), shuffled and streamed again and again; each
  stream keeps only its class and a shuffle buffer of ``--buffer`` samples; each draw picks a
  class with the target probability. A shard is fetched each time a stream opens it. Counted
  over the second epoch (the buffers are full by then; the first epoch costs more).

Columns: shards fetched per epoch over the job (and as a multiple of the shards in the
dataset), bytes, the balance error of batches of 32 (mean over rank 0's batches of
``|share - 1/4|``, for the rare class and the worst class of each batch), whether a resumed run
is exact.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import tables
from distsampler import DistributedWeightedSampler
from distsampler.shards import ShardLayout

SHARES = (0.40, 0.30, 0.27, 0.03)  # class 3 is the rare class
RARE = 3
BATCH = 32
DOCS = [Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"]
DOCS_COMMAND = "python -m benchmarks.shards --write-docs"
RESUME = {
    "today": "yes: an integer (samples seen)",
    "ours": "yes: an integer (samples seen)",
    "webdataset": "no: the shuffle buffers and stream positions are lost",
}


# -- data -----------------------------------------------------------------------------------
def make_labels(n: int, layout: str, shares=SHARES, seed: int = 0) -> np.ndarray:
    """``n`` labels of ``shares``; ``"pure"``: sorted by class, ``"mixed"``: a seeded shuffle."""
    sizes = np.round(np.asarray(shares) * n).astype(np.int64)
    sizes[0] += n - sizes.sum()
    labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    if layout == "mixed":
        labels = labels[np.random.default_rng(seed).permutation(n)]
    return labels


# -- caches ---------------------------------------------------------------------------------
def lru_loads(shards: np.ndarray, k: int) -> int:
    """Shard loads of a least-recently-used cache of ``k`` shards reading ``shards`` in order."""
    cache: OrderedDict[int, None] = OrderedDict()
    loads = 0
    for s in shards.tolist():
        if s in cache:
            cache.move_to_end(s)
            continue
        loads += 1
        cache[s] = None
        if len(cache) > k:
            cache.popitem(last=False)
    return loads


def belady_loads(shards: np.ndarray, k: int) -> int:
    """Shard loads of a cache of ``k`` shards that evicts the shard needed furthest ahead
    (Belady's optimum for that order: a plan-aware reader knows the order)."""
    seq = shards.tolist()
    n = len(seq)
    nxt = [0] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        nxt[i] = last.get(seq[i], n + i)
        last[seq[i]] = i
    cache: dict[int, int] = {}  # shard -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, shard), stale entries skipped
    loads = 0
    for i, s in enumerate(seq):
        if s not in cache:
            loads += 1
            while len(cache) >= k:
                neg, t = heapq.heappop(heap)
                if cache.get(t) == -neg:
                    del cache[t]
        cache[s] = nxt[i]
        heapq.heappush(heap, (-nxt[i], s))
    return loads


def batch_errors(labels: np.ndarray, idx: np.ndarray, classes: int) -> tuple[float, float]:
    """Mean ``|rare share - 1/C|`` and mean worst ``|share - 1/C|`` over batches of 32."""
    m = len(idx) // BATCH * BATCH
    if m == 0:
        return 0.0, 0.0
    lab = labels[np.asarray(idx[:m])].reshape(-1, BATCH)
    share = np.stack([(lab == c).mean(axis=1) for c in range(classes)], axis=1)
    dev = np.abs(share - 1 / classes)
    return float(dev[:, RARE].mean()), float(dev.max(axis=1).mean())


# -- the three recipes ----------------------------------------------------------------------
def today(labels: np.ndarray, layout: ShardLayout, world: int, k: int) -> dict:
    loads = clairvoyant = 0
    errors = None
    for r in range(world):
        s = DistributedWeightedSampler(
            labels=labels, class_weights="balanced", num_replicas=world, rank=r, seed=0
        )
        s.set_epoch(1)
        idx = np.fromiter(iter(s), dtype=np.int64)
        sh = layout.shard_of(idx)
        loads += lru_loads(sh, k)
        clairvoyant += belady_loads(sh, k)
        if r == 0:
            errors = batch_errors(labels, idx, len(SHARES))
    return {"loads": loads, "clairvoyant": clairvoyant, "errors": errors}


def ours(labels: np.ndarray, layout: ShardLayout, world: int, k: int) -> dict:
    loads = scheduled = 0
    errors = None
    resident = 0
    opened: set[int] = set()
    for r in range(world):
        s = DistributedWeightedSampler(
            labels=labels,
            shards=layout,
            cache_shards=k,
            lanes=world,
            block_size=BATCH,
            num_replicas=world,
            rank=r,
            seed=0,
        )
        s.set_epoch(1)
        idx = np.fromiter(iter(s), dtype=np.int64)
        res = s.resident_indices()
        resident = len(res)
        local = idx[~np.isin(idx, res)]
        loads += belady_loads(layout.shard_of(local), k * len(s.lanes_served()))
        sched = s.shard_schedule(1)
        scheduled += sum(len(v) for v in sched.values())
        opened.update(int(x) for v in sched.values() for x in v)
        if r == 0:
            errors = batch_errors(labels, idx, len(SHARES))
    # Resident members whose shard no lane opens: fetched once per run for the resident store.
    unopened = set(layout.shard_of(res).tolist()) - opened
    return {
        "loads": loads,
        "scheduled": scheduled,
        "resident": resident,
        "resident_only_shards": len(unopened),
        "errors": errors,
    }


def webdataset_recipe(
    labels: np.ndarray, layout: ShardLayout, world: int, buffer: int, epochs: int = 2
) -> dict:
    """Per-class shard lists, shard shuffle + shuffle buffer per class, random mix (see the
    module docstring); shard loads of the last of ``epochs`` epochs, over every rank."""
    classes = len(SHARES)
    per_rank = -(-len(labels) // world)
    loads = 0
    errors = None
    offsets = np.asarray(layout.offsets)
    for r in range(world):
        rng = np.random.default_rng([r, 7])
        streams = []
        for c in range(classes):
            holds = np.flatnonzero(np.add.reduceat(labels == c, offsets[:-1]) > 0)
            streams.append(_ClassStream(c, holds[r::world], labels, offsets, buffer, rng))
        for _ in range(epochs):
            for st in streams:
                st.loads = 0
            pick = rng.choice(classes, size=per_rank, p=np.full(classes, 1 / classes))
            idx = np.array([streams[c].next() for c in pick.tolist()], dtype=np.int64)
        loads += sum(st.loads for st in streams)
        if r == 0:
            errors = batch_errors(labels, idx, classes)
    return {"loads": loads, "errors": errors}


class _ClassStream:
    """One class's stream: its shards shuffled each pass, the class's samples of each shard
    in shard order through a shuffle buffer (webdataset's ``shuffle``: a random slot goes out,
    the next sample takes it)."""

    def __init__(self, c, shards, labels, offsets, buffer, rng) -> None:
        self.c, self.shards, self.labels, self.offsets = c, shards, labels, offsets
        self.buffer, self.rng = buffer, rng
        self.pending: list[int] = []
        self.buf: list[int] = []
        self.loads = 0
        self.order: list[int] = []

    def _refill(self) -> None:
        if not self.order:
            if not len(self.shards):
                raise ValueError(f"class {self.c} has no shard on this rank")
            self.order = self.rng.permutation(self.shards).tolist()
        s = self.order.pop()
        self.loads += 1
        lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
        mine = lo + np.flatnonzero(self.labels[lo:hi] == self.c)
        self.pending = mine[::-1].tolist()

    def next(self) -> int:
        while len(self.buf) < self.buffer:
            while not self.pending:
                self._refill()
            self.buf.append(self.pending.pop())
        j = int(self.rng.integers(len(self.buf)))
        out = self.buf[j]
        self.buf[j] = self.buf[-1]
        self.buf.pop()
        return out


# -- the report -----------------------------------------------------------------------------
def run(shards: int, per_shard: int, world: int, k: int, buffer: int, sample_kb: float) -> list:
    layout = ShardLayout.from_sizes(np.full(shards, per_shard))
    shard_gb = per_shard * sample_kb / 1e6
    rows = []
    for kind in ("mixed", "pure"):
        labels = make_labels(len(layout), kind)
        t = today(labels, layout, world, k)
        o = ours(labels, layout, world, k)
        big = ours(labels, layout, world, 4 * k)
        w = webdataset_recipe(labels, layout, world, buffer)
        for plan, loads, errors, extra in (
            ("today", t["loads"], t["errors"], {}),
            ("today, clairvoyant cache", t["clairvoyant"], t["errors"], {}),
            ("ours", o["loads"], o["errors"], _resident(o)),
            ("ours, 4k", big["loads"], big["errors"], _resident(big)),
            ("webdataset", w["loads"], w["errors"], {}),
        ):
            rows.append(
                {
                    "layout": kind,
                    "plan": plan,
                    "shards_per_epoch": loads,
                    "per_shard_in_dataset": loads / shards,
                    "gb_per_epoch": loads * shard_gb,
                    "rare_error": errors[0],
                    "worst_error": errors[1],
                    "resume": RESUME[plan.split(",")[0]],
                    **extra,
                }
            )
        for got in (o, big):  # the replay and the schedule must agree
            if got["loads"] != got["scheduled"]:
                raise AssertionError(f"{kind}: replay {got['loads']} != {got['scheduled']}")
    return rows


def _resident(o: dict) -> dict:
    return {"resident": o["resident"], "resident_only_shards": o["resident_only_shards"]}


PLAN_NAMES = {
    "today": "today: `DistributedWeightedSampler(labels, balanced)`, LRU cache",
    "today, clairvoyant cache": "today, with a clairvoyant cache (Belady)",
    "ours": "ours: `shards=layout, cache_shards=k`",
    "ours, 4k": "ours, `cache_shards=4k` (a 4x larger cache)",
    "webdataset": "WebDataset recipe: per-class shards, shuffle(1000), RandomMix",
}
HEAD = [
    "layout",
    "plan",
    "shards / epoch",
    "x shards in data",
    "GB / epoch",
    "rare-class error / batch",
    "worst-class error / batch",
    "exact resume",
]


def table(rows: list[dict]) -> str:
    cells = [
        [
            f"class-{r['layout']}",
            PLAN_NAMES[r["plan"]],
            f"{r['shards_per_epoch']:,}",
            f"{r['per_shard_in_dataset']:.2f}",
            f"{r['gb_per_epoch']:,.1f}",
            f"{r['rare_error']:.3f}",
            f"{r['worst_error']:.3f}",
            r["resume"],
        ]
        for r in rows
    ]
    return tables.markdown(HEAD, cells)


def issue_example(world: int, k: int = 4, shards: int = 120, per_shard: int = 1000) -> dict:
    """The issue's count: 120 shards of 1,000 samples, 2 classes (3% rare, class-mixed), a
    cache of ``k`` shards per rank; today's balanced plan (LRU) and ours, over the job."""
    layout = ShardLayout.from_sizes(np.full(shards, per_shard))
    n = len(layout)
    labels = (np.random.default_rng(0).random(n) < 0.03).astype(np.int64)
    lru = []
    for r in range(world):
        s = DistributedWeightedSampler(labels=labels, num_replicas=world, rank=r, seed=0)
        s.set_epoch(1)
        lru.append(lru_loads(layout.shard_of(np.fromiter(iter(s), dtype=np.int64)), k))
    ours_total = 0
    for r in range(world):
        o = DistributedWeightedSampler(
            labels=labels, shards=layout, cache_shards=k, lanes=world, num_replicas=world, rank=r
        )
        ours_total += sum(len(v) for v in o.shard_schedule(1).values())
    return {"world": world, "today_rank0": lru[0], "today": sum(lru), "ours": ours_total}


ISSUE_HEAD = ["W", "today: loads by rank 0", "today: loads over the job", "ours: over the job"]


def issue_table(rows: list[dict]) -> str:
    cells = [
        [str(r["world"]), f"{r['today_rank0']:,}", f"{r['today']:,}", f"{r['ours']:,}"]
        for r in rows
    ]
    return tables.markdown(ISSUE_HEAD, cells)


def docs_body(args: argparse.Namespace) -> tuple[str, list, list]:
    rows = run(
        args.shards, args.per_shard, args.world, args.cache_shards, args.buffer, args.sample_kb
    )
    issue = [issue_example(w) for w in (1, 3, 8)]
    return table(rows) + "\n\n" + issue_table(issue), rows, issue


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=1000, help="shards in the dataset")
    p.add_argument("--per-shard", type=int, default=100, help="samples per shard")
    p.add_argument("--world", type=int, default=8, help="ranks W (one lane each)")
    p.add_argument("--cache-shards", type=int, default=4, help="shards a rank's cache holds")
    p.add_argument("--buffer", type=int, default=1000, help="webdataset shuffle buffer")
    p.add_argument("--sample-kb", type=float, default=100.0, help="bytes of a sample, KB")
    p.add_argument("--json", type=Path, help="write the records here")
    docs = p.add_mutually_exclusive_group()
    docs.add_argument("--write-docs", action="store_true", help="write the tables into the docs")
    docs.add_argument("--check-docs", action="store_true", help="exit 1 if the page differs")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    if a.write_docs or a.check_docs:
        defaults = p.parse_args([])
        body, _, _ = docs_body(defaults)  # the docs show the default sizes only
        return tables.docs_main(DOCS, DOCS_COMMAND, body, write=a.write_docs)
    body, rows, issue = docs_body(a)
    print(
        f"{a.shards} shards x {a.per_shard} samples x {a.sample_kb:g} KB, W = {a.world}, "
        f"cache {a.cache_shards} shards a rank, classes {SHARES} (balanced)\n"
    )
    print(body)
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "issue_example": issue}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sharded storage, end to end: ``ShardedDataset`` over real tar shards served over HTTP.

Usage (from the repository root)::

    python -m benchmarks.shards_reader                 # both parts at the default sizes
    python -m benchmarks.shards_reader --json shards_reader.json
    python -m benchmarks.shards_reader --shards 12 --per-shard 20 --tp-shards 6 --tp-cap 60

Shards are tars written to a temp dir (sample ``i``: members ``cls``, its label, and ``bin``,
``--sample-kb`` KB) and served by the loopback HTTP server of ``tests/_http.py`` (127.0.0.1
only; it counts the bytes it sends). Labels: 4 classes of 40 / 30 / 27 / 3%, class-mixed,
``class_weights="balanced"`` (the rare class is resident).

* **bytes**: ``DistributedWeightedSampler(labels, shards=layout, cache_shards=--cache-shards,
  lanes=--lanes)`` drives ``ShardedDataset`` in this process (rank 0 of 1, every lane), epoch
  0 as a warm-up, then ``--epochs`` epochs measured: bytes the server sent and
  ``dataset.stats()["bytes_fetched"]`` per epoch, over the bytes of all shards; the most shard
  files the cache held at once (a thread polls ``cache_dir/shards`` every ms) against the
  reader's bound ``cache_shards x lanes + prefetch``.
* **throughput**: the server adds ``--latency`` s to every request (object storage's time to
  first byte). ``DataLoader(dataset, sampler=..., batch_size=32, num_workers=4)``, a cold
  cache each case, samples/s from ``iter(loader)`` to the last batch (worker start included):

  - ``ours``: ``ShardedDataset(layout, sampler)`` with the sharded sampler (1 lane);
  - ``today, same reader``: the same ``ShardedDataset`` without a sampler (shards cached
    least recently used, ``cache_shards`` of them) fed by today's
    ``DistributedWeightedSampler(labels, balanced)``: every miss fetches a whole shard;
  - ``today, range reads``: a plain map-style dataset that reads each sample's byte range
    with one HTTP ``Range`` request (a kept-alive connection per worker), today's sampler;
  - ``ours, local files``: ``ours`` over the tar files on local disk (no HTTP): what the
    reader itself costs per sample on this machine, the ceiling of the ``ours`` row.

  The two ``today`` cases stop after ``--tp-cap`` samples (they are slow); each case stops at
  ``--time-limit`` s whatever it has done.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from torch.utils.data import DataLoader, Dataset

if not __package__:  # run as a file: make the benchmarks package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, tables
from benchmarks.shards import make_labels
from distsampler import DistributedWeightedSampler
from distsampler.shards import ShardedDataset, ShardLayout

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def loopback():
    """The ``LoopbackServer`` class of ``tests/_http.py`` (the tests' HTTP server)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from _http import LoopbackServer
    finally:
        sys.path.remove(str(ROOT / "tests"))
    return LoopbackServer


def write_shards(root: Path, labels: np.ndarray, per_shard: int, sample_kb: float) -> list[Path]:
    """Tars ``shard-XXXXX.tar`` of ``per_shard`` samples: ``k{i}.cls`` and ``k{i}.bin``."""
    root.mkdir(parents=True, exist_ok=True)
    size = int(sample_kb * 1000)
    paths = []
    for s in range(len(labels) // per_shard):
        path = root / f"shard-{s:05d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per_shard, (s + 1) * per_shard):
                blob = (b"%09d" % i) * (size // 9 + 1)
                for ext, data in (("cls", str(int(labels[i])).encode()), ("bin", blob[:size])):
                    info = tarfile.TarInfo(f"k{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def http_layout(local: ShardLayout, urls: list[str]) -> ShardLayout:
    return ShardLayout(
        local.offsets,
        urls=urls,
        format="webdataset",
        shard_bytes=local.shard_bytes,
        labels=local.labels,
    )


class CacheWatcher:
    """The most shard files ``cache_dir/shards`` held at once (polled every ms by a thread)."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = cache_dir / "shards"
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.most = max(self.most, len(os.listdir(self.dir)))
            self._stop.wait(0.001)

    def __enter__(self) -> CacheWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- part 1: bytes per epoch ----------------------------------------------------------------
def bytes_case(a: argparse.Namespace, work: Path) -> dict:
    labels = make_labels(a.shards * a.per_shard, "mixed")
    paths = write_shards(work / "src", labels, a.per_shard, a.sample_kb)
    local = ShardLayout.from_webdataset([str(p) for p in paths], labels="cls")
    total = int(np.sum(local.shard_bytes))
    server_cls = loopback()
    epochs = []
    with server_cls(work / "src") as srv:
        layout = http_layout(local, [srv.url(p.name) for p in paths])
        sampler = DistributedWeightedSampler(
            labels=layout.group_index(),
            shards=layout,
            cache_shards=a.cache_shards,
            lanes=a.lanes,
            block_size=BATCH,
            num_replicas=1,
            rank=0,
        )
        ds = ShardedDataset(layout, sampler, cache_dir=work / "cache")
        t_limit = time.perf_counter() + a.time_limit
        for epoch in range(1 + a.epochs):
            sampler.set_epoch(epoch)
            srv.reset_counts()
            ds.reset_stats()
            t0 = time.perf_counter()
            n = 0
            with CacheWatcher(work / "cache") as w:
                for i in sampler:
                    ds[i]
                    n += 1
            st = ds.stats()
            epochs.append(
                {
                    "epoch": epoch,
                    "samples": n,
                    "seconds": time.perf_counter() - t0,
                    "server_bytes": srv.total_bytes,
                    "server_requests": srv.total_requests,
                    "most_cached": w.most,
                    **{k: st[k] for k in ("bytes_fetched", "shards_fetched", "out_of_schedule")},
                    **{k: st[k] for k in ("range_reads", "resident_hits", "bound")},
                }
            )
            if time.perf_counter() > t_limit:
                break
    return {
        "shards": a.shards,
        "per_shard": a.per_shard,
        "total_bytes": total,
        "lanes": a.lanes,
        "cache_shards": a.cache_shards,
        "resident": int(len(sampler.resident_indices())),
        "epochs": epochs,
    }


BYTES_HEAD = [
    "epoch",
    "samples",
    "server bytes / all shards",
    "stats() bytes / all shards",
    "shards fetched",
    "out-of-schedule reads",
    "most shard files cached",
    "bound",
]


def bytes_table(r: dict) -> str:
    rows = []
    for e in r["epochs"]:
        rows.append(
            [
                f"{e['epoch']} (warm-up)" if e["epoch"] == 0 else str(e["epoch"]),
                f"{e['samples']:,}",
                f"{e['server_bytes'] / r['total_bytes']:.3f}",
                f"{e['bytes_fetched'] / r['total_bytes']:.3f}",
                f"{e['shards_fetched']:,}",
                f"{e['out_of_schedule'] + e['range_reads']:,}",
                str(e["most_cached"]),
                str(e["bound"]),
            ]
        )
    return tables.markdown(BYTES_HEAD, rows)


# -- part 2: throughput ---------------------------------------------------------------------
class RangeReads(Dataset):
    """Sample ``i`` by one HTTP ``Range`` request for its bytes (today's random access with
    no cache); one kept-alive connection per process."""

    def __init__(self, urls: list[str], offsets: np.ndarray, spans: list) -> None:
        self.urls, self.offsets, self.spans = urls, offsets, spans
        self._conn: tuple[int, http.client.HTTPConnection] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_conn": None}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        key, members = self.spans[i]
        lo = min(o for _, o, _ in members)
        hi = max(o + n for _, o, n in members)
        url = urlsplit(self.urls[s])
        if self._conn is None or self._conn[0] != os.getpid():
            self._conn = (os.getpid(), http.client.HTTPConnection(url.netloc, timeout=60))
        conn = self._conn[1]
        conn.request("GET", url.path, headers={"Range": f"bytes={lo}-{hi - 1}"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 206 or len(data) != hi - lo:
            raise OSError(f"range read of {self.urls[s]} answered {resp.status}")
        out = {"__key__": key}
        for ext, o, n in members:
            out[ext] = data[o - lo : o - lo + n]
        return out


def _count(batch: list) -> int:
    return len(batch)


def timed_loader(ds: Dataset, sampler, cap: int, workers: int, limit: float) -> dict:
    """Samples/s of ``DataLoader(ds, sampler, batch_size=32, num_workers=workers)`` over at
    most ``cap`` samples (or ``limit`` seconds), from ``iter`` to the last batch."""
    loader = DataLoader(
        ds, sampler=sampler, batch_size=BATCH, num_workers=workers, collate_fn=_count
    )
    t0 = time.perf_counter()
    n = 0
    it = iter(loader)
    for got in it:
        n += got
        if n >= cap or time.perf_counter() - t0 > limit:
            break
    seconds = time.perf_counter() - t0
    del it
    return {"samples": n, "seconds": seconds, "rate": n / seconds}


def throughput_case(a: argparse.Namespace, work: Path) -> list[dict]:
    from distsampler.shards.tar import iter_tar_samples

    labels = make_labels(a.tp_shards * a.tp_per_shard, "mixed")
    src = work / "tp-src"
    paths = write_shards(src, labels, a.tp_per_shard, a.tp_sample_kb)
    local = ShardLayout.from_webdataset([str(p) for p in paths], labels="cls")
    index = local.group_index()
    spans = []
    for p in paths:
        spans += [
            (x.key, tuple((m.ext, m.offset, m.size) for m in x.members))
            for x in iter_tar_samples(p.read_bytes(), str(p))
        ]
    n = len(local)

    def sharded(layout: ShardLayout) -> DistributedWeightedSampler:
        s = DistributedWeightedSampler(
            labels=index,
            shards=layout,
            cache_shards=a.cache_shards,
            lanes=a.tp_lanes or a.workers,
            block_size=BATCH,
        )
        s.set_epoch(0)
        return s

    def today() -> list[int]:
        """Today's sampler's first ``--tp-cap`` indices of epoch 0 (so the loader ends there
        and every byte the server sends is for a counted sample)."""
        s = DistributedWeightedSampler(labels=index, num_replicas=1, rank=0)
        s.set_epoch(0)
        return list(s)[: a.tp_cap]

    lanes = a.tp_lanes or a.workers
    records = []
    server_cls = loopback()
    with server_cls(src, latency=a.latency) as srv:
        remote = http_layout(local, [srv.url(p.name) for p in paths])
        cases = {
            "ours": lambda d: (ShardedDataset(remote, (s := sharded(remote)), cache_dir=d), s, n),
            "today_reader": lambda d: (
                ShardedDataset(remote, cache_dir=d, cache_shards=a.cache_shards * lanes),
                today(),
                a.tp_cap,
            ),
            "today_ranges": lambda d: (
                RangeReads([srv.url(p.name) for p in paths], np.asarray(local.offsets), spans),
                today(),
                a.tp_cap,
            ),
            "ours_local": lambda d: (
                ShardedDataset(local, (s := sharded(local)), cache_dir=d),
                s,
                n,
            ),
        }
        for name, make in cases.items():
            cache = work / f"tp-cache-{name}"
            ds, sampler, cap = make(cache)
            srv.reset_counts()
            got = timed_loader(ds, sampler, cap, a.workers, a.time_limit)
            got.update(case=name, requests=srv.total_requests, server_bytes=srv.total_bytes)
            if isinstance(ds, ShardedDataset):
                got["stats"] = ds.stats()
            records.append(got)
            harness.log(f"{name}: {got['rate']:.0f} samples/s over {got['samples']}")
            shutil.rmtree(cache, ignore_errors=True)
    total = int(np.sum(local.shard_bytes))
    for r in records:
        r["bytes_per_sample"] = r["server_bytes"] / max(r["samples"], 1)
        r["dataset_bytes_per_sample"] = total / n
    return records


TP_NAMES = {
    "ours": "ours: `ShardedDataset` + sharded sampler",
    "today_reader": "today's sampler, same `ShardedDataset` (LRU)",
    "today_ranges": "today's sampler, one HTTP range read a sample",
    "ours_local": "ours over local files (no HTTP): the reader's ceiling",
}
TP_HEAD = [
    "reader",
    "samples",
    "samples/s",
    "ours / this",
    "requests",
    "bytes sent / sample bytes",
]


def tp_table(records: list[dict]) -> str:
    ours = next(r["rate"] for r in records if r["case"] == "ours")
    rows = [
        [
            TP_NAMES[r["case"]],
            f"{r['samples']:,}",
            f"{r['rate']:,.0f}",
            tables.ratio(ours / r["rate"]),
            f"{r['requests']:,}",
            f"{r['bytes_per_sample'] / r['dataset_bytes_per_sample']:.2f}",
        ]
        for r in records
    ]
    return tables.markdown(TP_HEAD, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=200, help="bytes part: shards")
    p.add_argument("--per-shard", type=int, default=50, help="bytes part: samples per shard")
    p.add_argument("--sample-kb", type=float, default=4.0, help="bytes part: KB a sample")
    p.add_argument("--lanes", type=int, default=2, help="bytes part: the plan's lanes")
    p.add_argument("--epochs", type=int, default=2, help="bytes part: epochs after the warm-up")
    p.add_argument("--cache-shards", type=int, default=4, help="shards a lane reads from")
    p.add_argument("--tp-shards", type=int, default=40, help="throughput: shards")
    p.add_argument("--tp-per-shard", type=int, default=100, help="throughput: samples a shard")
    p.add_argument("--tp-sample-kb", type=float, default=10.0, help="throughput: KB a sample")
    p.add_argument(
        "--tp-lanes", type=int, default=0, help="throughput: the plan's lanes (0: --workers)"
    )
    p.add_argument("--tp-cap", type=int, default=800, help="samples of the slow `today` cases")
    p.add_argument("--latency", type=float, default=0.02, help="seconds added to each request")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per case at most")
    p.add_argument("--only", choices=["bytes", "throughput"], help="run one part")
    p.add_argument("--json", type=Path, help="write the records here")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    print(harness.machine_line(harness.machine()), flush=True)
    work = Path(tempfile.mkdtemp(prefix="distsampler-shards-"))
    out: dict = {}
    try:
        if a.only in (None, "bytes"):
            out["bytes"] = b = bytes_case(a, work)
            print(
                f"\n{b['shards']} tar shards x {b['per_shard']} samples over HTTP, lanes "
                f"{b['lanes']}, cache_shards {b['cache_shards']}, {b['resident']} resident\n"
            )
            print(bytes_table(b))
        if a.only in (None, "throughput"):
            out["throughput"] = t = throughput_case(a, work)
            print(
                f"\n{a.tp_shards} shards x {a.tp_per_shard} samples x {a.tp_sample_kb:g} KB, "
                f"{a.latency * 1e3:.0f} ms a request, {a.workers} workers\n"
            )
            print(tp_table(t))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps({"machine": harness.machine(), **out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ShardedDataset``: sample ``i`` of a sharded dataset, read through a bounded node-local cache.

Each process (the main one and every DataLoader worker) makes its own runtime on first use:
the fsspec filesystem, the sampler's shard schedule for the epoch, and a prefetch thread. None
of it is pickled, so the dataset crosses ``fork`` and ``spawn`` as plain configuration.

The cache keeps, per rank, at most ``cache_shards`` shards for each lane the rank serves plus
``prefetch`` shards the schedule opens next (see :mod:`distsampler.shards.cache`). Each process
of the rank shares through ``cache_dir`` how far it has read each lane (DataLoader workers read
alternate batches, so one lags): a shard the slowest live reader has moved ``cache_shards``
entries past is done and goes first; for a shard the leading reader opens, one only a lagging
reader still reads goes next; then the shard needed furthest ahead. A read outside the window
(a reader far behind, a shard of another rank) never takes a slot: the node's copy if a rank
holds one, else the sample's byte range when the shard's index is known, else the whole shard
into memory. A resident sample drawn before its shard opens is read under the shard's lock, so
the node reads that shard once for its resident samples (kept in a slot only if one is free or
held by a shard needed later); every shard fetched has its resident samples extracted at once.

A Parquet row group shard (``from_parquet(shards="row_groups")``) is fetched as one range read
of its column chunks (its file's footer is read once per node and kept in ``cache_dir/index/``)
and cached alone as an Arrow IPC file, memory-mapped to read rows; read outside the window it
is that range into memory, never the whole file. Files as shards are fetched whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .cache import ShardStore, flock
from .fetch import Fetcher, ShardFetchError

__all__ = ["ShardFetchError", "ShardedDataset"]

_MEMO = 64  # shard indexes (and resident headers) a process keeps in memory
_FLUSH_S = 0.2  # seconds between counter-file writes for hits alone


def _name_of(url: str) -> str:
    """The cache file name of a URL: a digest (URLs differ) plus a readable tail."""
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-48:]
    return f"{digest}-{tail}"


class _Memo(OrderedDict):
    """A small LRU dict of at most ``cap`` entries."""

    def __init__(self, cap: int = _MEMO) -> None:
        super().__init__()
        self.cap = int(cap)

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


class ShardedDataset(Dataset):
    """Map-style dataset over tar (WebDataset) or Parquet shards, cached by the sampler's plan.

    ``dataset[i]`` is sample ``i`` of ``layout`` whatever the cache holds: a dict
    ``{"__key__": key, "<ext>": bytes, ...}`` for tar shards, the row as a dict for Parquet,
    passed through ``decode`` if given. The schedule only decides what is fetched ahead and
    what is evicted.

    Args:
        layout: a ``ShardLayout`` with ``urls`` (``from_webdataset`` or ``from_parquet``).
        sampler: the sampler built with ``shards=layout`` whose order the DataLoader follows
            (its ``shard_schedule``, ``lanes_served`` and ``resident_indices`` guide the
            cache); ``None``: no prefetch, least recently used shards evicted first.
        cache_dir: a node-local directory shared by the node's ranks and workers.
        cache_shards: shards kept per lane served (default: the sampler's ``cache_shards``,
            else 2); at least 1 and at least the sampler's.
        prefetch: extra shards fetched ahead of the lanes (default: one per lane served;
            0 without a sampler).
        decode: a callable applied to each sample dict.
        retries: extra attempts after a transient fetch failure (then ``ShardFetchError``
            naming the URL).
        timeout: seconds for one HTTP(S) request.
        storage_options: keyword arguments for the fsspec filesystem.

    Works with ``persistent_workers=True``: the sampler shares its epoch with the copies in
    workers. Trap: ``sampler`` must be the one the loader iterates (for bucketing: its source,
    which the bucketing's ``set_epoch`` moves).
    """

    def __init__(
        self,
        layout: Any,
        sampler: Any = None,
        *,
        cache_dir: str | os.PathLike,
        cache_shards: int | None = None,
        prefetch: int | None = None,
        decode: Callable[[dict], Any] | None = None,
        retries: int = 3,
        timeout: float = 60.0,
        storage_options: dict | None = None,
    ) -> None:
        urls = getattr(layout, "urls", None)
        if urls is None:
            raise ValueError(
                "ShardedDataset needs a layout with shard URLs; this one has none (made by "
                "ShardLayout.from_sizes?): build it with ShardLayout.from_webdataset(urls) or "
                "ShardLayout.from_parquet(paths)"
            )
        fmt = getattr(layout, "format", None) or "webdataset"
        if fmt not in ("webdataset", "parquet"):
            raise ValueError(
                f"layout.format={fmt!r} is not readable; supported: 'webdataset', 'parquet'"
            )
        wanted = getattr(sampler, "cache_shards", None) if sampler is not None else None
        if cache_shards is None:
            cache_shards = int(wanted) if wanted is not None else 2
        if isinstance(cache_shards, bool) or not isinstance(cache_shards, (int, np.integer)):
            raise TypeError(f"cache_shards should be an int, but got {cache_shards!r}")
        if cache_shards < 1:
            raise ValueError(
                f"cache_shards should be >= 1 (shards kept per lane), but got {cache_shards}"
            )
        if wanted is not None and cache_shards < int(wanted):
            raise ValueError(
                f"cache_shards={cache_shards} is below the sampler's cache_shards={wanted}: "
                f"each lane reads from {wanted} shards at a time; pass cache_shards>={wanted} "
                "or leave it out"
            )
        lanes = tuple(int(x) for x in sampler.lanes_served()) if sampler is not None else ()
        if prefetch is None:
            prefetch = len(lanes)
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)):
            raise TypeError(f"prefetch should be an int, but got {prefetch!r}")
        if prefetch < 0:
            raise ValueError(f"prefetch should be >= 0 (shards fetched ahead), but got {prefetch}")
        if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
            raise ValueError(f"retries should be an int >= 0, but got {retries!r}")
        if not float(timeout) > 0:
            raise ValueError(f"timeout should be > 0 seconds, but got {timeout!r}")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode should be a callable or None, but got {decode!r}")
        own = getattr(sampler, "shards", None) if sampler is not None else None
        if (
            own is not None
            and own is not layout
            and hasattr(layout, "fingerprint")
            and own.fingerprint() != layout.fingerprint()
        ):
            raise ValueError(
                "the sampler was built with another layout (shards=) than this dataset's: "
                "pass the same ShardLayout to both"
            )
        if hasattr(sampler, "_share_cursor"):  # workers' copies follow its epoch (persistent too)
            sampler._share_cursor()
        self.layout = layout
        self.sampler = sampler
        self.cache_dir = os.fspath(cache_dir)
        self.cache_shards = int(cache_shards)
        self.prefetch = int(prefetch)
        self.decode = decode
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.storage_options = dict(storage_options or {})
        self.format = fmt
        self.lanes = lanes
        self.bound = self.cache_shards * max(1, len(lanes)) + self.prefetch
        self._offsets = np.asarray(layout.offsets, dtype=np.int64)
        self._urls = tuple(str(u) for u in urls)
        self._row_groups = getattr(layout, "row_groups", None)
        if fmt == "parquet" and self._row_groups is not None:
            # a row group is a shard of its own: cached alone, as an Arrow IPC file
            pairs = zip(self._urls, np.asarray(self._row_groups).tolist(), strict=True)
            self._names = tuple(f"{_name_of(u)}.rg{int(g)}.arrow" for u, g in pairs)
        else:
            self._names = tuple(_name_of(u) for u in self._urls)
        self._shard_of_name = {n: s for s, n in reversed(list(enumerate(self._names)))}
        sizes = getattr(layout, "shard_bytes", None)
        self._shard_bytes = None if sizes is None else np.asarray(sizes, dtype=np.int64)
        key = hashlib.sha1("\n".join(self._urls).encode()).hexdigest()[:8]
        if lanes:
            who = "-".join(map(str, lanes))
            if len(who) > 40:
                who = hashlib.sha1(who.encode()).hexdigest()[:12]
            self._tag = f"{key}-lanes-{who}"
        else:
            self._tag = f"{key}-rank{_rank()}"
        os.makedirs(self.cache_dir, exist_ok=True)
        self._rt: _Runtime | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rt"] = None  # threads, file system objects and memos stay in their process
        return state

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> Any:
        i = operator.index(index)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} is out of range for a dataset of {len(self)} samples")
        rt = self._rt
        if rt is None or rt.pid != os.getpid():
            rt = self._rt = _Runtime(self)
        sample = rt.get(i)
        return sample if self.decode is None else self.decode(sample)

    def stats(self, all_ranks: bool = False) -> dict[str, int]:
        """Counters summed over this rank's processes (``all_ranks``: every rank of the node).

        Keys: ``shards_fetched`` (whole shards downloaded into the cache; a Parquet row group
        shard is its column chunks' byte range), ``prefetched`` (of those, by the prefetch
        thread), ``bytes_fetched`` (every byte read from the source, Parquet footers
        included), ``footers`` (Parquet footers read from the source: once per file per node,
        kept in ``cache_dir/index/``), ``out_of_schedule`` (whole shards read into memory),
        ``range_reads``, ``hits``, ``resident_hits``, ``evictions``, ``retries``, plus
        ``bound`` and ``cached`` (shards this rank holds now). Each process writes its
        counters to ``cache_dir/stats/`` after every fetch and at most every 0.2 s otherwise,
        so ``hits`` may lag by a worker's last few items; fetch counters are exact.
        """
        if self._rt is not None and self._rt.pid == os.getpid():
            self._rt.flush(force=True)
        total: Counter[str] = Counter()
        stats = Path(self.cache_dir) / "stats"
        prefix = "" if all_ranks else f"{self._tag}."
        if stats.is_dir():
            for f in stats.iterdir():
                if not f.name.startswith(prefix) or not f.name.endswith(".json"):
                    continue
                with contextlib.suppress(OSError, ValueError):
                    total.update({k: int(v) for k, v in json.loads(f.read_text()).items()})
        out = {k: int(total.get(k, 0)) for k in _COUNTERS}
        out["bound"] = self.bound
        out["cached"] = len(ShardStore(self.cache_dir, self._tag, self.bound).held())
        return out

    def reset_stats(self) -> None:
        """Forget the counters of this rank's processes (e.g. between benchmark epochs)."""
        if self._rt is not None and self._rt.pid == os.getpid():
            self._rt.counters.clear()
        stats = Path(self.cache_dir) / "stats"
        if stats.is_dir():
            for f in stats.glob(f"{self._tag}.*.json"):
                with contextlib.suppress(OSError):
                    f.unlink()
        if self._rt is not None:
            self._rt.flush(force=True)


# a shard's class for this rank (see _Runtime._status), and how much a lane still needs it
_DONE, _AHEAD, _OPEN, _BEHIND = 0, 1, 2, 3
_NEED = {_DONE: 0, _BEHIND: 1, _AHEAD: 2, _OPEN: 3}

_COUNTERS = (
    "shards_fetched",
    "prefetched",
    "footers",
    "bytes_fetched",
    "out_of_schedule",
    "range_reads",
    "hits",
    "resident_hits",
    "evictions",
    "retries",
)


def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:  # pragma: no cover - torch builds without distributed
        pass
    return int(os.environ.get("RANK", "0") or 0)


class _Runtime:
    """The per-process half of a ShardedDataset (never pickled)."""

    def __init__(self, ds: ShardedDataset) -> None:
        self.ds = ds
        self.pid = os.getpid()
        self.fetcher = Fetcher(ds.retries, ds.timeout, ds.storage_options)
        self.store = ShardStore(ds.cache_dir, ds._tag, ds.bound)
        self.root = Path(ds.cache_dir)
        for d in ("index", "resident", "stats"):
            (self.root / d).mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self.counters: Counter[str] = Counter()
        self.stats_file = self.root / "stats" / f"{ds._tag}.{self.pid}-{uuid.uuid4().hex[:8]}.json"
        self.last_flush = 0.0
        self.indexes = _Memo()  # shard -> list of (key, ((ext, offset, size), ...))
        self.rows = _Memo()  # parquet files as shards: (name, None) -> rows
        self.tables = _Memo(ds.bound + 1)  # parquet row groups: (name, dev, inode) -> mapped
        self.loose = _Memo(2)  # parquet row groups read outside the cache: shard -> table
        self.footers = _Memo()  # parquet: url -> (FileMetaData, file size)
        self.res_heads = _Memo()  # shard -> (data offset, {index: sample})
        self.extracted: set[int] = set()
        self.cursor: tuple[int, int] | None = None  # the sampler's (epoch, resume) last seen
        self.epoch: int | None = None
        self.where: dict[str, list[tuple[int, int]]] = {}
        self.order: dict[int, list[str]] = {}
        self.progress: dict[int, int] = {}
        self.last_name: str | None = None
        self.res_of = _Memo()  # shard -> its sorted resident indices (asked per shard)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.has_sampler = ds.sampler is not None

    # -- schedule ------------------------------------------------------------------------------

    def _sync_epoch(self) -> None:
        sampler = self.ds.sampler
        if sampler is None:
            return
        # the main process's (epoch, resume point): this copy may be as old as its worker
        current = getattr(sampler, "_current", None)
        cursor = current() if current else (int(getattr(sampler, "epoch", 0)), 0)
        if cursor == self.cursor:
            return
        epoch = cursor[0]
        schedule = sampler.shard_schedule(epoch)
        order: dict[int, list[str]] = {}
        where: dict[str, list[tuple[int, int]]] = {}
        for lane, shards in schedule.items():
            names = [self.ds._names[int(s)] for s in np.asarray(shards, dtype=np.int64)]
            order[int(lane)] = names
            for pos, name in enumerate(names):
                where.setdefault(name, []).append((int(lane), pos))
        with self.lock:
            self.order, self.where, self.cursor, self.epoch = order, where, cursor, epoch
            self.progress = {lane: -1 for lane in order}
            self.last_name = None
            self.res_of.clear()
        if self.ds.prefetch > 0 and self.thread is None:
            self.thread = threading.Thread(
                target=self._prefetch_loop, name="distsampler-prefetch", daemon=True
            )
            self.thread.start()
        self.wake.set()

    def _note(self, name: str) -> None:
        """This process read ``name``: raise its own progress in the lane (shared through
        ``cache_dir`` per process, so a worker that lags keeps its window)."""
        best = None
        for lane, pos in self.where.get(name, ()):
            gap = pos - self.progress.get(lane, -1)
            if gap <= 0:
                return  # inside a window this process opened already
            if best is None or gap < best[0]:
                best = (gap, lane, pos)
        if best is None:
            return
        _, lane, pos = best
        with self.lock:
            self.progress[lane] = max(pos, self.progress.get(lane, -1))
        self.store.merge_progress(self.epoch, {lane: pos})  # type: ignore[arg-type]
        self.wake.set()

    def _view(self, shared: dict | None = None) -> dict[int, tuple[int, int]]:
        """Each lane's ``(lo, hi)``: the furthest entry a reader of the rank has read (``hi``)
        and the furthest the slowest live reader has read (``lo``, at least ``hi - k``: a
        reader further behind reads byte ranges instead of holding slots)."""
        if shared is None:
            shared = self.store.progress()
        k = self.ds.cache_shards
        readers = shared["lanes"] if shared.get("epoch") == self.epoch else {}
        with self.lock:
            own = dict(self.progress)
        out = {}
        for lane in set(own) | set(readers):
            pos = dict(readers.get(lane, {}))
            if own.get(lane, -1) >= 0:
                pos[self.pid] = max(own[lane], pos.get(self.pid, -1))
            if not pos:
                out[lane] = (-1, -1)
                continue
            hi = max(pos.values())
            out[lane] = (max(min(pos.values()), hi - k), hi)
        return out

    def _status(self, name: str, view: dict[int, tuple[int, int]]) -> tuple[int, int]:
        """(class, distance) of shard ``name``: ``_OPEN`` (in the window of the lane's leading
        reader), ``_AHEAD`` (by distance), ``_BEHIND`` (only a lagging reader's window still
        holds it), ``_DONE`` (done or off this rank's schedule). A shard in two lanes takes
        its most needed class."""
        k = self.ds.cache_shards
        best = (_DONE, 0)
        for lane, pos in self.where.get(name, ()):
            lo, hi = view.get(lane, (-1, -1))
            if pos > hi:
                cand = (_AHEAD, pos - hi)
            elif pos > hi - k:
                return (_OPEN, 0)
            elif pos > lo - k:
                cand = (_BEHIND, 0)
            else:
                continue
            nearer = cand[0] == best[0] == _AHEAD and cand[1] < best[1]
            if _NEED[cand[0]] > _NEED[best[0]] or nearer:
                best = cand
        return best

    def _victims(
        self, keep_closer_than: int, behind: bool = False
    ) -> Callable[[list[str], dict], list[str]]:
        """The eviction order for a slot: done shards first, then (``behind``: for a shard
        the leading reader needs now) shards only a lagging reader still reads, then shards
        ahead further than ``keep_closer_than`` entries, furthest first. A shard in the
        leading reader's window is never a victim."""

        def victims(held: list[str], shared: dict) -> list[str]:
            if not self.has_sampler:

                def age(n: str) -> float:
                    try:
                        return os.stat(self.store.path(n)).st_mtime
                    except OSError:
                        return 0.0

                return sorted(held, key=age)
            view = self._view(shared)
            ranked = []
            for n in held:
                cls, dist = self._status(n, view)
                if cls == _DONE:
                    ranked.append((0, 0, n))
                elif cls == _BEHIND and behind:
                    ranked.append((1, 0, n))
                elif cls == _AHEAD and dist > keep_closer_than:
                    ranked.append((2, -dist, n))
            return [n for *_, n in sorted(ranked)]

        return victims

    # -- reading -------------------------------------------------------------------------------

    def get(self, i: int) -> Any:
        self._sync_epoch()
        s = int(np.searchsorted(self.ds._offsets, i, side="right")) - 1
        name = self.ds._names[s]
        mine = self._resident_of(s)
        pos = np.searchsorted(mine, i)
        resident = bool(pos < len(mine) and mine[pos] == i)
        if resident:
            got = self._resident(s, i)
            if got is not None:
                self.count("resident_hits")
                return got
        elif self.has_sampler and name != self.last_name:
            self._note(name)
            self.last_name = name
        for _ in range(8):
            try:
                with open(self.store.path(name), "rb") as fh:
                    out = self._read(s, i, fh)
                self.count("hits")
                if not self.has_sampler and name != self.last_name:
                    self.store.touch(name)
                    self.last_name = name
                return out
            except FileNotFoundError:
                pass
            cls, dist = self._status(name, self._view()) if self.has_sampler else (_OPEN, 0)
            if not self.has_sampler:
                state = self.store.reserve(name, self._victims(0))
            elif cls == _OPEN:
                # the lane needs it now: it may push out a shard only a laggard still reads
                state = self.store.reserve(name, self._victims(0, behind=True))
            elif resident and self.ds.format == "webdataset":
                missed = self._resident_miss(s, i, name)
                if isinstance(missed, dict):
                    return missed
                state = missed
            elif resident and cls == _AHEAD:  # parquet: keep it only in a slot nobody needs sooner
                state = self.store.reserve(name, self._victims(dist))
            else:  # behind, done or another rank's: no slot
                break
            if state == "pending":
                self.store.wait(name)
            elif state == "reserved":
                self._fill(s, name, prefetched=False)
            elif state == "full":
                break
        got = self._node_copy(s, i, name)
        if got is not None:
            return got
        return self._out_of_schedule(s, i)

    def _resident_miss(self, s: int, i: int, name: str) -> dict | str:
        """Resident sample ``i`` of tar shard ``s`` before the shard opened: the sample, or the
        state of a slot for the caller ("pending": wait and look again; "full": read the
        sample's byte range).

        Under the shard's lock, so the node reads a shard once for its resident samples: look
        again (whoever held the lock extracted them), read the node's copy if a rank holds
        one, else keep the shard for the lane if it is ahead and a slot is free or held by a
        shard needed later (never a nearer one), else read it whole into memory."""
        with self.store.lock(name):
            self.res_heads.pop(s, None)
            got = self._resident(s, i)
            if got is not None:
                self.count("resident_hits")
                return got
            got = self._node_copy(s, i, name)
            if got is not None:
                return got
            cls, dist = self._status(name, self._view())
            if cls == _AHEAD:
                state = self.store.reserve(name, self._victims(dist))
                if state == "pending":
                    return state  # another process of the rank fills it: wait outside the lock
                if state == "reserved":
                    self._fill(s, name, prefetched=False, locked=True)
                    return "held"
            if self._index(s, None) is not None:
                return "full"
            return self._out_of_schedule(s, i)

    def _node_copy(self, s: int, i: int, name: str) -> Any:
        """Sample ``i`` from the node's copy of shard ``name`` (held by another rank or by a
        slot of this one), without taking a slot; None if the node has none."""
        try:
            with open(self.store.shards / name, "rb") as fh:
                out = self._read(s, i, fh)
        except FileNotFoundError:
            return None
        self.count("hits")
        return out

    def _fill(self, s: int, name: str, prefetched: bool, locked: bool = False) -> None:
        expect = None
        if self.ds.format == "webdataset" and self.ds._shard_bytes is not None:
            expect = int(self.ds._shard_bytes[s])
        before = self.fetcher.retried

        def download(tmp: str) -> int:
            if self.ds._row_groups is not None:
                return self._fetch_row_group(s, tmp)
            return self.fetcher.download(self.ds._urls[s], tmp, expect)

        try:
            got = self.store.fill(name, download, locked)
        finally:
            self.count("retries", self.fetcher.retried - before, flush=False)
        self.count("evictions", self.store.evictions, flush=False)
        self.store.evictions = 0
        if got:
            self.count("shards_fetched", 1, flush=False)
            self.count("bytes_fetched", got, flush=False)
            if prefetched:
                self.count("prefetched", 1, flush=False)
        self.flush(force=True)
        if self.ds.format == "webdataset" and len(self._resident_of(s)):
            # the node's processes and ranks find the shard's resident samples at once
            with contextlib.suppress(FileNotFoundError), open(self.store.path(name), "rb") as fh:
                self._extract(s, fh)

    def _read(self, s: int, i: int, fh: Any) -> Any:
        """Sample ``i`` out of the open cached file of shard ``s``."""
        if self.ds.format == "parquet":
            if self.ds._row_groups is not None:
                table = self._mapped(s, fh)
                return table.slice(i - int(self.ds._offsets[s]), 1).to_pylist()[0]
            rows = self._rows(s, fh)
            return rows[i - int(self.ds._offsets[s])]
        samples = self._index(s, fh)
        key, members = samples[i - int(self.ds._offsets[s])]
        out: dict[str, Any] = {"__key__": key}
        fd = fh.fileno()
        for ext, off, size in members:
            data = os.pread(fd, size, off)
            if len(data) != size:
                raise ValueError(
                    f"shard {s} ({self.ds._urls[s]!r}) is truncated at byte {off + len(data)}: "
                    f"sample {key!r} needs bytes {off}..{off + size}"
                )
            out[ext] = data
        self._extract(s, fh)
        return out

    def _rows(self, s: int, src: Any) -> list[dict]:
        from .parquet import read_rows

        rg = None if self.ds._row_groups is None else int(self.ds._row_groups[s])
        key = (self.ds._names[s], rg)
        rows = self.rows.get(key)
        if rows is None:
            rows = read_rows(src, rg)
            if len(rows) != int(self.ds._offsets[s + 1] - self.ds._offsets[s]):
                raise ValueError(
                    f"shard {s} ({self.ds._urls[s]!r}) holds {len(rows)} rows, the layout says "
                    f"{int(self.ds._offsets[s + 1] - self.ds._offsets[s])}: the file changed "
                    "since the layout was made; make the layout again"
                )
            self.rows.put(key, rows)
        return rows

    def _index(self, s: int, data: Any) -> list:
        """The samples of tar shard ``s`` (memo, then ``cache_dir/index``, then a parse)."""
        samples = self.indexes.get(s)
        if samples is not None:
            return samples
        path = self.root / "index" / f"{self.ds._names[s]}.json"
        want = int(self.ds._offsets[s + 1] - self.ds._offsets[s])
        with contextlib.suppress(OSError, ValueError, TypeError):
            samples = _check_index(json.loads(path.read_text()), want)
        if samples is None:
            if data is None:
                return None  # type: ignore[return-value]
            from .tar import TarError, iter_tar_samples

            try:
                parsed = iter_tar_samples(data, self.ds._urls[s])
            except TarError as e:
                if hasattr(data, "fileno"):
                    self.store.drop(self.ds._names[s])
                raise TarError(f"shard {s} of the layout: {e}") from e
            samples = [(p.key, tuple((m.ext, m.offset, m.size) for m in p.members)) for p in parsed]
            if len(samples) != want:
                if hasattr(data, "fileno"):
                    self.store.drop(self.ds._names[s])
                raise ValueError(
                    f"shard {s} ({self.ds._urls[s]!r}) holds {len(samples)} samples, the "
                    f"layout says {want}: the shard changed since the layout was made; make "
                    "the layout again"
                )
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps([[k, [list(m) for m in ms]] for k, ms in samples]))
            os.replace(tmp, path)
        self.indexes.put(s, samples)
        return samples

    def _out_of_schedule(self, s: int, i: int) -> Any:
        """Sample ``i`` without a cache slot: its byte range if the index is known, else the
        whole shard into memory (its resident samples are extracted on the way)."""
        url = self.ds._urls[s]
        if self.ds._row_groups is not None:
            return self._loose_row(s, i)
        before = self.fetcher.retried
        try:
            if self.ds.format == "webdataset":
                samples = self._index(s, None)
                if samples is not None:
                    key, members = samples[i - int(self.ds._offsets[s])]
                    lo = min(off for _, off, _ in members) if members else 0
                    hi = max(off + size for _, off, size in members) if members else 0
                    data = self.fetcher.read_range(url, lo, hi) if hi > lo else b""
                    self.count("range_reads", 1, flush=False)
                    self.count("bytes_fetched", len(data), flush=False)
                    out = {"__key__": key}
                    for ext, off, size in members:
                        out[ext] = data[off - lo : off - lo + size]
                    return out
            data = self.fetcher.read_all(url)
            self.count("out_of_schedule", 1, flush=False)
            self.count("bytes_fetched", len(data), flush=False)
        finally:
            self.count("retries", self.fetcher.retried - before, flush=False)
            self.flush(force=True)
        if self.ds.format == "parquet":
            import io

            return self._rows(s, io.BytesIO(data))[i - int(self.ds._offsets[s])]
        expect = None if self.ds._shard_bytes is None else int(self.ds._shard_bytes[s])
        if expect is not None and len(data) < expect:
            raise ValueError(
                f"shard {s} ({url!r}) is truncated at byte {len(data)}: the layout says it "
                f"has {expect} bytes"
            )
        samples = self._index(s, data)
        key, members = samples[i - int(self.ds._offsets[s])]
        out = {"__key__": key}
        for ext, off, size in members:
            out[ext] = bytes(data[off : off + size])
        self._extract(s, data)
        return out

    # -- parquet row groups --------------------------------------------------------------------

    def _footer(self, s: int) -> tuple[Any, int]:
        """(FileMetaData, file size) of shard ``s``'s file: the process's memo, else
        ``cache_dir/index/<file>.footer`` (written by the first process of the node to read
        it, under a lock of the file's own), else the source: the size (HEAD), the last 8
        bytes, then the footer."""
        url = self.ds._urls[s]
        got = self.footers.get(url)
        if got is None:
            got = self._stored_footer(url)
        if got is None:
            with flock(self.store.locks / f"{_name_of(url)}.footer.lock"):
                got = self._stored_footer(url) or self._fetch_footer(s)
        self.footers.put(url, got)
        return got

    def _stored_footer(self, url: str) -> tuple[Any, int] | None:
        """The footer the node keeps for ``url``, checked as an input; None if none is."""
        from .parquet import parse_footer

        path = self._footer_path(url)
        with contextlib.suppress(OSError, ValueError):
            head, _, tail = path.read_bytes().partition(b"\n")
            return parse_footer(tail, str(path)), int(head)
        return None

    def _fetch_footer(self, s: int) -> tuple[Any, int]:
        """Read the footer of shard ``s``'s file from the source; keep it in ``cache_dir``."""
        from .parquet import footer_length, parse_footer

        url = self.ds._urls[s]
        path = self._footer_path(url)
        where = f"shard {s} ({url!r})"
        size = self.fetcher.size(url)
        if size < 12:
            raise ValueError(f"{where} has {size} bytes: too short for a Parquet file")
        last8 = self.fetcher.read_range(url, size - 8, size)
        n = footer_length(last8, where)
        if n + 12 > size:
            raise ValueError(f"{where}: its footer says {n} bytes, the file has {size}")
        tail = self.fetcher.read_range(url, size - 8 - n, size - 8) + last8
        meta = parse_footer(tail, where)
        self.count("footers", 1, flush=False)
        self.count("bytes_fetched", len(tail), flush=False)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(b"%d\n" % size + tail)
        os.replace(tmp, path)
        return meta, size

    def _footer_path(self, url: str) -> Path:
        return self.root / "index" / f"{_name_of(url)}.footer"

    def _forget_footer(self, s: int) -> None:
        """The file may have changed: read its footer again next time."""
        url = self.ds._urls[s]
        self.footers.pop(url, None)
        with contextlib.suppress(OSError):
            self._footer_path(url).unlink()

    def _row_group(self, s: int) -> tuple[Any, int]:
        """(table, bytes read) of row group shard ``s``: one range read of its column chunks
        (plus its file's footer if this node never read it)."""
        from .parquet import decode_row_group, row_group_span

        url, g = self.ds._urls[s], int(self.ds._row_groups[s])  # type: ignore[index]
        where = f"shard {s} ({url!r}, row group {g})"
        meta, size = self._footer(s)
        if g >= meta.num_row_groups:
            self._forget_footer(s)
            raise ValueError(
                f"{where}: the file has {meta.num_row_groups} row groups; the file changed "
                "since the layout was made; make the layout again"
            )
        lo, hi = row_group_span(meta, g)
        data = self.fetcher.read_range(url, lo, hi) if hi > lo else b""
        extra = [0]

        def more(a: int, b: int) -> bytes:
            got = self.fetcher.read_range(url, a, b)
            extra[0] += len(got)
            return got

        try:
            table = decode_row_group(meta, g, data, lo, size, more)
        except ShardFetchError:
            raise
        except Exception as e:  # pyarrow's errors on corrupt bytes
            self._forget_footer(s)
            raise ValueError(
                f"{where} is not readable Parquet at bytes {lo}..{hi} ({type(e).__name__}: {e})"
            ) from None
        want = int(self.ds._offsets[s + 1] - self.ds._offsets[s])
        if table.num_rows != want:
            self._forget_footer(s)
            raise ValueError(
                f"{where} holds {table.num_rows} rows, the layout says {want}: the file "
                "changed since the layout was made; make the layout again"
            )
        return table, len(data) + extra[0]

    def _fetch_row_group(self, s: int, tmp: str) -> int:
        """Write row group shard ``s`` to ``tmp`` as an Arrow IPC file; the bytes read."""
        from .parquet import write_ipc

        table, nbytes = self._row_group(s)
        write_ipc(table, tmp)
        return nbytes

    def _mapped(self, s: int, fh: Any) -> Any:
        """The table of the cached row group open as ``fh``, memory-mapped once per file (a
        new copy of the shard is a new inode). Mappings of files no longer in ``shards/`` are
        let go first, so an evicted shard's disk space is freed."""
        from .parquet import map_ipc

        name = self.ds._names[s]
        st = os.fstat(fh.fileno())
        key = (name, st.st_dev, st.st_ino)
        table = self.tables.get(key)
        if table is not None:
            return table
        for old in list(self.tables):
            try:
                cur = os.stat(self.store.shards / old[0])
                gone = (cur.st_dev, cur.st_ino) != old[1:]
            except FileNotFoundError:
                gone = True
            if gone:
                del self.tables[old]
        want = int(self.ds._offsets[s + 1] - self.ds._offsets[s])
        try:
            table = map_ipc(fh.fileno())
        except ValueError as e:
            self.store.drop(name)
            raise ValueError(
                f"shard {s} ({self.ds._urls[s]!r}): the cached copy is bad: {e}"
            ) from None
        if table.num_rows != want:
            self.store.drop(name)
            raise ValueError(
                f"shard {s} ({self.ds._urls[s]!r}): the cached copy holds {table.num_rows} "
                f"rows, the layout says {want}"
            )
        self.tables.put(key, table)
        return table

    def _loose_row(self, s: int, i: int) -> dict:
        """Row ``i`` of row group shard ``s`` without a cache slot: the row group read into
        memory (kept for the last 2 such reads of the process)."""
        table = self.loose.get(s)
        if table is None:
            before = self.fetcher.retried
            try:
                table, nbytes = self._row_group(s)
                self.count("out_of_schedule", 1, flush=False)
                self.count("bytes_fetched", nbytes, flush=False)
            finally:
                self.count("retries", self.fetcher.retried - before, flush=False)
                self.flush(force=True)
            self.loose.put(s, table)
        return table.slice(i - int(self.ds._offsets[s]), 1).to_pylist()[0]

    # -- resident samples ----------------------------------------------------------------------

    def _resident_of(self, s: int) -> np.ndarray:
        """Shard ``s``'s resident indices, asked of the sampler per shard (a binary search
        per class) so no process holds the whole resident list."""
        with self.lock:  # the prefetch thread asks too
            got = self.res_of.get(s)
            if got is None:
                sampler = self.ds.sampler
                got = np.zeros(0, dtype=np.int64)
                if sampler is not None and hasattr(sampler, "resident_indices"):
                    lo, hi = int(self.ds._offsets[s]), int(self.ds._offsets[s + 1])
                    got = np.asarray(sampler.resident_indices(lo, hi), dtype=np.int64)
                self.res_of.put(s, got)
            return got

    def _extract(self, s: int, src: Any) -> None:
        """Copy the resident samples of tar shard ``s`` into ``cache_dir/resident`` (once)."""
        if s in self.extracted or self.ds.format != "webdataset":
            return
        self.extracted.add(s)
        wanted = self._resident_of(s)
        if len(wanted) == 0:
            return
        path = self.root / "resident" / f"{self.ds._names[s]}.bin"
        head = self._res_head(s)
        if head is not None and all(int(x) in head[1] for x in wanted):
            return
        samples = self._index(s, src)
        base = int(self.ds._offsets[s])
        table: dict[str, list] = {}
        chunks: list[bytes] = []
        at = 0
        for idx in wanted.tolist():
            key, members = samples[idx - base]
            ms = []
            for ext, off, size in members:
                if hasattr(src, "fileno"):
                    blob = os.pread(src.fileno(), size, off)
                else:
                    blob = bytes(src[off : off + size])
                chunks.append(blob)
                ms.append([ext, at, len(blob)])
                at += len(blob)
            table[str(idx)] = [key, ms]
        header = json.dumps(table).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(b"%d\n" % len(header))
            fh.write(header)
            for c in chunks:
                fh.write(c)
        os.replace(tmp, path)
        self.res_heads.pop(s, None)

    def _res_head(self, s: int) -> tuple[int, dict] | None:
        head = self.res_heads.get(s)
        if head is not None:
            return head
        path = self.root / "resident" / f"{self.ds._names[s]}.bin"
        try:
            with open(path, "rb") as fh:
                n = int(fh.readline())
                table = json.loads(fh.read(n))
                base = fh.tell()
        except (OSError, ValueError):
            return None
        head = (base, {int(k): v for k, v in table.items()})
        self.res_heads.put(s, head)
        return head

    def _resident(self, s: int, i: int) -> dict | None:
        if self.ds.format != "webdataset":
            return None
        head = self._res_head(s)
        if head is None or i not in head[1]:
            return None
        base, table = head
        key, members = table[i]
        out: dict[str, Any] = {"__key__": key}
        path = self.root / "resident" / f"{self.ds._names[s]}.bin"
        try:
            with open(path, "rb") as fh:
                for ext, off, size in members:
                    out[ext] = os.pread(fh.fileno(), int(size), base + int(off))
        except OSError:
            return None
        if any(len(out[ext]) != int(size) for ext, _, size in members):
            self.res_heads.pop(s, None)
            return None
        return out

    # -- prefetch ------------------------------------------------------------------------------

    def _prefetch_loop(self) -> None:
        while self.pid == os.getpid():
            self.wake.wait(0.5)
            self.wake.clear()
            try:
                self._prefetch_once()
            except Exception:  # the demand path reports errors; prefetch only tries
                time.sleep(0.2)
            self.flush()

    def _prefetch_once(self) -> None:
        with self.lock:
            order = self.order
            epoch = self.epoch
        view = self._view()
        wanted: list[tuple[int, str]] = []
        seen: set[str] = set()
        longest = max((len(v) for v in order.values()), default=0)
        for dist in range(1, longest + 1):
            for lane in sorted(order):
                pos = view.get(lane, (-1, -1))[1] + dist
                if pos < len(order[lane]):
                    name = order[lane][pos]
                    if name not in seen and self._status(name, view)[0] == _AHEAD:
                        seen.add(name)
                        wanted.append((dist, name))
            if len(wanted) >= self.ds.prefetch:
                break
        for dist, name in wanted[: self.ds.prefetch]:
            if self.epoch != epoch:
                return
            if self.store.path(name).exists():
                continue
            state = self.store.reserve(name, self._victims(dist))
            if state == "full":
                return
            if state == "reserved":
                s = self.ds._shard_of_name[name]
                self._fill(s, name, prefetched=True)

    # -- counters ------------------------------------------------------------------------------

    def count(self, key: str, n: int = 1, flush: bool = True) -> None:
        if n:
            with self.lock:
                self.counters[key] += n
            if flush:
                self.flush()

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < _FLUSH_S:
            return
        self.last_flush = now
        with self.lock:
            doc = json.dumps(dict(self.counters))
        tmp = self.stats_file.with_name(f".{self.stats_file.name}.{threading.get_ident()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(doc)
            os.replace(tmp, self.stats_file)


def _check_index(doc: Any, want: int) -> list | None:
    """A stored index, checked as an input: a list of ``want`` samples of (key, members)."""
    if not isinstance(doc, list) or len(doc) != want:
        return None
    out = []
    for entry in doc:
        key, members = entry
        ms = tuple((str(e), int(o), int(n)) for e, o, n in members)
        if not isinstance(key, str) or any(o < 0 or n < 0 for _, o, n in ms):
            return None
        out.append((key, ms))
    return out

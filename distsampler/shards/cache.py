"""The node-local shard cache: one shared copy per shard, a bounded set of slots per rank.

Layout of ``cache_dir``::

    shards/<name>            the downloaded shard (one per node; ``.tmp-*`` while downloading)
    locks/<name>.lock        ``flock`` per shard: one download per shard per node
    ranks/<tag>/<name>       a hard link per shard this rank holds (its slots)
    ranks/<tag>/<name>.res   a slot reserved for a download in progress (holds the pid)
    ranks/<tag>/.lock        ``flock`` guarding the rank's slots and progress
    ranks/<tag>/progress.json  how far each reader (process) of the rank has read each lane
                             this epoch

A rank never holds more than ``bound`` slots (links plus reservations), so ``shards/`` holds
at most the sum of the ranks' bounds. A shard file is removed when its last link goes.
Lock order: a shard lock may wait for the rank lock; the rank lock only *tries* shard locks,
so two processes never wait on each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["ShardStore", "flock"]

_RES = ".res"


@contextlib.contextmanager
def flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``; yields False if not ``blocking`` and busy.

    ``flock`` locks belong to an open file, so threads of one process exclude each other too.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShardStore:
    """The slots of one rank in a cache directory shared by every process of the node."""

    def __init__(self, root: str | os.PathLike, tag: str, bound: int) -> None:
        self.root = Path(root)
        self.bound = int(bound)
        self.shards = self.root / "shards"
        self.locks = self.root / "locks"
        self.mine = self.root / "ranks" / tag
        for d in (self.shards, self.locks, self.mine):
            d.mkdir(parents=True, exist_ok=True)
        self._rank_lock = self.mine / ".lock"

    # -- paths -------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """This rank's link to shard ``name`` (exists while the rank holds the shard)."""
        return self.mine / name

    def _shard_lock(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def lock(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """The node-wide lock of shard ``name`` (held while it is downloaded)."""
        return flock(self._shard_lock(name))

    def rank_lock(self):
        return flock(self._rank_lock)

    # -- slots -------------------------------------------------------------------------------

    def held(self) -> list[str]:
        """The shards this rank holds now."""
        return self._slots()[0]

    def _slots(self) -> tuple[list[str], list[str]]:
        """(held names, live reservations); stale reservations (dead pid) are removed."""
        held, pending = [], []
        for entry in os.listdir(self.mine):
            if entry.startswith(".") or entry == "progress.json" or ".ln-" in entry:
                continue
            if entry.endswith(_RES):
                p = self.mine / entry
                try:
                    pid = int(p.read_text() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    pending.append(entry[: -len(_RES)])
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            else:
                held.append(entry)
        return held, pending

    def reserve(self, name: str, victims: Callable[[list[str], dict], list[str]]) -> str:
        """Reserve a slot for ``name``: "held", "pending" (another process fetches it),
        "reserved" (the caller must :meth:`fill` or :meth:`release` it) or "full".

        ``victims(held, progress)`` lists the held shards that may be evicted, first victim
        first; it is called under the rank lock with the rank's shared progress.
        """
        with self.rank_lock():
            held, pending = self._slots()
            if name in held:
                return "held"
            if name in pending:
                return "pending"
            used = len(held) + len(pending)
            if used >= self.bound:
                for victim in victims(held, self.progress()):
                    if used < self.bound:
                        break
                    if self._evict(victim):
                        used -= 1
                if used >= self.bound:
                    return "full"
            (self.mine / f"{name}{_RES}").write_text(str(os.getpid()))
            return "reserved"

    def release(self, name: str) -> None:
        """Drop the reservation of ``name`` (a failed download)."""
        with self.rank_lock(), contextlib.suppress(FileNotFoundError):
            (self.mine / f"{name}{_RES}").unlink()

    def _unlink(self, name: str) -> None:
        """Drop this rank's link to ``name``; the node's file goes with its last link (call it
        under the shard's lock)."""
        with contextlib.suppress(FileNotFoundError):
            (self.mine / name).unlink()
        shared = self.shards / name
        try:
            if os.stat(shared).st_nlink <= 1:
                shared.unlink()
        except FileNotFoundError:
            pass

    def _evict(self, name: str) -> bool:
        """Under the rank lock: drop this rank's link; the shared file goes with its last link."""
        with flock(self._shard_lock(name), blocking=False) as got:
            if not got:
                return False
            self._unlink(name)
            self.evictions += 1
            return True

    evictions = 0

    def fill(self, name: str, download: Callable[[str], int], locked: bool = False) -> int:
        """Make the reserved slot of ``name`` hold the shard; returns the bytes downloaded.

        Under the shard's lock (``locked``: the caller holds it already): link the node's copy
        if another rank already has it, else ``download(tmp)`` into a temporary file renamed
        into place (atomic). On any error the reservation and the temporary file are removed
        and the error propagates.
        """
        shared = self.shards / name
        fetched = 0
        try:
            with contextlib.nullcontext(True) if locked else flock(self._shard_lock(name)):
                if not shared.exists():
                    tmp = self.shards / f"{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                    try:
                        fetched = download(str(tmp))
                        os.replace(tmp, shared)
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            tmp.unlink()
                with self.rank_lock():
                    link = self.mine / name
                    if not link.exists():
                        os.link(shared, link)
                    with contextlib.suppress(FileNotFoundError):
                        (self.mine / f"{name}{_RES}").unlink()
        except BaseException:
            self.release(name)
            raise
        return fetched

    def wait(self, name: str) -> None:
        """Wait until no process holds the lock of shard ``name`` (a download finished)."""
        with flock(self._shard_lock(name)):
            pass

    def touch(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.mine / name)

    def drop(self, name: str) -> None:
        """Evict ``name`` now (a shard found corrupt), waiting for its lock."""
        with flock(self._shard_lock(name)), self.rank_lock():
            self._unlink(name)

    # -- progress ----------------------------------------------------------------------------

    def progress(self) -> dict:
        """The rank's shared progress: ``{"epoch": e or None, "lanes": {lane: {reader: pos}}}``.

        ``reader`` is the process id of a process that read the lane this epoch; each keeps
        the furthest schedule entry it has read (DataLoader workers read alternate batches of
        a lane, so one may lag the other). Readers whose process is gone are left out.
        """
        try:
            doc = json.loads((self.mine / "progress.json").read_text())
            lanes = {
                int(k): {int(r): int(p) for r, p in v.items() if _alive(int(r))}
                for k, v in doc["lanes"].items()
            }
            return {"epoch": int(doc["epoch"]), "lanes": lanes}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {"epoch": None, "lanes": {}}

    def merge_progress(self, epoch: int, lanes: dict[int, int]) -> dict[int, dict[int, int]]:
        """Raise this process's progress of ``epoch`` to ``lanes`` (``{lane: pos}``);
        returns the merged map ``{lane: {reader: pos}}`` (a new epoch starts it afresh)."""
        me = os.getpid()
        with self.rank_lock():
            cur = self.progress()
            merged = dict(cur["lanes"]) if cur["epoch"] == epoch else {}
            for lane, pos in lanes.items():
                readers = dict(merged.get(lane, {}))
                readers[me] = max(pos, readers.get(me, -1))
                merged[lane] = readers
            doc = {
                "epoch": epoch,
                "lanes": {str(k): {str(r): p for r, p in v.items()} for k, v in merged.items()},
            }
            tmp = self.mine / f".progress-{me}.tmp"
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.mine / "progress.json")
            return merged

"""Reading shard bytes from wherever they live: local paths with ``open``, URLs through fsspec.

fsspec is imported only when a URL is read (``pip install "distsampler[shards]"``). A
filesystem object is made lazily in each process and never pickled. Transient failures (any
error but a missing file or a refused permission) are retried ``retries`` times with an
exponential backoff; the last failure is raised as :class:`ShardFetchError` naming the URL.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Fetcher", "ShardFetchError", "is_url"]

T = TypeVar("T")

_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class ShardFetchError(OSError):
    """A shard could not be read after the allowed retries (the message names the URL)."""


def is_url(path: str) -> bool:
    """Whether ``path`` names a URL (``scheme://...``) rather than a local file."""
    return "://" in path


class Fetcher:
    """Whole-file downloads, byte-range reads and sizes with bounded retries.

    Args:
        retries: extra attempts after a transient failure (0: one attempt).
        timeout: seconds for one HTTP(S) request (passed to aiohttp unless
            ``storage_options`` sets ``client_kwargs``); other filesystems use their own.
        storage_options: keyword arguments for the fsspec filesystem (credentials, ...).
        backoff: seconds before the first retry, doubled each time (at most 5 s).
    """

    def __init__(
        self,
        retries: int = 3,
        timeout: float = 60.0,
        storage_options: dict | None = None,
        backoff: float = 0.05,
    ) -> None:
        self.retries = int(retries)
        self.timeout = float(timeout)
        self.storage_options = dict(storage_options or {})
        self.backoff = float(backoff)
        self.retried = 0  # transient failures seen (for stats)
        self._fs: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fs"] = {}
        return state

    def _filesystem(self, url: str) -> tuple[Any, str]:
        if self._pid != os.getpid():
            self._fs, self._pid = {}, os.getpid()
        protocol = url.split("://", 1)[0]
        fs = self._fs.get(protocol)
        if fs is None:
            try:
                import fsspec
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    f"reading {url!r} needs fsspec: pip install 'distsampler[shards]' "
                    "(local paths need nothing)"
                ) from e
            opts = dict(self.storage_options)
            if protocol in ("http", "https") and "client_kwargs" not in opts:
                import aiohttp

                opts["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=self.timeout)}
            fs = fsspec.filesystem(protocol, **opts)
            self._fs[protocol] = fs
        return fs, url

    def _retry(self, url: str, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _PERMANENT as e:
                raise ShardFetchError(f"{what} {url!r} failed: {e}") from e
            except Exception as e:  # transient until proven otherwise
                if attempt == self.retries:
                    raise ShardFetchError(
                        f"{what} {url!r} failed after {self.retries + 1} attempts "
                        f"(retries={self.retries}): {type(e).__name__}: {e}"
                    ) from e
                self.retried += 1
                time.sleep(delay)
                delay = min(5.0, delay * 2)
        raise AssertionError("unreachable")  # pragma: no cover

    def download(self, url: str, dest: str, expect: int | None = None) -> int:
        """Copy the whole of ``url`` to the local file ``dest``; returns its size.

        ``expect`` (bytes, if known): a shorter or longer copy counts as a transient failure
        (a dropped transfer) and is retried; the last attempt raises naming the URL.
        """

        def once() -> int:
            if is_url(url):
                fs, path = self._filesystem(url)
                fs.get_file(path, dest)
            else:
                with open(url, "rb") as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            size = os.path.getsize(dest)
            if expect is not None and size != expect:
                what = f"is truncated at byte {size}" if size < expect else f"has {size} bytes"
                raise OSError(f"the copy {what}: the layout says the shard has {expect} bytes")
            return size

        return self._retry(url, "downloading", once)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``url`` (a short read is retried, then raised)."""

        def once() -> bytes:
            if is_url(url):
                fs, path = self._filesystem(url)
                data = fs.cat_file(path, start=start, end=end)
            else:
                with open(url, "rb") as fh:
                    fh.seek(start)
                    data = fh.read(end - start)
            if len(data) != end - start:
                raise OSError(f"got {len(data)} of bytes {start}..{end}")
            return data

        return self._retry(url, "reading", once)

    def size(self, url: str) -> int:
        """The size of ``url`` in bytes (a HEAD request for HTTP(S): no body is sent)."""

        def once() -> int:
            if is_url(url):
                fs, path = self._filesystem(url)
                return int(fs.size(path))
            return os.path.getsize(url)

        return self._retry(url, "sizing", once)

    def read_all(self, url: str) -> bytes:
        """The whole of ``url`` in memory (an out-of-schedule read)."""

        def once() -> bytes:
            if is_url(url):
                fs, path = self._filesystem(url)
                return fs.cat_file(path)
            with open(url, "rb") as fh:
                return fh.read()

        return self._retry(url, "reading", once)

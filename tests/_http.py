"""A loopback HTTP server for tests and benchmarks: serves a directory on 127.0.0.1 only.

``with LoopbackServer(root) as srv:`` serves the files under ``root`` at ``srv.url(name)``
(GET and HEAD, single ``Range: bytes=a-b`` / ``a-`` / ``-n`` requests answered with 206), in
threads, and counts requests and bytes served per path. Knobs for the reader's tests:

- ``latency``: seconds added before each response;
- ``fail(name, n, status=503)``: the next ``n`` requests of ``name`` are answered ``status``;
- ``corrupt(name, offset, data)``: serve ``data`` in place of the bytes at ``offset``;
- ``truncate(name, size, lie=False)``: serve only the first ``size`` bytes (``lie=True``:
  announce the full length and close the connection early, as a dropped transfer does).

It binds 127.0.0.1 and nothing else, runs on daemon threads, and stops by itself after
``lifetime`` seconds (default 600) if the test never closes it.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["LoopbackServer"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class LoopbackServer:
    """Threaded HTTP server on 127.0.0.1 (a free port) serving the files of one directory."""

    def __init__(self, root: str | os.PathLike, *, latency: float = 0.0, lifetime: float = 600):
        self.root = Path(root).resolve()
        self.latency = float(latency)
        self.requests: Counter[str] = Counter()  # path -> requests answered (any status)
        self.bytes_served: Counter[str] = Counter()  # path -> body bytes sent
        self.statuses: Counter[int] = Counter()
        self._fail: dict[str, tuple[int, int]] = {}
        self._patches: dict[str, list[tuple[int, bytes]]] = {}
        self._truncate: dict[str, tuple[int, bool]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                outer._answer(self, head=True)

            def do_GET(self) -> None:
                outer._answer(self, head=False)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True
        self._timer.start()
        self._closed = False

    # -- public ----------------------------------------------------------------------------

    def url(self, name: str) -> str:
        """The URL of file ``name`` (relative to the root)."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def fail(self, name: str, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests of ``name`` with ``status`` (a transient failure)."""
        with self._lock:
            self._fail[name] = (int(n), int(status))

    def corrupt(self, name: str, offset: int, data: bytes) -> None:
        """Serve ``data`` in place of the file's bytes at ``offset`` (the file is untouched)."""
        with self._lock:
            self._patches.setdefault(name, []).append((int(offset), bytes(data)))

    def truncate(self, name: str, size: int, *, lie: bool = False) -> None:
        """Serve only the first ``size`` bytes of ``name``; ``lie``: announce the full length."""
        with self._lock:
            self._truncate[name] = (int(size), bool(lie))

    def heal(self, name: str | None = None) -> None:
        """Drop the failures, patches and truncations of ``name`` (``None``: of every file)."""
        with self._lock:
            for table in (self._fail, self._patches, self._truncate):
                if name is None:
                    table.clear()
                else:
                    table.pop(name, None)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_served.clear()
            self.statuses.clear()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self.bytes_served.values())

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- serving ---------------------------------------------------------------------------

    def _answer(self, h: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        name = unquote(urlsplit(h.path).path).lstrip("/")
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.requests[name] += 1
            left, status = self._fail.get(name, (0, 0))
            if left > 0:
                self._fail[name] = (left - 1, status)
            patches = list(self._patches.get(name, ()))
            trunc = self._truncate.get(name)
        if left > 0:
            return self._status(h, status)
        path = (self.root / name).resolve()
        if self.root not in path.parents or not path.is_file():
            return self._status(h, 404)
        data = bytearray(path.read_bytes())
        for off, patch in patches:
            data[off : off + len(patch)] = patch
        full = len(data)
        lie = False
        if trunc is not None:
            lie = trunc[1]
            if not lie:
                del data[trunc[0] :]
                full = len(data)
        start, end = 0, full  # [start, end)
        rng = h.headers.get("Range")
        code = 200
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                return self._status(h, 416)
            if m.group(1):
                start = int(m.group(1))
                end = min(full, int(m.group(2)) + 1) if m.group(2) else full
            else:
                start = max(0, full - int(m.group(2)))
            if start >= full or start >= end:
                return self._status(h, 416)
            code = 206
        body = bytes(data[start:end])
        if lie and trunc is not None:
            body = body[: max(0, trunc[0] - start)]
        h.send_response(code)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(end - start))
        if code == 206:
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{full}")
        if lie:
            h.send_header("Connection", "close")
        h.end_headers()
        with self._lock:
            self.statuses[code] += 1
        if head:
            return
        try:
            h.wfile.write(body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        with self._lock:
            self.bytes_served[name] += len(body)
        if lie:
            h.close_connection = True

    def _status(self, h: http.server.BaseHTTPRequestHandler, code: int) -> None:
        body = f"{code}\n".encode()
        h.send_response(code)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        with self._lock:
            self.statuses[code] += 1

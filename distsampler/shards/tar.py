"""Tar shards read the way WebDataset reads them, with the byte offset of every member.

One strict parser of tar headers (no :mod:`tarfile`), used both to lay out shards
(:meth:`~distsampler.shards.ShardLayout.from_webdataset`) and to read samples out of a fetched
shard. It understands what WebDataset writers produce: ustar headers (with the ``prefix``
field), GNU long names (``L``) and links (``K``), and pax extended headers (``x``, ``g``: the
default of Python's :mod:`tarfile` and of ``webdataset.TarWriter``). Samples are grouped as
``webdataset.WebDataset`` groups them:

* only regular files count (directories, links and devices are skipped);
* names like ``__meta__`` (and anything under ``__xyz__/``) are skipped;
* the key is the member name up to the first ``.`` of its base name (``dir/a.b.jpg`` has key
  ``dir/a`` and extension ``b.jpg``; extensions are lower-cased); a name without such a dot
  is skipped;
* consecutive members with one key form one sample (a key seen again later starts a new
  sample); the same extension twice in one sample is an error.

Every error is a :class:`TarError` (a ``ValueError``) naming the shard and the byte offset.
Compressed tars (``.tar.gz``) are refused: offsets into them cannot be read directly.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Collection
from typing import IO, Any, NamedTuple

__all__ = ["Sample", "TarError", "TarMember", "iter_tar_samples", "scan_tar"]

BLOCK = 512
_STREAM_CHUNK = 1 << 20  # bytes a read of a non-seekable stream
_MAX_EXTENDED = 1 << 20  # largest GNU long name or pax header accepted
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, directories, fifos: no data
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$", re.S)  # webdataset's base_plus_ext
_META = re.compile(r"__[^/]*__($|/)")


class TarError(ValueError):
    """A shard that is not a readable tar (corrupt, truncated, compressed): names shard and byte."""


class TarMember(NamedTuple):
    """One file of a sample: its extension, the byte offset of its data, its size in bytes."""

    ext: str
    offset: int
    size: int


class Sample(NamedTuple):
    """A sample of a tar shard: its key and its members in tar order."""

    key: str
    members: tuple[TarMember, ...]


class _Source:
    """Bytes read forward by absolute position; ``end`` is the size when known."""

    end: int | None = None

    def read(self, pos: int, n: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def reach(self, pos: int) -> bool:
        """Whether the shard holds at least ``pos`` bytes (may consume a stream up to there)."""
        raise NotImplementedError  # pragma: no cover


class _Buffer(_Source):
    def __init__(self, data: Any) -> None:
        self.view = memoryview(data).cast("B")
        self.end = len(self.view)

    def read(self, pos: int, n: int) -> bytes:
        return bytes(self.view[pos : pos + n])

    def reach(self, pos: int) -> bool:
        return pos <= len(self.view)

    def close(self) -> None:
        self.view.release()


class _Seekable(_Source):
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.base = fh.tell()
        self.end = fh.seek(0, os.SEEK_END) - self.base

    def read(self, pos: int, n: int) -> bytes:
        self.fh.seek(self.base + pos)
        return self.fh.read(n)

    def reach(self, pos: int) -> bool:
        assert self.end is not None
        return pos <= self.end


class _Stream(_Source):
    """A stream read once, forward only (an HTTP body): data skipped is read and dropped."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.buf = b""
        self.start = 0  # absolute position of buf[0]
        self.done = False

    def _fill(self, pos: int) -> None:
        """Read until the buffer covers ``[.., pos)`` or the stream ends."""
        while self.start + len(self.buf) < pos and not self.done:
            chunk = self.fh.read(max(_STREAM_CHUNK, pos - self.start - len(self.buf)))
            if not chunk:
                self.done = True
            else:
                self.buf += chunk

    def read(self, pos: int, n: int) -> bytes:
        if pos > self.start:  # forward only: drop what lies before pos
            self._fill(pos)
            cut = min(pos - self.start, len(self.buf))
            self.buf, self.start = self.buf[cut:], self.start + cut
        self._fill(pos + n)
        lo = pos - self.start
        return self.buf[lo : lo + n] if lo >= 0 else b""

    def reach(self, pos: int) -> bool:
        while self.start + len(self.buf) < pos and not self.done:
            self.start += len(self.buf)  # drop the buffer, then read on
            self.buf = b""
            self._fill(min(pos, self.start + _STREAM_CHUNK))
        return self.start + len(self.buf) >= pos

    @property
    def consumed(self) -> int:
        return self.start + len(self.buf)


def _source(data: Any) -> tuple[_Source, Any]:
    """A source over bytes, a buffer, an open file (memory-mapped when possible) or a stream."""
    if isinstance(data, (bytes, bytearray, memoryview, mmap.mmap)):
        return _Buffer(data), None
    if not hasattr(data, "read"):
        raise TypeError(
            "a tar shard should be given as bytes, a memoryview or a binary file object, but "
            f"got {type(data).__name__}"
        )
    try:
        fileno = data.fileno()
        start = data.tell()
    except (AttributeError, OSError, ValueError):
        fileno = None
    if fileno is not None and start == 0:
        size = os.fstat(fileno).st_size
        if size == 0:
            return _Buffer(b""), None
        try:
            mapped = mmap.mmap(fileno, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a pipe, a special file: read it as a stream
            return _Stream(data), None
        return _Buffer(mapped), mapped
    seekable = getattr(data, "seekable", None)
    if seekable is not None and seekable():
        return _Seekable(data), None
    return _Stream(data), None


def _number(field: bytes, name: str, at: int, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80 or 0xff)."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            n -= 256 ** (len(field) - 1)
        return n
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise TarError(
            f"shard {name!r}: the tar header at byte {at} has an invalid {what} field {text!r}"
        ) from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax(data: bytes, name: str, at: int) -> dict[str, str]:
    """The records ``"<len> <key>=<value>\\n"`` of a pax extended header."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            length = 0
        record = data[pos : pos + length]
        if space < 0 or length <= space - pos or len(record) != length or record[-1:] != b"\n":
            raise TarError(
                f"shard {name!r}: the pax header at byte {at} holds a malformed record at "
                f"byte {at + BLOCK + pos}"
            )
        key, sep, value = record[space - pos + 1 : -1].partition(b"=")
        if not sep:
            raise TarError(
                f"shard {name!r}: the pax header at byte {at} holds a record without '=' at "
                f"byte {at + BLOCK + pos}"
            )
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def _skipped_name(member: str) -> bool:
    """WebDataset skips ``__meta__`` files at the top and everything under ``__xyz__/``."""
    top = "/" not in member and member.startswith("__") and member.endswith("__")
    return top or _META.match(member) is not None


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def scan_tar(
    data: Any, name: str, *, read: Collection[str] = ()
) -> tuple[list[Sample], list[dict[str, bytes]], int]:
    """The samples of a tar shard, the data of the members with an extension in ``read``, its size.

    Args:
        data: the shard: bytes, a memoryview, or a binary file object (a local file is
            memory-mapped and only its headers are touched; a non-seekable stream is read
            once, front to back).
        name: the shard's URL or path, named in every error.
        read: extensions (e.g. ``{"cls"}``) whose bytes are returned, one dict per sample.

    Returns:
        ``(samples, payloads, size)``: ``payloads[i]`` maps the extensions of ``read`` that
        sample ``i`` has to their bytes; ``size`` is the shard's size in bytes as read.

    Raises:
        TarError: a compressed, corrupt (bad checksum, bad field) or truncated tar, naming
            ``name`` and the byte offset; a sample holding one extension twice.
    """
    source, mapped = _source(data)
    try:
        return _scan(source, name, frozenset(read))
    finally:
        if isinstance(source, _Buffer):
            source.close()
        if mapped is not None:
            mapped.close()


def iter_tar_samples(data: Any, name: str) -> list[Sample]:
    """The samples of a tar shard (key and members with data offsets), grouped as WebDataset.

    Args:
        data: the shard: bytes, a memoryview, or a binary file object.
        name: the shard's URL or path, named in every error.

    Examples:
        >>> import io, tarfile
        >>> buf = io.BytesIO()
        >>> with tarfile.open(fileobj=buf, mode="w") as tar:
        ...     for member, text in [("a.cls", b"1"), ("a.txt", b"hi"), ("b.cls", b"0")]:
        ...         info = tarfile.TarInfo(member)
        ...         info.size = len(text)
        ...         tar.addfile(info, io.BytesIO(text))
        >>> samples = iter_tar_samples(buf.getvalue(), "demo.tar")
        >>> [(s.key, [m.ext for m in s.members]) for s in samples]
        [('a', ['cls', 'txt']), ('b', ['cls'])]
        >>> samples[0].members[1]
        TarMember(ext='txt', offset=1536, size=2)
    """
    return scan_tar(data, name)[0]


def _scan(
    source: _Source, name: str, read: frozenset[str]
) -> tuple[list[Sample], list[dict[str, bytes]], int]:
    samples: list[Sample] = []
    payloads: list[dict[str, bytes]] = []
    key: str | None = None
    members: list[TarMember] = []
    exts: set[str] = set()
    payload: dict[str, bytes] = {}
    glob: dict[str, str] = {}  # pax global records ("g"), applied after every pax header
    pos = 0
    start = 0  # offset of the header group (long names, pax) of the member being read
    long_name: str | None = None
    pax: dict[str, str] | None = None
    ended = False

    def close_sample() -> None:
        if key is not None:
            samples.append(Sample(key, tuple(members)))
            payloads.append(payload)

    while True:
        header = source.read(pos, BLOCK)
        if pos == 0 and header[:2] == b"\x1f\x8b":
            raise TarError(
                f"shard {name!r} is gzip-compressed (byte 0): sample offsets need an "
                "uncompressed tar; decompress it (gunzip) or write shards uncompressed"
            )
        if len(header) < BLOCK:
            if pos == 0 and not header:
                raise TarError(f"shard {name!r} is empty (0 bytes): not a tar")
            got = pos + len(header)
            if source.end is not None:
                got = min(got, source.end)
            elif isinstance(source, _Stream):
                got = min(got, source.consumed)
            where = (
                "inside a header"
                if got > pos
                else "before its end-of-archive blocks"
                if got == pos
                else f"inside the padding before the header at byte {pos}"
            )
            raise TarError(f"shard {name!r} is truncated at byte {got} ({where})")
        if header.count(0) == BLOCK:
            if long_name is not None or pax is not None:
                raise TarError(
                    f"shard {name!r}: the extended header at byte {start} is followed by the "
                    f"end of the archive at byte {pos}, not by a member"
                )
            ended = True
            break
        stored = _number(header[148:156], name, pos, "checksum")
        unsigned = 256 + sum(header[:148]) + sum(header[156:])
        if stored != unsigned and stored != unsigned - 2 * sum(
            b for b in header[:148] + header[156:] if b >= 128
        ):
            raise TarError(
                f"shard {name!r}: bad tar header checksum at byte {pos} (corrupt, or not a tar)"
            )
        if long_name is None and pax is None:
            start = pos
        kind = header[156:157]
        size = _number(header[124:136], name, pos, "size")
        if size < 0:
            raise TarError(f"shard {name!r}: the tar header at byte {pos} has size {size}")
        data_at = pos + BLOCK
        if kind in (b"L", b"K", b"x", b"g", b"X"):  # extended headers: data read here
            if size > _MAX_EXTENDED:
                raise TarError(
                    f"shard {name!r}: the extended header at byte {pos} claims {size} bytes"
                )
            body = source.read(data_at, size)
            if len(body) < size:
                raise TarError(
                    f"shard {name!r} is truncated at byte {data_at + len(body)} (inside the "
                    f"extended header at byte {pos})"
                )
            if kind == b"L":
                long_name = _text(body)
            elif kind == b"g":
                glob.update(_pax(body, name, pos))
            elif kind in (b"x", b"X"):
                pax = {**glob, **(pax or {}), **_pax(body, name, pos)}
            pos = data_at + _padded(size)
            continue
        if kind == b"S" or (pax is not None and any(k.startswith("GNU.sparse") for k in pax)):
            raise TarError(
                f"shard {name!r}: the member at byte {start} is a sparse file, which shards "
                "cannot hold; write the shard again without sparse files"
            )
        member_name = _text(header[:100])
        prefix = _text(header[345:500])
        if prefix:
            member_name = prefix + "/" + member_name
        if long_name is not None:
            member_name = long_name
        if pax is not None:
            member_name = pax.get("path", member_name)
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    size = -1
                if size < 0:
                    raise TarError(
                        f"shard {name!r}: the pax header at byte {start} has size {pax['size']!r}"
                    )
        long_name, pax = None, None
        regular = kind in _REGULAR and not (kind == b"\0" and member_name.endswith("/"))
        if not regular and kind in _SKIPPED + (b"\0",):
            pos = data_at  # no data follows these (tarfile ignores their size field)
            continue
        end = data_at + size
        pos = data_at + _padded(size)
        ext = None
        if regular and not _skipped_name(member_name):
            match = _KEY.match(member_name)
            if match is not None:
                k, ext = match.group(1), match.group(2).lower()
        kept = source.read(data_at, size) if ext is not None and ext in read else None
        if (len(kept) < size) if kept is not None else not source.reach(end):
            got = source.end if source.end is not None else getattr(source, "consumed", end)
            if kept is not None:
                got = data_at + len(kept)
            raise TarError(
                f"shard {name!r} is truncated at byte {got}: member {member_name!r} (header "
                f"at byte {start}) needs bytes {data_at}..{end}"
            )
        if ext is None:  # not a sample's file (directory, metadata, no extension, other type)
            continue
        if k != key:
            close_sample()
            key, members, exts, payload = k, [], set(), {}
        if ext in exts:
            raise TarError(
                f"shard {name!r}: sample {k!r} holds extension {ext!r} twice (the second "
                f"at byte {start}); WebDataset refuses it too"
            )
        exts.add(ext)
        members.append(TarMember(ext, data_at, size))
        if kept is not None:
            payload[ext] = kept
    close_sample()
    if not ended:  # pragma: no cover - the loop only leaves at the end marker
        raise TarError(f"shard {name!r} has no end-of-archive marker")
    size_read = source.end if source.end is not None else pos + BLOCK
    if isinstance(source, _Stream):  # read the padding too: the size of the shard as fetched
        while source.reach(source.consumed + 1):
            pass
        size_read = source.consumed
    return samples, payloads, int(size_read)

"""Parquet shards: footers (rows and bytes of each row group) and rows, through pyarrow.

pyarrow is imported here only, when a Parquet shard is read (the ``parquet`` extra); local
paths are opened with ``open``, URLs through fsspec (the ``shards`` extra). A footer costs a
few small reads at the end of the file; no row is read unless asked for.

A row group read on its own (:func:`row_group_span`, :func:`decode_row_group`) costs one
range read of its column chunks, given the file's footer (:func:`footer_length`,
:func:`parse_footer`); the reader keeps it as an Arrow IPC file (:func:`write_ipc`) mapped
into memory to read rows (:func:`map_ipc`).
"""

from __future__ import annotations

import io
import mmap
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Footer",
    "decode_row_group",
    "footer_length",
    "map_ipc",
    "open_shard",
    "parse_footer",
    "read_column",
    "read_footer",
    "read_rows",
    "row_group_span",
    "write_ipc",
]

MAGIC = b"PAR1"


class Footer(NamedTuple):
    """What a Parquet footer says: rows and compressed bytes of each row group, file size."""

    rows: tuple[int, ...]
    row_group_bytes: tuple[int, ...]
    file_bytes: int
    columns: tuple[str, ...]


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the parquet extra is installed in the tests
        raise ImportError(
            "reading Parquet shards needs pyarrow: pip install 'distsampler[parquet]'"
        ) from None
    return pq


def is_url(path: str) -> bool:
    """Whether ``path`` names a remote object (``scheme://``) rather than a local file."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


@contextmanager
def open_shard(path: str, storage_options: dict[str, Any] | None = None) -> Any:
    """A binary file object of a shard: ``open`` for a local path, fsspec for a URL."""
    if is_url(path):
        try:
            import fsspec
        except ImportError:  # pragma: no cover - the shards extra is installed in the tests
            raise ImportError(
                f"reading {path!r} needs fsspec: pip install 'distsampler[shards]'"
            ) from None
        with fsspec.open(path, "rb", **(storage_options or {})) as fh:
            yield fh
    else:
        with open(local_path(path), "rb") as fh:
            yield fh


def read_footer(path: str, storage_options: dict[str, Any] | None = None) -> Footer:
    """The footer of the Parquet file at ``path`` (a local path or a URL); no rows are read.

    Raises:
        ValueError: ``path`` is not a Parquet file (naming it and pyarrow's reason).
    """
    pq = _pyarrow_parquet()
    with open_shard(path, storage_options) as fh:
        try:
            meta = pq.ParquetFile(fh).metadata
        except Exception as e:  # pyarrow raises ArrowInvalid (a ValueError) and OSError kinds
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(
                f"paths: {path!r} is not a readable Parquet file ({type(e).__name__}: {e})"
            ) from None
        size = fh.seek(0, os.SEEK_END)
    rows, nbytes = [], []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        rows.append(int(rg.num_rows))
        nbytes.append(sum(int(rg.column(c).total_compressed_size) for c in range(rg.num_columns)))
    names = tuple(meta.schema.to_arrow_schema().names)
    return Footer(tuple(rows), tuple(nbytes), int(size), names)


def read_column(
    path: str,
    column: str,
    row_groups: Sequence[int] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """One column (of the given row groups, or of the whole file) as int64 or strings.

    Raises:
        ValueError: no such column, or a null value (naming the file and the row).
        TypeError: a column of other values than integers or strings.
    """
    pq = _pyarrow_parquet()
    import pyarrow as pa

    with open_shard(path, storage_options) as fh:
        pf = pq.ParquetFile(fh)
        if column not in pf.schema_arrow.names:
            raise ValueError(
                f"labels={column!r}: {path!r} has no such column; its columns are "
                f"{pf.schema_arrow.names[:20]}"
            )
        if row_groups is None:
            table = pf.read(columns=[column])
        else:
            table = pf.read_row_groups(list(row_groups), columns=[column])
    values = table.column(0)
    if values.null_count:
        first = next(i for i, v in enumerate(values.is_null().to_pylist()) if v)
        raise ValueError(
            f"labels={column!r}: row {first} of {path!r} is null; every sample needs a label"
        )
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.cast(kind.value_type)
        kind = kind.value_type
    if pa.types.is_integer(kind):
        return np.asarray(values.to_numpy(), dtype=np.int64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=str)
    raise TypeError(
        f"labels={column!r}: the column of {path!r} holds {kind}; labels should be integers "
        "or strings"
    )


def read_rows(
    source: Any,
    row_group: int | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The rows of a Parquet file (one row group, or all) as dicts; ``source`` a path or file.

    For a shard fetched whole into a cache: pass the local file and the row group of the shard
    (``layout.row_groups[s]``, or ``None`` when shards are files).
    """
    pq = _pyarrow_parquet()
    pf = pq.ParquetFile(source)
    cols = None if columns is None else list(columns)
    table = pf.read(columns=cols) if row_group is None else pf.read_row_group(row_group, cols)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def labels_array(values: list[Any], where: str) -> np.ndarray:
    """Labels as int64 when every value is an int, else as strings; nulls are refused."""
    for i, v in enumerate(values):
        if v is None:
            raise ValueError(f"{where}: the label of row {i} is null; every sample needs a label")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.int64)
    bad = [v for v in values if not isinstance(v, (int, np.integer, str)) or isinstance(v, bool)]
    if bad:
        raise TypeError(
            f"{where}: labels should be ints or strings, but the column holds "
            f"{type(bad[0]).__name__} {bad[0]!r:.40}"
        )
    return np.asarray([str(v) for v in values], dtype=str)  # ints and strings: all strings


# -- one row group at a time ---------------------------------------------------------------------


def footer_length(last8: bytes, where: str) -> int:
    """Bytes of the footer from a file's last 8 bytes (4-byte length, then ``PAR1``).

    Raises:
        ValueError: not the end of a Parquet file (naming ``where``).
    """
    if len(last8) != 8 or last8[4:] != MAGIC:
        raise ValueError(f"{where} does not end as a Parquet file does (no 'PAR1' at its end)")
    return int.from_bytes(last8[:4], "little")


def parse_footer(tail: bytes, where: str) -> Any:
    """The ``pyarrow.parquet.FileMetaData`` of a file from its footer: the file's last
    ``footer_length + 8`` bytes (or more of its end).

    Raises:
        ValueError: the bytes are not a Parquet footer (naming ``where``).
    """
    pq = _pyarrow_parquet()
    n = footer_length(bytes(tail[-8:]), where)
    if n + 8 > len(tail):
        raise ValueError(f"{where}: the footer needs {n + 8} bytes, got {len(tail)}")
    try:
        return pq.read_metadata(io.BytesIO(bytes(tail[-(n + 8) :])))
    except Exception as e:  # ArrowInvalid, OSError
        raise ValueError(f"{where}: the footer is not readable ({type(e).__name__}: {e})") from None


def row_group_span(meta: Any, row_group: int) -> tuple[int, int]:
    """Bytes ``[lo, hi)`` of the file holding the column chunks of ``row_group`` (one range:
    pyarrow writes a row group's chunks back to back; ``hi - lo`` is its compressed size)."""
    rg = meta.row_group(row_group)
    lo, hi = None, 0
    for c in range(rg.num_columns):
        col = rg.column(c)
        start = int(col.data_page_offset)
        if col.has_dictionary_page and col.dictionary_page_offset:
            start = min(start, int(col.dictionary_page_offset))
        lo = start if lo is None else min(lo, start)
        hi = max(hi, start + int(col.total_compressed_size))
    return (0, 0) if lo is None else (lo, hi)


class _Sparse(io.RawIOBase):
    """A read-only file of ``size`` bytes of which ``[lo, lo + len(data))`` is at hand; any
    other read goes to ``more(start, end)`` (pyarrow may pad a chunk read of old files)."""

    def __init__(self, size: int, lo: int, data: bytes, more: Callable[[int, int], bytes]):
        self._size, self._lo, self._data, self._more, self._pos = size, lo, data, more, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._size)[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + n)
        if end <= start:
            return b""
        a, b = start - self._lo, end - self._lo
        inside = a >= 0 and b <= len(self._data)
        out = self._data[a:b] if inside else self._more(start, end)
        self._pos = start + len(out)
        return bytes(out)


def decode_row_group(
    meta: Any,
    row_group: int,
    data: bytes,
    lo: int,
    size: int,
    more: Callable[[int, int], bytes],
) -> Any:
    """The ``pyarrow.Table`` of ``row_group`` from ``data``, the file's bytes from ``lo``
    (:func:`row_group_span`); ``size`` is the file's size. A read outside ``data`` calls
    ``more(start, end)``. pyarrow errors propagate (the caller names the shard)."""
    pq = _pyarrow_parquet()
    return pq.ParquetFile(_Sparse(size, lo, data, more), metadata=meta).read_row_group(row_group)


def write_ipc(table: Any, path: str) -> int:
    """Write ``table`` as an uncompressed Arrow IPC file (memory-mappable); returns its size."""
    import pyarrow as pa

    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return os.path.getsize(path)


def map_ipc(fd: int) -> Any:
    """The table of the Arrow IPC file open as ``fd``, memory-mapped (rows are not copied).

    The mapping outlives ``fd`` (and an unlinked file's disk space lasts as long as the table).

    Raises:
        ValueError: not an Arrow IPC file (a truncated or foreign file).
    """
    import pyarrow as pa

    try:
        view = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        return pa.ipc.open_file(pa.py_buffer(view)).read_all()
    except (ValueError, OSError, pa.ArrowException) as e:
        raise ValueError(f"not a readable Arrow IPC file ({type(e).__name__}: {e})") from None

"""Parquet shards: footers (rows and bytes of each row group) and rows, through pyarrow.

pyarrow is imported here only, when a Parquet shard is read (the ``parquet`` extra); local
paths are opened with ``open``, URLs through fsspec (the ``shards`` extra). A footer costs a
few small reads at the end of the file; no row is read unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Footer", "open_shard", "read_column", "read_footer", "read_rows"]


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

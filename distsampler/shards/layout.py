"""Which dataset indices live in which shard: contiguous ranges, in shard order.

Shard ``s`` holds the dataset indices ``offsets[s]:offsets[s + 1]``; the dataset's order is
the shards' order, then the samples' order inside a shard (a tar's member order, a Parquet
file's row order). Only ``num_shards + 1`` offsets are stored, whatever the dataset's size;
:meth:`ShardLayout.shard_of` is a binary search. Labels collected while the shards are laid
out (one pass) become a :class:`~distsampler.GroupIndex` through
:meth:`ShardLayout.group_index`.

A layout is saved and loaded with the project's index files: atomic saves, ``manifest.json``
last, and loads that check everything as if a stranger wrote the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._core import index_files as files
from .._core.checks import MAX_SIZE, check_bool, check_int
from .._core.index_store import fingerprint as _array_fingerprint
from ..groups import GroupIndex
from . import parquet as _pq
from .tar import TarError, scan_tar

__all__ = ["ShardLayout"]

_FORMATS = ("webdataset", "parquet")
_SAVE_FORMAT = 1  # version of meta.json of a saved layout
_KIND = "ShardLayout"
_INT = re.compile(r"^[+-]?[0-9]+$")
_BACKOFF = 0.5  # seconds before the first retry of a failed download; doubles each retry


def _int_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} should be one-dimensional, but got shape {tuple(arr.shape)}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} should hold integers, but got dtype {arr.dtype}")
    return arr


def _label_array(labels: Any) -> np.ndarray:
    """Labels as int64 or strings (a memory-mapped int64 array stays mapped)."""
    if hasattr(labels, "detach") and hasattr(labels, "cpu"):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels should be one-dimensional, but got shape {tuple(arr.shape)}")
    if arr.dtype.kind in "iu":
        return arr if arr.dtype == np.int64 else arr.astype(np.int64)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr):
        return arr.astype(str)
    raise TypeError(f"labels should hold integers or strings, but got dtype {arr.dtype}")


class ShardLayout:
    """The shards of a dataset: shard ``s`` holds dataset indices ``offsets[s]:offsets[s + 1]``.

    Build one with :meth:`from_sizes`, :meth:`from_webdataset` or :meth:`from_parquet`; keep
    it with :meth:`save` / :meth:`load`.

    Attributes:
        offsets: int64, ``num_shards + 1`` boundaries, from 0, strictly increasing (every
            shard holds at least one sample).
        urls: one URL or path per shard (``None`` for :meth:`from_sizes`); with Parquet row
            groups as shards a file's URL repeats, once per row group.
        format: ``"webdataset"``, ``"parquet"`` or ``None``.
        row_groups: with Parquet row groups as shards, the row group of each shard in its file
            (int64); ``None`` otherwise.
        labels: one label per sample (int64 or strings) collected while laying out, or ``None``.
        shard_bytes: int64 bytes of each shard as fetched (a tar's or Parquet file's size, a
            row group's compressed size), or ``None``.

    Trap: the layout must describe the storage the reader reads, in the same order; the order
    of ``urls`` is the dataset's order.
    """

    def __init__(
        self,
        offsets: Any,
        *,
        urls: Sequence[str] | None = None,
        format: str | None = None,
        row_groups: Any = None,
        labels: Any = None,
        shard_bytes: Any = None,
    ) -> None:
        off = _int_array(offsets, "offsets")
        if len(off) < 2:
            raise ValueError(f"offsets should hold at least 2 boundaries, but got {len(off)}")
        if int(off[0]) != 0:
            raise ValueError(f"offsets should start at 0, but got offsets[0]={int(off[0])}")
        if int(off[-1]) > MAX_SIZE:
            raise ValueError(f"offsets should end at most at {MAX_SIZE}, but end at {off[-1]}")
        off = off.astype(np.int64, copy=False)
        sizes = np.diff(off)
        if (sizes <= 0).any():
            s = int(np.flatnonzero(sizes <= 0)[0])
            raise ValueError(
                f"offsets should be strictly increasing (every shard holds a sample), but "
                f"shard {s} spans offsets[{s}]={off[s]}..offsets[{s + 1}]={off[s + 1]}"
            )
        num_shards = len(off) - 1
        if format is not None and format not in _FORMATS:
            raise ValueError(f"format should be one of {_FORMATS} or None, but got {format!r}")
        if urls is not None:
            if isinstance(urls, str) or not all(isinstance(u, str) for u in urls):
                raise TypeError("urls should be a sequence of strings, one per shard")
            urls = tuple(urls)
            if len(urls) != num_shards:
                raise ValueError(f"urls has {len(urls)} entries for {num_shards} shards")
        elif format is not None:
            raise ValueError(f"format={format!r} needs urls, one per shard")
        if row_groups is not None:
            if format != "parquet":
                raise ValueError(f"row_groups apply to format='parquet', not format={format!r}")
            row_groups = _int_array(row_groups, "row_groups").astype(np.int64)
            if len(row_groups) != num_shards or (row_groups < 0).any():
                raise ValueError(
                    f"row_groups should hold {num_shards} non-negative integers, one per shard"
                )
        if shard_bytes is not None:
            shard_bytes = _int_array(shard_bytes, "shard_bytes").astype(np.int64)
            if len(shard_bytes) != num_shards or (shard_bytes < 0).any():
                raise ValueError(
                    f"shard_bytes should hold {num_shards} non-negative integers, one per shard"
                )
        if labels is not None:
            labels = _label_array(labels)
            if len(labels) != int(off[-1]):
                raise ValueError(
                    f"labels has {len(labels)} entries, but the shards hold {int(off[-1])} "
                    "samples (one label per sample)"
                )
        self.offsets: np.ndarray = off
        self.urls: tuple[str, ...] | None = urls
        self.format: str | None = format
        self.row_groups: np.ndarray | None = row_groups
        self.labels: np.ndarray | None = labels
        self.shard_bytes: np.ndarray | None = shard_bytes
        for arr in (off, row_groups, shard_bytes):
            if arr is not None and arr.flags.owndata:
                arr.flags.writeable = False

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_sizes(cls, sizes: Any) -> ShardLayout:
        """Shards of the given numbers of samples, in dataset order; O(num_shards) memory.

        Args:
            sizes: samples per shard (a sequence, array or tensor of positive ints).

        Examples:
            >>> layout = ShardLayout.from_sizes([1000, 1000, 500])
            >>> len(layout), layout.num_shards, layout.shard_of([0, 999, 1000, 2499]).tolist()
            (2500, 3, [0, 0, 1, 2])
        """
        arr = _int_array(sizes, "sizes")
        if arr.size == 0:
            raise ValueError("sizes should hold one count per shard, but got no shards")
        low = np.flatnonzero(arr < 1)
        if low.size:
            s = int(low[0])
            raise ValueError(
                f"sizes[{s}]={int(arr[s])}: shard {s} should hold at least one sample "
                "(leave empty shards out)"
            )
        high = int(arr.max())
        if high > MAX_SIZE // len(arr) and sum(int(v) for v in arr.tolist()) > MAX_SIZE:
            raise ValueError(f"sizes should sum to at most {MAX_SIZE}")
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(arr, out=offsets[1:])
        return cls(offsets)

    @classmethod
    def from_webdataset(
        cls,
        urls: Sequence[str | os.PathLike],
        *,
        labels: str | None = None,
        retries: int = 3,
        workers: int = 8,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardLayout:
        """Lay out WebDataset tar shards: each tar read once, its samples grouped as WebDataset.

        A local tar is memory-mapped and only its headers (and label members) are touched; a
        URL (``http(s)://``, ``s3://``, ... through fsspec) is downloaded once, streamed, and
        not kept. Samples are grouped by key as ``webdataset.WebDataset`` groups them (see
        :mod:`distsampler.shards.tar`).

        Args:
            urls: the shards' URLs or paths, in dataset order (expand a brace pattern first:
                ``list(braceexpand.braceexpand("shard-{000..099}.tar"))``).
            labels: an extension (``"cls"``): the text of member ``<key>.cls`` of every sample
                becomes its label (ints if every label parses as an int, else strings).
            retries: tries after the first for a download that fails transiently (a
                connection error, a 5xx answer), with exponential backoff.
            workers: shards read at once (threads).
            storage_options: passed to ``fsspec.open`` for URLs (credentials, endpoints).

        Raises:
            TarError: a corrupt or truncated tar (a ``ValueError`` naming shard and byte).
            ValueError: a shard without samples; with ``labels``, a sample without that
                member (naming the shard and the sample's key).
            FileNotFoundError: a missing shard; ``OSError``: a download that kept failing.
        """
        paths = _url_list(urls)
        ext = None
        if labels is not None:
            if not isinstance(labels, str) or not labels:
                raise TypeError(f"labels should be an extension such as 'cls', got {labels!r}")
            ext = labels.lower().lstrip(".")
        retries = check_int("retries", retries, 0, 100)
        workers = check_int("workers", workers, 1, 1024)
        read = () if ext is None else (ext,)

        def one(url: str) -> tuple[list, list, int]:
            return _scan_url(url, read, retries, storage_options)

        if workers == 1 or len(paths) == 1:
            results = [one(u) for u in paths]
        else:
            with ThreadPoolExecutor(min(workers, len(paths))) as pool:
                results = list(pool.map(one, paths))
        sizes = np.empty(len(paths), dtype=np.int64)
        nbytes = np.empty(len(paths), dtype=np.int64)
        texts: list[str] = []
        for s, (url, (samples, payloads, size)) in enumerate(zip(paths, results, strict=True)):
            if not samples:
                raise ValueError(
                    f"urls[{s}]={url!r} holds no samples (no member named <key>.<ext>); "
                    "leave empty shards out"
                )
            sizes[s], nbytes[s] = len(samples), size
            if ext is not None:
                for sample, payload in zip(samples, payloads, strict=True):
                    texts.append(_label_text(payload, ext, url, sample.key))
        label_arr = None
        if ext is not None:
            if all(_INT.match(t) for t in texts):
                label_arr = np.array([int(t) for t in texts], dtype=np.int64)
            else:
                label_arr = np.array(texts, dtype=str)
        offsets = np.zeros(len(paths) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return cls(offsets, urls=paths, format="webdataset", labels=label_arr, shard_bytes=nbytes)

    @classmethod
    def from_parquet(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        shards: str = "row_groups",
        labels: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ShardLayout:
        """Lay out Parquet data from the files' footers: a shard per row group, or per file.

        Only footers are read (a few small reads a file), unless ``labels`` names a column:
        then that one column is read too. Empty row groups are left out (``row_groups``
        says which row group each shard is).

        Args:
            paths: the files' paths or URLs, in dataset order.
            shards: ``"row_groups"`` (a shard is a row group: fetched with one range read of
                its compressed bytes) or ``"files"`` (a shard is a whole file).
            labels: a column of integers or strings: its values become the labels.
            storage_options: passed to ``fsspec.open`` for URLs.

        Raises:
            ValueError: a file that is not Parquet or holds no rows, a missing label column or
                a null label (each naming the file).
        """
        if shards not in ("row_groups", "files"):
            raise ValueError(f"shards should be 'row_groups' or 'files', but got {shards!r}")
        files_ = _url_list(paths, "paths")
        sizes: list[int] = []
        nbytes: list[int] = []
        urls: list[str] = []
        groups: list[int] = []
        columns: list[np.ndarray] = []
        for i, path in enumerate(files_):
            footer = _pq.read_footer(path, storage_options)
            if sum(footer.rows) == 0:
                raise ValueError(f"paths[{i}]={path!r} holds no rows; leave empty files out")
            if shards == "files":
                sizes.append(sum(footer.rows))
                nbytes.append(footer.file_bytes)
                urls.append(path)
            else:
                pairs = zip(footer.rows, footer.row_group_bytes, strict=True)
                for g, (rows, size) in enumerate(pairs):
                    if rows:
                        sizes.append(rows)
                        nbytes.append(size)
                        urls.append(path)
                        groups.append(g)
            if labels is not None:
                columns.append(_pq.read_column(path, labels, None, storage_options))
        label_arr = None
        if labels is not None:
            if len({c.dtype.kind for c in columns}) > 1:  # ints in a file, strings in another
                columns = [c.astype(str) for c in columns]
            label_arr = np.concatenate(columns)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(np.asarray(sizes, dtype=np.int64), out=offsets[1:])
        return cls(
            offsets,
            urls=urls,
            format="parquet",
            row_groups=np.asarray(groups, dtype=np.int64) if shards == "row_groups" else None,
            labels=label_arr,
            shard_bytes=np.asarray(nbytes, dtype=np.int64),
        )

    # -- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_shards(self) -> int:
        """Number of shards."""
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        """Samples per shard, int64."""
        return np.diff(self.offsets)

    def shard_of(self, indices: Any) -> np.ndarray:
        """The shard of each dataset index (int64, the shape of ``indices``): a binary search.

        Raises:
            IndexError: an index outside ``[0, len(layout))``.
        """
        idx = np.asarray(indices)
        if idx.size and idx.dtype.kind not in "iu":
            raise TypeError(f"indices should be integers, but got dtype {idx.dtype}")
        if idx.size:
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= len(self):
                bad = low if low < 0 else high
                raise IndexError(f"index {bad} is outside the dataset [0, {len(self)})")
        return np.searchsorted(self.offsets, idx, side="right").astype(np.int64) - 1

    def shard_range(self, s: int) -> tuple[int, int]:
        """``(start, stop)``: the dataset indices of shard ``s``."""
        s = check_int("s", s, 0, self.num_shards - 1)
        return int(self.offsets[s]), int(self.offsets[s + 1])

    def group_index(self) -> GroupIndex:
        """The labels collected while laying out, as a :class:`~distsampler.GroupIndex`.

        Raises:
            ValueError: the layout has no labels (build it with ``labels=``).
        """
        if self.labels is None:
            raise ValueError(
                "this layout has no labels; build it with labels= (from_webdataset(urls, "
                "labels='cls') or from_parquet(paths, labels='label')) or index the labels "
                "with GroupIndex.from_labels"
            )
        return GroupIndex.from_labels(self.labels)

    def fingerprint(self) -> str:
        """A short, stable digest of the layout (offsets, urls, format, row groups, labels).

        Samplers store it in their states: a state resumed over other shards is refused.
        """
        h = hashlib.blake2b(digest_size=8)
        h.update(np.ascontiguousarray(self.offsets, dtype="<i8").tobytes())
        h.update(json.dumps([self.format, self.urls]).encode())
        if self.row_groups is not None:
            h.update(np.ascontiguousarray(self.row_groups, dtype="<i8").tobytes())
        if self.labels is not None:
            h.update(_array_fingerprint(np.ascontiguousarray(self.labels)).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        fmt = f", format={self.format!r}" if self.format else ""
        lab = ", labels" if self.labels is not None else ""
        return f"ShardLayout(num_shards={self.num_shards}, samples={len(self)}{fmt}{lab})"

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the layout atomically (``.npy`` and ``.json`` files, ``manifest.json`` last).

        Trap: ``directory`` is replaced as a whole; a directory holding other files is refused.
        """
        arrays: dict[str, np.ndarray] = {"offsets": self.offsets}
        documents: dict[str, Any] = {}
        label_kind = None
        if self.labels is not None:
            if self.labels.dtype.kind == "U":
                names, codes = np.unique(self.labels, return_inverse=True)
                arrays["labels"] = codes.astype(np.int64)
                documents["label_names"] = [str(n) for n in names]
                label_kind = "str"
            else:
                arrays["labels"] = self.labels
                label_kind = "int"
        if self.row_groups is not None:
            arrays["row_groups"] = self.row_groups
        if self.shard_bytes is not None:
            arrays["shard_bytes"] = self.shard_bytes
        if self.urls is not None:
            documents["urls"] = list(self.urls)
        documents["meta"] = {
            "format": _SAVE_FORMAT,
            "num_samples": len(self),
            "num_shards": self.num_shards,
            "source": self.format,
            "labels": label_kind,
            "row_groups": self.row_groups is not None,
            "shard_bytes": self.shard_bytes is not None,
        }
        files.write_index(directory, _KIND, arrays, documents)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, mmap: bool = True, *, verify: bool = True
    ) -> ShardLayout:
        """Load a saved layout, checking it as if a stranger wrote it.

        Refuses with a ``ValueError`` naming the file: a save that did not finish, files of
        two saves, truncated or retyped files, offsets that are not strictly increasing from 0
        to ``num_samples``, a number of urls, row groups or shard sizes other than the number
        of shards, labels of another length than the samples, label codes without a name.

        Args:
            directory: the directory :meth:`save` wrote.
            mmap: memory-map integer labels (the ranks of a node share their pages).
            verify: also compare a CRC-32 of every file with the one its save wrote.
        """
        mmap = check_bool("mmap", mmap)
        verify = check_bool("verify", verify)
        d, table = files.read_manifest(directory, _KIND)
        meta_file = d / "meta.json"

        def same_format(meta: Any) -> None:
            if not isinstance(meta, dict) or meta.get("format") != _SAVE_FORMAT:
                raise ValueError(f"{str(meta_file)!r} holds a layout of another format: {meta!r}")

        meta = files.read_document(table, d, "meta.json", same_format)
        n, num_shards = meta.get("num_samples"), meta.get("num_shards")
        source, label_kind = meta.get("source"), meta.get("labels")
        has_groups, has_bytes = meta.get("row_groups"), meta.get("shard_bytes")
        if not (
            _plain_int(n, 1, MAX_SIZE)
            and _plain_int(num_shards, 1, MAX_SIZE)
            and source in (None, *_FORMATS)
            and label_kind in (None, "int", "str")
            and isinstance(has_groups, bool)
            and isinstance(has_bytes, bool)
            and (source == "parquet" or not has_groups)
        ):
            raise ValueError(
                f"{str(meta_file)!r} should hold num_samples and num_shards (ints >= 1), "
                "source (None, 'webdataset' or 'parquet'), labels (None, 'int' or 'str'), "
                f"row_groups and shard_bytes (booleans), but holds {meta!r}"
            )
        offsets = files.read_array(table, d, "offsets.npy", "i", False, verify)
        if len(offsets) != num_shards + 1:
            raise _bad(d / "offsets.npy", f"has {len(offsets)} entries for {num_shards} shards")
        files.check_nondecreasing(d / "offsets.npy", offsets, 0, n)
        if offsets[0] != 0 or offsets[-1] != n:
            raise _bad(
                d / "offsets.npy", f"should run from 0 to {n}, but runs {offsets[0]}..{offsets[-1]}"
            )
        if (np.diff(offsets) <= 0).any():
            s = int(np.flatnonzero(np.diff(offsets) <= 0)[0])
            raise _bad(d / "offsets.npy", f"gives shard {s} no sample (offsets[{s}]={offsets[s]})")
        urls = None
        if source is not None:
            urls = files.read_document(table, d, "urls.json")
            if (
                not isinstance(urls, list)
                or len(urls) != num_shards
                or not all(isinstance(u, str) for u in urls)
            ):
                raise _bad(d / "urls.json", f"should be a list of {num_shards} strings")
        row_groups = shard_bytes = None
        if has_groups:
            row_groups = files.read_array(table, d, "row_groups.npy", "i", False, verify)
            if len(row_groups) != num_shards or (row_groups < 0).any():
                raise _bad(d / "row_groups.npy", f"should hold {num_shards} non-negative integers")
        if has_bytes:
            shard_bytes = files.read_array(table, d, "shard_bytes.npy", "i", False, verify)
            if len(shard_bytes) != num_shards or (shard_bytes < 0).any():
                raise _bad(d / "shard_bytes.npy", f"should hold {num_shards} non-negative integers")
        labels = None
        if label_kind is not None:
            path = d / "labels.npy"
            labels = files.read_array(table, d, "labels.npy", "i", mmap, verify)
            if len(labels) != n:
                raise _bad(path, f"has {len(labels)} labels for {n} samples")
            if label_kind == "str":
                names = files.read_document(table, d, "label_names.json")
                if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
                    raise _bad(d / "label_names.json", "should be a list of strings")
                _check_codes(path, labels, len(names))
                labels = np.asarray(names, dtype=str)[labels]
        return cls(
            offsets,
            urls=urls,
            format=source,
            row_groups=row_groups,
            labels=labels,
            shard_bytes=shard_bytes,
        )


def _plain_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _bad(path: Path, what: str) -> ValueError:
    return ValueError(f"{str(path)!r} {what}; save the layout again (save() is atomic)")


def _check_codes(path: Path, codes: np.ndarray, num: int) -> None:
    for lo in range(0, len(codes), 1 << 20):
        part = codes[lo : lo + (1 << 20)]
        if len(part) and (int(part.min()) < 0 or int(part.max()) >= num):
            raise _bad(path, f"holds a label code outside [0, {num}) (label_names.json)")


def _url_list(urls: Any, name: str = "urls") -> list[str]:
    if isinstance(urls, (str, bytes, os.PathLike)):
        raise TypeError(
            f"{name} should be a list of shard URLs or paths, but got one "
            f"{type(urls).__name__} {str(urls)!r:.80}; pass [{name}] for one shard, or "
            "list(braceexpand.braceexpand(pattern)) for a brace pattern"
        )
    try:
        out = [os.fspath(u) for u in urls]
    except TypeError:
        raise TypeError(
            f"{name} should be a list of strings or paths, but got {urls!r:.80}"
        ) from None
    if not out:
        raise ValueError(f"{name} should name at least one shard")
    for i, u in enumerate(out):
        if not isinstance(u, str) or not u:
            raise TypeError(f"{name}[{i}] should be a non-empty string or path, got {u!r}")
    seen: dict[str, int] = {}
    for i, u in enumerate(out):
        if u in seen:
            raise ValueError(
                f"{name}[{i}]={u!r} repeats {name}[{seen[u]}]: name each shard once (to draw a "
                "source more often, give the sampler shares)"
            )
        seen[u] = i
    return out


def _label_text(payload: dict[str, bytes], ext: str, url: str, key: str) -> str:
    data = payload.get(ext)
    if data is None:
        raise ValueError(
            f"labels={ext!r}: sample {key!r} of shard {url!r} has no member {key}.{ext}; "
            "every sample needs a label"
        )
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(
            f"labels={ext!r}: member {key}.{ext} of shard {url!r} is not UTF-8 text"
        ) from None


class _ForwardOnly:
    """A remote file read front to back in large reads (no seeks, no header-sized requests)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._fh.read(n)
        return data


def _transient(e: BaseException) -> bool:
    """A failure worth another try: connection trouble, a timeout, a 5xx / 408 / 429 answer."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    status = getattr(e, "status", None) or getattr(e, "code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status >= 500 or status in (408, 429)
    if isinstance(e, (OSError, TimeoutError, ConnectionError)):
        return True
    module = type(e).__module__.split(".")[0]
    return module in ("aiohttp", "requests", "urllib3", "botocore", "aiobotocore", "fsspec")


def _scan_url(
    url: str, read: tuple[str, ...], retries: int, storage_options: dict[str, Any] | None
) -> tuple[list, list, int]:
    if not _pq.is_url(url):
        path = _pq.local_path(url)
        try:
            with open(path, "rb") as fh:
                return scan_tar(fh, url, read=read)
        except FileNotFoundError:
            raise FileNotFoundError(f"urls: no such shard: {url!r}") from None
    try:
        import fsspec
    except ImportError:  # pragma: no cover - the shards extra is installed in the tests
        raise ImportError(
            f"reading {url!r} needs fsspec: pip install 'distsampler[shards]'"
        ) from None
    options = dict(storage_options or {})
    if url.startswith(("http://", "https://")):
        options.setdefault("block_size", 0)  # one streamed GET, no range requests
    for attempt in range(retries + 1):
        try:
            with fsspec.open(url, "rb", **options) as fh:
                return scan_tar(_ForwardOnly(fh), url, read=read)
        except TarError:
            raise
        except FileNotFoundError:
            raise FileNotFoundError(f"urls: no such shard: {url!r}") from None
        except Exception as e:
            if not _transient(e):
                raise OSError(
                    f"urls: reading {url!r} failed: {type(e).__name__}: {e} (not retried: "
                    "not a transient failure)"
                ) from e
            if attempt == retries:
                raise OSError(
                    f"urls: reading {url!r} failed {retries + 1} times (retries={retries}); "
                    f"last error: {type(e).__name__}: {e}"
                ) from e
            time.sleep(_BACKOFF * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover

"""Saved indexes are inputs: atomic saves with a manifest, loads that check every byte they trust.

A save writes ``.npy`` and ``.json`` files into a temporary directory beside the target,
fsyncs them, writes ``manifest.json`` last (format, and per file its byte size, a full CRC-32
and, for arrays, dtype, shape and a sampled fingerprint), fsyncs the directory and renames it
into place. An older save at the target is renamed aside first and removed after: a reader
sees the old save, the new one, or (for the instant between the two renames) none, never a
mix. Two concurrent saves to one directory: the last rename wins, each attempt whole.

A load refuses (``ValueError`` naming the file) a missing manifest, a file of another size,
dtype or shape than the manifest says, an array whose sampled fingerprint or (``verify=True``)
whose CRC-32 differs, and unreadable ``.npy`` headers. Nothing is unpickled. The meaning of
the arrays (ranges of members, finite weights) is checked by :func:`check_members` and
friends, chunk by chunk, so memory-mapped arrays are never copied whole.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .index_store import fingerprint

__all__ = [
    "MANIFEST",
    "check_finite_nonnegative",
    "check_members",
    "check_nondecreasing",
    "read_array",
    "read_document",
    "read_manifest",
    "write_index",
]

MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1
_READ = 1 << 24  # bytes a step of the CRC pass
_CHUNK = 1 << 20  # entries a step of the value checks (a few MB of temporaries)


def _crc(path: Path) -> int:
    """CRC-32 of a file, read through a memory map (no copy: the page cache's pages)."""
    crc = 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return crc
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                for lo in range(0, size, _READ):
                    crc = zlib.crc32(view[lo : lo + _READ], crc)
            finally:
                view.release()
    return crc


def _write(path: Path, data: bytes | np.ndarray) -> None:
    with open(path, "wb") as fh:
        if isinstance(data, bytes):
            fh.write(data)
        else:
            np.save(fh, data, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_index(
    directory: str | os.PathLike,
    kind: str,
    arrays: Mapping[str, np.ndarray],
    documents: Mapping[str, Any],
) -> None:
    """Save ``arrays`` (``name.npy``) and ``documents`` (``name.json``) atomically at ``directory``.

    Refuses a ``directory`` that exists and holds files but no saved index (it would be replaced).
    """
    target = Path(os.path.abspath(directory))
    try:
        present = {p.name for p in target.iterdir()}
    except FileNotFoundError:  # none yet (or another save moved it aside just now)
        present = set()
    except NotADirectoryError:
        raise ValueError(
            f"cannot save an index to {str(target)!r}: it is not a directory"
        ) from None
    if present and not present & {MANIFEST, "meta.json"}:
        raise ValueError(
            f"cannot save an index to {str(target)!r}: it holds files that are not a saved "
            "index (a save replaces the whole directory); pick a new or empty directory"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.saving-{uuid.uuid4().hex}"
    tmp.mkdir()  # the umask's permissions (mkdtemp's 0o700 would hide it from other users)
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, value in arrays.items():
            arr = np.asarray(value)
            path = tmp / f"{name}.npy"
            _write(path, arr)
            files[path.name] = {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "bytes": path.stat().st_size,
                "fingerprint": fingerprint(arr),
                "crc32": _crc(path),
            }
        for name, doc in documents.items():
            data = json.dumps(doc).encode()
            path = tmp / f"{name}.json"
            _write(path, data)
            files[path.name] = {"bytes": len(data), "crc32": zlib.crc32(data)}
        manifest = {"format": _MANIFEST_FORMAT, "kind": kind, "files": files}
        _write(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())  # last: the marker
        _fsync_dir(tmp)
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing save there is renamed aside, then removed."""
    for _ in range(20):
        try:
            os.rename(tmp, target)  # atomic; replaces a missing or empty directory
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
        try:
            os.rename(target, old)
        except FileNotFoundError:  # another save moved it aside: try again
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"could not rename a finished save into {str(target)!r}: too many saves at once")


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"{str(path)!r} {what}; save the index again (save() is atomic)")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(path, f"is not valid JSON ({e})") from None


def read_manifest(directory: str | os.PathLike, kind: str) -> tuple[Path, dict[str, Any]]:
    """The directory and its manifest's file table; errors for partial and 0.2 saves."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"no saved index at {str(d)!r} (no such directory)")
    path = d / MANIFEST
    if not path.exists():
        if (d / "meta.json").exists():
            raise ValueError(
                f"{str(path)!r} is missing: the index in {str(d)!r} was saved by distsampler 0.2 "
                "(no manifest) or its save did not finish; build the index again and save() it"
            )
        raise ValueError(f"{str(path)!r} is missing: {str(d)!r} holds no finished save of a {kind}")
    manifest = _json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _MANIFEST_FORMAT
        or manifest.get("kind") != kind
        or not isinstance(files, dict)
    ):
        raise _fail(path, f"is not a format-{_MANIFEST_FORMAT} manifest of a {kind}")
    return d, files


def _entry(files: dict[str, Any], d: Path, name: str) -> tuple[Path, dict[str, Any]]:
    path = d / name
    entry = files.get(name)
    if not isinstance(entry, dict):
        raise _fail(d / MANIFEST, f"lists no {name!r}")
    size = entry.get("bytes")
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or not isinstance(entry.get("crc32"), int)
    ):
        raise _fail(d / MANIFEST, f"has a bad entry for {name!r}")
    if not path.is_file():
        raise _fail(path, "is missing (a partial save or a deleted file)")
    actual = path.stat().st_size
    if actual != size:
        raise _fail(path, f"has {actual} bytes, its save wrote {size} (truncated or replaced)")
    return path, entry


def read_document(
    files: dict[str, Any], d: Path, name: str, first: Callable[[Any], None] | None = None
) -> Any:
    """The JSON document ``name`` (e.g. ``"meta.json"``), its size and CRC-32 checked.

    ``first(document)`` runs before the CRC-32 check (a format check: its message is clearer).
    """
    path = d / name
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        doc = None
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(path, f"is not valid JSON ({e})") from None
    if first is not None and doc is not None:
        first(doc)
    path, entry = _entry(files, d, name)
    if zlib.crc32(path.read_bytes()) != entry["crc32"]:
        raise _fail(path, "differs from the file its save wrote (edited, or another save's)")
    return doc


def read_array(
    files: dict[str, Any],
    d: Path,
    name: str,
    kinds: str,
    mmap: bool,
    verify: bool,
) -> np.ndarray:
    """The 1-D array in ``name`` (e.g. ``"members.npy"``) with a dtype kind in ``kinds``.

    Checked against the manifest: size, dtype, shape, sampled fingerprint, CRC-32 if ``verify``.
    """
    path, entry = _entry(files, d, name)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:  # numpy raises many kinds for a damaged header
        raise _fail(path, f"is not a readable .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.str != entry.get("dtype"):
        raise _fail(path, f"holds dtype {arr.dtype}, its save wrote {entry.get('dtype')}")
    if arr.dtype.kind not in kinds or arr.dtype.hasobject:
        raise _fail(path, f"should hold {_KIND_NAMES[kinds]}, but holds dtype {arr.dtype}")
    if arr.ndim != 1 or [len(arr)] != entry.get("shape"):
        raise _fail(path, f"has shape {arr.shape}, its save wrote {entry.get('shape')}")
    if fingerprint(arr) != entry.get("fingerprint"):
        raise _fail(path, "differs from the array its save wrote (another save's file?)")
    if verify and _crc(path) != entry["crc32"]:
        raise _fail(path, "differs from the file its save wrote (CRC-32 mismatch)")
    return arr


_KIND_NAMES = {"i": "integers", "f": "floats"}


def check_members(path: Path, members: np.ndarray, n: int) -> None:
    """Every entry of ``members`` lies in ``[0, n)`` (one chunked min/max pass)."""
    for lo in range(0, len(members), _CHUNK):
        part = members[lo : lo + _CHUNK]
        low, high = int(part.min()), int(part.max())
        if low < 0 or high >= n:
            bad = low if low < 0 else high
            raise _fail(path, f"holds the dataset index {bad}, outside [0, num_samples={n})")


def check_nondecreasing(path: Path, arr: np.ndarray, first: float, last: float) -> None:
    """``arr`` is non-decreasing, starts at ``first`` (or above) and ends at ``last`` (or below)."""
    if len(arr) and (not arr[0] >= first or not arr[-1] <= last):
        raise _fail(path, f"should run from {first} to {last}, but runs {arr[0]}..{arr[-1]}")
    for lo in range(0, len(arr), _CHUNK):
        part = arr[lo : lo + _CHUNK + 1]  # one entry of overlap: boundaries checked too
        if not (part[1:] >= part[:-1]).all():
            raise _fail(path, "should be non-decreasing")


def check_finite_nonnegative(path: Path, arr: np.ndarray, positive: bool = False) -> None:
    """Every entry is finite and ``>= 0`` (``> 0`` if ``positive``)."""
    for lo in range(0, len(arr), _CHUNK):
        part = arr[lo : lo + _CHUNK]
        ok = np.isfinite(part) & ((part > 0) if positive else (part >= 0))
        if not ok.all():
            bad = part[np.flatnonzero(~ok)[0]]
            need = "positive" if positive else "non-negative"
            raise _fail(path, f"holds {bad}: every value should be finite and {need}")

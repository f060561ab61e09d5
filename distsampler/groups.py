"""The label index: the members of each group, found in one pass over the labels.

Groups (classes) are stored the way a counting sort leaves them: all members in one array,
group ``g`` at ``members[offsets[g]:offsets[g + 1]]``, in increasing dataset index. Members are
int32 where the dataset fits (4 bytes a sample). Labels can come from a ``.npy`` file opened
memory-mapped, and :meth:`GroupIndex.save` / :meth:`GroupIndex.load` keep the index itself in
``.npy`` files that ranks of one node map and share. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._core.checks import as_array

__all__ = ["GroupIndex", "fingerprint", "from_coco", "load_coco"]

_FINGERPRINT_SAMPLES = 1 << 20
_CHUNK = 1 << 22
_SCAN_GROUPS = 32  # up to this many groups, one vectorised scan per group beats a sort


def fingerprint(arr: np.ndarray) -> str:
    """A short digest of an array: its length, dtype and up to 2**20 evenly spaced entries.

    Cheap at 1e8 entries; catches a different dataset, not a single flipped label.
    """
    step = max(1, len(arr) // _FINGERPRINT_SAMPLES)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{len(arr)}:{arr.dtype.str}".encode())
    h.update(np.ascontiguousarray(arr[::step]).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class GroupIndex:
    """Members of each group of a labelled dataset.

    Attributes:
        names: the group labels, sorted (ints or strings as given).
        members: dataset indices grouped by label, int32 when the dataset has < 2**31 samples.
        offsets: ``len(names) + 1`` int64 boundaries into ``members``.
    """

    names: tuple[Hashable, ...]
    members: np.ndarray
    offsets: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def num_samples(self) -> int:
        return int(self.offsets[-1])

    def code(self, name: Hashable, argument: str) -> int:
        """Group id of ``name``; a clear error naming ``argument`` if there is no such group."""
        try:
            return self._codes[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"{argument} names group {name!r}, which has no members; "
                f"the groups are {list(self.names)[:20]}"
            ) from None

    @property
    def _codes(self) -> dict[Hashable, int]:
        return {n: i for i, n in enumerate(self.names)}

    def group(self, g: int) -> np.ndarray:
        return self.members[self.offsets[g] : self.offsets[g + 1]]

    @classmethod
    def from_labels(cls, labels, name: str = "labels") -> GroupIndex:
        """Index ``labels`` (ints or strings; sequence, array, tensor or ``.npy`` path)."""
        arr = as_array(labels, name)
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.dtype.kind in "iu":
            lo, hi = int(arr.min()), int(arr.max())
            if hi - lo < (1 << 24):  # dense range: one bincount gives names and sizes
                counts = np.zeros(hi - lo + 1, dtype=np.int64)
                for i in range(0, len(arr), _CHUNK):  # chunks: no N-sized int64 temporary
                    part = arr[i : i + _CHUNK]
                    counts += np.bincount(part - lo if lo else part, minlength=hi - lo + 1)
                present = np.flatnonzero(counts)
                values, sizes = present + lo, counts[present]
            else:
                values, sizes = np.unique(arr, return_counts=True)
            names = tuple(int(v) for v in values)
        elif arr.dtype.kind in "UO":
            arr = arr.astype(str)
            values, sizes = np.unique(arr, return_counts=True)
            names = tuple(str(v) for v in values)
        else:
            raise TypeError(
                f"{name} should hold integers or strings, but got dtype {arr.dtype} "
                "(pass weights= for per-sample float weights)"
            )
        if len(names) <= _SCAN_GROUPS:  # few groups: one scan each, no codes array
            return cls._from_scans(arr, values, names, sizes)
        codes = np.searchsorted(values, arr).astype(np.int32)
        return cls.from_codes(codes, names, sizes)

    @classmethod
    def _from_scans(cls, arr, values, names, sizes) -> GroupIndex:
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        members = np.empty(len(arr), dtype=np.int32 if len(arr) < (1 << 31) else np.int64)
        for g, v in enumerate(values):
            members[offsets[g] : offsets[g + 1]] = np.flatnonzero(arr == v)
        return cls(tuple(names), members, offsets)

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, names: Sequence[Hashable], sizes: np.ndarray | None = None
    ) -> GroupIndex:
        """Index from group codes ``0..len(names)-1`` (a stable sort: O(N) radix for int16)."""
        num = len(names)
        small = np.int16 if num < (1 << 15) else np.int32  # int16 keys sort by radix, O(N)
        order = np.argsort(codes.astype(small, copy=False), kind="stable")
        idx_dtype = np.int32 if len(codes) < (1 << 31) else np.int64
        members = order.astype(idx_dtype, copy=False)
        counts = np.bincount(codes, minlength=num) if sizes is None else np.asarray(sizes)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(tuple(names), members, offsets)

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``members.npy``, ``offsets.npy`` and ``names.json`` (no pickles)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "members.npy", self.members)
        np.save(d / "offsets.npy", self.offsets)
        (d / "names.json").write_text(json.dumps(list(self.names)))

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> GroupIndex:
        """Load a saved index; ``mmap=True`` maps ``members`` so a node's ranks share pages."""
        d = Path(directory)
        members = np.load(d / "members.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        offsets = np.load(d / "offsets.npy", allow_pickle=False)
        names = tuple(json.loads((d / "names.json").read_text()))
        return cls(names, members, offsets)


def load_coco(annotation_file: str | os.PathLike | Mapping) -> Mapping:
    """A COCO annotation file (path or loaded dict), checked to have images and annotations."""
    if isinstance(annotation_file, Mapping):
        coco = annotation_file
    else:
        with open(annotation_file, encoding="utf-8") as fh:
            coco = json.load(fh)
    for key in ("images", "annotations"):
        if key not in coco:
            raise ValueError(f"annotation_file has no {key!r} list; is it a COCO file?")
    return coco


def from_coco(
    annotation_file: str | os.PathLike | Mapping,
    groups: Mapping[Hashable, Sequence[int]],
    default: Hashable = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map each image of a COCO annotation file to one group.

    An image belongs to the first group in ``groups`` (in the mapping's order) that lists a
    category id of any of its annotations; images matching none get ``default`` (or are left out
    when ``default`` is None).

    Args:
        annotation_file: path to a COCO ``instances_*.json`` or the loaded dict.
        groups: group name -> category ids, e.g. ``{"defect": [1, 2]}``.
        default: group of images that match no listed category (e.g. ``"normal"``).

    Returns:
        ``(image_ids, labels)`` in the order of ``images`` in the file: sample ``i`` of a
        dataset built from the same file in the same order has label ``labels[i]``.
    """
    coco = load_coco(annotation_file)
    if not groups:
        raise ValueError("groups should map at least one group name to category ids")
    known = {c["id"] for c in coco.get("categories", [])}
    cat_to_group: dict[int, int] = {}
    names = list(groups)
    for gi, (gname, cats) in enumerate(groups.items()):
        for cat in cats:
            if known and cat not in known:
                raise ValueError(f"groups[{gname!r}] names category id {cat}, not in the file")
            cat_to_group.setdefault(int(cat), gi)
    best: dict[int, int] = {}
    for ann in coco["annotations"]:
        g = cat_to_group.get(int(ann["category_id"]))
        if g is not None:
            img = int(ann["image_id"])
            best[img] = min(best.get(img, g), g)
    ids, labels = [], []
    for img in coco["images"]:
        iid = int(img["id"])
        g = best.get(iid)
        if g is None and default is None:
            continue
        ids.append(iid)
        labels.append(names[g] if g is not None else default)
    return np.asarray(ids, dtype=np.int64), np.asarray(labels)

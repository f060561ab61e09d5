"""The label index: the members of each group, found in one pass over the labels.

Three ways to build one, one layout for all of them:

* :meth:`GroupIndex.from_labels`: one label per sample (single-label data).
* :meth:`GroupIndex.from_label_sets`: a set of labels per sample (multi-label detection and
  medical data): a sample belongs to every group it names, so groups overlap.
* :meth:`GroupIndex.from_sizes`: contiguous ranges (the parts of a ``ConcatDataset``: web,
  books, code); only the offsets are stored, O(number of groups) memory at any dataset size.

Groups are stored the way a counting sort leaves them: all members in one array, group ``g``
at ``members[offsets[g]:offsets[g + 1]]``, in increasing dataset index, int32 where the dataset
fits (4 bytes a member). A range index has no member array: member ``j`` of group ``g`` is
``offsets[g] + j``. Every plan reads members through :meth:`GroupIndex.member`, so a stored and
an implicit index of the same groups give identical plans.

:meth:`GroupIndex.save` / :meth:`GroupIndex.load` keep the index in ``.npy`` and ``.json``
files that the ranks of one node memory-map and share: saves are atomic, loads check every
member is a dataset index (files are inputs). Nothing is ever unpickled. The reading side
(``member``, ``sizes``, ``fingerprint``) is the engine's ``_core.index_store.GroupStore``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._core import index_files as files
from ._core.checks import MAX_SIZE, as_array, check_bool, check_int
from ._core.index_store import GroupStore, fingerprint
from ._core.index_store import plain as _plain

__all__ = ["GroupIndex", "fingerprint", "from_coco"]

_CHUNK = 1 << 22
_SORT_CHUNK = 1 << 20  # samples a step of the counting sort (about 30 MB of temporaries)
_FORMAT = 3  # version of the saved layout (meta.json); 1 had no meta.json, 2 no manifest


def _index_dtype(n: int) -> type:
    return np.int32 if n < (1 << 31) else np.int64


def _code_dtype(num: int) -> type:
    return np.int16 if num < (1 << 15) else np.int32  # int16 keys sort by radix, O(N)


class GroupIndex(GroupStore):
    """Members of each group of a dataset of ``num_samples`` samples.

    Attributes:
        names: the group names (ints or strings); sorted, except for :meth:`from_sizes`,
            which keeps the dataset order of its ranges.
        members: dataset indices grouped by name, int32 when the dataset has < 2**31 samples;
            ``None`` for a range index (:meth:`from_sizes`).
        offsets: ``len(names) + 1`` int64 boundaries into ``members``.
        num_samples: the dataset size ``N`` (``len(index)``). With label sets a sample may sit
            in several groups or in none, so ``offsets[-1]`` may differ from ``N``.
        multilabel: whether groups may overlap (built from label sets with a sample in more
            than one group).

    Reading (``sizes``, ``member(g, j)``, ``group(g)``, ``fingerprint()``) is the engine's
    storage type, which this class extends with the builders and the files.

    Trap: the index must describe the dataset the loader reads, in the same order: check
    ``len(index) == len(dataset)``.
    """

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def from_labels(cls, labels: Any, name: str = "labels") -> GroupIndex:
        """Index one label per sample (ints or strings; sequence, array, tensor or ``.npy`` path).

        Examples:
            >>> index = GroupIndex.from_labels(["normal", "defect", "normal"])
            >>> index.names, index.sizes.tolist(), index.group(1).tolist()
            (('defect', 'normal'), [1, 2], [0, 2])
        """
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
            names: tuple[Hashable, ...] = tuple(int(v) for v in values)
        elif arr.dtype.kind in "UO":
            arr = arr.astype(str)
            values, sizes = np.unique(arr, return_counts=True)
            names = tuple(str(v) for v in values)
        else:
            raise TypeError(
                f"{name} should hold integers or strings, but got dtype {arr.dtype} "
                "(pass weights= for per-sample float weights)"
            )
        if arr.dtype.kind in "iu" and hi - lo < (1 << 24):
            lookup: np.ndarray = np.zeros(hi - lo + 1, dtype=_code_dtype(len(names)))
            lookup[values - lo] = np.arange(len(names))

            def codes_of(start: int, stop: int) -> np.ndarray:
                return lookup[arr[start:stop] - lo]
        else:

            def codes_of(start: int, stop: int) -> np.ndarray:
                part = arr[start:stop]
                return np.searchsorted(values, part).astype(_code_dtype(len(names)))

        return cls._from_chunks(codes_of, len(arr), names, sizes)

    @classmethod
    def _from_chunks(cls, codes_of, n: int, names: Sequence[Hashable], sizes) -> GroupIndex:
        """Counting sort, chunk by chunk: members grouped by code, increasing within a group.

        ``codes_of(start, stop)`` gives the codes of samples ``[start, stop)``. The only array
        of size ``N`` is the result (4 bytes a sample), so building peaks near its final size.
        """
        sizes = np.asarray(sizes, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        members: np.ndarray = np.empty(int(offsets[-1]), dtype=_index_dtype(n))
        fill = offsets[:-1].copy()  # next free slot of each group
        for start in range(0, n, _SORT_CHUNK):
            codes = codes_of(start, min(n, start + _SORT_CHUNK))
            order = np.argsort(codes, kind="stable")  # radix sort for int16 codes
            ordered = codes[order]
            count = np.bincount(ordered, minlength=len(sizes))
            first = np.cumsum(count) - count  # where each group starts in `ordered`
            members[fill[ordered] + np.arange(len(order)) - first[ordered]] = order + start
            fill += count
        return cls(tuple(names), members, offsets)

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, names: Sequence[Hashable], sizes: np.ndarray | None = None
    ) -> GroupIndex:
        """Index from group codes ``0..len(names)-1`` (an array, memory-mapped or not)."""
        num = len(names)
        if sizes is None:
            sizes = np.zeros(num, dtype=np.int64)
            for start in range(0, len(codes), _CHUNK):
                sizes += np.bincount(codes[start : start + _CHUNK], minlength=num)
        dtype = _code_dtype(num)

        def codes_of(start: int, stop: int) -> np.ndarray:
            return np.asarray(codes[start:stop]).astype(dtype, copy=False)

        return cls._from_chunks(codes_of, len(codes), names, sizes)

    @classmethod
    def from_pairs(
        cls,
        samples: np.ndarray,
        codes: np.ndarray,
        names: Sequence[Hashable],
        num_samples: int,
    ) -> GroupIndex:
        """Index "sample ``samples[i]`` has group ``codes[i]``" pairs (multi-label, vectorised).

        Repeated pairs count once; groups without a member are dropped. The fast path for
        large multi-label data (a sparse label matrix in coordinate form).
        """
        n = check_int("num_samples", num_samples, 1, MAX_SIZE)
        s = np.asarray(samples, dtype=np.int64).ravel()
        c = np.asarray(codes, dtype=np.int64).ravel()
        if s.shape != c.shape:
            raise ValueError(f"samples and codes should have one shape, got {s.shape}, {c.shape}")
        if s.size and (s.min() < 0 or s.max() >= n):
            raise ValueError(f"samples should be in [0, num_samples={n}), got {s.min()}..{s.max()}")
        if c.size and (c.min() < 0 or c.max() >= len(names)):
            raise ValueError(f"codes should be in [0, {len(names)}), got {c.min()}..{c.max()}")
        key = np.sort(c * n + s)  # by group, then by sample
        if key.size:
            key = key[np.r_[True, key[1:] != key[:-1]]]  # repeated pairs count once
        grp, member = np.divmod(key, n)
        counts = np.bincount(grp, minlength=len(names))
        keep = np.flatnonzero(counts)
        if keep.size == 0:
            raise ValueError("no sample has a label: the index would have no group")
        offsets = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
        per_sample = np.bincount(member, minlength=n)
        return cls(
            tuple(names[int(g)] for g in keep),
            member.astype(_index_dtype(n)),
            offsets,
            num_samples=n,
            multilabel=bool((per_sample > 1).any()),
        )

    @classmethod
    def from_label_sets(
        cls,
        label_sets: Any,
        *,
        names: Sequence[Hashable] | None = None,
        background: Hashable | None = None,
    ) -> GroupIndex:
        """Index multi-label data: a sample belongs to every group it names.

        Args:
            label_sets: one iterable of labels per sample (``[["scratch"], [], ["scratch",
                "dent"]]``, ints or strings), or a multi-hot ``(N, C)`` bool/int array or
                tensor (nonzero = has the label).
            names: with a multi-hot array, the ``C`` column names (default ``0..C-1``).
            background: group of the samples without any label (default: they belong to no
                group and are never drawn).

        ``len(index)`` is ``N``; ``sizes[c]`` counts the samples containing ``c``. Groups are
        sorted by name; labels that no sample carries do not become groups.

        Examples:
            >>> index = GroupIndex.from_label_sets(
            ...     [["scratch"], [], ["scratch", "dent"]], background="ok")
            >>> index.names, index.sizes.tolist(), index.group(2).tolist()
            (('dent', 'ok', 'scratch'), [1, 1, 2], [0, 2])
        """
        if hasattr(label_sets, "detach") and hasattr(label_sets, "cpu"):  # torch.Tensor
            label_sets = label_sets.detach().cpu().numpy()
        if isinstance(label_sets, np.ndarray) and label_sets.ndim == 2:
            samples, codes, found = _multi_hot(label_sets, names)
        else:
            if names is not None:
                raise TypeError("names= applies to a multi-hot (N, C) array, not to label lists")
            samples, codes, found = _label_lists(label_sets)
        n = len(label_sets)
        if n == 0:
            raise ValueError("label_sets should not be empty")
        if background is not None:
            if background in found:
                raise ValueError(
                    f"background={background!r} is also a label; pick a name no sample carries"
                )
            bare = np.flatnonzero(np.bincount(samples, minlength=n) == 0)
            samples = np.concatenate([samples, bare])
            codes = np.concatenate([codes, np.full(len(bare), len(found), dtype=np.int64)])
            found = [*found, background]
        order = sorted(range(len(found)), key=lambda g: _sort_key(found[g]))
        rank = np.empty(len(found), dtype=np.int64)
        rank[order] = np.arange(len(found))
        return cls.from_pairs(samples, rank[codes], [found[g] for g in order], n)

    @classmethod
    def from_sizes(cls, sizes: Mapping[Hashable, int]) -> GroupIndex:
        """Groups that are contiguous ranges, in dataset order: O(number of groups) memory.

        ``sizes`` maps each source to its number of samples, in the order the dataset holds
        them (e.g. the parts of a ``ConcatDataset``). Nothing of size ``N`` is stored: member
        ``j`` of group ``g`` is ``offsets[g] + j``. Names keep the mapping's order.

        Examples:
            >>> index = GroupIndex.from_sizes({"web": 6_000_000_000, "books": 3_000_000_000})
            >>> len(index), index.offsets.tolist()
            (9000000000, [0, 6000000000, 9000000000])
        """
        if not isinstance(sizes, Mapping) or not sizes:
            raise TypeError(f"sizes should be a non-empty mapping name -> count, got {sizes!r}")
        counts = [check_int(f"sizes[{k!r}]", v, 1) for k, v in sizes.items()]
        total = sum(counts)
        if total > MAX_SIZE:
            raise ValueError(f"sizes should sum to at most {MAX_SIZE}, but sum to {total}")
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        return cls(tuple(sizes), None, offsets, num_samples=total)

    # -- files -------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write the index atomically: ``.npy`` and ``.json`` files, ``manifest.json`` last.

        The files are written into a temporary directory beside ``directory`` and renamed into
        place, replacing an earlier save whole: a crash mid-save leaves the old save (or none),
        never a mix. Build and save once per node (local rank 0), then :meth:`load` with
        ``mmap=True`` in every rank: the ranks share one copy of the pages. Nothing is pickled.

        Trap: ``directory`` is replaced as a whole; a directory holding other files is refused.
        """
        arrays = {"offsets": self.offsets}
        if self.members is not None:
            arrays["members"] = self.members
        meta = {
            "format": _FORMAT,
            "num_samples": int(self.num_samples),
            "multilabel": bool(self.multilabel),
            "ranges": self.members is None,
        }
        names = [_plain(n) for n in self.names]
        files.write_index(directory, "GroupIndex", arrays, {"names": names, "meta": meta})

    @classmethod
    def load(
        cls, directory: str | os.PathLike, mmap: bool = True, *, verify: bool = True
    ) -> GroupIndex:
        """Load a saved index, checking it first: files are inputs.

        Refuses with a ``ValueError`` naming the file: a save that did not finish or a save
        by distsampler 0.2 (no ``manifest.json``; build and save again), files of two saves,
        truncated files, wrong dtypes (float members), a member outside ``[0, num_samples)``,
        offsets that are not non-decreasing from 0 to ``len(members)``, JSON fields of the
        wrong type. Reading every member once (a chunked min/max) is the main cost.

        Args:
            directory: the directory :meth:`save` wrote.
            mmap: memory-map ``members`` so the ranks of a node share its pages.
            verify: also compare a CRC-32 of every file with the one its save wrote (reads
                every byte again; a flipped bit anywhere is caught). ``False`` keeps every
                range check and the sampled fingerprints.
        """
        mmap = check_bool("mmap", mmap)
        verify = check_bool("verify", verify)
        d, table = files.read_manifest(directory, "GroupIndex")
        meta_file = d / "meta.json"

        def same_format(meta: Any) -> None:
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                raise ValueError(
                    f"{str(meta_file)!r} holds a label index of another format: {meta!r}"
                )

        meta = files.read_document(table, d, "meta.json", same_format)
        num_samples, multilabel, ranges = (
            meta.get(k) for k in ("num_samples", "multilabel", "ranges")
        )
        if not (
            isinstance(num_samples, int)
            and not isinstance(num_samples, bool)
            and 1 <= num_samples <= MAX_SIZE
            and isinstance(multilabel, bool)
            and isinstance(ranges, bool)
        ):
            raise ValueError(
                f"{str(meta_file)!r} should hold num_samples (an int in [1, {MAX_SIZE}]), "
                f"multilabel and ranges (booleans), but holds {meta!r}"
            )
        names = files.read_document(table, d, "names.json")
        if (
            not isinstance(names, list)
            or not all(isinstance(n, (int, str)) and not isinstance(n, bool) for n in names)
            or len(set(names)) != len(names)
        ):
            raise ValueError(
                f"{str(d / 'names.json')!r} should be a list of distinct ints or strings"
            )
        offsets = files.read_array(table, d, "offsets.npy", "i", False, verify)
        members = None
        if not ranges:
            members = files.read_array(table, d, "members.npy", "i", mmap, verify)
        return cls._checked(d, names, members, offsets, num_samples, multilabel)

    @classmethod
    def _checked(cls, d: Path, names, members, offsets, num_samples: int, multilabel: bool):
        """The index of checked arrays: offsets from 0 to the members' end, members in [0, N)."""
        end = num_samples if members is None else len(members)
        if len(offsets) != len(names) + 1:
            raise ValueError(
                f"{str(d / 'offsets.npy')!r} has {len(offsets)} entries for {len(names)} groups"
            )
        files.check_nondecreasing(d / "offsets.npy", offsets, 0, end)
        if offsets[0] != 0 or offsets[-1] != end:
            raise ValueError(
                f"{str(d / 'offsets.npy')!r} should run from 0 to {end}, "
                f"but runs {offsets[0]}..{offsets[-1]}"
            )
        if members is not None:
            files.check_members(d / "members.npy", members, num_samples)
        return cls(tuple(names), members, offsets, num_samples=num_samples, multilabel=multilabel)


def _sort_key(name: Hashable) -> tuple:
    return (isinstance(name, str), name)


def _multi_hot(arr: np.ndarray, names) -> tuple[np.ndarray, np.ndarray, list]:
    if arr.dtype.kind not in "biu":
        raise TypeError(f"a multi-hot label_sets should be bool or int, got dtype {arr.dtype}")
    cols = list(range(arr.shape[1])) if names is None else list(names)
    if len(cols) != arr.shape[1]:
        raise ValueError(f"names has {len(cols)} entries for {arr.shape[1]} columns")
    if len(set(cols)) != len(cols):
        raise ValueError("names should be distinct")
    samples, codes = np.nonzero(arr)
    return samples.astype(np.int64), codes.astype(np.int64), cols


def _label_lists(
    label_sets: Any, name: str = "label_sets", what: str = "labels"
) -> tuple[np.ndarray, np.ndarray, list]:
    """``(samples, codes, labels)`` pairs of a sequence of label iterables (messages name it)."""
    if isinstance(label_sets, (str, bytes, Mapping)) or not isinstance(
        label_sets, (Sequence, np.ndarray)
    ):
        raise TypeError(
            f"{name} should be a sequence with one iterable of {what} per sample, or a "
            f"multi-hot (N, C) array, but got {type(label_sets).__name__}"
        )
    if len(label_sets) == 0:
        raise ValueError(f"{name} should not be empty")
    codes: dict[Hashable, int] = {}
    lengths = np.empty(len(label_sets), dtype=np.int64)
    flat: list[int] = []
    for i, labels in enumerate(label_sets):
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
            raise TypeError(
                f"{name}[{i}] should be an iterable of {what}, but got "
                f"{type(labels).__name__} {labels!r:.40}"
            )
        before = len(flat)
        for label in labels:
            if isinstance(label, np.generic):
                label = label.item()
            if isinstance(label, bool) or not isinstance(label, (int, str)):
                raise TypeError(
                    f"{name}[{i}] holds {type(label).__name__} {label!r:.40}; {what} "
                    "should be ints or strings"
                )
            flat.append(codes.setdefault(label, len(codes)))
        lengths[i] = len(flat) - before
    kinds = {type(k) for k in codes}
    if len(kinds) > 1:
        raise TypeError(f"{name} mixes int and str {what}; use one kind")
    samples = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return samples, np.asarray(flat, dtype=np.int64), list(codes)


def from_coco(
    annotation_file: str | os.PathLike | Mapping,
    groups: Mapping[Hashable, Sequence[int]] | None = None,
    default: Hashable = None,
    *,
    multilabel: bool = False,
    background: Hashable = None,
    with_sizes: bool = False,
) -> tuple:
    """Groups of the images of a COCO annotation file, in the order of its ``images``.

    Two modes:

    * single-label (``groups=``): each image belongs to the first group in ``groups`` (in the
      mapping's order) that lists a category id of any of its annotations; images matching
      none get ``default`` (or are left out when ``default`` is None). Returns
      ``(image_ids, labels)``.
    * ``multilabel=True``: one group per category *name*; an image belongs to every category
      it holds; images without annotations go to ``background`` (if given, else to no
      group). Returns ``(image_ids, index)`` with a :class:`GroupIndex`, every image kept.

    Sample ``i`` of a dataset built from the same file in the same order is image
    ``image_ids[i]``.

    ``with_sizes=True`` appends a third value: the ``(height, width)`` of each returned image,
    ``(len(image_ids), 2)``, the sizes of a
    :class:`~distsampler.DistributedBucketBatchSampler` (aspect-ratio batches).

    Examples:
        >>> coco = {"images": [{"id": 7}, {"id": 9}],
        ...         "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
        ...         "annotations": [{"image_id": 7, "category_id": 1},
        ...                         {"image_id": 7, "category_id": 2}]}
        >>> ids, index = from_coco(coco, multilabel=True, background="ok")
        >>> ids.tolist(), index.names, [index.group(g).tolist() for g in range(3)]
        ([7, 9], ('dent', 'ok', 'scratch'), [[0], [1], [0]])
    """
    from .coco import image_categories, image_sizes, load_coco

    coco = load_coco(annotation_file)
    ids, cats = image_categories(coco)
    with_sizes = check_bool("with_sizes", with_sizes)
    if check_bool("multilabel", multilabel):
        if groups is not None or default is not None:
            raise TypeError("multilabel=True uses every category: pass background=, not groups=")
        name_of = {int(c["id"]): c.get("name", int(c["id"])) for c in coco.get("categories", [])}
        sets = [[name_of.get(c, c) for c in image] for image in cats]
        index = GroupIndex.from_label_sets(sets, background=background)
        return (ids, index, image_sizes(coco)) if with_sizes else (ids, index)
    if background is not None:
        raise TypeError("background= is for multilabel=True; single-label mode uses default=")
    if not groups:
        raise ValueError("groups should map at least one group name to category ids")
    known = {int(c["id"]) for c in coco.get("categories", [])}
    cat_to_group: dict[int, int] = {}
    names = list(groups)
    for gi, (gname, cat_ids) in enumerate(groups.items()):
        for cat in cat_ids:
            if known and cat not in known:
                raise ValueError(f"groups[{gname!r}] names category id {cat}, not in the file")
            cat_to_group.setdefault(int(cat), gi)
    keep, labels = [], []
    for k, image in enumerate(cats):
        found = [cat_to_group[c] for c in image if c in cat_to_group]
        if not found and default is None:
            continue
        keep.append(k)
        labels.append(names[min(found)] if found else default)
    if with_sizes:
        return ids[keep], np.asarray(labels), image_sizes(coco)[keep]
    return ids[keep], np.asarray(labels)

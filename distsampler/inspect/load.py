"""Read the labels ``distsampler inspect`` simulates on, into a :class:`GroupIndex`.

Inputs, by file type:

* ``.npy``: 1-D labels (ints or fixed-width strings); 2-D ``(N, C)`` multi-hot (bool or 0/1),
  column ``j`` being class ``j``.
* ``.csv``: one label per row in ``column``; with ``multilabel=True`` a cell holds a set of
  labels separated by ``separator`` (default ``|``, e.g. ``scratch|dent``; an empty cell is a
  sample with no label: ``img3.png,`` or, in a one-column file, ``""``, as a blank line is
  skipped).
* ``.json``: a COCO annotation file (an object with ``images`` and ``annotations``), mapped to
  groups with ``coco_groups`` (single-label) or to one group per category name with
  ``multilabel=True``; or a JSON list with one label, or one list of labels, per sample
  (``[["scratch"], [], ["scratch", "dent"]]``).

Multi-label inputs put a sample in every group it names; a sample with no label goes to
group ``background`` when given, else to no group (class-aware samplers never draw it).
Labels that all read as integers become ints, so they sort numerically.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import weights as W
from ..groups import GroupIndex, from_coco
from .diagnostics import Membership
from .options import CliError, pairs

__all__ = ["Data", "load_data"]

_INT = re.compile(r"[+-]?\d+")


@dataclass
class Data:
    """The labels as a group index, and what came with them.

    Attributes:
        source: the file read.
        index: one group per class; with multi-label input a sample can be in several or none.
        categories: per-sample COCO category ids (for ``--strategy repeat``), else None.
        membership: the classes of each sample (sample-major view of ``index``).
    """

    source: str
    index: GroupIndex
    categories: list | None = None
    membership: Membership = field(init=False)

    def __post_init__(self) -> None:
        self.membership = Membership.of(self.index)

    @property
    def multilabel(self) -> bool:
        """Whether some sample holds several classes or none."""
        return self.membership.multilabel

    @property
    def unlabelled(self) -> int:
        """Samples in no class."""
        return int(np.count_nonzero(self.membership.counts() == 0))


def load_data(
    path: str,
    *,
    column: str | None = None,
    coco_groups: Sequence[str] = (),
    coco_default: str | None = None,
    multilabel: bool = False,
    background: str | None = None,
    separator: str = "|",
) -> Data:
    """Labels from ``.npy``, ``.csv`` or ``.json`` (see the module docs), with clear errors."""
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no such file: {str(file)!r}")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        return _from_npy(file, background)
    if suffix == ".csv":
        values = _read_column(file, column)
        if not multilabel:
            return _labels(file, _typed(values), background)
        sets = [[t.strip() for t in v.split(separator) if t.strip()] for v in values]
        return _label_sets(file, _typed_sets(sets), background)
    if suffix == ".json":
        return _from_json(file, coco_groups, coco_default, multilabel, background)
    raise CliError(f"labels should be a .npy, .csv or .json file, but got {str(file)!r}")


# -- single-label and multi-label indexes --------------------------------------------------------
def _labels(path: Path, labels, background: str | None = None) -> Data:
    if background is not None:
        raise CliError(
            "--background names the group of samples with no label, in multi-label input "
            "(--multilabel, a .json list of label lists, a 2-D multi-hot .npy); "
            f"{path} has one label per sample"
        )
    try:
        return Data(str(path), GroupIndex.from_labels(labels))
    except (ValueError, TypeError) as exc:
        raise CliError(f"cannot use the labels in {path}: {exc}") from None


def _label_sets(path: Path, sets, background: str | None, names=None) -> Data:
    try:
        index = GroupIndex.from_label_sets(sets, names=names, background=background)
    except (ValueError, TypeError) as exc:
        raise CliError(f"cannot use the label sets in {path}: {exc}") from None
    return Data(str(path), index)


def _typed(values: list[str]) -> list[int] | list[str]:
    """Ints when every value reads as one, else the strings."""
    if values and all(_INT.fullmatch(v.strip()) for v in values):
        return [int(v) for v in values]
    return values


def _typed_sets(sets: list[list[str]]) -> list[list]:
    flat = [t for s in sets for t in s]
    if flat and all(_INT.fullmatch(t) for t in flat):
        return [[int(t) for t in s] for s in sets]
    return sets


# -- file types ----------------------------------------------------------------------------------
def _from_npy(path: Path, background: str | None) -> Data:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise CliError(
            f"cannot read {path}: {exc} (save labels as integers or fixed-width strings)"
        ) from None
    if arr.ndim == 2:  # multi-hot: column j is class j
        return _label_sets(path, np.asarray(arr), background, names=list(range(arr.shape[1])))
    if arr.ndim != 1:
        raise CliError(
            f"labels in {path} should be 1-D (one label per sample) or 2-D (N, C) multi-hot, "
            f"but have shape {arr.shape}"
        )
    return _labels(path, arr, background)


def _read_column(path: Path, column: str | None) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if column is None:
            if len(columns) != 1:
                raise CliError(
                    f"{path} has columns {columns}; pick the label column with --column NAME"
                )
            column = columns[0]
        if column not in columns:
            raise CliError(f"column {column!r} is not in {path}; its columns are {columns}")
        values = [row[column] or "" for row in reader]
    if not values:
        raise CliError(f"{path} has no rows")
    return values


def _from_json(path: Path, coco_groups, coco_default, multilabel: bool, background) -> Data:
    try:
        with open(path, encoding="utf-8") as fh:
            content = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path} as JSON: {exc}") from None
    if isinstance(content, list):
        return _from_json_list(path, content, background)
    if multilabel:
        return _from_coco_multilabel(path, content, background)
    if background is not None:
        raise CliError("--background needs --multilabel with a COCO file (use --coco-default)")
    return _from_coco_groups(path, content, coco_groups, coco_default)


def _from_json_list(path: Path, content: list, background: str | None) -> Data:
    if content and all(isinstance(x, list) for x in content):
        return _label_sets(path, content, background)
    if content and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in content):
        return _labels(path, content, background)
    raise CliError(
        f"a .json list in {path} should hold one label per sample or one list of labels per "
        'sample, e.g. [["scratch"], [], ["scratch", "dent"]]'
    )


def _coco_categories(path: Path, coco, ids: np.ndarray) -> list:
    """Per-image category ids for the images ``ids``, in that order."""
    all_ids, cats = W.coco_image_categories(coco)
    where = {int(i): k for k, i in enumerate(all_ids)}
    return [cats[where[int(i)]] for i in ids]


def _from_coco_groups(path: Path, coco, coco_groups, coco_default) -> Data:
    if not coco_groups:
        raise CliError(
            "a COCO file needs --coco-groups NAME=ID,ID (repeatable) and usually "
            "--coco-default NAME for the other images, or --multilabel for one group per "
            "category"
        )
    groups: dict[Hashable, list[int]] = {}
    for name, ids in pairs(coco_groups, "--coco-groups"):
        try:
            groups.setdefault(name, []).extend(int(x) for x in ids.split(","))
        except ValueError:
            raise CliError(f"--coco-groups {name}= expects category ids, got {ids!r}") from None
    try:
        ids, labels = from_coco(coco, groups, default=coco_default)
        categories = _coco_categories(path, coco, ids) if len(ids) else []
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read COCO file {path}: {exc}") from None
    if len(ids) == 0:
        raise CliError(f"no image of {path} is in a group; add --coco-default NAME")
    data = _labels(path, labels)
    data.categories = categories
    return data


def _from_coco_multilabel(path: Path, coco, background: str | None) -> Data:
    try:
        ids, index = from_coco(coco, multilabel=True, background=background)
        categories = _coco_categories(path, coco, ids)
    except (ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read COCO file {path}: {exc}") from None
    return Data(str(path), index, categories)

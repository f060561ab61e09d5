"""Fuzz: saved index files corrupted at random load exactly as saved, or not at all.

Seeded. Every kind of saved index (labels, label sets, ranges, both weight layouts) is saved,
one of its files is damaged (bytes flipped, truncated or extended, an array rewritten with
another dtype, a JSON field edited, a file deleted, a file taken from another save of the
same shape), then loaded, given to a sampler and drawn from. The outcome is a ``ValueError``
or ``TypeError``, or exactly the draws of the undamaged index: never an index outside
``[0, N)``, never different draws.
"""

import json
import shutil

import numpy as np
import pytest

from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
    WeightIndex,
)

CASES = 60  # corruptions per kind of index
N = 4500  # > 4096 distinct weights: the cumulative layout


def _indexes(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sets = [list(rng.choice(5, rng.integers(0, 3), replace=False)) for _ in range(N)]
    return {
        "labels": GroupIndex.from_labels(rng.integers(0, 4, N)),
        "sets": GroupIndex.from_label_sets(sets, background=9),
        "sizes": GroupIndex.from_sizes({"web": 2000, "books": N - 2000}),
        "by_value": WeightIndex.from_weights(rng.integers(0, 4, N) * 0.5),
        "cumulative": WeightIndex.from_weights(rng.random(N)),
    }


def _draws(kind: str, index) -> list[int]:
    if isinstance(index, GroupIndex):
        sampler = DistributedQuotaBatchSampler(
            index, 8, {index.names[0]: 3}, num_batches=40, num_replicas=2, rank=1, seed=5
        )
        return [i for batch in sampler for i in batch]
    out = []
    for replacement in (True, False):
        sampler = DistributedWeightedSampler(
            weights=index, replacement=replacement, num_samples=400, num_replicas=2, rank=0
        )
        out += list(sampler)
    return out


def _load(kind: str, directory, mmap: bool, verify: bool):
    cls = GroupIndex if kind in ("labels", "sets", "sizes") else WeightIndex
    return cls.load(directory, mmap=mmap, verify=verify)


_VALUES = [None, True, False, 0, -1, 1, 3, 10**12, 1.5, float("nan"), "x", "<f8", [], [0], {}]
_DTYPES = [np.int16, np.int32, np.int64, np.uint32, np.float32, np.float64, np.bool_]


def _edit_json(rng, path) -> None:
    doc = json.loads(path.read_text())
    node = doc
    while True:  # walk down to a container, then replace one of its fields
        if isinstance(node, dict) and node:
            key = list(node)[rng.integers(len(node))]
        elif isinstance(node, list) and node:
            key = int(rng.integers(len(node)))
        else:
            break
        child = node[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            node = child
            continue
        node[key] = _VALUES[rng.integers(len(_VALUES))]
        break
    else:  # pragma: no cover
        pass
    if node is doc and not doc:
        doc = _VALUES[rng.integers(len(_VALUES))]
    path.write_text(json.dumps(doc))


def _corrupt(rng, directory, other) -> str:
    files = sorted(p for p in directory.iterdir())
    path = files[rng.integers(len(files))]
    how = ["flip", "truncate", "extend", "dtype", "json", "delete", "mix"][rng.integers(7)]
    data = path.read_bytes()
    if how == "flip" and data:
        at = rng.integers(len(data))
        data = data[:at] + bytes([data[at] ^ int(rng.integers(1, 256))]) + data[at + 1 :]
        path.write_bytes(data)
    elif how == "truncate":
        path.write_bytes(data[: rng.integers(len(data) + 1)])
    elif how == "extend":
        path.write_bytes(data + rng.bytes(int(rng.integers(1, 64))))
    elif how == "dtype" and path.suffix == ".npy":
        arr = np.load(path)
        np.save(path, arr.astype(_DTYPES[rng.integers(len(_DTYPES))]))
    elif how == "json" and path.suffix == ".json":
        _edit_json(rng, path)
    elif how == "delete":
        path.unlink()
    elif how == "mix" and (other / path.name).exists():
        shutil.copyfile(other / path.name, path)
    else:
        return "none"
    return f"{how} {path.name}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["labels", "sets", "sizes", "by_value", "cumulative"])
def test_a_damaged_save_loads_exactly_or_not_at_all(tmp_path, kind):
    rng = np.random.default_rng(["labels", "sets", "sizes", "by_value", "cumulative"].index(kind))
    index, other = _indexes(0)[kind], _indexes(1)[kind]
    expected = _draws(kind, index)
    index.save(tmp_path / "clean")
    other.save(tmp_path / "other")
    outcomes = {"refused": 0, "same": 0}
    for case in range(CASES):
        d = tmp_path / f"case{case}"
        shutil.copytree(tmp_path / "clean", d)
        what = _corrupt(rng, d, tmp_path / "other")
        mmap, verify = bool(rng.integers(2)), bool(rng.integers(2))
        try:
            draws = _draws(kind, _load(kind, d, mmap, verify))
        except (ValueError, TypeError) as e:
            assert str(e), what
            outcomes["refused"] += 1
            continue
        finally:
            shutil.rmtree(d)
        assert draws == expected, f"{what} loaded and sampled differently"
        outcomes["same"] += 1
    assert outcomes["refused"] >= CASES // 2, outcomes  # most damage is seen, not harmless

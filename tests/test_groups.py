"""The label index: grouping, saving, memory-mapping, bad input."""

import json

import numpy as np
import pytest
import torch

from distsampler import DistributedQuotaBatchSampler, GroupIndex
from distsampler.groups import fingerprint


@pytest.mark.parametrize(
    "labels, names",
    [
        ([3, 1, 2, 3, 3], (1, 2, 3)),  # dense ints
        (["b", "a", "b"], ("a", "b")),  # strings
        ([10**12, 5, 10**12], (5, 10**12)),  # sparse ints (sorted unique path)
        (list(range(40))[::-1] * 2, tuple(range(40))),  # more groups than one scan each
        (np.array([-2, 0, -2], dtype=np.int16), (-2, 0)),  # negative labels
        (torch.tensor([1, 0, 1]), (0, 1)),  # a tensor
        (np.array([True, False, True]), (0, 1)),  # bools become 0/1
    ],
)
def test_members_grouped_in_index_order(labels, names):
    g = GroupIndex.from_labels(labels)
    arr = np.asarray(labels.tolist() if hasattr(labels, "tolist") else labels)
    assert g.names == names
    for i, name in enumerate(g.names):
        expect = np.flatnonzero(
            arr.astype(type(name) if isinstance(name, str) else arr.dtype)
            == (int(name) if not isinstance(name, str) else name)
        )
        assert g.group(i).tolist() == expect.tolist()
    assert g.members.dtype == np.int32 and g.num_samples == len(arr)


def test_save_load_mmap_roundtrip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, 10_000)
    g = GroupIndex.from_labels(labels)
    g.save(tmp_path / "index")
    h = GroupIndex.load(tmp_path / "index", mmap=True)
    assert isinstance(h.members, np.memmap)
    assert h.names == g.names and np.array_equal(h.members, g.members)
    # A sampler built on the mapped index equals one built on the labels.
    a = DistributedQuotaBatchSampler(h, 8, {0: 2}, num_replicas=2, rank=1)
    b = DistributedQuotaBatchSampler(labels, 8, {0: 2}, num_replicas=2, rank=1)
    assert list(a) == list(b)
    assert json.loads((tmp_path / "index" / "names.json").read_text()) == list(g.names)


def test_npy_labels_are_memory_mapped_and_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="unpickling"):
        GroupIndex.from_labels(str(tmp_path / "obj.npy"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        GroupIndex.from_labels(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match=r"\.npy file path"):
        GroupIndex.from_labels(str(tmp_path / "labels.csv"))


def test_fingerprint_sees_other_data():
    a = np.arange(1000)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(a) != fingerprint(a[::-1].copy())
    assert fingerprint(a) != fingerprint(a.astype(np.int32))

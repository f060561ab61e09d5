"""Saved indexes are inputs: atomic saves, and loads that refuse what could sample wrongly.

Every refusal is a ``ValueError`` naming the file. Crafted saves (a consistent manifest over
bad content) are written with the engine's own writer, so the checks of the content are
tested apart from the manifest's.
"""

import json
import os
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest

from distsampler import (
    DistributedQuotaBatchSampler,
    DistributedWeightedSampler,
    GroupIndex,
    WeightIndex,
)
from distsampler._core import index_files

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 4, 3000)


def _group_save(d, names, members, offsets, num_samples, multilabel=False, ranges=False):
    """A save whose manifest matches its files, whatever they hold."""
    arrays = {"offsets": offsets}
    if members is not None:
        arrays["members"] = members
    meta = {"format": 3, "num_samples": num_samples, "multilabel": multilabel, "ranges": ranges}
    index_files.write_index(d, "GroupIndex", arrays, {"names": names, "meta": meta})


def _weight_save(d, weights, cumulative=None, guide=None, step=None):
    weights = np.asarray(weights, dtype=np.float64)
    cumulative = np.cumsum(weights) if cumulative is None else cumulative
    guide = np.zeros(len(weights) + 1, dtype=np.int32) if guide is None else guide
    step = float(cumulative[-1]) / len(weights) if step is None else step
    meta = {"format": 2, "by_value": False, "step": float(step).hex()}
    arrays = {"weights": weights, "cumulative": cumulative, "guide": guide}
    index_files.write_index(d, "WeightIndex", arrays, {"meta": meta})


def _quota(index):
    return list(DistributedQuotaBatchSampler(index, 8, {0: 2}, num_replicas=2, rank=1, seed=3))


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mmap", [True, False])
def test_every_kind_round_trips_with_the_same_plan_and_fingerprint(tmp_path, mmap):
    indexes = {
        "labels": GroupIndex.from_labels(LABELS),
        "sets": GroupIndex.from_label_sets([[0, 1], [], [1], [2, 0]] * 50, background=9),
        "sizes": GroupIndex.from_sizes({"web": 600, "books": 300}),
    }
    for name, index in indexes.items():
        index.save(tmp_path / name)
        loaded = GroupIndex.load(tmp_path / name, mmap=mmap)
        assert type(loaded) is GroupIndex and loaded.names == index.names
        assert loaded.fingerprint() == index.fingerprint()
        assert loaded.multilabel == index.multilabel and len(loaded) == len(index)
        groups = list(index.names[:1])
        a = DistributedQuotaBatchSampler(index, 6, {groups[0]: 2}, num_replicas=2, rank=0)
        b = DistributedQuotaBatchSampler(loaded, 6, {groups[0]: 2}, num_replicas=2, rank=0)
        assert list(a) == list(b) and a.state_dict() == b.state_dict()
    for kind, w in {"by_value": RNG.integers(1, 4, 2000) * 1.0, "cum": RNG.random(5000)}.items():
        index = WeightIndex.from_weights(w)
        index.save(tmp_path / kind)
        loaded = WeightIndex.load(tmp_path / kind, mmap=mmap)
        assert (
            loaded.by_value == (kind == "by_value") and loaded.fingerprint() == index.fingerprint()
        )
        for replacement in (True, False):
            a = DistributedWeightedSampler(
                weights=index, replacement=replacement, num_replicas=2, rank=1
            )
            b = DistributedWeightedSampler(
                weights=loaded, replacement=replacement, num_replicas=2, rank=1
            )
            assert list(a) == list(b)


def test_the_fingerprint_in_the_state_refuses_a_resume_on_another_index(tmp_path):
    GroupIndex.from_labels(LABELS).save(tmp_path / "a")
    other = LABELS.copy()
    other[[5, 17]] = other[[17, 5]] if other[5] != other[17] else (other[5] + 1) % 4
    GroupIndex.from_labels(other).save(tmp_path / "b")
    a = DistributedQuotaBatchSampler(
        GroupIndex.load(tmp_path / "a"), 8, {0: 2}, num_replicas=1, rank=0
    )
    b = DistributedQuotaBatchSampler(
        GroupIndex.load(tmp_path / "b"), 8, {0: 2}, num_replicas=1, rank=0
    )
    assert a.state_dict()["config"]["data"] == GroupIndex.load(tmp_path / "a").fingerprint()
    with pytest.raises(ValueError, match="data"):
        b.load_state_dict(a.state_dict())
    w = RNG.random(500)
    WeightIndex.from_weights(w).save(tmp_path / "w")
    w2 = w.copy()
    w2[::7] *= 2
    WeightIndex.from_weights(w2).save(tmp_path / "w2")
    s = DistributedWeightedSampler(weights=WeightIndex.load(tmp_path / "w"), num_replicas=1, rank=0)
    t = DistributedWeightedSampler(
        weights=WeightIndex.load(tmp_path / "w2"), num_replicas=1, rank=0
    )
    with pytest.raises(ValueError, match="data"):
        t.load_state_dict(s.state_dict())


# -- partial, old and mixed saves ----------------------------------------------------------------
def test_a_save_without_its_manifest_is_refused(tmp_path):
    GroupIndex.from_labels(LABELS).save(tmp_path / "i")
    (tmp_path / "i" / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"manifest\.json.*is missing.*0\.2"):
        GroupIndex.load(tmp_path / "i")
    with pytest.raises(FileNotFoundError, match="no saved index"):
        GroupIndex.load(tmp_path / "nothing")


def test_a_save_by_version_0_2_is_refused_with_what_to_do(tmp_path):
    d = tmp_path / "old"
    d.mkdir()
    np.save(d / "members.npy", np.array([0, 2, 1], dtype=np.int32))
    np.save(d / "offsets.npy", np.array([0, 2, 3]))
    (d / "names.json").write_text("[0, 1]")
    (d / "meta.json").write_text('{"format": 2, "num_samples": 3, "multilabel": false}')
    with pytest.raises(ValueError, match=r"saved by distsampler 0\.2.*save\(\) it"):
        GroupIndex.load(d)
    (d / "meta.json").write_text('{"format": 1, "by_value": true}')
    with pytest.raises(ValueError, match=r"saved by distsampler 0\.2"):
        WeightIndex.load(d)


def test_files_of_two_saves_are_refused(tmp_path):
    a, b = RNG.integers(0, 4, 3000), RNG.integers(0, 4, 3000)
    GroupIndex.from_labels(a).save(tmp_path / "a")
    GroupIndex.from_labels(b).save(tmp_path / "b")
    (tmp_path / "a" / "members.npy").write_bytes((tmp_path / "b" / "members.npy").read_bytes())
    with pytest.raises(ValueError, match=r"members\.npy.*differs from the array its save wrote"):
        GroupIndex.load(tmp_path / "a")
    (tmp_path / "b" / "names.json").write_text("[0, 1, 2, 4]")
    with pytest.raises(ValueError, match=r"names\.json.*differs"):
        GroupIndex.load(tmp_path / "b")


@pytest.mark.parametrize("cut", [-1, -100, 10])
def test_a_truncated_file_names_itself_never_the_mmap_error(tmp_path, cut):
    WeightIndex.from_weights(RNG.random(5000)).save(tmp_path)  # > 4096 values: cumulative
    path = tmp_path / "cumulative.npy"
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut < 0 else data + b"\0" * cut)
    for mmap in (True, False):
        with pytest.raises(ValueError, match=r"cumulative\.npy.*bytes, its save wrote") as err:
            WeightIndex.load(tmp_path, mmap=mmap)
        assert "mmap length" not in str(err.value)


def test_a_flipped_byte_past_the_sampled_fingerprint_is_caught_by_the_crc(tmp_path):
    n = (1 << 21) + 10  # the sampled fingerprint reads every second member here
    index = GroupIndex.from_sizes({"a": n // 2, "b": n - n // 2})
    members = np.arange(n, dtype=np.int32)
    stored = GroupIndex(index.names, members, index.offsets, num_samples=n)
    stored.save(tmp_path)
    with open(tmp_path / "members.npy", "r+b") as fh:  # member 1 becomes 3: still in range
        fh.seek(-4 * (n - 1), 2)
        fh.write(np.int32(3).tobytes())
    with pytest.raises(ValueError, match=r"members\.npy.*CRC-32"):
        GroupIndex.load(tmp_path)
    assert GroupIndex.load(tmp_path, verify=False).group(0)[1] == 3  # documented: opt-out
    with pytest.raises(TypeError, match="verify should be a boolean"):
        GroupIndex.load(tmp_path, verify="yes")


# -- content that could sample wrongly ------------------------------------------------------------
@pytest.mark.parametrize("bad", [3, 1_000_000_000, -3])
def test_members_outside_the_dataset_are_refused(tmp_path, bad):
    _group_save(tmp_path, [0, 1], np.array([0, bad, 2], dtype=np.int32), np.array([0, 2, 3]), 3)
    with pytest.raises(
        ValueError, match=rf"members\.npy.*index {bad}, outside \[0, num_samples=3\)"
    ):
        GroupIndex.load(tmp_path)


def test_float_members_are_refused(tmp_path):
    _group_save(tmp_path, [0, 1], np.array([0.0, 1.0, 2.0]), np.array([0, 2, 3]), 3)
    with pytest.raises(ValueError, match=r"members\.npy.*should hold integers.*float64"):
        GroupIndex.load(tmp_path)
    _group_save(tmp_path, [0, 1], np.array([0, 1, 2]), np.array([0.0, 2.0, 3.0]), 3)
    with pytest.raises(ValueError, match=r"offsets\.npy.*should hold integers"):
        GroupIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("offsets", "what"),
    [
        ([0, 3, 2], "non-decreasing"),
        ([0, 1, 2], "from 0 to 3"),
        ([1, 2, 3], "from 0 to 3"),
        ([0, 3], "2 entries for 2 groups"),
    ],
)
def test_offsets_must_rise_from_0_to_the_members_end(tmp_path, offsets, what):
    _group_save(tmp_path, [0, 1], np.array([0, 1, 2], dtype=np.int32), np.array(offsets), 3)
    with pytest.raises(ValueError, match=rf"offsets\.npy.*{what}"):
        GroupIndex.load(tmp_path)


def test_a_range_index_must_cover_num_samples(tmp_path):
    _group_save(tmp_path, ["a", "b"], None, np.array([0, 2, 9]), 5, ranges=True)
    with pytest.raises(ValueError, match=r"offsets\.npy.*from 0 to 5"):
        GroupIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_samples", "3"),
        ("num_samples", True),
        ("num_samples", 0),
        ("multilabel", 1),
        ("ranges", None),
        ("format", 99),
    ],
)
def test_meta_fields_of_the_wrong_type_are_refused(tmp_path, field, value):
    members, offsets = np.array([0, 1, 2], dtype=np.int32), np.array([0, 2, 3])
    arrays = {"offsets": offsets, "members": members}
    meta = {"format": 3, "num_samples": 3, "multilabel": False, "ranges": False, field: value}
    index_files.write_index(tmp_path, "GroupIndex", arrays, {"names": [0, 1], "meta": meta})
    with pytest.raises(ValueError, match=r"meta\.json"):
        GroupIndex.load(tmp_path)


@pytest.mark.parametrize("names", [[0, 0], [0.5, 1], [True, 1], {"a": 1}, [[0], 1]])
def test_names_must_be_distinct_ints_or_strings(tmp_path, names):
    _group_save(tmp_path, names, np.array([0, 1, 2], dtype=np.int32), np.array([0, 2, 3]), 3)
    with pytest.raises(ValueError, match=r"names\.json"):
        GroupIndex.load(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_weights_that_are_not_finite_and_non_negative_are_refused(tmp_path, bad):
    w = np.array([1.0, 2.0, bad, 1.0])
    _weight_save(tmp_path, w, cumulative=np.cumsum(np.abs(np.nan_to_num(w, posinf=1))))
    with pytest.raises(ValueError, match=rf"weights\.npy.*holds {bad}"):
        WeightIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (dict(cumulative=np.array([1.0, 3.0, 2.0, 5.0])), r"cumulative\.npy.*non-decreasing"),
        (dict(cumulative=np.array([1.0, 3.0, 4.0, np.nan])), r"cumulative\.npy"),
        (dict(cumulative=np.array([-1.0, 3.0, 4.0, 5.0])), r"cumulative\.npy"),
        (dict(guide=np.array([0, 1, 2, 9, 9], dtype=np.int32)), r"guide\.npy.*from 0 to 4"),
        (dict(guide=np.array([-5, 1, 2, 3, 4], dtype=np.int32)), r"guide\.npy"),
        (dict(guide=np.array([0, 2, 1, 3, 4], dtype=np.int32)), r"guide\.npy.*non-decreasing"),
        (dict(guide=np.array([0, 1, 2], dtype=np.int32)), "guide should hold"),
        (dict(guide=np.array([0.0, 1, 2, 3, 4])), r"guide\.npy.*integers"),
        (dict(step=-1.0), "step should be positive"),
    ],
)
def test_cumulative_tables_that_could_search_out_of_range_are_refused(tmp_path, change, what):
    _weight_save(tmp_path, [1.0, 2.0, 1.0, 1.0], **change)
    with pytest.raises(ValueError, match=what):
        WeightIndex.load(tmp_path)


def test_by_value_tables_are_checked_like_a_group_index(tmp_path):
    index = WeightIndex.from_weights(np.array([1.0, 2.0, 0.0, 2.0]))
    arrays = {
        "weights": index.weights,
        "values": index.values,
        "offsets": index.groups.offsets,
        "members": np.array([0, 1, 7], dtype=np.int32),
    }
    meta = {"format": 2, "by_value": True}
    index_files.write_index(tmp_path, "WeightIndex", arrays, {"meta": meta})
    with pytest.raises(ValueError, match=r"members\.npy.*index 7, outside"):
        WeightIndex.load(tmp_path)
    arrays["members"], arrays["values"] = index.groups.members, np.array([2.0, 1.0])
    index_files.write_index(tmp_path, "WeightIndex", arrays, {"meta": meta})
    with pytest.raises(ValueError, match=r"values\.npy.*increasing"):
        WeightIndex.load(tmp_path)
    arrays["values"] = np.array([0.0, 1.0])
    index_files.write_index(tmp_path, "WeightIndex", arrays, {"meta": meta})
    with pytest.raises(ValueError, match=r"values\.npy.*positive"):
        WeightIndex.load(tmp_path)


def test_nothing_is_unpickled(tmp_path):
    GroupIndex.from_labels(LABELS).save(tmp_path)
    obj = np.array([{"a": 1}] * 3, dtype=object)
    np.save(tmp_path / "members.npy", obj, allow_pickle=True)
    with pytest.raises(ValueError, match=r"members\.npy"):
        GroupIndex.load(tmp_path)
    with pytest.raises(ValueError, match="allow_pickle"):
        index_files.write_index(tmp_path / "x", "GroupIndex", {"members": obj}, {})


# -- atomic saves ---------------------------------------------------------------------------------
def test_a_save_that_fails_midway_leaves_the_old_save_whole(tmp_path, monkeypatch):
    d = tmp_path / "index"
    old = GroupIndex.from_labels(LABELS)
    old.save(d)
    real = index_files._write

    def crash_at_manifest(path, data):
        if Path(path).name == "manifest.json":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(index_files, "_write", crash_at_manifest)
    with pytest.raises(OSError, match="disk full"):
        GroupIndex.from_labels(RNG.integers(0, 9, 100)).save(d)
    monkeypatch.undo()
    assert GroupIndex.load(d).fingerprint() == old.fingerprint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no temporary left


def test_a_save_replaces_an_old_save_whole(tmp_path):
    WeightIndex.from_weights(RNG.random(100)).save(tmp_path / "i")  # cumulative files
    WeightIndex.from_weights([1.0, 2.0, 1.0]).save(tmp_path / "i")  # by value
    assert not (tmp_path / "i" / "cumulative.npy").exists()
    assert WeightIndex.load(tmp_path / "i").by_value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]


def test_a_directory_of_other_files_is_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not a saved index"):
        GroupIndex.from_labels(LABELS).save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        GroupIndex.from_labels(LABELS).save(tmp_path / "file")


def test_concurrent_saves_to_one_directory_leave_one_whole_save(tmp_path):
    d = tmp_path / "index"
    indexes = [GroupIndex.from_labels(RNG.integers(0, k + 2, 5000)) for k in range(4)]
    errors = []

    def save(index):
        try:
            for _ in range(5):
                index.save(d)
        except Exception:  # pragma: no cover - reported below
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=save, args=(i,)) for i in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    loaded = GroupIndex.load(d)
    assert loaded.fingerprint() in {i.fingerprint() for i in indexes}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(manifest["files"]) == {"members.npy", "offsets.npy", "names.json", "meta.json"}


def test_the_load_cost_benchmark_runs(tmp_path, capsys):
    from benchmarks import index_files as bench

    out = tmp_path / "bench.json"
    assert bench.main(["--size", "2e4", "--inline", "--json", str(out)]) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| index | N | files (MB) |") and len(table) == 4
    records = json.loads(out.read_text())["records"]
    assert [r["kind"] for r in records] == ["labels", "weights"]
    assert all(r["status"] == "ok" and r["verified"] > 0 for r in records)


def test_a_save_is_readable_as_a_plain_directory_would_be(tmp_path):
    """The save's directory gets the umask's permissions, not a private temp dir's 0o700."""
    mask = os.umask(0o022)
    try:
        GroupIndex.from_labels(LABELS).save(tmp_path / "i")
    finally:
        os.umask(mask)
    assert (tmp_path / "i").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "i" / "members.npy").stat().st_mode & 0o777 == 0o644

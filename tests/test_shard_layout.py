"""ShardLayout: shards laid out from sizes, WebDataset tars and Parquet footers; saved as inputs.

The tar parser is checked against ``webdataset``'s own reader on the same files (tars written by
Python's ``tarfile`` in ustar, GNU and pax formats, and by ``webdataset.TarWriter``); damaged
tars and damaged saves are refused with errors naming the shard and byte, or the file.
"""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from distsampler import GroupIndex
from distsampler._core import index_files
from distsampler.shards import ShardLayout
from distsampler.shards import layout as layout_module
from distsampler.shards.tar import TarError, iter_tar_samples, scan_tar


# -- helpers ------------------------------------------------------------------------------------
def _write_tar(path: Path, members: list[tuple[str, bytes]], fmt=tarfile.PAX_FORMAT) -> Path:
    """A tar of regular files (a name ending in '/' is a directory) in the given format."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _samples(n: int, start: int = 0, prefix: str = "s") -> list[tuple[str, bytes]]:
    out = []
    for i in range(start, start + n):
        out += [(f"{prefix}{i:05d}.cls", str(i % 3).encode()), (f"{prefix}{i:05d}.txt", b"x" * i)]
    return out


LONG = "long/" + "p" * 80 + "/" + "n" * 90  # > 100 bytes: splits into a ustar prefix and name
TRICKY = [
    ("dir/", b""),
    ("__meta__", b"skipped at the top"),
    ("__index__/a.txt", b"skipped under a __xyz__ folder"),
    ("README", b"no extension: skipped"),
    (LONG + ".cls", b"7"),  # a long name: pax, GNU 'L' or the ustar prefix
    (LONG + ".JPG", b"\xff\xd8 upper-case extension"),
    (LONG + ".seg.png", b"two dots: extension 'seg.png'"),
    ("a.cls", b"1"),
    ("a.txt", b"hello"),
    ("b.cls", b"2"),
    ("a.cls", b"3"),  # key 'a' again, not consecutive: a new sample (as WebDataset does)
    ("deep/er/c.d.cls", b"4"),
    ("empty.cls", b""),
    ("big.bin", bytes(range(256)) * 9),
]


def _wds_samples(path: Path) -> list[dict]:
    """What webdataset's own tar reader makes of a local tar: one dict per sample."""
    tariterators = pytest.importorskip("webdataset.tariterators")
    with open(path, "rb") as fh:
        expanded = tariterators.tar_file_expander([{"url": str(path), "stream": fh}])
        return [
            {k: v for k, v in s.items() if k != "__url__"}
            for s in tariterators.group_by_keys(expanded)
        ]


def _ours(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [
        {"__key__": s.key, **{m.ext: data[m.offset : m.offset + m.size] for m in s.members}}
        for s in iter_tar_samples(data, str(path))
    ]


# -- from_sizes ---------------------------------------------------------------------------------
def test_from_sizes_offsets_ranges_and_shard_of():
    layout = ShardLayout.from_sizes([3, 1, 2])
    assert len(layout) == 6 and layout.num_shards == 3
    assert layout.offsets.tolist() == [0, 3, 4, 6] and layout.sizes.tolist() == [3, 1, 2]
    assert layout.shard_of(np.arange(6)).tolist() == [0, 0, 0, 1, 2, 2]
    assert layout.shard_of(np.array([[5, 0]])).shape == (1, 2)
    assert [layout.shard_range(s) for s in range(3)] == [(0, 3), (3, 4), (4, 6)]
    assert layout.urls is None and layout.format is None and layout.labels is None
    with pytest.raises(IndexError, match="index 6 is outside the dataset"):
        layout.shard_of([6])
    with pytest.raises(IndexError, match="index -1"):
        layout.shard_of(-1)
    with pytest.raises(ValueError, match="s should be at most 2"):
        layout.shard_range(3)


def test_from_sizes_refuses_empty_shards_naming_them_and_bad_types():
    with pytest.raises(ValueError, match=r"sizes\[2\]=0: shard 2 should hold at least one"):
        ShardLayout.from_sizes([4, 1, 0, 3])
    with pytest.raises(ValueError, match=r"sizes\[0\]=-1"):
        ShardLayout.from_sizes([-1])
    with pytest.raises(TypeError, match="sizes should hold integers"):
        ShardLayout.from_sizes([1.5, 2.0])
    with pytest.raises(ValueError, match="no shards"):
        ShardLayout.from_sizes([])
    with pytest.raises(ValueError, match="sum to at most"):
        ShardLayout.from_sizes([2**61, 2**61, 2**61])


def test_a_layout_of_1e8_samples_stores_only_per_shard_arrays():
    """1e5 shards of 1e3 samples: nothing of size N (8e8 bytes as int64) is ever allocated."""
    sizes = np.full(100_000, 1000, dtype=np.int64)
    queries = np.random.default_rng(0).integers(0, 10**8, 10_000)
    tracemalloc.start()
    try:
        layout = ShardLayout.from_sizes(sizes)
        shards = layout.shard_of(queries)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(layout) == 10**8 and layout.num_shards == 100_000
    np.testing.assert_array_equal(shards, queries // 1000)
    stored = sum(v.nbytes for v in vars(layout).values() if isinstance(v, np.ndarray))
    assert stored == 8 * (100_000 + 1)  # the offsets, and nothing else
    assert peak < 16 * 2**20, f"building and querying peaked at {peak / 2**20:.1f} MiB"


def test_constructor_checks_what_it_is_given():
    with pytest.raises(ValueError, match="shard 1 spans offsets"):
        ShardLayout([0, 2, 2, 5])
    with pytest.raises(ValueError, match="start at 0"):
        ShardLayout([1, 2])
    with pytest.raises(ValueError, match="urls has 1 entries for 2 shards"):
        ShardLayout([0, 1, 2], urls=["a.tar"], format="webdataset")
    with pytest.raises(ValueError, match="labels has 2 entries, but the shards hold 3"):
        ShardLayout([0, 1, 3], labels=[0, 1])
    with pytest.raises(ValueError, match="format='webdataset' needs urls"):
        ShardLayout([0, 1], format="webdataset")
    with pytest.raises(ValueError, match="row_groups apply to format='parquet'"):
        ShardLayout([0, 1], urls=["a"], format="webdataset", row_groups=[0])


# -- the tar parser against webdataset's reader -------------------------------------------------
@pytest.mark.parametrize(
    "fmt",
    [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
    ids=["ustar", "gnu", "pax"],
)
def test_grouping_is_webdatasets_on_tarfile_tars(tmp_path, fmt):
    path = _write_tar(tmp_path / "t.tar", TRICKY, fmt)
    ours = _ours(path)
    assert ours == _wds_samples(path)
    assert [s["__key__"] for s in ours][:2] == [LONG, "a"]
    assert set(ours[0]) == {"__key__", "cls", "jpg", "seg.png"}
    assert [s["__key__"] for s in ours].count("a") == 2


def test_grouping_is_webdatasets_on_tarwriter_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    pattern = str(tmp_path / "shard-%03d.tar")
    with wds.ShardWriter(pattern, maxcount=7, verbose=0) as sink:
        for i in range(20):
            key = f"sample{i:04d}" if i % 5 else f"dir/long-{'k' * 110}{i}"
            sink.write({"__key__": key, "cls": i % 4, "txt": "t" * i, "npy": np.arange(i)})
    paths = sorted(tmp_path.glob("shard-*.tar"))
    assert len(paths) == 3
    for path in paths:
        assert _ours(path) == _wds_samples(path)
    # the whole pipeline, as users read it, sees the same keys in the same order
    ds = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
    layout = ShardLayout.from_webdataset(paths, labels="cls")
    wds_keys = [s["__key__"] for s in ds]
    ours = [s.key for p in paths for s in iter_tar_samples(p.read_bytes(), str(p))]
    assert ours == wds_keys and len(layout) == 20
    assert layout.sizes.tolist() == [7, 7, 6] and layout.format == "webdataset"
    assert layout.urls == tuple(str(p) for p in paths)
    assert layout.shard_bytes.tolist() == [p.stat().st_size for p in paths]
    assert layout.labels.tolist() == [i % 4 for i in range(20)]


def test_a_file_a_stream_and_bytes_give_the_same_samples(tmp_path):
    path = _write_tar(tmp_path / "t.tar", TRICKY + _samples(50))
    data = path.read_bytes()

    class Stream:  # no fileno, no seek: read front to back in short reads
        def __init__(self):
            self.buf = io.BytesIO(data)

        def read(self, n=-1):
            return self.buf.read(min(n, 1000) if n > 0 else n)

    want = scan_tar(data, "t.tar", read={"cls"})
    with open(path, "rb") as fh:
        assert scan_tar(fh, "t.tar", read={"cls"}) == want  # memory-mapped
    assert scan_tar(io.BytesIO(data), "t.tar", read={"cls"}) == want  # seekable
    assert scan_tar(Stream(), "t.tar", read={"cls"}) == want  # forward only
    assert want[2] == len(data)


# -- damaged tars -------------------------------------------------------------------------------
def test_truncated_tars_name_the_shard_and_the_byte(tmp_path):
    path = _write_tar(tmp_path / "t.tar", [("a.txt", b"x" * 1000), ("b.txt", b"y" * 10)])
    data = path.read_bytes()
    # a: header 0, data 512..1512 (padded to 1536); b: header 1536, data 2048..2058
    cases = {
        700: r"truncated at byte 700: member 'a\.txt' \(header at byte 0\) needs bytes 512\.\.1512",
        1536: r"truncated at byte 1536 \(before its end-of-archive blocks\)",
        1800: r"truncated at byte 1800 \(inside a header\)",
        1520: r"truncated at byte 1520 \(inside the padding before the header at byte 1536\)",
        2050: r"truncated at byte 2050: member 'b\.txt'",
    }
    for cut, message in cases.items():
        with pytest.raises(TarError, match=r"shard 'cut\.tar' is " + message):
            iter_tar_samples(data[:cut], "cut.tar")
        bad = tmp_path / f"cut{cut}.tar"
        bad.write_bytes(data[:cut])
        with pytest.raises(TarError, match=f"shard '{bad}' is truncated at byte"):
            ShardLayout.from_webdataset([path, bad])
    with pytest.raises(TarError, match=r"'e\.tar' is empty \(0 bytes\)"):
        iter_tar_samples(b"", "e.tar")
    with pytest.raises(ValueError, match="inside the extended header"):  # a pax header cut
        pax = _write_tar(tmp_path / "p.tar", [(LONG + ".cls", b"1")]).read_bytes()
        assert pax[156:157] == b"x"  # the first header is the pax header of the long name
        iter_tar_samples(pax[:520], "p.tar")


def _fix_checksum(buf: bytearray, at: int) -> None:
    """Write the checksum a tar header at ``at`` should have after an edit."""
    header = buf[at : at + 512]
    header[148:156] = b" " * 8
    buf[at + 148 : at + 156] = b"%06o\0 " % sum(header)


def test_corrupt_and_compressed_tars_are_refused(tmp_path):
    data = bytearray(_write_tar(tmp_path / "t.tar", _samples(3)).read_bytes())
    second_header = 1024  # s00000.cls: header 0, data 512; s00000.txt: header 1024
    flipped = bytearray(data)
    flipped[second_header + 3] ^= 0x20
    with pytest.raises(TarError, match="shard 'c.tar': bad tar header checksum at byte 1024"):
        iter_tar_samples(bytes(flipped), "c.tar")
    garbage = bytearray(data)
    garbage[second_header + 124 : second_header + 136] = b"zz" * 6  # size field
    _fix_checksum(garbage, second_header)
    with pytest.raises(TarError, match="header at byte 1024 has an invalid size field"):
        iter_tar_samples(bytes(garbage), "g.tar")
    with pytest.raises(TarError, match="byte 0"):
        iter_tar_samples(b"not a tar at all" * 64, "x.tar")
    import gzip

    with pytest.raises(TarError, match="gzip-compressed"):
        iter_tar_samples(gzip.compress(bytes(data)), "t.tar.gz")
    twice = _write_tar(tmp_path / "d.tar", [("a.txt", b"1"), ("a.TXT", b"2")])
    with pytest.raises(TarError, match="sample 'a' holds extension 'txt' twice"):
        iter_tar_samples(twice.read_bytes(), "d.tar")


# -- labels -------------------------------------------------------------------------------------
def test_labels_become_a_group_index(tmp_path):
    paths = [
        _write_tar(tmp_path / "a.tar", _samples(10)),
        _write_tar(tmp_path / "b.tar", _samples(5, start=10)),
    ]
    layout = ShardLayout.from_webdataset(paths, labels="cls", workers=2)
    labels = [i % 3 for i in range(15)]
    assert layout.labels.dtype == np.int64 and layout.labels.tolist() == labels
    index = layout.group_index()
    expected = GroupIndex.from_labels(labels)
    assert index.names == (0, 1, 2) and index.fingerprint() == expected.fingerprint()
    words = _write_tar(
        tmp_path / "w.tar", [("x.cls", b" cat\n"), ("y.cls", b"7"), ("z.cls", b"dog")]
    )
    layout = ShardLayout.from_webdataset([words], labels=".CLS")
    assert layout.labels.tolist() == ["cat", "7", "dog"]  # not all ints: all strings
    assert layout.group_index().names == ("7", "cat", "dog")
    with pytest.raises(ValueError, match="has no labels; build it with labels="):
        ShardLayout.from_sizes([2]).group_index()


def test_a_sample_without_a_label_names_the_shard_and_key(tmp_path):
    path = _write_tar(tmp_path / "a.tar", [("k1.cls", b"0"), ("k2.txt", b"x"), ("k3.cls", b"1")])
    with pytest.raises(ValueError, match=f"sample 'k2' of shard '{path}' has no member k2.cls"):
        ShardLayout.from_webdataset([path], labels="cls")


def test_from_webdataset_argument_errors(tmp_path):
    path = _write_tar(tmp_path / "a.tar", _samples(2))
    with pytest.raises(TypeError, match="a list of shard URLs or paths.*braceexpand"):
        ShardLayout.from_webdataset(str(path))
    with pytest.raises(ValueError, match=r"urls\[1\]=.* repeats urls\[0\]"):
        ShardLayout.from_webdataset([path, str(path)])
    with pytest.raises(FileNotFoundError, match="no such shard"):
        ShardLayout.from_webdataset([tmp_path / "missing.tar"])
    empty = _write_tar(tmp_path / "e.tar", [("README", b"no samples")])
    with pytest.raises(ValueError, match=r"urls\[1\]=.*e\.tar' holds no samples"):
        ShardLayout.from_webdataset([path, empty])
    with pytest.raises(ValueError, match="retries should be a non-negative integer"):
        ShardLayout.from_webdataset([path], retries=-1)


# -- save / load --------------------------------------------------------------------------------
def _layouts(tmp_path) -> dict[str, ShardLayout]:
    tars = [_write_tar(tmp_path / f"{i}.tar", _samples(4, start=4 * i)) for i in range(3)]
    words = _write_tar(tmp_path / "w.tar", [("x.cls", b"cat"), ("y.cls", b"dog")])
    out = {
        "sizes": ShardLayout.from_sizes([5, 1, 7]),
        "tar-int-labels": ShardLayout.from_webdataset(tars, labels="cls"),
        "tar-str-labels": ShardLayout.from_webdataset([words], labels="cls"),
        "tar-no-labels": ShardLayout.from_webdataset(tars),
    }
    if _pyarrow() is not None:
        paths = _parquet_files(tmp_path)
        out["parquet-row-groups"] = ShardLayout.from_parquet(paths, labels="label")
        out["parquet-files"] = ShardLayout.from_parquet(paths, shards="files")
    return out


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    for name, layout in _layouts(tmp_path).items():
        d = tmp_path / f"saved-{name}"
        layout.save(d)
        back = ShardLayout.load(d, mmap=mmap)
        assert back.fingerprint() == layout.fingerprint(), name
        np.testing.assert_array_equal(back.offsets, layout.offsets)
        assert back.urls == layout.urls and back.format == layout.format
        for attr in ("row_groups", "labels", "shard_bytes"):
            a, b = getattr(layout, attr), getattr(back, attr)
            assert (a is None) == (b is None), (name, attr)
            if a is not None:
                assert a.tolist() == b.tolist() and a.dtype.kind == b.dtype.kind, (name, attr)
        layout.save(d)  # a second save replaces the first whole
        assert ShardLayout.load(d).fingerprint() == layout.fingerprint()


def test_fingerprint_tells_layouts_apart():
    a = ShardLayout.from_sizes([2, 3])
    assert a.fingerprint() == ShardLayout.from_sizes([2, 3]).fingerprint()
    others = [
        ShardLayout.from_sizes([3, 2]),
        ShardLayout([0, 2, 5], urls=["x", "y"], format="webdataset"),
        ShardLayout([0, 2, 5], labels=[0, 0, 1, 1, 1]),
    ]
    assert len({a.fingerprint(), *(o.fingerprint() for o in others)}) == 4


def _crafted(d, offsets, meta=None, urls=None, labels=None, names=None):
    """A save whose manifest matches its files, whatever they hold (the content checks)."""
    n = int(np.asarray(offsets)[-1]) if len(offsets) else 0
    base = {
        "format": 1,
        "num_samples": n,
        "num_shards": len(offsets) - 1,
        "source": None if urls is None else "webdataset",
        "labels": None if labels is None else ("int" if names is None else "str"),
        "row_groups": False,
        "shard_bytes": False,
    }
    base.update(meta or {})
    arrays = {"offsets": np.asarray(offsets, dtype=np.int64)}
    docs = {"meta": base}
    if urls is not None:
        docs["urls"] = urls
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    if names is not None:
        docs["label_names"] = names
    index_files.write_index(d, "ShardLayout", arrays, docs)
    return d


def test_damaged_saves_are_refused_naming_the_file(tmp_path):
    good = ShardLayout.from_sizes([2, 3])
    good = ShardLayout(good.offsets, labels=[0, 1, 0, 1, 1])
    d = tmp_path / "good"
    good.save(d)
    labels = d / "labels.npy"
    data = labels.read_bytes()
    labels.write_bytes(data[:-8])  # truncated
    with pytest.raises(ValueError, match=r"labels\.npy' has \d+ bytes, its save wrote"):
        ShardLayout.load(d)
    labels.write_bytes(data)
    assert ShardLayout.load(d).labels.tolist() == [0, 1, 0, 1, 1]
    (d / "manifest.json").unlink()  # a save that never finished
    with pytest.raises(ValueError, match="manifest.json' is missing"):
        ShardLayout.load(d)
    good_dir = tmp_path / "g2"
    good.save(good_dir)
    (good_dir / "offsets.npy").write_bytes((d / "offsets.npy").read_bytes()[:-1] + b"\x01")
    with pytest.raises(ValueError, match="offsets.npy"):
        ShardLayout.load(good_dir)

    cases = {
        "from-1": ({"offsets": [1, 2, 5]}, r"offsets\.npy' should run from 0"),
        "decreasing": ({"offsets": [0, 4, 3, 5]}, r"offsets\.npy' should be non-decreasing"),
        "empty-shard": ({"offsets": [0, 2, 2, 5]}, r"offsets\.npy' gives shard 1 no sample"),
        "short-end": ({"offsets": [0, 2, 5], "meta": {"num_samples": 6}}, "should run from 0 to 6"),
        "shards": ({"offsets": [0, 2, 5], "meta": {"num_shards": 3}}, "3 entries for 3 shards"),
        "labels-length": (
            {"offsets": [0, 2, 5], "labels": [0, 1, 0, 1]},
            r"labels\.npy' has 4 labels for 5 samples",
        ),
        "urls-count": (
            {"offsets": [0, 2, 5], "urls": ["a.tar"]},
            r"urls\.json' should be a list of 2 strings",
        ),
        "label-codes": (
            {"offsets": [0, 1, 2], "labels": [0, 2], "names": ["cat", "dog"]},
            r"labels\.npy' holds a label code outside \[0, 2\)",
        ),
        "meta": (
            {"offsets": [0, 1], "meta": {"num_samples": True}},
            r"meta\.json' should hold num_samples",
        ),
        "source": ({"offsets": [0, 1], "meta": {"source": "zip"}}, r"meta\.json' should hold"),
    }
    for name, (kw, message) in cases.items():
        saved = _crafted(tmp_path / name, kw.pop("offsets"), **kw)
        with pytest.raises(ValueError, match=message):
            ShardLayout.load(saved)
    float_offsets = tmp_path / "floats"
    index_files.write_index(
        float_offsets,
        "ShardLayout",
        {"offsets": np.array([0.0, 1.0])},
        {"meta": {**json.loads((d / "meta.json").read_text()), "labels": None}},
    )
    with pytest.raises(ValueError, match="should hold integers"):
        ShardLayout.load(float_offsets)
    with pytest.raises(ValueError, match="not a format-1 manifest of a ShardLayout"):
        GroupIndex.from_labels([0, 1]).save(tmp_path / "gi") or ShardLayout.load(tmp_path / "gi")


# -- Parquet ------------------------------------------------------------------------------------
def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        return None
    return pyarrow


def _parquet_files(tmp_path: Path) -> list[str]:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paths = []
    for i, (rows, group) in enumerate([(25, 10), (7, 5)]):
        start = 0 if i == 0 else 25
        table = pa.table(
            {
                "label": pa.array([(start + j) % 3 for j in range(rows)], type=pa.int32()),
                "text": [f"row {start + j}" for j in range(rows)],
            }
        )
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(table, path, row_group_size=group)
        paths.append(str(path))
    return paths


def test_parquet_row_groups_and_files(tmp_path):
    import pyarrow.parquet as pq

    paths = _parquet_files(tmp_path)
    groups = ShardLayout.from_parquet(paths, labels="label")
    assert groups.sizes.tolist() == [10, 10, 5, 5, 2] and groups.format == "parquet"
    assert groups.urls == (paths[0],) * 3 + (paths[1],) * 2
    assert groups.row_groups.tolist() == [0, 1, 2, 0, 1]
    meta = pq.ParquetFile(paths[0]).metadata.row_group(1)
    compressed = sum(meta.column(c).total_compressed_size for c in range(meta.num_columns))
    assert groups.shard_bytes[1] == compressed
    assert groups.labels.tolist() == [j % 3 for j in range(32)]
    assert groups.group_index().sizes.tolist() == [11, 11, 10]
    files = ShardLayout.from_parquet(paths, shards="files")
    assert files.sizes.tolist() == [25, 7] and files.row_groups is None
    assert files.urls == tuple(paths) and files.labels is None
    assert files.shard_bytes.tolist() == [Path(p).stat().st_size for p in paths]
    # shard s of either layout holds the same rows as the file it names
    from distsampler.shards.parquet import read_rows

    rows = read_rows(paths[0], int(groups.row_groups[2]))
    lo, hi = groups.shard_range(2)
    assert [r["text"] for r in rows] == [f"row {j}" for j in range(lo, hi)]


def test_parquet_errors_name_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paths = _parquet_files(tmp_path)
    with pytest.raises(ValueError, match=r"labels='kind': .*part-0\.parquet' has no such column"):
        ShardLayout.from_parquet(paths, labels="kind")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"label": pa.array([1, None, 2], type=pa.int64())}), nulls)
    with pytest.raises(ValueError, match=r"row 1 of .*nulls\.parquet' is null"):
        ShardLayout.from_parquet([nulls], labels="label")
    floats = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"label": [0.5, 1.5]}), floats)
    with pytest.raises(TypeError, match="holds double; labels should be integers or strings"):
        ShardLayout.from_parquet([floats], labels="label")
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"label": pa.array([], type=pa.int64())}), empty)
    with pytest.raises(ValueError, match=r"paths\[1\]=.*empty\.parquet' holds no rows"):
        ShardLayout.from_parquet([paths[0], empty])
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_bytes(b"PAR1 but not really")
    with pytest.raises(ValueError, match=r"x\.parquet' is not a readable Parquet file"):
        ShardLayout.from_parquet([not_parquet])
    with pytest.raises(ValueError, match="shards should be 'row_groups' or 'files'"):
        ShardLayout.from_parquet(paths, shards="rows")
    strings = tmp_path / "s.parquet"
    pq.write_table(pa.table({"label": pa.array(["b", "a"]).dictionary_encode()}), strings)
    assert ShardLayout.from_parquet([strings], labels="label").labels.tolist() == ["b", "a"]


def test_urls_through_fsspec_memory_filesystem(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    tar = _write_tar(tmp_path / "a.tar", TRICKY)
    fs.pipe("/shards/a.tar", tar.read_bytes())
    remote = ShardLayout.from_webdataset(["memory://shards/a.tar"], labels=None)
    local = ShardLayout.from_webdataset([tar])
    np.testing.assert_array_equal(remote.offsets, local.offsets)
    assert remote.shard_bytes.tolist() == local.shard_bytes.tolist()
    if _pyarrow() is not None:
        paths = _parquet_files(tmp_path)
        fs.pipe("/pq/part-0.parquet", Path(paths[0]).read_bytes())
        layout = ShardLayout.from_parquet(["memory://pq/part-0.parquet"], labels="label")
        assert layout.sizes.tolist() == [10, 10, 5] and len(layout.labels) == 25
    fs.rm("/shards", recursive=True)
    fs.rm("/pq", recursive=True) if fs.exists("/pq") else None


# -- http:// against a loopback server ----------------------------------------------------------
class _Server:
    """Serves a directory on 127.0.0.1; the first ``fail`` GETs are answered 503."""

    def __init__(self, root: Path, fail: int = 0, status: int = 503):
        self.fail, self.status, self.gets = fail, status, 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.gets += 1
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_error(outer.status)
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(60)
def test_from_webdataset_over_http_reads_each_shard_once(tmp_path, monkeypatch):
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    monkeypatch.setattr(layout_module, "_BACKOFF", 0.0)
    names = []
    for i in range(3):
        _write_tar(tmp_path / f"s{i}.tar", _samples(30, start=30 * i) + TRICKY[:4])
        names.append(f"s{i}.tar")
    local = ShardLayout.from_webdataset([tmp_path / n for n in names], labels="cls")
    with _Server(tmp_path) as srv:
        urls = [srv.url(n) for n in names]
        remote = ShardLayout.from_webdataset(urls, labels="cls")
        assert srv.gets == 3  # one GET a shard, streamed
    np.testing.assert_array_equal(remote.offsets, local.offsets)
    assert remote.labels.tolist() == local.labels.tolist() and remote.urls == tuple(urls)
    assert remote.shard_bytes.tolist() == local.shard_bytes.tolist()


@pytest.mark.timeout(60)
def test_http_failures_are_retried_then_named(tmp_path, monkeypatch):
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    monkeypatch.setattr(layout_module, "_BACKOFF", 0.0)
    _write_tar(tmp_path / "a.tar", _samples(5))
    with _Server(tmp_path, fail=2) as srv:
        layout = ShardLayout.from_webdataset([srv.url("a.tar")], retries=2)
        assert len(layout) == 5 and srv.gets == 3
    with _Server(tmp_path, fail=5) as srv:
        with pytest.raises(OSError, match=r"reading '.*a\.tar' failed 2 times \(retries=1\)"):
            ShardLayout.from_webdataset([srv.url("a.tar")], retries=1)
        assert srv.gets == 2
    with _Server(tmp_path, fail=5, status=403) as srv:  # not transient: no retry
        with pytest.raises(OSError, match=r"reading '.*a\.tar' failed: .*403.*not retried"):
            ShardLayout.from_webdataset([srv.url("a.tar")], retries=3)
        assert srv.gets == 1
    with _Server(tmp_path) as srv:
        with pytest.raises(FileNotFoundError, match=r"no such shard: '.*missing\.tar'"):
            ShardLayout.from_webdataset([srv.url("missing.tar")])
        (tmp_path / "cut.tar").write_bytes((tmp_path / "a.tar").read_bytes()[:700])
        with pytest.raises(TarError, match=r"shard '.*cut\.tar' is truncated at byte 700"):
            ShardLayout.from_webdataset([srv.url("cut.tar")])

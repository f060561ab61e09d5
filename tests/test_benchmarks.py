"""The benchmark scripts run and report what they claim (smoke: no timing assertions).

* Each script's ``main`` at tiny sizes, in this process (``--inline``): exit 0, its tables,
  and a JSON file of the documented shape.
* One throughput case through the real path, a fresh ``python -m benchmarks.throughput``.
* ``benchmarks.nccl_bench --tiny`` under a real ``torch.distributed.run`` with 2 processes
  (gloo on CPU): exit 0, and rank 0 reports balanced and rank-disjoint batches.
* In process: the memory probe sees an allocation, the on-the-fly checker really fails on
  overlapping ranks and broken quotas, and the tables render rows that could not run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import harness, memory, multilabel, nccl_bench, sources, throughput

ROOT = Path(__file__).resolve().parent.parent


def _table(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("|")]


def test_throughput_sweep_reports_every_sampler(tmp_path, capsys):
    out = tmp_path / "tp.json"
    argv = ["--sizes", "2e4", "--worlds", "1,2", "--inline", "--json", str(out)]
    assert throughput.main(argv) == 0
    table = _table(capsys.readouterr().out)
    head = "| N | W | sampler | init (s) | first index (ms) | epoch/rank (s) |"
    assert table[0].startswith(head) and "| efficiency |" in table[0]
    rows = table[2 : 2 + 2 * len(throughput.SAMPLERS)]
    assert all(ln.count("|") == len(throughput.HEAD) + 1 for ln in rows)
    for spec in throughput.SAMPLERS.values():
        assert sum(spec.label in ln for ln in rows) == 2, spec.label

    data = json.loads(out.read_text())
    assert {"machine", "config", "records", "targets"} <= set(data)
    assert {"nproc", "cpu", "ram_gb", "torch"} <= set(data["machine"])
    cases = data["records"]
    assert {(c["sampler"], c["world"]) for c in cases} == {
        (s, w) for s in throughput.SAMPLERS for w in (1, 2)
    }
    for c in cases:
        assert c["status"] == "ok", c
        for key in ("init_s", "first_s", "epoch_s", "pull_rate", "peak_extra_mb", "efficiency"):
            assert isinstance(c[key], (int, float)) and c[key] >= 0, (key, c)
        assert 0 < c["first_s"] <= c["epoch_s"]
        # Each rank takes about its 1/W share of an epoch (the quota epoch differs a little).
        assert c["items"] >= 2 * 10**4 // c["world"] * 0.8, c


@pytest.mark.timeout(60)
def test_a_throughput_case_runs_in_a_fresh_interpreter():
    case = {
        "sampler": "labels_iid",
        "n": 10**4,
        "world": 2,
        "rank": 0,
        "batch_size": 64,
        "pull_cap": 1 << 20,
        "minority": 0.03,
    }
    rec = harness.run_case("throughput", case, timeout=50)
    assert rec["status"] == "ok", rec
    assert rec["items"] == 5000 and rec["pull_items"] == 5000
    assert rec["efficiency"] > 0


def test_memory_builds_then_loads_every_mode(tmp_path, capsys):
    out = tmp_path / "mem.json"
    assert memory.main(["--size", "2e4", "--world", "2", "--inline", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| GroupIndex.from_labels | 2e+04 |" in text
    records = {r["mode"]: r for r in json.loads(out.read_text())["records"]}
    assert set(records) == {*memory.BUILDS, *memory.LOADS}
    for mode, r in records.items():
        if r["status"] == "skipped":  # an API the installed distsampler lacks
            assert r["reason"].startswith("needs "), r
            continue
        assert r["status"] == "ok", r
        assert r["peak_extra_mb"] >= 0
        if mode in memory.BUILDS:
            assert r["final_mb"] > 0 and r["peak_over_final"] >= 0
        else:
            assert r["items"] >= 10**4 * 0.8, r
    assert records["group_index"]["status"] == "ok"


def test_sources_pulls_the_target_shares(tmp_path, capsys):
    out = tmp_path / "src.json"
    argv = ["--size", "1e5", "--world", "4", "--count", "2e3", "--inline", "--json", str(out)]
    assert sources.main(argv) == 0
    assert (
        "| ours: stratified, target shares, N = 1e+05, W = 4, rank 0 |" in capsys.readouterr().out
    )
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["status"] == "ok", rec
    assert rec["count"] == 2000 and rec["per_rank"] == 25_000
    # Stratified: exact counts per epoch, so 25,000 draws hold each share within a few.
    for name, want in sources.SHARES.items():
        assert abs(rec["shares"][name] - want) < 0.01, rec["shares"]


def test_multilabel_row(tmp_path, capsys):
    out = tmp_path / "ml.json"
    argv = ["--size", "4000", "--classes", "20", "--world", "2", "--inline", "--json", str(out)]
    assert multilabel.main(argv) == 0
    text = capsys.readouterr().out
    assert "20 classes" in text and "from_label_sets (Python lists)" in text
    records = {r["sampler"]: r for r in json.loads(out.read_text())["records"]}
    assert records["build"]["multilabel"] and records["build"]["groups"] == 20
    for name in multilabel.SAMPLERS:
        assert records[name]["status"] == "ok", records[name]
        assert records[name]["efficiency"] > 0
    # Class-aware sampling draws the rare half far more often than uniform sampling does.
    assert records["ours_strat"]["rare_share"] > records["dist_sampler"]["rare_share"]


def test_floor_reads_the_index_as_python_ints():
    members = np.arange(1000, 1100, dtype=np.int32)
    flat = throughput.baselines.IndexReads(members, 70, chunk=16)
    got = list(flat)
    assert len(got) == len(flat) == 70 and {type(i) for i in got} == {int}
    assert set(got) <= set(members.tolist()) and len(set(got)) > 30
    batches = list(throughput.baselines.IndexReads(members, 70, batch_size=8, chunk=16))
    assert [len(b) for b in batches] == [8] * 8  # whole batches only, as a rank's share
    assert {type(i) for b in batches for i in b} == {int}


def test_zipf_label_sets_are_distinct_and_long_tailed():
    lab = multilabel.baselines.zipf_label_sets(20_000, 50)
    assert lab.shape == (20_000, 3)
    two = lab[:, 2] < 0
    assert 0.45 < two.mean() < 0.55
    assert (lab[:, 0] != lab[:, 1]).all()
    assert ((lab[~two, 2] != lab[~two, 0]) & (lab[~two, 2] != lab[~two, 1])).all()
    sizes = np.bincount(lab[lab >= 0], minlength=50)
    assert sizes[0] > 10 * sizes[-1]
    lists = multilabel.baselines.as_label_lists(lab[:3])
    assert [len(x) for x in lists] == [2 if t else 3 for t in two[:3]]


def test_anon_peak_sees_an_allocation():
    with harness.AnonPeak() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MB of anonymous memory, touched
        del block
    assert mem.extra_mb > 48
    assert harness.anon_mb() > 0


def test_missing_names_the_lacking_api():
    assert harness.missing("GroupIndex.from_labels") is None
    assert harness.missing("GroupIndex.nope", "Nope") == "needs GroupIndex.nope, Nope"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_nccl_bench_tiny_two_processes(tmp_path):
    out = tmp_path / "nccl.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "benchmarks.nccl_bench", "--tiny", "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=80, env=env, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[:3000] + "\n...\n" + log[-2000:]  # the cause, then the end
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    assert f"world 2, backend {backend}" in proc.stdout
    assert "RESULT balanced=OK disjoint=OK" in proc.stdout
    rows = json.loads(out.read_text())
    assert sorted((r["sampler"], r["rank"]) for r in rows) == sorted(
        (s, r) for s in ("dist_sampler", "weighted", "quota") for r in (0, 1)
    )
    for r in rows:
        assert r["steps"] > 0 and r["samples"] > 0
        assert not r["unbalanced"] and not r["overlapping"]
        if r["rank"] == 0 and r["sampler"] != "dist_sampler":
            assert r["checked_steps"] > 0
    shares = {r["sampler"]: r["minority"] / r["samples"] for r in rows if r["rank"] == 0}
    assert shares["quota"] == 4 / 32  # exactly batch_size // 8 per batch
    assert abs(shares["weighted"] - 0.5) < 0.05


def _checker_with_epoch(name: str, world: int = 2, bs: int = 8):
    """A rank-0 checker fed the true plan of a small epoch of sampler ``name``."""
    labels = np.zeros(256, dtype=np.int8)
    labels[::8] = 1
    index = nccl_bench.GroupIndex.from_labels(labels)
    ref = nccl_bench.build(name, index, len(labels), bs, 1, 0, seed=3)
    ref.set_epoch(0)
    check = nccl_bench.Checker(name, ref, world, bs, len(labels), bs // 8)
    for s in range(4):
        idx = check.expected(s, bs)
        counts = np.stack([np.bincount(labels[row], minlength=2) for row in idx])
        check.step(torch.from_numpy(counts), torch.from_numpy(idx))
    return check


@pytest.mark.parametrize("name", ["weighted", "quota"])
def test_checker_accepts_the_plan_and_catches_overlap(name):
    ok = nccl_bench.Stats(name, 0)
    _checker_with_epoch(name).finish(ok)
    assert ok.checked_steps == 4 and not ok.overlapping
    bad = nccl_bench.Stats(name, 0)
    check = _checker_with_epoch(name)
    check.indices[2][1] = check.indices[2][0]  # rank 1 served rank 0's batch
    check.finish(bad)
    assert bad.overlapping and "step 2" in bad.overlapping[0]


def test_checker_catches_a_broken_quota():
    check = _checker_with_epoch("quota")
    check.counts[1][0, 1] += 1
    st = nccl_bench.Stats("quota", 0)
    check.finish(st)
    assert st.unbalanced and "step 1" in st.unbalanced[0]


def test_tables_render_rows_that_did_not_run():
    base = {"n": 10**8, "world": 8, "role": "baseline", "kind": "index"}
    records = [
        {**base, "sampler": "wrs_wrapper", "label": "(1)", "status": "cannot run", "reason": "x"},
        {**base, "sampler": "dist_sampler", "label": "(2)", "status": "skipped (limit)"},
    ]
    table = throughput.markdown_table(records).splitlines()
    assert all(ln.count("|") == len(throughput.HEAD) + 1 for ln in table)
    assert "cannot run: x" in table[2] and "skipped (limit)" in table[3]
    assert throughput.estimate(records, "dist_sampler", 8, 10**9) == float("inf")
    skipped = {"n": 10**10, "world": 1024, "status": "skipped", "reason": "needs X"}
    assert "skipped: needs X" in sources.table(skipped)


# -- sharded storage --------------------------------------------------------------------------
def test_shards_counts_tiny(tmp_path, capsys):
    """Ours reads each shard about once an epoch, today's plan many times; the replay of our
    plan through the schedule's eviction equals the schedule (checked inside ``run``)."""
    from benchmarks import shards

    out = tmp_path / "shards.json"
    argv = ["--shards", "64", "--per-shard", "40", "--world", "2", "--buffer", "50"]
    assert shards.main([*argv, "--json", str(out)]) == 0
    assert "| class-pure | ours: `shards=layout" in capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {(r["layout"], r["plan"]): r for r in data["rows"]}
    for layout in ("mixed", "pure"):
        ours, today = rows[(layout, "ours")], rows[(layout, "today")]
        assert ours["per_shard_in_dataset"] <= 1.1 and ours["rare_error"] < 0.01
        assert today["shards_per_epoch"] > 5 * ours["shards_per_epoch"]
        assert (
            rows[(layout, "today, clairvoyant cache")]["shards_per_epoch"]
            <= today["shards_per_epoch"]
        )
        assert rows[(layout, "webdataset")]["resume"].startswith("no")
    assert [r["world"] for r in data["issue_example"]] == [1, 3, 8]


def test_belady_never_loads_more_than_lru():
    from benchmarks import shards

    seq = np.random.default_rng(0).integers(0, 12, 500)
    assert shards.belady_loads(seq, 3) <= shards.lru_loads(seq, 3)
    assert shards.belady_loads(np.array([0, 1, 0, 1, 2, 0]), 2) == 3  # 1 goes, 0 stays
    assert shards.lru_loads(np.array([0, 1, 0, 1, 2, 0]), 2) == 4
    assert shards.lru_loads(np.array([0, 1, 2, 0, 1, 2]), 2) == 6
    assert shards.belady_loads(np.array([0, 1, 2, 0, 1, 2]), 2) == 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_shards_reader_tiny(tmp_path, capsys):
    """Real tars over the loopback server: epochs after the warm-up within the cache bound,
    every sample of each throughput case delivered."""
    from benchmarks import shards_reader

    out = tmp_path / "reader.json"
    argv = ["--shards", "12", "--per-shard", "20", "--epochs", "2", "--tp-shards", "6"]
    argv += ["--tp-per-shard", "20", "--tp-cap", "40", "--latency", "0.001"]
    assert shards_reader.main([*argv, "--json", str(out)]) == 0
    assert "| ours: `ShardedDataset` + sharded sampler |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    for e in data["bytes"]["epochs"]:
        assert e["most_cached"] <= e["bound"] and e["samples"] > 0
        assert e["server_bytes"] == e["bytes_fetched"]
    cases = {r["case"]: r for r in data["throughput"]}
    assert set(cases) == set(shards_reader.TP_NAMES)
    # ours: a whole epoch (rounded up to lanes x 32); today's cases: their first 40 indices
    assert cases["ours"]["samples"] >= 6 * 20 and cases["today_ranges"]["samples"] == 40
    assert cases["today_ranges"]["requests"] == 40


def test_shards_plan_tiny(tmp_path, capsys):
    from benchmarks import shards_plan

    out = tmp_path / "plan.json"
    argv = ["--size", "1e5", "--num-shards", "1e3", "--world", "2", "--inline"]
    assert shards_plan.main([*argv, "--json", str(out)]) == 0
    assert "| 1e+05 / 1e+03 / 2 |" in capsys.readouterr().out
    (rec,) = json.loads(out.read_text())["records"]
    assert rec["status"] == "ok" and rec["scheduled_shards"] > 0 and rec["resident"] > 0
    assert rec["anon_extra_mb"] >= -5  # a difference of two readings, not a timing

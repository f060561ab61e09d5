"""The benchmark scripts run and report what they claim (smoke: no timing assertions).

* ``benchmarks/throughput.py --quick`` in a subprocess: exit 0, a markdown table with every
  sampler at both world sizes, and a JSON file of the documented shape.
* ``benchmarks/nccl_bench.py --tiny`` under a real ``torch.distributed.run`` with 2 processes
  (gloo on CPU): exit 0, and rank 0 reports balanced and rank-disjoint batches.
* In process: the on-the-fly checker really fails on overlapping ranks and broken quotas, and
  the table renders rows that could not run.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _load(name: str):
    """Import a benchmark script as a module (benchmarks/ is not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_throughput_quick_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "throughput.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=80,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    tp = _load("throughput")
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert table[0].startswith("| N | W | sampler |")
    assert all(ln.count("|") == 13 for ln in table), "every row has the 12 columns"
    assert len(table) == 2 + 2 * len(tp.SAMPLERS)
    for spec in tp.SAMPLERS.values():
        assert sum(spec.label in ln for ln in table) == 2, spec.label

    data = json.loads(out.read_text())
    assert {"machine", "config", "loader_ceiling", "cases", "targets"} <= set(data)
    assert {"nproc", "cpu", "ram_gb", "torch"} <= set(data["machine"])
    cases = data["cases"]
    assert {(c["sampler"], c["world"]) for c in cases} == {
        (s, w) for s in tp.SAMPLERS for w in (1, 8)
    }
    for c in cases:
        assert c["status"] == "ok", c
        assert c["n"] == 10**5
        for key in ("init_s", "first_s", "epoch_s", "pull_rate", "peak_extra_mb"):
            assert isinstance(c[key], (int, float)) and c[key] >= 0, (key, c)
        assert 0 < c["first_s"] <= c["epoch_s"]
        # Each rank takes about its 1/W share of an epoch (the quota epoch differs a little).
        assert c["items"] >= 10**5 // c["world"] * 0.8, c


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_nccl_bench_tiny_two_processes(tmp_path):
    out = tmp_path / "nccl.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(BENCH / "nccl_bench.py"),
        "--tiny",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=80, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
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


def _checker_with_epoch(nb, name: str, world: int = 2, bs: int = 8):
    """A rank-0 checker fed the true plan of a small epoch of sampler ``name``."""
    labels = np.zeros(256, dtype=np.int8)
    labels[::8] = 1
    index = nb.GroupIndex.from_labels(labels)
    ref = nb.build(name, index, len(labels), bs, 1, 0, seed=3)
    ref.set_epoch(0)
    check = nb.Checker(name, ref, world, bs, len(labels), bs // 8)
    for s in range(4):
        idx = check.expected(s, bs)
        counts = np.stack([np.bincount(labels[row], minlength=2) for row in idx])
        check.step(torch.from_numpy(counts), torch.from_numpy(idx))
    return check


@pytest.mark.parametrize("name", ["weighted", "quota"])
def test_checker_accepts_the_plan_and_catches_overlap(name):
    nb = _load("nccl_bench")
    ok = nb.Stats(name, 0)
    _checker_with_epoch(nb, name).finish(ok)
    assert ok.checked_steps == 4 and not ok.overlapping
    bad = nb.Stats(name, 0)
    check = _checker_with_epoch(nb, name)
    check.indices[2][1] = check.indices[2][0]  # rank 1 served rank 0's batch
    check.finish(bad)
    assert bad.overlapping and "step 2" in bad.overlapping[0]


def test_checker_catches_a_broken_quota():
    nb = _load("nccl_bench")
    check = _checker_with_epoch(nb, "quota")
    check.counts[1][0, 1] += 1
    st = nb.Stats("quota", 0)
    check.finish(st)
    assert st.unbalanced and "step 1" in st.unbalanced[0]


def test_table_renders_rows_that_did_not_run():
    tp = _load("throughput")
    base = {"n": 10**8, "world": 8, "role": "baseline", "kind": "index"}
    records = [
        {**base, "sampler": "wrs_wrapper", "label": "(1)", "status": "cannot run", "reason": "x"},
        {**base, "sampler": "dist_sampler", "label": "(2)", "status": "skipped (limit)"},
    ]
    table = tp.markdown_table(records).splitlines()
    assert all(ln.count("|") == 13 for ln in table)
    assert "cannot run: x" in table[2] and "skipped (limit)" in table[3]
    assert tp.estimate(records, "dist_sampler", 8, 10**9) == float("inf")

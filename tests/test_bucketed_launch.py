"""The bucketing demo and benchmark run and report what they claim (smoke: no timing asserts)."""

from __future__ import annotations

import json
import sys

import pytest
from _launch import ROOT, launch

from benchmarks import bucketing


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_train_lengths_demo_under_torchrun(tmp_path):
    log = tmp_path / "figures.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["--samples", "600", "--steps", "6", "--log-json", str(log)]
    out = launch([*cmd, str(ROOT / "launch" / "train_lengths.py"), *args], timeout=150)
    assert "bucketed" in out and "group_by_length" in out
    figures = {r["recipe"]: r for r in json.loads(log.read_text())}
    assert set(figures) == {"random", "group_by_length", "bucketed_align1", "bucketed"}
    assert all(r["steps"] == 6 for r in figures.values())
    # the same balanced source: the classes are balanced in every recipe
    assert all(0.3 < r["minority_share"] < 0.7 for r in figures.values())
    assert figures["bucketed"]["padding_share"] < figures["random"]["padding_share"]


def test_bucketing_benchmark_reports_every_case(tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["--size", "2e4", "--big", "2e4", "--huge", "2e4", "--inline", "--json", str(out)]
    argv += ["--dir", str(tmp_path)]
    assert bucketing.main(argv) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert any("random batches" in ln for ln in table)
    assert any("balance, max_tokens" in ln for ln in table)
    assert sum("speed" in ln for ln in table) == 2 and sum("memory" in ln for ln in table) == 2
    records = json.loads(out.read_text())["records"]
    assert {r["kind"] for r in records} == {
        "padding",
        "balance",
        "speed",
        "memory",
        "memory_tokens",
    }
    assert all(r["status"] == "ok" for r in records)
